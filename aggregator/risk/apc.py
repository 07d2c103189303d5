"""The volatility the standard model's haircut uses: predictive max(EWMA, forecast),
then the anti-procyclicality tools of EMIR RTS 153/2013 Art. 28 and a steward-style
cap on how fast margin may fall (docs/risk.md "Volatility used").

Invariants:
- Pure: numbers and the previous `ApcState` in, a `VolDecision` (with the next state)
  out; no clock, no I/O. The ledger calls it once per price refresh per asset.
- Predictive: used >= EWMA always; the forecast only raises it (max(EWMA, forecast)).
- Order of the tools (each optional, each recorded in `steps` with its effect):
  stressed weight -> lookback floor -> buffer (released in stress) -> decrease cap.
  None of them lowers the volatility below the predictive one except the buffer's
  release, which never goes below the predictive value itself.
- The speed cap bounds *decreases* only: margin must rise at once in a crash (a cap on
  rises would leave positions under-margined exactly when it matters). It bounds the
  fall of sigma (hence of the vol term z*sigma*sqrt(h)) to a fraction per
  `decrease_period_s` (one day by default), compounded over elapsed time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from aggregator.config import ApcConfig

F64 = NDArray[np.float64]


@dataclass(frozen=True)
class LookbackStats:
    """Daily sigmas over the whole lookback: the long-run level (root mean square of
    every return) and the stressed level (the worst `window`-day root mean square)."""

    long_run: float
    stressed: float
    n_returns: int


def lookback_stats(returns: F64, window: int = 30, min_returns: int = 60) -> LookbackStats | None:
    """None when the lookback holds fewer than `min_returns` returns."""
    r = np.asarray(returns, np.float64)
    r = r[np.isfinite(r)]
    if len(r) < max(min_returns, window):
        return None
    sq = r * r
    csum = np.concatenate(([0.0], np.cumsum(sq)))
    rolling = (csum[window:] - csum[:-window]) / window
    return LookbackStats(
        float(math.sqrt(sq.mean())), float(math.sqrt(max(rolling.max(), 0.0))), len(r)
    )


@dataclass(frozen=True)
class ApcState:
    used: float | None = None  # last volatility used
    at: float | None = None  # when (unix seconds)
    calm: float | None = None  # last buffered volatility set in calm (what stress may eat)


@dataclass(frozen=True)
class Step:
    tool: str  # "stressed_weight", "lookback_floor", "buffer", "buffer_release", "decrease_cap"
    before: float
    after: float


@dataclass(frozen=True)
class VolDecision:
    ewma: float
    forecast: float | None
    predictive: float  # max(ewma, forecast)
    used: float  # after the APC tools
    source: str  # "forecast" or "ewma": which one the predictive value is
    stress: bool
    steps: tuple[Step, ...] = ()
    state: ApcState = field(default_factory=ApcState)


def predictive(ewma: float, forecast: float | None) -> tuple[float, str]:
    if forecast is not None and forecast > ewma:
        return forecast, "forecast"
    return ewma, "ewma"


def decide(
    ewma: float,
    forecast: float | None,
    *,
    stats: LookbackStats | None,
    state: ApcState,
    now: float,
    cfg: ApcConfig,
) -> VolDecision:
    base, source = predictive(ewma, forecast)
    steps: list[Step] = []
    s = base
    if cfg.stressed_weight > 0 and stats is not None:
        w = cfg.stressed_weight
        # Never below the current level: a crash beyond the worst past window must not
        # be averaged down by it.
        mixed = math.sqrt((1 - w) * s * s + w * stats.stressed**2)
        s = _step(steps, "stressed_weight", s, max(s, mixed))
    if cfg.lookback_floor and stats is not None:
        s = _step(steps, "lookback_floor", s, max(s, stats.long_run))
    stress = stats is not None and base > cfg.stress_multiple * stats.long_run
    calm = state.calm
    if cfg.buffer > 0:
        if stress:
            s = _step(steps, "buffer_release", s, max(s, calm if calm is not None else s))
        else:
            s = calm = _step(steps, "buffer", s, s * (1 + cfg.buffer))
    if cfg.max_daily_decrease is not None and state.used is not None and state.at is not None:
        periods = max(0.0, now - state.at) / cfg.decrease_period_s
        s = _step(
            steps, "decrease_cap", s, max(s, state.used * (1 - cfg.max_daily_decrease) ** periods)
        )
    nxt = replace(state, used=s, at=now, calm=calm)
    return VolDecision(ewma, forecast, base, s, source, stress, tuple(steps), nxt)


def _step(steps: list[Step], tool: str, before: float, after: float) -> float:
    steps.append(Step(tool, before, after))
    return after


def explain_steps(d: VolDecision) -> list[dict[str, float | str]]:
    """The tools that changed the volatility, with before/after (what an explanation
    shows; tools that left it unchanged are omitted)."""
    return [
        {"tool": st.tool, "before": st.before, "after": st.after}
        for st in d.steps
        if st.after != st.before
    ]


__all__ = [
    "ApcState",
    "LookbackStats",
    "Step",
    "VolDecision",
    "decide",
    "explain_steps",
    "lookback_stats",
    "predictive",
]
