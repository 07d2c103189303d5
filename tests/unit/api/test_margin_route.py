"""GET /v1/accounts/{a}/margin when the scenario models lack a price: a 503 naming the
assets, never a 500 (CI once met it while a test devnet's LST feeds were unreachable)."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from aggregator.api import Api
from aggregator.api_views import AccountViews, LedgerReader
from aggregator.risk.portfolio import MissingMarketData
from bench.risk_engine import build_engine, set_market, synth_rows

USER = "0x" + "ab" * 20


def no_lst_prices(_address: str) -> dict[str, Any] | None:
    raise MissingMarketData("no price for asset(s) wstETH, rETH")


class Backend:
    def __init__(self) -> None:
        eng = build_engine()
        eng.load_positions(synth_rows(10, seed=1))
        set_market(eng)
        eng.recompute()
        views = AccountViews(
            LedgerReader(eng),
            prices_ready=lambda: True,
            decimals={},
            indexers={},
            onchain=lambda _address: None,
            margin=no_lst_prices,
        )
        self.account_margin = views.account_margin


async def test_missing_model_prices_are_a_503_naming_the_assets() -> None:
    api = Api(Backend())  # type: ignore[arg-type]
    async with TestClient(TestServer(api.app)) as client:
        resp = await client.get(f"/v1/accounts/{USER}/margin")
        body = await resp.json()
    assert resp.status == 503, body
    assert body["error"]["field"] == "prices"
    assert "wstETH, rETH" in body["error"]["message"]
