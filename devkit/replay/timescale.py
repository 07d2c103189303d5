"""Compressed market time, told to the daemon through the replay's generated config.

A replay runs `hours_per_step` market hours in `step_s` wall seconds: compression
C = hours_per_step * 3600 / step_s. The daemon is not modified and measures time with
its wall clock, so every setting it reads as a duration of *market* time is rescaled
in the config the replay generates (`overrides`):

- EWMA: the estimator decays by `ewma_lambda` per `[risk] ewma_period_s` (one day),
  and a return r over dt (wall) days carries variance r**2 / dt. The period becomes one
  market day in wall seconds, 86400 / C, so the same weights come out at compressed
  timestamps; the variance it reports per wall day is C times the market one, so the
  horizon becomes `horizon_days / C` (then z * sigma * sqrt(h) is unchanged), the prior
  sigma is multiplied by sqrt(C) and the shortest sampling interval divided by C. (Until
  2026-12-07 the replay raised lambda to the power C instead, which underflows beyond
  C ~ 11,000: 3 market hours per wall second was the fastest replay.)
- The `[apc]` decrease cap bounds sigma's fall to a fraction per `decrease_period_s`
  (one market day): the period becomes `decrease_period_s / C`, so the capped path
  over a compressed step equals the market-time one.
- `[reputation]` counts its probation, reward and penalty half-life in days of
  `day_s` seconds: `day_s` becomes 86400 / C (one market day); its job rescores every
  step (`interval_s` = step_s, at most its configured period).
- The oracle reads every step (`[scheduler] oracle_interval_s` = step_s); the LST rate
  job likewise. The pusher, heartbeat, vault max age and confirmations stay in wall
  time: they are about the chain, which runs in wall time too.

Invariants: pure (numbers and a config dict in, a dict out); `overrides` never
changes a key that is not a duration of market time or the oracle cadence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

HOUR_S = 3600.0
# Market hours per step by default: one, as the replay's design asks, unless the
# episode has more than DEFAULT_MAX_STEPS hours; then the fewest that keep it within
# that many steps (about 8 minutes at 0.5-s blocks): 3 for the 92-day 2022-06 episode
# (2209 h), 1 for the other shipped ones, and the same rule for a date range. The
# compression also scales the pipeline's fixed latency: a price reaches a liquidation
# 3-4 blocks after it is set (feed mined, oracle read, push mined, liquidation mined),
# which is 3-4 market hours at 1 h per block and 9-12 at 3 h (docs/replay.md
# "Timing"). `--hours-per-block N` overrides it (C = N * 7,200 at 0.5-s blocks).
DEFAULT_MAX_STEPS = 1000


def default_hours_per_step(episode_hours: int) -> int:
    return max(1, math.ceil(episode_hours / DEFAULT_MAX_STEPS))


# Market-time durations of the predictive model's warm-up (see warmup.py).
EWMA_SAMPLE_MARKET_S = 300.0


class TimeScaleError(ValueError):
    pass


@dataclass(frozen=True)
class TimeScale:
    hours_per_step: int
    step_s: float

    def __post_init__(self) -> None:
        if self.hours_per_step < 1:
            raise TimeScaleError(f"hours per block must be >= 1, got {self.hours_per_step}")
        if not self.step_s > 0:
            raise TimeScaleError(f"block interval must be > 0 s, got {self.step_s}")

    @property
    def factor(self) -> float:
        """Market seconds per wall second."""
        return self.hours_per_step * HOUR_S / self.step_s

    def wall_s(self, market_s: float) -> float:
        return market_s / self.factor


def overrides(data: dict[str, Any], scale: TimeScale) -> dict[str, Any]:
    """The config dict (AppConfig.model_dump()) with market durations rescaled."""
    c = scale.factor
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    risk, oracle, sch, apc = out["risk"], out["oracle"], out["scheduler"], out["apc"]
    rep = out["reputation"]
    risk["ewma_period_s"] = scale.wall_s(float(risk["ewma_period_s"]))
    risk["horizon_days"] = float(risk["horizon_days"]) / c
    apc["decrease_period_s"] = scale.wall_s(float(apc["decrease_period_s"]))
    rep["day_s"] = scale.wall_s(float(rep["day_s"]))
    rep["interval_s"] = min(float(rep["interval_s"]), scale.step_s)
    oracle["vol_prior_daily"] = float(oracle["vol_prior_daily"]) * math.sqrt(c)
    oracle["vol_min_interval_s"] = scale.wall_s(EWMA_SAMPLE_MARKET_S)
    oracle["refresh_s"] = min(float(oracle["refresh_s"]), scale.step_s)
    sch["oracle_interval_s"] = scale.step_s
    sch["lst_interval_s"] = scale.step_s
    return out
