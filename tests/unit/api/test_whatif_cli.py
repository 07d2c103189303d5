"""`aggregator whatif` against a real API server on loopback (the real WhatIfService over a
real engine): the table, --json, paging, and errors with their exit codes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aggregator import cli
from aggregator.api import Api
from aggregator.risk import LedgerView
from aggregator.whatif import WhatIfService
from tests.unit.api.test_whatif_api import Backend, config, ledger


@pytest.fixture
async def base() -> AsyncIterator[str]:
    cfg = config()
    service = WhatIfService(cfg, LedgerView(ledger(cfg)), prices_ready=lambda: True)
    api = Api(Backend(service))
    port = await api.start("127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await api.stop()


async def run(base: str, *args: str) -> int:
    def call() -> int:
        try:
            return cli.main(["whatif", "--api", base, *args])
        except SystemExit as exc:
            return int(exc.code or 0)

    return await asyncio.to_thread(call)


async def test_table(base: str, capfd: pytest.CaptureFixture[str]) -> None:
    rc = await run(
        base, "--shock", "WETH=-0.30", "--depeg", "wstETH=-0.05", "--vol", "+0.5",
        "--chain-down", "beta", "--limit", "3",
    )  # fmt: skip
    out = capfd.readouterr().out
    assert rc == 0
    assert "what-if on 31 accounts" in out and "chains down beta" in out
    assert "model standard (pushed)" in out
    assert "newly liquidatable accounts" in out and "... more with --cursor 3" in out
    assert "WETH     on alpha" in out


async def test_json_is_the_api_body(base: str, capfd: pytest.CaptureFixture[str]) -> None:
    assert await run(base, "--shock", "WETH=-0.3", "--json", "--limit", "2", "--cursor", "2") == 0
    body: dict[str, Any] = json.loads(capfd.readouterr().out)
    assert body["scenario"]["shocks"] == {"WETH": -0.3}
    assert body["scenario"]["cursor"] == "2"
    assert len(body["models"]["standard"]["accounts"]["items"]) == 2


async def test_errors(base: str, capfd: pytest.CaptureFixture[str]) -> None:
    assert await run(base, "--shock", "DOGE=-0.1") == 1
    err = capfd.readouterr().err
    assert "HTTP 404" in err and '"field": "shocks.DOGE"' in err
    assert await run(base, "--shock", "WETH") == cli.EXIT_CONFIG
    assert "--shock: expected ASSET=RELATIVE_CHANGE" in capfd.readouterr().err
    assert await run("http://127.0.0.1:9", "--vol", "1") == cli.EXIT_UNAVAILABLE
