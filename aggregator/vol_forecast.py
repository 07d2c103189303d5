"""Predictive, anti-procyclical volatility for the standard model: the `vol_forecast`
job fits GARCH per asset on the daemon's own price history, and the ledger asks
`apply` for the volatility each price refresh hands the engine.

Invariants:
- The fit never runs on the price path: `refit` is a scheduled job that loads the
  stored rounds and fits in a worker thread; `apply` (called by `refresh_prices`) only
  reads the last fit and does a few float operations per asset.
- EWMA is the fallback: no fit yet, forecasting disabled, history too short, a fit
  that fails, does not converge, is non-stationary or implausible: the forecast is
  None, the reason is logged once when it changes, shown in /v1/prices and in the
  `agg_volatility_fallback` gauge; the EWMA then drives the haircut unchanged (before
  the [apc] tools).
- The volatility used is max(EWMA, h-step forecast) passed through the [apc] tools
  (aggregator/risk/apc.py); the last decision per asset is what /v1/prices and the
  account explanation show.
- The same holds for the relative volatility of every correlation-group member
  against its group's reference (an e-mode haircut's de-peg risk): its series is the
  ratio of the two daily closes (days where both have one), its key the pair
  "asset/reference" (`pair_key`), its decision one per pair and refresh however many
  groups share the pair, its block under `relative` in the asset's view.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aggregator.config import AppConfig
from aggregator.metrics import Metrics
from aggregator.risk.apc import ApcState, LookbackStats, VolDecision, decide, explain_steps
from aggregator.risk.apc import lookback_stats as _lookback_stats
from oracles.forecast import (
    FALLBACK_REASONS,
    Forecast,
    ForecastSettings,
    daily_returns,
    fit_forecast,
)
from oracles.protocols import PricePoint

log = logging.getLogger(__name__)
DAY_S = 86400.0


def pair_key(asset: str, reference: str) -> str:
    """The name of a relative series (fits, decisions, metric label): "stETH/WETH"."""
    return f"{asset}/{reference}"


def relative_pairs(cfg: AppConfig) -> dict[str, tuple[str, str]]:
    """pair key -> (asset, reference) of every correlation-group member but the reference."""
    return {
        pair_key(a, g.reference): (a, g.reference)
        for g in cfg.correlation_groups
        for a in g.assets
        if a != g.reference
    }


class OkPriceHistory(Protocol):
    async def ok_prices_since(self, since: float) -> list[PricePoint]: ...


@dataclass(frozen=True)
class AssetFit:
    forecast: Forecast
    stats: LookbackStats | None
    # When the forecast in use was fitted; None when the fit fell back to EWMA (so an
    # account's view does not change with the time of a failed attempt).
    fitted_at: float | None


def fit_assets(
    series: Mapping[str, tuple[list[float], list[float]]],
    settings: ForecastSettings,
    window: int,
    fit: Callable[[Any, ForecastSettings], Forecast] = fit_forecast,
) -> dict[str, tuple[Forecast, LookbackStats | None]]:
    """Per asset (times, prices) -> (forecast, lookback stats); what the worker runs."""
    out = {}
    for asset, (times, prices) in series.items():
        r = daily_returns(times, prices)
        out[asset] = (fit(r, settings), _lookback_stats(r, window))
    return out


class VolatilityForecaster:
    def __init__(
        self,
        cfg: AppConfig,
        history: OkPriceHistory,
        metrics: Metrics,
        *,
        fit: Callable[[Any, ForecastSettings], Forecast] = fit_forecast,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.history = history
        self.metrics = metrics
        self.symbols = tuple(a.symbol for a in cfg.assets)
        self.pairs = relative_pairs(cfg)
        self._references = {g.name: g.reference for g in cfg.correlation_groups}
        self.settings = ForecastSettings(
            model=cfg.forecast.model,
            horizon_days=cfg.risk.horizon_days,
            min_returns=cfg.forecast.min_returns,
            max_persistence=cfg.forecast.max_persistence,
            max_ratio=cfg.forecast.max_ratio,
        )
        self._fit = fit  # injectable: the fallback tests replace the fit with a failure
        self._clock = clock
        self.fits: dict[str, AssetFit] = {}
        self.decisions: dict[str, VolDecision] = {}
        self._states: dict[str, ApcState] = {}
        # asset -> UTC day -> (time, price) of the day's last ok round read so far.
        self._closes: dict[str, dict[int, tuple[float, float]]] = {a: {} for a in self.symbols}
        self._loaded_until = 0.0

    # ------------------------------------------------------------ the job
    async def refit(self) -> None:
        """The `vol_forecast` job: stored ok rounds -> daily closes -> fit, in a thread.
        Only rounds newer than the last load are read; the closes are kept per UTC day
        (the last price of the day), so a refit does not re-read the whole lookback."""
        now = self._clock()
        since = now - self.cfg.oracle.history_days * DAY_S
        points = await self.history.ok_prices_since(max(since, self._loaded_until))
        self._loaded_until = max([self._loaded_until, *(p.at for p in points)])
        series = self._daily_closes(points, since)
        started = time.monotonic()
        if self.cfg.forecast.enabled:
            results = await asyncio.to_thread(
                fit_assets, series, self.settings, self.cfg.apc.stressed_window_days, self._fit
            )
        else:
            results = {
                a: (Forecast.fallback(self.settings.model, "disabled", 0), None)
                for a in (*self.symbols, *self.pairs)
            }
        self.metrics.vol_fit_seconds.observe(time.monotonic() - started)
        for name in (*self.symbols, *self.pairs):
            short = (Forecast.fallback(self.settings.model, "short_history", 0), None)
            fc, stats = results.get(name, short)
            self._record(name, AssetFit(fc, stats, None if fc.sigma is None else now))

    def _daily_closes(
        self, points: Sequence[PricePoint], since: float
    ) -> dict[str, tuple[list[float], list[float]]]:
        first_day = int(since // DAY_S)
        for p in points:
            closes = self._closes.get(p.asset)
            if closes is not None:
                closes[int(p.at // DAY_S)] = (p.at, p.value)
        out = {}
        for asset, closes in self._closes.items():
            for day in [d for d in closes if d < first_day]:
                del closes[day]  # left the lookback
            days = sorted(closes)
            out[asset] = ([closes[d][0] for d in days], [closes[d][1] for d in days])
        for pair, (asset, ref) in self.pairs.items():
            a, r = self._closes.get(asset, {}), self._closes.get(ref, {})
            both = sorted(a.keys() & r.keys())
            out[pair] = ([a[d][0] for d in both], [a[d][1] / r[d][1] for d in both])
        return out

    def _record(self, asset: str, fit: AssetFit) -> None:
        old = self.fits.get(asset)
        self.fits[asset] = fit
        fc = fit.forecast
        self.metrics.vol_fits.labels(asset=asset, outcome=fc.reason or "ok").inc()
        if fc.sigma is not None:
            self.metrics.vol_forecast.labels(asset=asset).set(fc.sigma)
        for reason in (*FALLBACK_REASONS, "disabled"):
            self.metrics.vol_fallback.labels(asset=asset, reason=reason).set(
                1 if fc.reason == reason else 0
            )
        if old is None or old.forecast.reason != fc.reason:
            if fc.reason is None:
                log.info(
                    "volatility forecast for %s: %s fitted, sigma %.5f", asset, fc.model, fc.sigma
                )
            else:
                log.warning(
                    "volatility forecast for %s not used (%s%s, %d daily returns): EWMA applies",
                    asset,
                    fc.reason,
                    f": {fc.detail}" if fc.detail else "",
                    fc.n_returns,
                )

    # ------------------------------------------------------------ the price path
    def apply(self, ewma: Mapping[str, float], now: float) -> dict[str, float]:
        """The volatility each asset's haircut uses (called by refresh_prices)."""
        return {asset: self._decide(asset, e, now) for asset, e in ewma.items()}

    def apply_relative(
        self, ewma: Mapping[str, Mapping[str, float]], now: float
    ) -> dict[str, dict[str, float]]:
        """The relative volatility each e-mode member's haircut uses: `ewma[group][asset]`
        (the oracle's EWMA of p(asset)/p(reference)) in, the same shape out."""
        used: dict[str, float] = {}
        out: dict[str, dict[str, float]] = {}
        for group, per_asset in ewma.items():
            ref = self._references[group]
            out[group] = {}
            for asset, e in per_asset.items():
                key = pair_key(asset, ref)
                if key not in used:  # one decision per pair: its state moves once
                    used[key] = self._decide(key, e, now)
                out[group][asset] = used[key]
        return out

    def _decide(self, name: str, ewma: float, now: float) -> float:
        fit = self.fits.get(name)
        d = decide(
            ewma,
            None if fit is None else fit.forecast.sigma,
            stats=None if fit is None else fit.stats,
            state=self._states.get(name, ApcState()),
            now=now,
            cfg=self.cfg.apc,
        )
        self._states[name] = d.state
        self.decisions[name] = d
        self.metrics.vol_ewma.labels(asset=name).set(ewma)
        self.metrics.vol_used.labels(asset=name).set(d.used)
        self.metrics.vol_stress.labels(asset=name).set(1 if d.stress else 0)
        return d.used

    # ------------------------------------------------------------ read side
    def view(self, asset: str) -> dict[str, Any] | None:
        """The "volatility" block of /v1/prices and of an account's explanation; an
        e-mode member's also holds, under `relative`, one block per group reference."""
        block = self._block(asset)
        if block is None:
            return None
        relative = {
            ref: b
            for key, (a, ref) in self.pairs.items()
            if a == asset and (b := self._block(key)) is not None
        }
        if relative:
            block["relative"] = relative
        return block

    def _block(self, name: str) -> dict[str, Any] | None:
        d = self.decisions.get(name)
        if d is None:
            return None
        fit = self.fits.get(name)
        fc = None if fit is None else fit.forecast
        return {
            "ewma": d.ewma,
            "forecast": d.forecast,
            "predictive": d.predictive,
            "used": d.used,
            "source": d.source,
            "model": None if fc is None else fc.model,
            "fallback_reason": "not_fitted_yet" if fc is None else fc.reason,
            "fitted_at": None if fit is None else fit.fitted_at,
            "n_returns": None if fc is None else fc.n_returns,
            "stress": d.stress,
            "apc": explain_steps(d),
        }


__all__ = [
    "AssetFit",
    "OkPriceHistory",
    "VolatilityForecaster",
    "fit_assets",
    "pair_key",
    "relative_pairs",
]
