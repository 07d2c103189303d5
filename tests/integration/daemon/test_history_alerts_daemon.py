"""The daemon with risk history and alerts on the devnet, on SQLite and PostgreSQL:
the `history` job fills /v1/history/* for the seeded accounts, the history survives a
restart of the daemon, and an alert rule reaches a real webhook receiver through the
daemon's own wiring (keeper balance facts from the pusher)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from daemon_helpers import aget, daemon_config, wait_ready, wait_until
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from aggregator.alerts.config import AlertsConfig, KeeperBalanceRule, WebhookConfig
from aggregator.config import AppConfig
from aggregator.daemon import Daemon
from aggregator.history.config import HistoryConfig
from aggregator.store import Store
from devkit.anvil import DEV_KEYS

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
async def hook() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    bodies: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        bodies.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/hook", bodies
    await runner.cleanup()


async def _schema(url: str, schema: str | None) -> None:
    if schema:
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        await engine.dispose()


async def test_history_fills_survives_restart_and_alerts_reach_a_webhook(
    devnet_cfg: AppConfig,
    store_url: tuple[str, str | None],
    hook: tuple[str, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGG_KEEPER_KEY", DEV_KEYS[1])  # the devnet keeper (public key)
    url, schema = store_url
    if not schema:
        url = url.replace("agg.db", f"hist-{uuid.uuid4().hex[:6]}.db")
    await _schema(url, schema)
    hook_url, bodies = hook
    cfg = daemon_config(devnet_cfg, url).model_copy(
        update={
            "history": HistoryConfig(interval_s=1.0),
            "alerts": AlertsConfig(
                interval_s=0.5,
                # Every keeper holds less than this: fires once per pushed chain.
                rules=[KeeperBalanceRule(name="keeper", min_eth=1e12, severity="critical")],
                webhooks=[WebhookConfig(name="test", url=hook_url)],
            ),
        }
    )

    d = Daemon(cfg, store=Store(url, pg_schema=schema))
    await asyncio.wait_for(d.start(), 90)
    try:
        await wait_ready(d)
        account = d.reader.accounts()[0]

        async def recorded() -> bool:
            status, body = await aget(d, f"/v1/history/accounts/{account}?resolution=60")
            return status == 200 and len(body["points"]) >= 1

        await wait_until(recorded, 60, "a history point of a seeded account")

        async def follows_the_ledger() -> bool:
            # The first price round may still lack an LST's rate sample (its holders
            # then rate insolvent for a round); the recorder writes the change on its
            # next run (history.interval_s).
            status, body = await aget(d, f"/v1/history/accounts/{account}")
            assert status == 200 and body["model"] == cfg.portfolio.mode
            health = (await aget(d, f"/v1/accounts/{account}/health"))[1]
            return bool(body["points"][-1]["tier"] == health["tier"])

        await wait_until(follows_the_ledger, 30, "the history's last point to match the ledger")
        body = (await aget(d, f"/v1/history/accounts/{account}"))[1]
        status, system = await aget(d, "/v1/history/system")
        assert status == 200 and system["points"]
        assert system["points"][-1]["total"]["accounts"] == len(d.reader.accounts())

        assert d.push.chains()

        async def alerted() -> bool:
            return len(bodies) >= len(d.push.chains())

        await wait_until(alerted, 60, "keeper alerts at the webhook")
        assert {b["kind"] for b in bodies} == {"keeper_balance"}
        assert {b["subject"] for b in bodies} == set(d.push.chains())
        assert all(b["status"] == "firing" for b in bodies)
        status, alerts = await aget(d, "/v1/alerts")
        assert status == 200
        assert {a["key"] for a in alerts["active"]} == {f"keeper:{c}" for c in d.push.chains()}
        assert alerts["webhooks"][0]["state"] == "ok"
        first_t = body["points"][0]["t"]
    finally:
        await d.stop()

    # Restart on the same store: the recorded points are still there.
    d = Daemon(cfg, store=Store(url, pg_schema=schema))
    await asyncio.wait_for(d.start(), 90)
    try:
        status, body = await aget(d, f"/v1/history/accounts/{account}")
        assert status == 200
        assert body["points"] and body["points"][0]["t"] == first_t
    finally:
        await d.stop()
