"""GET /v1/accounts/{address}/reputation (aggregator/api_reputation.py) over real HTTP,
with the body a real ReputationFeed builds from a store (SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from aggregator.reputation_feed import ReputationFeed
from aggregator.store import Store
from aggregator.store.chain_repo import SqlChainStore
from tests.unit.api.api_fakes import FakeBackend
from tests.unit.api.test_api_routes import get
from tests.unit.api.test_history_alert_routes import documented
from tests.unit.reputation.test_reputation_feed import A, Prices, Sink, commit, config, liquidation


async def test_disabled_is_404_naming_reputation_and_bad_address_400(
    client: TestClient[Any, Any],
) -> None:
    status, body = await get(client, f"/v1/accounts/{A}/reputation")
    assert (status, body["error"]["field"]) == (404, "reputation")
    status, body = await get(client, "/v1/accounts/0x12/reputation")
    assert (status, body["error"]["field"]) == (400, "address")


async def test_reputation_body_is_the_feeds_and_documented(
    client: TestClient[Any, Any], backend: FakeBackend, store: Store
) -> None:
    await commit(SqlChainStore(store), "beta", 10_010, [liquidation("beta", 9_990, A)])
    feed = ReputationFeed(config(), store, Sink(), Prices())
    await feed.run()
    backend.reputation_view = feed.view
    status, body = await get(client, f"/v1/accounts/{A}/reputation")
    assert status == 200 and documented("/v1/accounts/{address}/reputation", body)
    assert body["multiplier"] == pytest.approx(1.30, abs=2e-3)
    assert body["history"]["liquidations"][0]["chain"] == "beta"
    assert {f["name"] for f in body["factors"]} >= {"clean_days", "liquidations"}
    # A well-formed address never seen is neutral.
    status, body = await get(client, f"/v1/accounts/0x{'ab' * 20}/reputation")
    assert (status, body["multiplier"], body["history"]["first_seen"]) == (200, 1.0, None)
