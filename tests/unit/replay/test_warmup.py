"""The price history a replayed daemon starts with: only days before the episode, the
EWMA tail ends at the episode's first prices, the forecast history's returns are the
real daily returns times sqrt(C) (GARCH on them forecasts sqrt(C) times the real
forecast: the unit of the compressed EWMA)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from devkit.replay import episodes, warmup
from oracles.forecast import ForecastSettings, fit_forecast

RATES = {"wstETH": 1.18, "rETH": 1.10}
C = 10_800.0


@pytest.fixture(scope="module")
def june() -> episodes.EpisodePath:
    return episodes.build("2022-06", RATES)


def _series(rows: list, asset: str) -> tuple[np.ndarray, np.ndarray]:
    mine = sorted((r.at, r.value) for r in rows if r.asset == asset)
    return np.array([t for t, _ in mine]), np.array([v for _, v in mine])


def test_no_day_after_the_episode_start(june: episodes.EpisodePath) -> None:
    grid, closes = warmup.daily_before(june, 400)
    assert grid[-1] <= june.times[0]
    assert len(grid) == len(closes["WETH"]) > 390
    np.testing.assert_allclose(closes["rETH"], closes["WETH"] * 1.10)


def test_tail_ends_at_the_first_prices_one_compressed_day_apart(
    june: episodes.EpisodePath,
) -> None:
    now = 2.0e9
    rows = warmup.tail(june, C, now)
    for asset, p in june.at(0).items():
        t, v = _series(rows, asset)
        assert t[-1] == now and v[-1] == p
        assert np.diff(t)[:-1] == pytest.approx(86400 / C)
    assert len(set(warmup.by_asset(rows).values())) == 1  # joint rounds for the EWMA pairs


def test_forecast_history_scales_returns_and_the_forecast(june: episodes.EpisodePath) -> None:
    today = 2.0e9 // 86400 * 86400
    rows = warmup.forecast_history(june, C, today)
    t, scaled = _series(rows, "WETH")
    assert t[-1] < today and np.all(np.diff(t) == 86400)  # one close per wall day
    _, real = warmup.daily_before(june, warmup.FORECAST_DAYS)
    r_real = np.diff(np.log(real["WETH"]))
    r_scaled = np.diff(np.log(scaled))
    np.testing.assert_allclose(r_scaled, math.sqrt(C) * r_real, rtol=1e-9, atol=1e-9)
    first = june.at(0)["WETH"]
    assert scaled[-1] == pytest.approx(first * (real["WETH"][-1] / first) ** math.sqrt(C))
    s = ForecastSettings(horizon_days=1.0)
    plain, big = fit_forecast(r_real, s), fit_forecast(r_scaled, s)
    assert plain.sigma is not None and big.sigma is not None
    # Equal in theory (GARCH is scale-equivariant); the optimiser, started on numbers
    # 100 times larger, stops within a few percent of it.
    assert big.sigma == pytest.approx(math.sqrt(C) * plain.sigma, rel=0.05)


def test_implied_vol_is_the_realised_vol_before_the_episode(
    june: episodes.EpisodePath,
) -> None:
    iv = warmup.implied_vol(june)
    times, closes = warmup.daily_before(june, warmup.IMPLIED_VOL_DAYS + 1)
    assert times[-1] <= june.times[0]
    assert set(iv) == set(warmup.IMPLIED_VOL_ASSETS)
    for asset in warmup.IMPLIED_VOL_ASSETS:
        c = [float(x) for x in closes[asset]]
        r = [math.log(c[i] / c[i - 1]) for i in range(1, len(c))]
        mean = sum(r) / len(r)
        sd = math.sqrt(sum((x - mean) ** 2 for x in r) / (len(r) - 1))
        assert len(r) == warmup.IMPLIED_VOL_DAYS
        assert iv[asset] == pytest.approx(sd * math.sqrt(365), abs=1e-4)
        # Market units: an annual crypto vol, not the compressed EWMA's sqrt(C) times it.
        assert 0.2 < iv[asset] < 2.0
