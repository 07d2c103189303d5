"""The replay's generated config runs the daemon's EWMA in market time: fed the
compressed wall-clock rounds, the unmodified estimator gives the haircut's vol term of
the same estimator fed the market-time rounds (an independent run, not the formula)."""

from __future__ import annotations

import math
import random

import pytest

from aggregator.config import ApcConfig
from aggregator.risk.apc import ApcState, decide
from aggregator.risk.reputation import History, Liquidation, Params, score
from devkit.replay import timescale
from devkit.replay.timescale import TimeScale, TimeScaleError
from oracles.volatility import EwmaEstimator, VolatilitySettings

BASE = {
    "risk": {"ewma_lambda": 0.94, "ewma_period_s": 86400.0, "horizon_days": 1.0, "z": 2.33},
    "oracle": {"vol_prior_daily": 0.05, "vol_min_interval_s": 300.0, "refresh_s": 3.0},
    "scheduler": {"oracle_interval_s": 3.0, "lst_interval_s": 10.0},
    "pusher": {"interval_s": 3},
    "apc": {"max_daily_decrease": 0.05, "decrease_period_s": 86400.0},
    "reputation": {"interval_s": 300.0, "day_s": 86400.0},
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


# (8, 1.0) and (3, 0.5): compressions of 28,800 and 21,600, beyond the ~11,000 that
# lambda ** C could express (what the replay did before the decay period).
@pytest.mark.parametrize(
    ("hours", "step_s"), [(1, 1.0), (3, 1.0), (2, 1.5), (1, 0.5), (3, 0.5), (8, 1.0)]
)
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
            cfg["risk"]["ewma_lambda"],
            o["vol_prior_daily"],
            o["vol_min_interval_s"],
            cfg["risk"]["ewma_period_s"],
        ),
        cfg["risk"]["horizon_days"],
        wall,
        prices,
    )
    assert replayed == pytest.approx(native, rel=1e-6)


def _capped_vol_terms(
    settings: VolatilitySettings, apc: ApcConfig, h: float, times: list[float], prices: list[float]
) -> tuple[list[float], int]:
    """The vol term after the decrease cap at every round, and how many rounds it bound."""
    est = EwmaEstimator(["WETH"], settings)
    state, out, bound = ApcState(), [], 0
    for t, p in zip(times, prices, strict=True):
        est.update(t, {"WETH": p})
        d = decide(est.volatility("WETH"), None, stats=None, state=state, now=t, cfg=apc)
        state = d.state
        bound += d.used > d.predictive
        out.append(d.used * math.sqrt(h))
    return out, bound


@pytest.mark.parametrize(("hours", "step_s"), [(1, 1.0), (3, 1.0), (2, 1.5), (3, 0.5)])
def test_compressed_decrease_cap_equals_market_time_cap(hours: int, step_s: float) -> None:
    scale = TimeScale(hours, step_s)
    cfg = timescale.overrides(BASE, scale)
    assert cfg["apc"]["decrease_period_s"] == pytest.approx(86400.0 / scale.factor)
    rng = random.Random(11)
    prices = [2000.0]
    # A crash (10% hourly moves for two days) then calm: the EWMA's sigma falls ~3% a
    # day afterwards (lambda 0.94), faster than a 1% cap, so the cap binds.
    for i in range(600):
        sd = 0.10 if i < 48 // hours else 0.002
        prices.append(prices[-1] * math.exp(rng.gauss(0, sd * math.sqrt(hours))))
    market = [1.6e9 + i * hours * 3600.0 for i in range(len(prices))]
    wall = [1.8e9 + i * step_s for i in range(len(prices))]
    shipped = ApcConfig(lookback_floor=False, max_daily_decrease=0.01)
    native, bound = _capped_vol_terms(
        VolatilitySettings(0.94, 0.05, 300.0), shipped, 1.0, market, prices
    )
    assert bound > len(prices) // 2
    o = cfg["oracle"]
    replay_settings = VolatilitySettings(
        cfg["risk"]["ewma_lambda"],
        o["vol_prior_daily"],
        o["vol_min_interval_s"],
        cfg["risk"]["ewma_period_s"],
    )
    replay_apc = ApcConfig(
        lookback_floor=False, max_daily_decrease=0.01,
        decrease_period_s=cfg["apc"]["decrease_period_s"],
    )  # fmt: skip
    h = cfg["risk"]["horizon_days"]
    replayed, _ = _capped_vol_terms(replay_settings, replay_apc, h, wall, prices)
    assert replayed == pytest.approx(native, rel=1e-6)
    # A wall-day period (what the replay ran before) holds margin up long after.
    unscaled, _ = _capped_vol_terms(replay_settings, shipped, h, wall, prices)
    assert unscaled[-1] > 1.1 * native[-1]


def test_overrides_touch_only_market_durations() -> None:
    cfg = timescale.overrides(BASE, TimeScale(3, 1.0))
    assert cfg["scheduler"]["oracle_interval_s"] == 1.0
    assert cfg["pusher"] == BASE["pusher"]  # chain-side durations stay in wall time
    assert cfg["risk"]["z"] == 2.33
    assert BASE["risk"]["ewma_lambda"] == 0.94  # the input is not modified


def test_the_ewma_keeps_its_lambda_and_decays_over_a_market_day() -> None:
    cfg = timescale.overrides(BASE, TimeScale(3, 0.5))
    assert cfg["risk"]["ewma_lambda"] == 0.94
    assert cfg["risk"]["ewma_period_s"] == pytest.approx(86400.0 / 21_600)


def test_bad_scale() -> None:
    with pytest.raises(TimeScaleError, match="hours per block"):
        TimeScale(0, 1.0)
    with pytest.raises(TimeScaleError, match="block interval"):
        TimeScale(1, 0.0)
    assert TimeScale(3, 1.0).factor == 10_800


def test_compressed_reputation_equals_market_time_reputation() -> None:
    """An account first seen 100 market days before a liquidation, scored over the
    following market days: the same multipliers at market time with shipped settings
    and at compressed wall time with the replay's day_s."""
    scale = TimeScale(3, 1.0)
    cfg = timescale.overrides(BASE, scale)
    day = 86400.0

    def path(t0: float, d: float, p: Params) -> list[float]:
        h = History(first_seen=t0, liquidations=(Liquidation(t0 + 100 * d, "alpha", 5e3),))
        return [score("0xa", h, p, t0 + k * d).multiplier for k in range(0, 400, 7)]

    native = path(1.6e9, day, Params())
    replayed = path(1.8e9, cfg["reputation"]["day_s"], Params(day_s=cfg["reputation"]["day_s"]))
    assert replayed == pytest.approx(native, rel=1e-9)
    assert min(native) < 1.0 < max(native)  # both the reward and the penalty show
    assert cfg["reputation"]["interval_s"] == scale.step_s


@pytest.mark.parametrize(
    ("episode", "hours_per_step"),
    [
        ("2020-03", 1),  # 745 h
        ("2022-06", 3),  # 2209 h
        ("2022-11", 1),
        ("2023-03", 1),
        ("2021-05-12..2021-05-26", 1),
        ("2021-01-01..2021-02-12", 2),  # 1009 h: just past 1,000 steps
        ("2021-01-01..2021-06-01", 4),  # 3625 h
    ],
)
def test_the_default_hours_per_step_keep_an_episode_within_1000_steps(
    episode: str, hours_per_step: int
) -> None:
    from aggregator.replay import ReplayOptions
    from devkit.replay import episodes

    scale = ReplayOptions(episode).scale()
    assert scale.hours_per_step == hours_per_step
    n = episodes.spec_for(episode).hours()
    assert math.ceil(n / hours_per_step) <= timescale.DEFAULT_MAX_STEPS
    assert hours_per_step == 1 or math.ceil(n / (hours_per_step - 1)) > timescale.DEFAULT_MAX_STEPS
    assert ReplayOptions(episode, hours_per_block=5).scale().hours_per_step == 5
