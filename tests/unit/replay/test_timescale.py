"""The replay's generated config runs the daemon's EWMA in market time: fed the
compressed wall-clock rounds, the unmodified estimator gives the haircut's vol term of
the same estimator fed the market-time rounds (an independent run, not the formula)."""

from __future__ import annotations

import math
import random

import pytest

from devkit.replay import timescale
from devkit.replay.timescale import TimeScale, TimeScaleError
from oracles.volatility import EwmaEstimator, VolatilitySettings

BASE = {
    "risk": {"ewma_lambda": 0.94, "horizon_days": 1.0, "z": 2.33},
    "oracle": {"vol_prior_daily": 0.05, "vol_min_interval_s": 300.0, "refresh_s": 3.0},
    "scheduler": {"oracle_interval_s": 3.0, "lst_interval_s": 10.0},
    "pusher": {"interval_s": 3},
}


def _vol_terms(
    settings: VolatilitySettings, h: float, times: list[float], prices: list[float]
) -> list[float]:
    est = EwmaEstimator(["WETH"], settings)
    out = []
    for t, p in zip(times, prices, strict=True):
        est.update(t, {"WETH": p})
        out.append(est.volatility("WETH") * math.sqrt(h))
    return out


@pytest.mark.parametrize(("hours", "step_s"), [(1, 1.0), (3, 1.0), (2, 1.5)])
def test_compressed_ewma_equals_market_time_ewma(hours: int, step_s: float) -> None:
    scale = TimeScale(hours, step_s)
    cfg = timescale.overrides(BASE, scale)
    rng = random.Random(5)
    prices = [2000.0]
    for _ in range(400):
        prices.append(prices[-1] * math.exp(rng.gauss(0, 0.03 * math.sqrt(hours / 24))))
    market = [1.6e9 + i * hours * 3600.0 for i in range(len(prices))]
    wall = [1.8e9 + i * step_s for i in range(len(prices))]
    native = _vol_terms(VolatilitySettings(0.94, 0.05, 300.0), 1.0, market, prices)
    o = cfg["oracle"]
    replayed = _vol_terms(
        VolatilitySettings(
            cfg["risk"]["ewma_lambda"], o["vol_prior_daily"], o["vol_min_interval_s"]
        ),
        cfg["risk"]["horizon_days"],
        wall,
        prices,
    )
    assert replayed == pytest.approx(native, rel=1e-6)


def test_overrides_touch_only_market_durations() -> None:
    cfg = timescale.overrides(BASE, TimeScale(3, 1.0))
    assert cfg["scheduler"]["oracle_interval_s"] == 1.0
    assert cfg["pusher"] == BASE["pusher"]  # chain-side durations stay in wall time
    assert cfg["risk"]["z"] == 2.33
    assert BASE["risk"]["ewma_lambda"] == 0.94  # the input is not modified


def test_a_compression_the_ewma_cannot_express_is_an_error() -> None:
    with pytest.raises(TimeScaleError, match="Lower --hours-per-block"):
        timescale.overrides(BASE, TimeScale(8, 1.0))
    # A model that does not read the EWMA may run faster; the EWMA is then clamped.
    cfg = timescale.overrides(BASE, TimeScale(8, 1.0), uses_ewma=False)
    assert cfg["risk"]["ewma_lambda"] == timescale.MIN_LAMBDA


def test_bad_scale() -> None:
    with pytest.raises(TimeScaleError, match="hours per block"):
        TimeScale(0, 1.0)
    with pytest.raises(TimeScaleError, match="block interval"):
        TimeScale(1, 0.0)
    assert TimeScale(3, 1.0).factor == 10_800
