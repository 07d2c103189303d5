"""Calibrates the VaR margin model (docs/var.md "Calibration") off the hot path.

The daemon's own price history (the oracle's accepted rounds in the store,
aggregator/store/price_repo.py) is sampled to one close per UTC day per asset; when it
holds at least [var] min_history_days daily returns for every asset it feeds the
covariance and the FHS scenarios ("daemon"), otherwise the shipped CSV history
(history/, each asset through [var] history) does ("shipped"). The stressed-period
floor always comes from the shipped history when every asset has a series there (the
crashes it holds are the point), else from the daemon's. With [var] history_end set,
the shipped series end at the last close observed at or before it (a replay of a past
crash calibrates on what was known then); too few returns left is an
`InsufficientHistory` naming the asset and the date. [var] backfill splices a proxy
series' returns before an asset's own series starts (an LST launched after the crashes
the stressed window needs); the asset's own closes always win where they exist.

Invariants: `recalibrate` is a scheduled job (aggregator/jobs.py), never called from the
recompute loop; the numerical work runs in a worker thread; the calibration is swapped
in whole (readers see the old or the new one); an asset with too little history in
both sources is an `InsufficientHistory` naming it, raised at start in var mode.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Protocol

import numpy as np

from aggregator.config import AppConfig
from aggregator.marketdata import history
from aggregator.marketdata.calibration import SEED, VarCalibration, calibrate, underlying_map
from aggregator.marketdata.factors import Factors, InsufficientHistory, build_factors
from aggregator.marketdata.loader import DAY, PriceSeries
from aggregator.startup import StartupError
from oracles.protocols import PricePoint

log = logging.getLogger(__name__)


class PriceHistory(Protocol):
    async def ok_prices_since(self, since: float) -> list[PricePoint]: ...


def daily_series(
    points: Sequence[PricePoint], assets: Sequence[str], now: float
) -> dict[str, PriceSeries]:
    """Per asset, its last accepted price of each UTC day (a day without one is a
    hole), on the day grid ending at the last midnight before `now`."""
    end = int(now // DAY) * DAY
    by_asset: dict[str, list[PricePoint]] = {a: [] for a in assets}
    for p in points:
        if p.asset in by_asset and p.at <= end:
            by_asset[p.asset].append(p)
    first = min((p.at for ps in by_asset.values() for p in ps), default=end - DAY)
    start = int(first // DAY) * DAY
    bounds = np.arange(start + DAY, end + 1, DAY, dtype=np.float64)
    out: dict[str, PriceSeries] = {}
    for a, ps in by_asset.items():
        at = np.array([p.at for p in ps], np.float64)
        val = np.array([p.value for p in ps], np.float64)
        close = np.full(bounds.size, np.nan)
        if at.size:
            last = np.searchsorted(at, bounds, side="right") - 1
            ok = (last >= 0) & (at[np.maximum(last, 0)] > bounds - DAY)
            close[ok] = val[last[ok]]
        out[a] = PriceSeries(f"store:prices/{a}", "daily", start, {"close": close}, {})
    return out


@functools.cache
def _shipped(name: str) -> PriceSeries:
    return history.daily(name)


def ending(series: PriceSeries, end: float) -> PriceSeries:
    """`series` without the closes observed after `end` (unix seconds)."""
    keep = int(np.searchsorted(series.close_times(), end, side="right"))
    columns = {k: v[:keep].copy() for k, v in series.columns.items()}
    return replace(series, columns=columns)


def backfilled(series: PriceSeries, proxy: PriceSeries) -> PriceSeries:
    """`series` with `proxy`'s daily closes before its first bar, scaled to meet its
    first close: every return before that day is the proxy's, every return from it on
    the series' own (the one across the seam is the proxy's return of that day). Only
    `close` is spliced (other columns are NaN before the seam). Unchanged when the proxy
    starts no earlier, or has no finite close on the series' first day."""
    if series.frequency != "daily" or proxy.frequency != "daily":
        raise ValueError(f"backfill of {series.path} by {proxy.path}: daily series only")
    lead = (series.start - proxy.start) // DAY
    if lead <= 0 or lead >= len(proxy) or not len(series):
        return series
    seam = float(proxy.close[lead])
    first = float(series.close[0])
    if not (np.isfinite(seam) and seam > 0 and np.isfinite(first)):
        return series
    columns = {k: np.concatenate([np.full(lead, np.nan), v]) for k, v in series.columns.items()}
    columns["close"][:lead] = proxy.close[:lead] * (first / seam)
    return replace(
        series, path=f"{series.path} (before it: {proxy.path})", start=proxy.start,
        columns=columns,
    )  # fmt: skip


def shipped(cfg: AppConfig, asset: str) -> PriceSeries:
    """`asset`'s shipped series ([var] history), backfilled ([var] backfill) and ended
    at [var] history_end when set. KeyError: no such series."""
    series = _shipped(cfg.var.history[asset])
    proxy = cfg.var.backfill.get(asset)
    if proxy is not None:
        series = backfilled(series, _shipped(proxy))
    end = cfg.var.history_end
    return series if end is None else ending(series, end.timestamp())


def shipped_series(cfg: AppConfig, own: Mapping[str, int]) -> dict[str, PriceSeries]:
    """The shipped daily series of every asset ([var] history), ended at [var]
    history_end when set; an unmapped asset, or one with fewer than min_history_days
    returns up to history_end, is an error naming it and what the daemon's own history
    holds (`own`)."""
    end = cfg.var.history_end
    out = {}
    for a in cfg.asset_symbols:
        name = cfg.var.history.get(a)
        if name is None:
            raise InsufficientHistory(
                a, cfg.var.min_history_days, own.get(a, 0),
                "in the daemon's price history, and [var] history names no shipped series",
            )  # fmt: skip
        try:
            out[a] = shipped(cfg, a)
        except KeyError as exc:
            raise InsufficientHistory(
                a, cfg.var.min_history_days, own.get(a, 0), str(exc)
            ) from None
        if end is not None:
            have = _own_counts({a: out[a]})[a]
            if have < cfg.var.min_history_days:
                raise InsufficientHistory(
                    a, cfg.var.min_history_days, have,
                    f"in shipped series {name!r} up to [var] history_end {end.isoformat()}",
                )  # fmt: skip
    return out


def _own_counts(series: Mapping[str, PriceSeries]) -> dict[str, int]:
    return {a: int(np.isfinite(np.diff(np.log(s.close))).sum()) for a, s in series.items()}


def build_calibration(cfg: AppConfig, points: Sequence[PricePoint], now: float) -> VarCalibration:
    """The calibration from the daemon's points, with the shipped history as the
    stressed period and as the fallback (module docstring)."""
    v = cfg.var
    assets = tuple(cfg.asset_symbols)
    under = underlying_map({a.symbol: a.underlying for a in cfg.assets})
    own = daily_series(points, assets, now)
    own_factors: Factors | None
    try:
        own_factors = build_factors(own, underlying=under, min_returns=v.min_history_days)
    except InsufficientHistory:
        own_factors = None
    need = max(v.scenarios + SEED + 1, v.stressed_window_days)
    shipped: Factors | None = None
    if own_factors is None or all(a in v.history for a in assets):
        series = shipped_series(cfg, _own_counts(own))
        shipped = build_factors(series, underlying=under, min_returns=need)
    if own_factors is not None:
        stressed = shipped or own_factors
        return calibrate(own_factors, v, assets, "daemon", stressed=stressed,
                         stressed_source="shipped" if shipped else "daemon")  # fmt: skip
    assert shipped is not None
    return calibrate(shipped, v, assets, "shipped", stressed=shipped, stressed_source="shipped")


class VarFeed:
    """`CalibrationSource` of the daemon's VaR model (risk/var_model.py)."""

    def __init__(self, cfg: AppConfig, prices: PriceHistory) -> None:
        self.cfg = cfg
        self.prices = prices
        self.enabled = cfg.portfolio.mode == "var"
        self._calibration: VarCalibration | None = None

    @property
    def calibration(self) -> VarCalibration | None:
        return self._calibration

    async def start(self) -> None:
        """The first calibration, before the recompute loop (var mode only): an asset
        with too little history stops the start with its name."""
        try:
            await self.recalibrate()
        except InsufficientHistory as exc:
            raise StartupError(f"var calibration: {exc}") from None

    async def recalibrate(self) -> None:
        """The scheduled job: read the history, calibrate in a worker thread, swap."""
        if not self.enabled:
            return
        now = time.time()
        since = now - (self.cfg.var.min_history_days + 2) * DAY
        points = await self.prices.ok_prices_since(since)
        cal = await asyncio.to_thread(build_calibration, self.cfg, points, now)
        self._calibration = cal
        log.info(
            "var calibration: %s history, %d returns, %d scenarios", cal.source, cal.n_returns,
            cal.scenarios.shape[0],
        )  # fmt: skip


__all__ = ["PriceHistory", "VarFeed", "build_calibration", "daily_series", "shipped_series"]
