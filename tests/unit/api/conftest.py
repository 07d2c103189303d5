"""A real aiohttp server on loopback over aggregator.api.Api and an in-test backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient, TestServer

from aggregator.api import Api
from tests.unit.api.api_fakes import FakeBackend


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def api(backend: FakeBackend) -> Api:
    # Short keepalive so a disconnect is noticed within a test's patience.
    return Api(backend, sse_keepalive_s=0.05)


@pytest.fixture
async def client(api: Api) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(api.app, host="127.0.0.1")) as c:
        yield c


@pytest.fixture(params=["TestServer", "Api.start"])
async def stream_client(request: pytest.FixtureRequest, api: Api) -> AsyncIterator[Any]:
    """An HTTP client for stream tests, over aiohttp's TestServer and over the runner that
    Api.start() builds for production. They differ where it matters for streams: the
    TestServer cancels a handler when its client disconnects, Api.start()'s runner does
    not, so only the keepalive can notice the disconnect there."""
    if request.param == "TestServer":
        async with TestClient(TestServer(api.app, host="127.0.0.1")) as c:
            yield c
        return
    port = await api.start("127.0.0.1", 0)
    try:
        async with ClientSession(base_url=f"http://127.0.0.1:{port}") as session:
            yield session
    finally:
        await api.stop()
