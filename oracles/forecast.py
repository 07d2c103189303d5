"""Predictive volatility: a GARCH(1,1) or GJR-GARCH(1,1,1) fit of daily log returns
and its h-step forecast, with the reason whenever the forecast must not be used.

Invariants:
- Pure: returns in, a `Forecast` out; no I/O, no clock, no state. The daemon runs it in
  a worker thread on a schedule (aggregator/vol_forecast.py), never on the price path.
- `Forecast.sigma` is a *daily* sigma, the root of the mean forecast variance over the
  next h days, so that the haircut's z * sigma * sqrt(h) is z times the forecast
  standard deviation of the h-day return.
- A forecast is given only when the fit converged, the fitted process is stationary
  (alpha + beta + gamma/2 < max_persistence), and the forecast lies within
  [1/max_ratio, max_ratio] of the sample sigma of the returns fitted; otherwise
  `sigma` is None and `reason` is one of FALLBACK_REASONS (the caller keeps EWMA).
- Returns are fitted in percent (x100), where the optimiser is well scaled; parameters
  are reported in the same units as the returns given (omega / 1e4).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]
DAY_S = 86400.0
ModelName = Literal["garch", "gjr"]
FALLBACK_REASONS = ("short_history", "fit_error", "not_converged", "non_stationary", "implausible")
_SCALE = 100.0


@dataclass(frozen=True)
class ForecastSettings:
    model: ModelName = "garch"
    horizon_days: float = 1.0
    min_returns: int = 250  # about a year of daily returns
    max_persistence: float = 0.999
    max_ratio: float = 10.0  # forecast sigma vs sample sigma, either way

    def __post_init__(self) -> None:
        if self.model not in ("garch", "gjr"):
            raise ValueError(f"model must be 'garch' or 'gjr', got {self.model!r}")
        if self.horizon_days <= 0 or self.min_returns < 30:
            raise ValueError("horizon_days must be > 0 and min_returns >= 30")
        if not 0 < self.max_persistence <= 1 or self.max_ratio <= 1:
            raise ValueError("max_persistence must be in (0, 1] and max_ratio > 1")


@dataclass(frozen=True)
class Forecast:
    sigma: float | None  # daily; None = do not use (see reason)
    model: str
    reason: str | None = None  # one of FALLBACK_REASONS when sigma is None
    n_returns: int = 0
    params: dict[str, float] = field(default_factory=dict)
    long_run_sigma: float | None = None  # sqrt(omega / (1 - persistence)), daily
    detail: str = ""

    @classmethod
    def fallback(cls, model: str, reason: str, n: int, **params: float) -> Forecast:
        return cls(None, model, reason, n, dict(params))


def daily_returns(times: Sequence[float], prices: Sequence[float]) -> F64:
    """Daily log returns from irregular samples: the last price of each UTC day, then
    log(p_d / p_prev) scaled by 1/sqrt(days between) so a gap reads as one daily draw.
    `times` must be ascending."""
    last: dict[int, float] = {}
    for t, p in zip(times, prices, strict=True):
        if p > 0 and math.isfinite(p):
            last[int(t // DAY_S)] = p
    days = sorted(last)
    if len(days) < 2:
        return np.zeros(0)
    d = np.asarray(days, np.float64)
    logp = np.log(np.asarray([last[k] for k in days]))
    return np.asarray(np.diff(logp) / np.sqrt(np.diff(d)), np.float64)


def fit_forecast(returns: F64, settings: ForecastSettings) -> Forecast:
    """Fit the configured model to daily log returns and forecast h days ahead."""
    r = np.asarray(returns, np.float64)
    r = r[np.isfinite(r)]
    n, name = len(r), settings.model
    if n < settings.min_returns:
        return Forecast.fallback(name, "short_history", n)
    try:
        res = _fit(r * _SCALE, name)
    except (ValueError, np.linalg.LinAlgError, RuntimeError, ZeroDivisionError) as exc:
        return Forecast(None, name, "fit_error", n, detail=f"{type(exc).__name__}: {exc}")
    params = {k: float(v) for k, v in res.params.items()}  # type: ignore[attr-defined]
    params["omega"] /= _SCALE**2
    if res.convergence_flag != 0:  # type: ignore[attr-defined]
        return Forecast(None, name, "not_converged", n, params)
    return _judge(res, r, params, settings)


def _fit(scaled: F64, name: str) -> object:
    from arch import arch_model  # imported here: heavy, and only the fit job needs it

    model = arch_model(scaled, mean="Zero", vol="GARCH", p=1, o=1 if name == "gjr" else 0, q=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence is judged from the flag below
        return model.fit(disp="off", show_warning=False)


def persistence(params: dict[str, float]) -> float:
    """alpha + beta + gamma/2: below 1 the variance has a finite long-run level."""
    return (
        params.get("alpha[1]", 0.0) + params.get("beta[1]", 0.0) + params.get("gamma[1]", 0.0) / 2
    )


def _judge(res: object, r: F64, params: dict[str, float], s: ForecastSettings) -> Forecast:
    n, name = len(r), s.model
    pers = persistence(params)
    if not pers < s.max_persistence:
        return Forecast(None, name, "non_stationary", n, params)
    h = max(1, math.ceil(s.horizon_days))
    var = res.forecast(horizon=h, reindex=False).variance.to_numpy()[-1]  # type: ignore[attr-defined]
    sigma = math.sqrt(float(np.mean(var))) / _SCALE
    sample = float(np.sqrt(np.mean(r * r)))
    long_run = math.sqrt(params["omega"] / (1 - pers))
    if not (
        math.isfinite(sigma) and sample > 0 and 1 / s.max_ratio <= sigma / sample <= s.max_ratio
    ):
        return Forecast(None, name, "implausible", n, params, long_run)
    return Forecast(sigma, name, None, n, params, long_run)


__all__ = [
    "FALLBACK_REASONS",
    "Forecast",
    "ForecastSettings",
    "daily_returns",
    "fit_forecast",
    "persistence",
]
