"""Compressed market time, told to the daemon through the replay's generated config.

A replay runs `hours_per_step` market hours in `step_s` wall seconds: compression
C = hours_per_step * 3600 / step_s. The daemon is not modified and measures time with
its wall clock, so every setting it reads as a duration of *market* time is rescaled
in the config the replay generates (`overrides`):

- EWMA: the estimator decays by `ewma_lambda ** dt` with dt in (wall) days, and a
  return r over dt days carries variance r**2 / dt. With dt_wall = dt_market / C the
  same weights come out of lambda_wall = lambda ** C, and the variance it reports per
  wall day is C times the market one; so the horizon becomes `horizon_days / C` (then
  z * sigma * sqrt(h) is unchanged), the prior sigma is multiplied by sqrt(C) and the
  shortest sampling interval divided by C. lambda ** C must be a positive double:
  C <= ~12,000 (3.3 market hours per wall second) at lambda 0.94; a faster replay of a
  model that uses the EWMA is an error naming the options, not a silent distortion.
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
# Market hours per step: one, as the replay's design asks, except for the 92-day
# 2022-06 episode (2209 h), at 3 h per step to replay in about 14 minutes. The compression
# also scales the pipeline's fixed latency: a price reaches a liquidation 3-4 blocks
# after it is set (feed mined, oracle read, push mined, liquidation mined), which is
# 3-4 market hours at 1 h per block and 9-12 at 3 h (docs/replay.md "Timing").
# `--hours-per-block N` overrides it (C = N * 3,600 at 1-s blocks).
DEFAULT_HOURS_PER_STEP = {"2022-06": 3}
# Smallest lambda ** C we accept: below ~1e-300 the double loses precision, and at
# 0 the estimator forgets everything at once.
MIN_LAMBDA = 1e-300
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


def ewma_lambda(market_lambda: float, factor: float) -> float | None:
    """lambda ** factor, or None when it is not a usable double."""
    log = factor * math.log(market_lambda)
    return None if log < math.log(MIN_LAMBDA) else math.exp(log)


def overrides(data: dict[str, Any], scale: TimeScale, *, uses_ewma: bool = True) -> dict[str, Any]:
    """The config dict (AppConfig.model_dump()) with market durations rescaled.

    `uses_ewma` False (a model whose margin does not read the EWMA: portfolio, var on
    a book without options) allows a compression beyond the EWMA's limit; the EWMA
    is then set to its fastest usable decay and is reported as not faithful."""
    c = scale.factor
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    risk, oracle, sch, apc = out["risk"], out["oracle"], out["scheduler"], out["apc"]
    rep = out["reputation"]
    lam = ewma_lambda(float(risk["ewma_lambda"]), c)
    if lam is None:
        if uses_ewma:
            raise TimeScaleError(
                f"{scale.hours_per_step} market hours per {scale.step_s:g} s block is a "
                f"compression of {c:,.0f}: the EWMA's lambda {risk['ewma_lambda']} ** {c:,.0f} "
                "underflows. Lower --hours-per-block or raise --block-interval "
                f"(at most {math.log(MIN_LAMBDA) / math.log(float(risk['ewma_lambda'])):,.0f} "
                "market seconds per wall second)"
            )
        lam = MIN_LAMBDA
    risk["ewma_lambda"] = lam
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
