"""The VaR calibration job (aggregator/var_feed.py): the daemon's price rounds sampled
to daily closes, the shipped history as fallback and stressed period, and an asset with
too little history in both sources stopping the start with its name."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aggregator.config import AppConfig
from aggregator.startup import StartupError
from aggregator.var_feed import VarFeed, build_calibration, daily_series
from oracles.protocols import PricePoint

DAY = 86400


def config(**var: object) -> AppConfig:
    return AppConfig(
        chains=[{"name": "alpha", "chain_id": 1, "rpc_urls": ["http://127.0.0.1:1"],
                 "contracts": {"vault": f"0x{1:040x}"}}],
        assets=[
            {"symbol": "USDC", "decimals": 6, "ltv": 0.85, "lt": 0.88},
            {"symbol": "WETH", "decimals": 18, "ltv": 0.8, "lt": 0.825},
        ],
        portfolio={"mode": "var"},
        var=var,
    )  # type: ignore[arg-type]  # fmt: skip


def test_daily_series_takes_each_days_last_price_and_leaves_holes() -> None:
    pts = [PricePoint("WETH", 100.0, 10 * DAY + 5), PricePoint("WETH", 101.0, 10 * DAY + 600),
           PricePoint("WETH", 103.0, 12 * DAY + 1)]  # fmt: skip
    s = daily_series(pts, ["WETH", "USDC"], now=13 * DAY + 7)["WETH"]
    assert s.start == 10 * DAY and s.step == DAY
    assert s.close[0] == 101.0 and math.isnan(s.close[1]) and s.close[2] == 103.0
    assert np.isnan(daily_series(pts, ["USDC"], 13 * DAY)["USDC"].close).all()


def test_short_daemon_history_falls_back_to_the_shipped_history() -> None:
    pts = [PricePoint(a, p, 1.7e9 + d * DAY) for d in range(30) for a, p in
           (("USDC", 1.0), ("WETH", 3000.0 + d))]  # fmt: skip
    cal = build_calibration(config(), pts, 1.7e9 + 31 * DAY)
    assert cal.source == "shipped" and cal.stressed_source == "shipped"
    assert cal.assets == ("USDC", "WETH") and cal.scenarios.shape == (500, 2)
    assert cal.stressed is not None and cal.stressed.shape == (250, 2)
    assert cal.vol[1] > 0.01 and np.all(np.linalg.eigvalsh(cal.cov) >= -1e-12)


async def test_an_asset_without_history_stops_the_start_naming_it() -> None:
    class NoPrices:
        async def ok_prices_since(self, since: float) -> list[PricePoint]:
            return []

    feed = VarFeed(config(history={"USDC": "USDC"}), NoPrices())
    with pytest.raises(StartupError, match=r"asset 'WETH'.*\[var\] history"):
        await feed.start()
    assert feed.calibration is None
