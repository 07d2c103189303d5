"""GET /v1/liquidity (aggregator/api_liquidity.py) over real HTTP."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.unit.api.api_fakes import FakeBackend
from tests.unit.api.test_api_routes import get


async def test_liquidity_report_and_503_before_prices(
    client: TestClient[Any, Any], backend: FakeBackend
) -> None:
    backend.liquidity_data = {"slippages": [0.01, 0.02, 0.05],
                              "assets": {"WETH": {"chains": {}, "fallback": None}}}  # fmt: skip
    assert await get(client, "/v1/liquidity") == (200, backend.liquidity_data)
    backend.liquidity_data = None
    status, body = await get(client, "/v1/liquidity")
    assert status == 503 and "no price round yet" in body["error"]["message"]
