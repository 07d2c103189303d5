"""Risk factors: alignment, hourly aggregation, LST de-peg factor, too little history."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aggregator.marketdata import history
from aggregator.marketdata.factors import InsufficientHistory, build_factors, factor_exposures
from aggregator.marketdata.loader import DAY, PriceSeries


def daily(start_day: int, closes: list[float]) -> PriceSeries:
    return PriceSeries("mem", "daily", start_day * DAY, {"close": np.array(closes)}, {})


def test_alignment_on_common_times_and_lst_factor() -> None:
    eth = daily(0, [100, 110, 99, 120, 118])
    lst = daily(1, [111, 100, 118, 119])  # starts a day later
    f = build_factors({"ETH": eth, "stETH": lst}, underlying={"stETH": "ETH"})
    assert f.names == ("ETH", "stETH/ETH")
    assert f.returns.shape == (3, 2)
    np.testing.assert_allclose(f.returns[:, 0], np.diff(np.log([110, 99, 120, 118])))
    rel = np.log(np.array([111, 100, 118, 119]) / np.array([110, 99, 120, 118]))
    np.testing.assert_allclose(f.returns[:, 1], np.diff(rel))
    # An LST's USD return is its underlying's plus its de-peg factor.
    np.testing.assert_allclose(f.returns @ f.loadings.T, f.asset_returns)
    np.testing.assert_allclose(factor_exposures(f, np.array([1.0, 2.0])), [3.0, 2.0])


def test_a_hole_drops_the_periods_it_touches() -> None:
    a = daily(0, [1, 2, np.nan, 4, 5])
    b = daily(0, [1, 1, 1, 1, 1])
    f = build_factors({"A": a, "B": b})
    np.testing.assert_allclose(f.returns[:, 0], np.log([2, 5 / 4]))
    assert (np.diff(f.times) == [3 * DAY]).all()


def test_hourly_aggregates_to_the_daily_close() -> None:
    s = history.load("eth_usd_hourly_2022-11.csv")
    f = build_factors({"ETH": s}, horizon_s=DAY)
    d = history.daily("ETH")
    closes = {int(t): c for t, c in zip(d.close_times(), d.close, strict=True)}
    # Yahoo's daily close is the 24:00 UTC price: the hourly 23:00 bar's close.
    t = f.times[5]
    hourly_close = s.close[(t - s.start) // 3600 - 1]
    assert abs(hourly_close / closes[int(t)] - 1) < 0.01
    assert f.returns.shape[0] == 912 // 24 - 1


def test_too_little_history_names_the_asset() -> None:
    eth = daily(0, list(np.linspace(100, 120, 30)))
    young = daily(27, [1.0, 1.01, 1.02])
    with pytest.raises(InsufficientHistory) as e:
        build_factors({"ETH": eth, "NEW": young}, min_returns=10)
    assert e.value.asset == "NEW" and e.value.needed == 10 and "NEW" in str(e.value)
    late = daily(40, [1.0, 2.0])
    with pytest.raises(InsufficientHistory, match="LATE"):
        build_factors({"ETH": eth, "LATE": late})


def test_horizon_must_fit_the_step(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiple"):
        build_factors({"ETH": daily(0, [1, 2, 3])}, horizon_s=3600)
