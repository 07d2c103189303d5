"""POST /v1/admin/pause and /resume: bearer token from AGG_ADMIN_TOKEN, else disabled."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from aggregator.api import Api
from aggregator.openapi import OPENAPI
from tests.unit.api.api_fakes import FakeBackend

TOKEN = "t0ken-with-some-length"


class PausableBackend(FakeBackend):
    def __init__(self) -> None:
        super().__init__()
        self.paused = False

    def set_push_paused(self, paused: bool) -> dict[str, Any]:
        self.paused = paused
        return {"paused": paused, "enabled": True}


@pytest.fixture
def backend() -> PausableBackend:
    return PausableBackend()


@pytest.fixture
async def client(backend: PausableBackend) -> AsyncIterator[TestClient[Any, Any]]:
    api = Api(backend)
    api.admin_token = TOKEN
    async with TestClient(TestServer(api.app, host="127.0.0.1")) as c:
        yield c


async def test_pause_and_resume_with_the_token(
    client: TestClient[Any, Any], backend: PausableBackend
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    resp = await client.post("/v1/admin/pause", headers=auth)
    assert resp.status == 200 and (await resp.json())["paused"] is True
    assert backend.paused
    resp = await client.post("/v1/admin/resume", headers=auth)
    assert resp.status == 200 and (await resp.json())["paused"] is False
    assert not backend.paused


@pytest.mark.parametrize(
    "header",
    [None, "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer", f"bearer{TOKEN}"],
)
async def test_missing_or_wrong_token_is_401_and_changes_nothing(
    client: TestClient[Any, Any], backend: PausableBackend, header: str | None
) -> None:
    headers = {} if header is None else {"Authorization": header}
    resp = await client.post("/v1/admin/pause", headers=headers)
    body = await resp.json()
    assert resp.status == 401 and body["error"]["field"] == "authorization"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert TOKEN not in await resp.text()
    assert not backend.paused


async def test_without_a_configured_token_admin_is_disabled(backend: PausableBackend) -> None:
    api = Api(backend)  # admin_token None: AGG_ADMIN_TOKEN not set
    async with TestClient(TestServer(api.app, host="127.0.0.1")) as c:
        resp = await c.post("/v1/admin/pause", headers={"Authorization": "Bearer anything"})
        body = await resp.json()
    assert resp.status == 403
    assert "AGG_ADMIN_TOKEN" in body["error"]["message"]
    assert not backend.paused


async def test_get_is_405_and_admin_routes_are_documented(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/v1/admin/pause")
    assert resp.status == 405
    for path in ("/v1/admin/pause", "/v1/admin/resume"):
        op = OPENAPI["paths"][path]["post"]
        assert {"200", "401", "403"} <= set(op["responses"])
        assert op["security"] == [{"adminBearer": []}]
