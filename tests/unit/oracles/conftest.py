"""Fixtures for oracle unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from oracle_http_server import HostileApi


@pytest.fixture
async def api() -> AsyncIterator[HostileApi]:
    hostile = HostileApi()
    app = web.Application()
    app.router.add_get("/{name}", hostile.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    hostile.base = f"http://127.0.0.1:{port}"
    yield hostile
    await runner.cleanup()
