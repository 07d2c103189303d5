"""The volatility used: predictive max(EWMA, forecast) and the [apc] tools, each with a
scalar reference, plus properties over random paths."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.config import ApcConfig
from aggregator.risk.apc import ApcState, LookbackStats, decide, explain_steps, lookback_stats

OFF = ApcConfig(lookback_floor=False)
STATS = LookbackStats(long_run=0.04, stressed=0.10, n_returns=1000)
DAY = 86400.0


def run(ewma: float, fc: float | None, cfg: ApcConfig, state: ApcState | None = None, now=0.0):
    return decide(ewma, fc, stats=STATS, state=state or ApcState(), now=now, cfg=cfg)


def test_predictive_is_the_larger_of_ewma_and_forecast() -> None:
    d = run(0.03, 0.05, OFF)
    assert (d.used, d.source, d.steps) == (0.05, "forecast", ())
    d = run(0.03, 0.02, OFF)
    assert (d.used, d.source) == (0.03, "ewma")
    assert run(0.03, None, OFF).used == 0.03  # fallback: EWMA


def test_stressed_weight_mixes_variances() -> None:
    d = run(0.03, None, ApcConfig(stressed_weight=0.25, lookback_floor=False))
    assert d.used == pytest.approx(math.sqrt(0.75 * 0.03**2 + 0.25 * 0.10**2))
    assert explain_steps(d)[0]["tool"] == "stressed_weight"


def test_lookback_floor() -> None:
    assert run(0.03, None, ApcConfig()).used == 0.04
    assert run(0.05, None, ApcConfig()).used == 0.05
    assert explain_steps(run(0.05, None, ApcConfig())) == []  # no effect, not shown


def test_buffer_applies_in_calm_and_is_released_in_stress() -> None:
    cfg = ApcConfig(buffer=0.25, lookback_floor=False)
    calm = run(0.04, None, cfg)
    assert calm.used == pytest.approx(0.05) and not calm.stress
    # Stress (0.07 > 1.5 * 0.04): the rise is absorbed by the buffer held in calm.
    s1 = run(0.055, 0.07, cfg, calm.state)
    assert s1.stress and s1.used == pytest.approx(0.07)
    s0 = run(0.061, None, cfg, calm.state)
    assert s0.stress and s0.used == pytest.approx(0.061)
    s2 = run(0.06, 0.061, cfg, ApcState(calm=0.08))
    assert s2.used == pytest.approx(0.08)  # never below the calm buffered level
    assert [x["tool"] for x in explain_steps(s2)] == ["buffer_release"]


def test_decrease_cap_bounds_falls_never_rises() -> None:
    cfg = ApcConfig(lookback_floor=False, max_daily_decrease=0.10)
    st0 = ApcState(used=0.10, at=0.0)
    assert run(0.05, None, cfg, st0, now=DAY).used == pytest.approx(0.09)
    assert run(0.05, None, cfg, st0, now=2 * DAY).used == pytest.approx(0.081)
    assert run(0.20, None, cfg, st0, now=DAY).used == 0.20  # a rise passes at once


def test_decrease_cap_period() -> None:
    hourly = ApcConfig(lookback_floor=False, max_daily_decrease=0.10, decrease_period_s=3600)
    st0 = ApcState(used=0.10, at=0.0)
    assert run(0.05, None, hourly, st0, now=2 * 3600).used == pytest.approx(0.081)
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="decrease_period_s"):
            ApcConfig(max_daily_decrease=0.1, decrease_period_s=bad)


def test_lookback_stats_reference() -> None:
    r = np.array([0.01, -0.01] * 30 + [0.05] * 30)
    s = lookback_stats(r, window=30)
    assert s is not None
    assert s.long_run == pytest.approx(math.sqrt((60 * 1e-4 + 30 * 25e-4) / 90))
    assert s.stressed == pytest.approx(0.05)
    assert lookback_stats(r[:20], window=30) is None


@settings(max_examples=200, deadline=None)
@given(
    path=st.lists(
        st.tuples(
            st.floats(0.001, 0.3), st.one_of(st.none(), st.floats(0.001, 0.3)), st.floats(1, 5e5)
        ),
        min_size=1,
        max_size=30,
    ),
    buffer=st.sampled_from([0.0, 0.25]),
    weight=st.sampled_from([0.0, 0.25]),
    floor=st.booleans(),
    cap=st.sampled_from([None, 0.05, 0.2]),
)
def test_used_never_below_predictive_and_falls_at_most_at_the_cap(
    path, buffer, weight, floor, cap
) -> None:
    cfg = ApcConfig(
        buffer=buffer, stressed_weight=weight, lookback_floor=floor, max_daily_decrease=cap
    )
    state, now, prev = ApcState(), 0.0, None
    for ewma, fc, dt in path:
        now += dt
        d = run(ewma, fc, cfg, state, now)
        assert d.used >= max(ewma, fc or 0.0) - 1e-15
        if cap is not None and prev is not None:
            assert d.used >= prev * (1 - cap) ** (dt / DAY) * (1 - 1e-12)
        state, prev = d.state, d.used
