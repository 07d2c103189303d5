"""Offline procyclicality report: how each volatility treatment moves the margin of a
1-USD position through the shipped crash episodes (docs/procyclicality.md).

Invariants:
- No look-ahead: the margin held over day d (from close d-1 to close d) uses only
  returns that ended at or before close d-1: EWMA, GARCH fit and lookback statistics
  alike. The GARCH model is refitted every day on all shipped returns before it.
- Margin = the standard model's vol term min(1, z * sigma * sqrt(h)) with the
  [risk] defaults (z 2.33, h 1 day): the part of the haircut volatility drives. The
  LT cap (1 - lt) is left out on purpose: it flattens calm margin and would hide the
  very swings this report measures.
- The treatments share one predictive path per asset and episode (fitted once); the
  [apc] tools run through `aggregator.risk.apc.decide`, the daemon's own function,
  with its state carried day to day from a warm-up period before the window.
- Procyclicality figures per path: peak-to-trough ratio max(m) / min(m), and the
  largest rise of m over 1 and 5 days (margin points of the position, i.e. USD per
  1 USD held).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from aggregator.config import ApcConfig
from aggregator.marketdata import history
from aggregator.risk.apc import ApcState, decide, lookback_stats
from oracles.forecast import ForecastSettings, fit_forecast

F64 = NDArray[np.float64]
DAY = 86400
DOC = Path(__file__).resolve().parents[2] / "docs" / "procyclicality.md"
BEGIN, END = "<!-- procyclicality:begin -->", "<!-- procyclicality:end -->"

EPISODES: dict[str, tuple[str, str]] = {
    "2020-03": ("2020-03-01", "2020-03-31"),
    "2022-05..07": ("2022-05-01", "2022-07-31"),
    "2022-11": ("2022-11-01", "2022-11-30"),
    "2023-03": ("2023-03-01", "2023-03-31"),
}
ASSETS = ("ETH", "BTC", "stETH", "USDC")
WARMUP_DAYS = 30
EMIR = ApcConfig(buffer=0.25, stressed_weight=0.25, lookback_floor=True, max_daily_decrease=0.05)
TREATMENTS: dict[str, ApcConfig | None] = {
    "ewma": None,
    "predictive": ApcConfig(lookback_floor=False),
    "pred+buffer": ApcConfig(buffer=0.25, lookback_floor=False),
    "pred+stressed": ApcConfig(stressed_weight=0.25, lookback_floor=False),
    "pred+floor": ApcConfig(lookback_floor=True),
    "pred+cap": ApcConfig(lookback_floor=False, max_daily_decrease=0.05),
    "all": EMIR,
}


@dataclass(frozen=True)
class Inputs:
    """One asset over one episode (plus warm-up): per day, what was known before it."""

    asset: str
    days: tuple[str, ...]  # the margin days, warm-up included
    warmup: int
    ewma: F64
    forecast: F64  # NaN where the fit fell back
    before: tuple[F64, ...]  # returns known before each day (for lookback stats)


@dataclass(frozen=True)
class Figures:
    peak_to_trough: float
    max_1d: float
    max_5d: float
    peak: float
    calm: float  # margin on the first day of the window


def returns(asset: str) -> tuple[F64, F64]:
    """(end times, daily log returns) of the shipped daily series; a dropped day makes
    one two-day return scaled to a daily draw."""
    s = history.daily(asset)
    t = s.close_times().astype(np.float64)
    ok = np.isfinite(s.close) & (s.close > 0)
    t, logp = t[ok], np.log(s.close[ok])
    return t[1:], np.diff(logp) / np.sqrt(np.diff(t) / DAY)


def ewma_path(r: F64, lam: float = 0.94, seed: int = 30) -> F64:
    """Variance after each return (var[i] includes r[i]); seeded with the mean square
    of the first `seed` returns."""
    out = np.empty(len(r))
    v = float(np.mean(r[:seed] ** 2))
    for i, x in enumerate(r):
        v = lam * v + (1 - lam) * x * x
        out[i] = v
    return out


def window(episode: str) -> tuple[str, str]:
    """(first, last day) of a shipped episode, or of a date range `START..END` (UTC
    days, END exclusive, as `aggregator replay --episode`)."""
    if episode in EPISODES:
        return EPISODES[episode]
    got = history.date_range(episode, min_days=6)  # 6: a 5-day rise needs them
    if got is None:
        raise ValueError(
            f"episode {episode!r}: not one of {', '.join(EPISODES)} nor a date range "
            f"{history.RANGE_FORMAT}"
        )
    lo, hi = got
    return _day(lo), _day(hi - DAY)


def inputs(asset: str, episode: str, settings: ForecastSettings) -> Inputs | None:
    """None when the asset has no history before the episode (stETH in 2020-03)."""
    t, r = returns(asset)
    start, end = (_ts(d) for d in window(episode))
    if end > t[-1]:  # the last day's margin needs the close before it
        raise ValueError(
            f"episode {episode!r}: {asset}'s shipped daily history ends {_day(t[-1] - DAY)}"
        )
    # Day d's close time c: margin over (c - 1 day, c] uses returns ending <= c - 1 day.
    closes = np.arange(start - WARMUP_DAYS * DAY + DAY, end + 2 * DAY, DAY, dtype=np.float64)
    known = np.searchsorted(t, closes - DAY, side="right")
    if known[0] < settings.min_returns:
        return None
    var = ewma_path(r)
    fc = np.array([_forecast(r[:k], settings) for k in known])
    return Inputs(
        asset,
        tuple(_day(c - DAY) for c in closes),
        WARMUP_DAYS,
        np.sqrt(var[known - 1]),
        fc,
        tuple(r[:k] for k in known),
    )


def _forecast(r: F64, settings: ForecastSettings) -> float:
    f = fit_forecast(r, settings)
    return math.nan if f.sigma is None else f.sigma


def margin_path(x: Inputs, cfg: ApcConfig | None, z: float = 2.33, h: float = 1.0) -> F64:
    sigma = np.empty(len(x.days))
    state = ApcState()
    for i in range(len(x.days)):
        if cfg is None:
            sigma[i] = x.ewma[i]
            continue
        fc = None if math.isnan(x.forecast[i]) else float(x.forecast[i])
        stats = lookback_stats(x.before[i], cfg.stressed_window_days)
        d = decide(float(x.ewma[i]), fc, stats=stats, state=state, now=i * DAY, cfg=cfg)
        sigma[i], state = d.used, d.state
    return np.minimum(1.0, z * sigma * math.sqrt(h))[x.warmup :]


def figures(m: F64) -> Figures:
    d1 = np.diff(m)
    d5 = m[5:] - m[:-5]
    return Figures(
        float(m.max() / m.min()),
        float(max(d1.max(), 0.0)),
        float(max(d5.max(), 0.0)) if len(d5) else 0.0,
        float(m.max()),
        float(m[0]),
    )


def report(
    assets: Sequence[str] = ASSETS, episodes: Sequence[str] = tuple(EPISODES)
) -> dict[tuple[str, str, str], Figures]:
    settings = ForecastSettings()
    out = {}
    for episode in episodes:
        for asset in assets:
            x = inputs(asset, episode, settings)
            if x is None:
                continue
            for name, cfg in TREATMENTS.items():
                out[(episode, asset, name)] = figures(margin_path(x, cfg))
    return out


def table(rows: dict[tuple[str, str, str], Figures]) -> str:
    lines = [
        "| episode | asset | treatment | calm margin | peak margin | peak/trough "
        "| max 1-day rise | max 5-day rise |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for (episode, asset, name), f in rows.items():
        lines.append(
            f"| {episode} | {asset} | {name} | {f.calm:.4f} | {f.peak:.4f} "
            f"| {f.peak_to_trough:.2f} | {f.max_1d:.4f} | {f.max_5d:.4f} |"
        )
    return "\n".join(lines)


def write_doc(text: str, path: Path = DOC) -> None:
    doc = path.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(doc):
        raise ValueError(f"{path}: markers {BEGIN} ... {END} not found")
    path.write_text(pattern.sub(lambda _m: f"{BEGIN}\n{text}\n{END}", doc))


def main(argv: Sequence[str] | None = None) -> int:
    """`aggregator risk procyclicality [--write] [--asset ETH ...] [--episode E ...]`."""
    p = argparse.ArgumentParser(prog="aggregator risk procyclicality", description=__doc__)
    p.add_argument("--write", action="store_true", help=f"replace the table in {DOC.name}")
    p.add_argument("--asset", action="append", choices=ASSETS, help="default: all")
    p.add_argument(
        "--episode",
        action="append",
        metavar="EPISODE",
        help=f"{', '.join(EPISODES)} or a date range YYYY-MM-DD..YYYY-MM-DD (end "
        "exclusive); repeatable; default: the shipped ones",
    )
    args = p.parse_args(argv)
    if args.write and args.episode:
        p.error("--write replaces the shipped episodes' table: not with --episode")
    episodes = args.episode or list(EPISODES)
    try:
        for e in episodes:
            window(e)
    except ValueError as exc:
        p.error(str(exc))
    started = time.monotonic()
    try:
        rows = report(args.asset or ASSETS, episodes)
    except ValueError as exc:
        print(f"aggregator risk procyclicality: {exc}", file=sys.stderr)
        return 2
    if not rows:
        print(f"aggregator risk procyclicality: no asset has {ForecastSettings().min_returns} "
              f"daily returns before {', '.join(episodes)}", file=sys.stderr)  # fmt: skip
        return 2
    text = table(rows)
    print(text)
    if args.write:
        write_doc(text)
    print(f"({time.monotonic() - started:.1f} s)", file=sys.stderr)
    return 0


def _ts(day: str) -> int:
    return int(datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp())


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


__all__ = [
    "EPISODES",
    "TREATMENTS",
    "Figures",
    "Inputs",
    "figures",
    "main",
    "margin_path",
    "window",
]
