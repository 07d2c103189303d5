"""The price history a replayed daemon starts with: what it would have stored had it
run through the days before the episode (docs/replay.md "Time").

Two parts, written into the daemon's store before it starts, both built only from
shipped daily closes strictly before the episode's first hour (no look-ahead):

- `tail`: the last TAIL_DAYS daily closes before the episode, at compressed spacing
  (one market day = 86400 / C wall seconds) and ending at the episode's first prices.
  The oracle replays its stored rounds into the EWMA at start, so every model begins
  the episode with a warmed-up EWMA in the replay's time scale (timescale.py) instead
  of the prior. TAIL_DAYS is long next to the EWMA's memory (0.94 ** 120 < 0.1%), so
  what came before the tail does not matter to the EWMA.
- `forecast_history` (the predictive model only): up to FORECAST_DAYS daily closes
  before the episode at real daily spacing (one row per wall day, ending yesterday),
  so the `vol_forecast` job, which buckets rounds by UTC day, fits GARCH on them.
  Their log returns are multiplied by sqrt(C): GARCH is scale-equivariant (omega
  scales by C, alpha and beta do not change), so the forecast, the lookback's
  long-run and stressed sigmas come out in the same per-wall-day unit as the EWMA of
  the compressed replay, and max(EWMA, forecast) compares like with like. The prices
  of these rows are therefore not market prices; they anchor at the episode's first
  price, so the return from the last of them to today's rounds is zero.

- `implied_vol`: the option underlyings' annualised volatility for the replay's
  `[portfolio] implied_vol`, in market units: the realised volatility of the
  IMPLIED_VOL_DAYS daily closes before the episode x sqrt(365) (no implied-volatility
  series is shipped). Set explicitly because the default, the oracle's EWMA sigma x
  sqrt(365), is in the compressed unit of the replay (timescale.py) and would be
  sqrt(C) times too high.

Invariants: pure (series and numbers in, PricePoint rows out); every asset's rows
share timestamps (the EWMA pairs need joint rounds); the last tail row of each asset
is exactly the episode's first price (the oracle's jump guard starts from it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from aggregator.marketdata import history
from devkit.replay.episodes import LST_ONLY_RATE, LST_RATIO, UNDERLYING, EpisodePath
from oracles.protocols import PricePoint

F64 = NDArray[np.float64]
DAY_S = 86400
TAIL_DAYS = 120
FORECAST_DAYS = 730
IMPLIED_VOL_DAYS = 30
# Underlyings of the book's options and perps (population.py): what the scenario
# grid's option repricing needs an implied volatility for.
IMPLIED_VOL_ASSETS = ("WETH", "WBTC")
DAILY = {"ETH": "eth_usd_daily.csv", "BTC": "btc_usd_daily.csv", "USDC": "usdc_usd_daily.csv"}
RATIO = {"stETH": "steth_eth_daily.csv"}


def _closes(name: str, directory: Path) -> tuple[NDArray[np.int64], F64]:
    s = history.load(name, directory)
    ok = ~np.isnan(s.close)
    return s.close_times()[ok], s.close[ok]


def daily_before(
    path: EpisodePath, days: int, directory: Path = history.HISTORY_DIR
) -> tuple[NDArray[np.int64], dict[str, F64]]:
    """Close times (UTC day ends) of the `days` days up to the episode's first hour,
    and each devnet asset's close on them, built like the episode's own path (LSTs
    from WETH, the stETH/ETH ratio where it exists, the constant rates). Days an
    asset's file does not cover are dropped for every asset."""
    last = int(path.times[0]) // DAY_S * DAY_S  # the last daily close at or before the start
    grid = np.arange(last - (days - 1) * DAY_S, last + 1, DAY_S, dtype=np.int64)
    out: dict[str, F64] = {}
    keep = np.ones(grid.size, dtype=bool)
    for devnet, asset in UNDERLYING.items():
        t, c = _closes(DAILY[asset], directory)
        out[devnet], ok = _on(grid, t, c)
        keep &= ok
    for lst, asset in LST_RATIO.items():
        t, c = _closes(RATIO[asset], directory)
        ratio, ok = _on(grid, t, c)
        ratio = np.where(ok, ratio, 1.0)  # before the ratio series: WETH x rate, as episodes.py
        out[lst] = out["WETH"] * ratio * path.rates[lst]
    for lst in LST_ONLY_RATE:
        out[lst] = out["WETH"] * path.rates[lst]
    return grid[keep], {k: v[keep] for k, v in out.items()}


def _on(grid: NDArray[np.int64], t: NDArray[np.int64], c: F64) -> tuple[F64, NDArray[np.bool_]]:
    idx = np.searchsorted(t, grid)
    ok = (idx < t.size) & (t[np.minimum(idx, t.size - 1)] == grid)
    return np.where(ok, c[np.minimum(idx, t.size - 1)], np.nan), ok


def tail(
    path: EpisodePath, factor: float, now: float, directory: Path = history.HISTORY_DIR
) -> list[PricePoint]:
    """TAIL_DAYS daily closes before the episode, then its first prices at `now`, one
    compressed market day apart."""
    _, closes = daily_before(path, TAIL_DAYS, directory)
    first = path.at(0)
    n = len(next(iter(closes.values())))
    gap = DAY_S / factor
    rows: list[PricePoint] = []
    for k in range(n):
        at = now - (n - k) * gap
        rows += [PricePoint(a, float(v[k]), at) for a, v in closes.items()]
    rows += [PricePoint(a, float(p), now) for a, p in first.items()]
    return rows


def forecast_history(
    path: EpisodePath,
    factor: float,
    today_start: float,
    directory: Path = history.HISTORY_DIR,
    days: int = FORECAST_DAYS,
) -> list[PricePoint]:
    """Daily closes before the episode, one per wall day ending the day before
    `today_start` (a UTC midnight), returns scaled by sqrt(factor), anchored at the
    episode's first prices."""
    _, closes = daily_before(path, days, directory)
    first = path.at(0)
    k = math.sqrt(factor)
    n = len(next(iter(closes.values())))
    rows: list[PricePoint] = []
    for a, v in closes.items():
        scaled = first[a] * np.exp(k * (np.log(v) - math.log(first[a])))
        rows += [
            PricePoint(a, float(scaled[j]), today_start - (n - j) * DAY_S + DAY_S / 2)
            for j in range(n)
        ]
    return rows


def implied_vol(
    path: EpisodePath, days: int = IMPLIED_VOL_DAYS, directory: Path = history.HISTORY_DIR
) -> dict[str, float]:
    """Per IMPLIED_VOL_ASSETS asset: the sample standard deviation of the daily log
    returns over the `days` days before the episode, x sqrt(365) (annualised, market
    units), rounded to 4 decimals."""
    _, closes = daily_before(path, days + 1, directory)
    out: dict[str, float] = {}
    for asset in IMPLIED_VOL_ASSETS:
        r = np.diff(np.log(closes[asset]))
        if r.size < 2:
            raise ValueError(f"implied_vol: {r.size} daily returns of {asset} before the episode")
        out[asset] = round(float(np.std(r, ddof=1)) * math.sqrt(365.0), 4)
    return out


def usable(rows: list[PricePoint]) -> bool:
    return all(math.isfinite(r.value) and 0 < r.value < 1e300 for r in rows)


def by_asset(rows: list[PricePoint]) -> Mapping[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r.asset] = out.get(r.asset, 0) + 1
    return out
