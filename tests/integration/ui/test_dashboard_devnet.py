"""The dashboard in headless Chromium against a real daemon on the devnet (chains,
prices, pusher, history, alerts): every page renders with no console error, no failed
request and no error response, and shows the API's own figures.

One devnet, one daemon and one browser for the module (all on the module's event loop);
each test opens its own browser context. Screenshots go to docs/dashboard-*.png.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright

from aggregator.config import ApiConfig, AppConfig, StoreConfig, load_config
from aggregator.daemon import Daemon
from devkit import manager
from devkit.anvil import DEV_KEYS
from tests.integration.daemon.daemon_helpers import wait_ready
from tests.integration.ui.browser import CHROMIUM, CHROMIUM_ARGS, Watched, open_page

pytestmark = [pytest.mark.timeout(240), pytest.mark.asyncio(loop_scope="module")]
TOKEN = "ui-test-admin-token"


def _api(d: Daemon, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{d.api.port}{path}", data=data)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


async def api(d: Daemon, path: str, body: Any = None) -> Any:
    """The API's answer, read off the loop the daemon serves on."""
    return await asyncio.to_thread(_api, d, path, body)


@pytest.fixture(scope="module")
def env() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGG_KEEPER_KEY", DEV_KEYS[1])
        mp.setenv("AGG_ADMIN_TOKEN", TOKEN)
        yield


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def daemon(
    devnet: manager.DevnetState, env: None, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Daemon]:
    cfg: AppConfig = load_config(Path(devnet.root) / "config.toml")
    db = tmp_path_factory.mktemp("ui") / "agg.db"
    cfg = cfg.model_copy(
        update={
            "store": StoreConfig(url=f"sqlite+aiosqlite:///{db}"),
            "api": ApiConfig(port=0),
            "pusher": cfg.pusher.model_copy(update={"interval_s": 1.0}),
            "scheduler": cfg.scheduler.model_copy(update={"oracle_interval_s": 1.0}),
        }
    )
    d = Daemon(cfg)
    await asyncio.wait_for(d.start(), 90)
    try:
        await wait_ready(d)
        yield d
    finally:
        await d.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


@pytest_asyncio.fixture(loop_scope="module")
async def ui(browser: Browser, daemon: Daemon) -> AsyncIterator[Watched]:
    w = await open_page(browser, f"http://127.0.0.1:{daemon.api.port}")
    try:
        yield w
    finally:
        await w.page.context.close()
    assert w.errors == [], "\n".join(w.errors)


async def test_admin_pause_and_resume_with_the_token(ui: Watched, daemon: Daemon) -> None:
    await ui.goto("/admin")
    page = ui.page
    assert await page.locator("#push-state").inner_text()
    # A wrong token: the API's 401 is shown, and the page forgets the token.
    ui.expected_4xx |= {"/v1/admin/pause"}
    await page.fill("#admin-token", "wrong")
    await page.click("#pause")
    await page.wait_for_selector("#admin-result .error")
    assert "bearer token" in await page.inner_text("#admin-result")
    assert await page.evaluate("sessionStorage.getItem('aggregator.adminToken')") is None
    # The right one pauses pushing; the page shows the state the API reports.
    await page.fill("#admin-token", TOKEN)
    await page.click("#pause")
    await page.wait_for_selector("#admin-result .ok")
    assert "paused" in await page.inner_text("#admin-result")
    assert all(
        c["pusher"]["paused"]
        for c in (await api(daemon, "/v1/chains"))["chains"]
        if c["pusher"]["enabled"]
    )
    await page.click("#resume")
    await page.wait_for_function(
        "document.querySelector('#admin-result .ok')?.textContent.includes('running')"
    )
    assert not any(c["pusher"].get("paused") for c in (await api(daemon, "/v1/chains"))["chains"])
    # Kept for this tab only, and "Forget" drops it.
    assert await page.evaluate("sessionStorage.getItem('aggregator.adminToken')") == TOKEN
    await page.click("#forget-token")
    assert await page.evaluate("sessionStorage.getItem('aggregator.adminToken')") is None
    await ui.screenshot("admin")
