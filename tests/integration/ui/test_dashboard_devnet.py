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
from aiohttp import web
from playwright.async_api import Browser

from aggregator.alerts.config import ChainLagRule, KeeperBalanceRule, WebhookConfig
from aggregator.config import ApiConfig, AppConfig, StoreConfig, load_config
from aggregator.daemon import Daemon
from devkit import manager
from devkit.anvil import DEV_KEYS
from tests.integration.daemon.daemon_helpers import wait_ready, wait_until
from tests.integration.ui.browser import Watched, watched_page

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


async def _has_points(d: Daemon) -> bool:
    return bool((await api(d, "/v1/history/system"))["points"])


@pytest.fixture(scope="module")
def env() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGG_KEEPER_KEY", DEV_KEYS[1])
        mp.setenv("AGG_ADMIN_TOKEN", TOKEN)
        yield


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def receiver() -> AsyncIterator[tuple[str, list[Any]]]:
    """A real webhook receiver: the alerts go there, the alert page shows its state."""
    got: list[Any] = []

    async def hook(request: web.Request) -> web.Response:
        got.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/hook", got
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def daemon(
    devnet: manager.DevnetState,
    env: None,
    receiver: tuple[str, list[Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Daemon]:
    cfg: AppConfig = load_config(Path(devnet.root) / "config.toml")
    db = tmp_path_factory.mktemp("ui") / "agg.db"
    cfg = cfg.model_copy(
        update={
            "store": StoreConfig(url=f"sqlite+aiosqlite:///{db}"),
            "api": ApiConfig(port=0),
            "pusher": cfg.pusher.model_copy(update={"interval_s": 1.0}),
            "scheduler": cfg.scheduler.model_copy(update={"oracle_interval_s": 1.0}),
            "history": cfg.history.model_copy(update={"interval_s": 1.0}),
            # One rule that holds on every chain (no keeper has 10^6 ETH), so the alert
            # list has rows, and one that does not.
            "alerts": cfg.alerts.model_copy(
                update={
                    "interval_s": 1.0,
                    "rules": [
                        KeeperBalanceRule(name="keeper-rich", severity="critical", min_eth=1e6),
                        ChainLagRule(name="lag", max_blocks=10_000),
                    ],
                    "webhooks": [WebhookConfig(name="ops", url=receiver[0])],
                }
            ),
        }
    )
    d = Daemon(cfg)
    await asyncio.wait_for(d.start(), 90)
    try:
        await wait_ready(d)
        # The overview reads the history's last system sample: wait for the first.
        await wait_until(lambda: _has_points(d), timeout=60, what="a system history sample")
        yield d
    finally:
        await d.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def ui(browser: Browser, daemon: Daemon) -> AsyncIterator[Watched]:
    async with watched_page(browser, f"http://127.0.0.1:{daemon.api.port}") as w:
        yield w


async def test_admin_pause_and_resume_with_the_token(ui: Watched, daemon: Daemon) -> None:
    await ui.goto("/admin")
    page = ui.page
    assert await page.locator("#push-state").inner_text()
    # A wrong token: the API's 401 is shown, and the page forgets the token.
    ui.expected_errors |= {"/v1/admin/pause"}
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
    await page.locator("#admin-result .ok", has_text="running").wait_for()
    assert not any(c["pusher"].get("paused") for c in (await api(daemon, "/v1/chains"))["chains"])
    # Kept for this tab only, and "Forget" drops it.
    assert await page.evaluate("sessionStorage.getItem('aggregator.adminToken')") == TOKEN
    await page.click("#forget-token")
    assert await page.evaluate("sessionStorage.getItem('aggregator.adminToken')") is None
    await ui.screenshot("admin")


async def test_overview_shows_the_api_figures(ui: Watched, daemon: Daemon) -> None:
    await ui.goto("/")
    page = ui.page
    last = (await api(daemon, "/v1/history/system"))["points"][-1]
    for tier, row in last["tiers"].items():
        shown = await page.inner_text(f'[data-tier-count="{tier}"]')
        assert shown.replace(",", "") == str(row["accounts"]), tier
    assert sum(daemon.engine.tier_counts().values()) == last["total"]["accounts"]
    prices = (await api(daemon, "/v1/prices"))["prices"]
    for asset in prices:
        assert await page.locator(f'[data-price="{asset}"]').count() == 1, asset
    chains = (await api(daemon, "/v1/chains"))["chains"]
    rows = await page.locator("#chains tbody tr").count()
    assert rows == len(chains)
    for c in chains:
        assert await page.locator(f'[data-lag="{c["chain"]}"]').count() == 1
    # The chart of accounts per tier is drawn (uPlot's canvas).
    assert await page.locator("#overview .chart canvas").count() >= 1
    await ui.screenshot("overview")


async def test_accounts_list_search_and_the_account_page(ui: Watched, daemon: Daemon) -> None:
    """The page shows exactly what the API answered it (its own response bodies, read
    off the wire), and that matches a fresh API call: the devnet's prices move a little
    every refresh, so a value compared across two requests could differ by a hair."""
    page = ui.page
    async with page.expect_response(lambda r: "/v1/accounts?" in r.url) as got:
        await ui.goto("/accounts?tier=all")
    listed = (await (await got.value).json())["accounts"]
    assert len(ui.api_requests("/v1/accounts")) == 1
    fresh = (await api(daemon, "/v1/accounts?limit=100"))["accounts"]
    assert [a["account"] for a in listed] == [a["account"] for a in fresh]
    for a, b in zip(listed, fresh, strict=True):
        assert a["tier"] == b["tier"]
        assert (a["hf"] is None) == (b["hf"] is None)
        assert a["hf"] is None or abs(a["hf"] - b["hf"]) <= 1e-3 * b["hf"]
    assert await page.locator("#accounts tbody tr").count() == len(listed)
    with_debt = [a for a in listed if a["hf"] is not None]
    assert with_debt, "the devnet seeds accounts with debt"
    target = min(with_debt, key=lambda a: a["hf"])
    for a in listed:
        assert await page.inner_text(f'[data-hf="{a["account"]}"]') == a["hf_text"]
    await ui.screenshot("accounts")
    # Search by the full address in lower case: opens the account's page.
    await page.fill("#search", target["account"].lower())
    async with page.expect_response(
        lambda r: r.url.endswith(f"/v1/accounts/{target['account'].lower()}")
    ) as got:
        await page.click("#search-form button[type=submit]")
    await ui.ready()
    assert page.url.endswith(f"#/account/{target['account'].lower()}")
    detail = await (await got.value).json()
    assert detail["account"] == target["account"]
    assert await page.inner_text("#account-hf") == detail["hf_text"]
    assert (await page.inner_text("#account-tier")).strip() == detail["tier"]
    now = await api(daemon, f"/v1/accounts/{target['account']}")
    assert now["tier"] == detail["tier"] and abs(now["hf"] - detail["hf"]) <= 1e-3 * now["hf"]
    assert await page.locator("#positions tbody tr").count() == sum(
        len(rows) for rows in detail["positions"].values()
    )
    # What each chain's HealthRegistry holds now: one row per pushed chain.
    assert await page.locator("#onchain tbody tr").count() == len(detail["onchain"] or {})
    # The margin models are read only when their section is opened.
    margin_path = f"/v1/accounts/{target['account']}/margin"  # the page's checksummed form
    assert ui.api_requests(margin_path) == []
    async with page.expect_response(lambda r: r.url.endswith(margin_path)) as got:
        await page.click("#margin summary")
    margin = await (await got.value).json()
    await page.locator("#margin-table").wait_for()
    assert margin["standard"]["tier"] == detail["tier"]
    assert "tier" in await page.inner_text("#margin-table")
    await ui.screenshot("account")


async def test_alert_list_matches_the_api(ui: Watched, daemon: Daemon) -> None:
    async def firing() -> bool:
        return len((await api(daemon, "/v1/alerts"))["active"]) >= 1

    await wait_until(firing, timeout=60, what="the keeper-rich alert")

    async def delivered() -> bool:
        return (await api(daemon, "/v1/alerts"))["webhooks"][0]["sent_total"] >= 1

    await wait_until(delivered, timeout=60, what="a webhook delivery")
    await ui.goto("/alerts")
    page = ui.page
    active = (await api(daemon, "/v1/alerts"))["active"]
    assert await page.locator("#active-alerts tbody tr").count() == len(active)
    text = await page.inner_text("#active-alerts")
    for a in active:
        assert a["message"] in text
    assert await page.locator("#rules tbody tr").count() == 2
    hooks = (await api(daemon, "/v1/alerts"))["webhooks"]
    assert [h["name"] for h in hooks] == ["ops"]
    assert "ops (json)" in await page.inner_text("#webhooks")
    await ui.screenshot("alerts")


async def test_whatif_form_returns_the_api_results(ui: Watched, daemon: Daemon) -> None:
    await ui.goto("/whatif")
    page = ui.page
    sent: list[str] = []
    page.on(
        "request",
        lambda r: sent.append(r.post_data or "") if r.url.endswith("/v1/whatif") else None,
    )
    await page.fill('[data-field="shocks.WETH"]', "-60")
    await page.fill('[data-field="vol"]', "50")
    async with page.expect_response(lambda r: r.url.endswith("/v1/whatif")) as got:
        await page.click("#whatif-run")
    await page.wait_for_selector('[data-model="standard"]', timeout=30_000)
    shown_answer = await (await got.value).json()
    assert json.loads(sent[-1]) == {
        "shocks": {"WETH": -0.6},
        "depegs": {},
        "chains_down": [],
        "vol": 0.5,
        "limit": 100,
    }
    # The page shows the answer it got; the same request sent again agrees on the tiers
    # (the devnet book is still; its prices move by a hair between requests).
    std = shown_answer["models"]["standard"]
    again = await api(daemon, "/v1/whatif", json.loads(sent[-1]))
    assert again["models"]["standard"]["tiers_after"] == std["tiers_after"]
    for tier in ("healthy", "warning", "liquidatable", "insolvent"):
        shown = await page.inner_text(f'[data-tier-after="standard:{tier}"]')
        before, after = std["tiers_before"][tier], std["tiers_after"][tier]
        assert shown.replace(",", "") == f"{before} → {after}", tier
    assert std["tiers_after"] != std["tiers_before"], "a 60% ETH drop moves some account"
    newly = std["accounts"]["items"]
    assert await page.locator('[data-model-accounts="standard"] tbody tr').count() == len(newly)
    await ui.screenshot("whatif")
    # Bad input: the API's 400 names the field, the page shows it and marks that input.
    ui.expected_errors |= {"/v1/whatif"}
    await page.fill('[data-field="shocks.WETH"]', "-150")
    await page.click("#whatif-run")
    await page.wait_for_selector("#whatif-result .error")
    assert "shocks.WETH" in await page.inner_text("#whatif-result .error")
    assert await page.get_attribute('[data-field="shocks.WETH"]', "class") == "invalid"
