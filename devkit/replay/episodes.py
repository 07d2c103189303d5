"""The shipped crash episodes, built from history/ with the strict loader.

An episode is a window of market time and, per devnet asset, the source of its USD
price path on an hourly grid (`EpisodePath.times`, unix seconds, step one hour): one
of the shipped EPISODES, or any date range `START..END` the shipped files cover
(`spec_for`), built the same way:

- WETH / WBTC: the hourly closes of the shipped hourly file where there is one; else
  the daily closes (Yahoo) interpolated in log space between consecutive closes (each
  daily close stands at the end of its UTC day). Interpolated hours are not real
  hourly data: they are a straight line in log price between two real closes.
- USDC: daily closes, interpolated the same way (no hourly USDC is shipped).
- wstETH: WETH x (stETH/ETH daily ratio, interpolated) x the devnet's exchange rate,
  held constant; before the ratio series begins (2020) it follows WETH x rate.
- rETH (no shipped series): WETH x its exchange rate, held constant.

Invariants:
- Every file goes through `aggregator.marketdata.history.load` (strict: any defect but
  the rows SOURCES.md flags is an error). A missing file, a defect, or a window the
  file does not cover is an EpisodeError before anything starts.
- The only holes a strictly loaded series can have are the rows history.KNOWN_ROWS
  drops; they are held at the previous close and counted in `held`.
- Exchange rates are constant over an episode: no rate series is shipped, and a rate
  accruing at market speed in compressed time would trip the oracle's yearly growth cap.
- Every asset of the devnet has a path (`require_drivable` checks a deployment's
  feeds and rate tokens against it before the replay starts).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from aggregator.marketdata import history
from aggregator.marketdata.loader import CsvError, PriceSeries

F64 = NDArray[np.float64]
HOUR = 3600


class EpisodeError(ValueError):
    """An episode that cannot be replayed: unknown, missing data, a gap, an undrivable feed."""


@dataclass(frozen=True)
class EpisodeSpec:
    name: str
    title: str
    start: str  # first UTC day, inclusive
    end: str  # last UTC day, exclusive
    # asset -> shipped hourly file; assets not listed come from daily closes.
    hourly: Mapping[str, str] = field(default_factory=dict)

    def bounds(self) -> tuple[int, int]:
        return _day(self.start), _day(self.end)

    def hours(self) -> int:
        """Hourly points of the path (`build`: both bounds included)."""
        start, end = self.bounds()
        return (end - start) // HOUR + 1


def _day(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC).timestamp())


EPISODES: dict[str, EpisodeSpec] = {
    s.name: s
    for s in (
        EpisodeSpec(
            "2020-03",
            "March 2020 (Black Thursday)",
            "2020-03-01",
            "2020-04-01",
            {"ETH": "eth_usd_hourly_2020-03.csv", "BTC": "btc_usd_hourly_2020-03.csv"},
        ),
        EpisodeSpec(
            "2022-06",
            "May-July 2022 (LUNA, stETH de-peg, 3AC)",
            "2022-05-01",
            "2022-08-01",
            {"ETH": "eth_usd_hourly_2022-05_07.csv", "BTC": "btc_usd_hourly_2022-05_07.csv"},
        ),
        EpisodeSpec(
            "2022-11",
            "November 2022 (FTX)",
            "2022-11-01",
            "2022-12-01",
            {"ETH": "eth_usd_hourly_2022-11.csv", "BTC": "btc_usd_hourly_2022-11.csv"},
        ),
        EpisodeSpec(
            "2023-03",
            "March 2023 (SVB, USDC de-peg)",
            "2023-03-08",
            "2023-03-17",
            {"ETH": "eth_usd_hourly_2023-03.csv"},
        ),
    )
}

# Devnet asset -> the market it follows (history asset) and its exchange rate, if an LST.
UNDERLYING = {"WETH": "ETH", "WBTC": "BTC", "USDC": "USDC"}
LST_RATIO = {"wstETH": "stETH"}  # LST -> history asset whose /ETH ratio it follows
LST_ONLY_RATE = ("rETH",)  # LSTs with no shipped series: WETH x rate


@dataclass(frozen=True)
class EpisodePath:
    name: str
    times: NDArray[np.int64]  # unix seconds, hourly
    prices: dict[str, F64]  # devnet asset -> USD market price (what its feeds carry)
    rates: dict[str, float]  # LST -> exchange rate, constant over the episode
    sources: dict[str, str]  # devnet asset -> how its path was built (docs, report)
    held: dict[str, int]  # history file -> dropped known rows held at the previous close

    def __len__(self) -> int:
        return int(self.times.size)

    def slice(self, start_hour: int, hours: int | None) -> EpisodePath:
        """The path from `start_hour` for `hours` (None: to the end): a test's short leg."""
        stop = None if hours is None else start_hour + hours
        if start_hour < 0 or (stop is not None and stop > len(self)):
            raise EpisodeError(f"{self.name}: slice [{start_hour}, {stop}) outside {len(self)} h")
        return EpisodePath(
            self.name,
            self.times[start_hour:stop],
            {k: v[start_hour:stop] for k, v in self.prices.items()},
            dict(self.rates),
            dict(self.sources),
            dict(self.held),
        )

    def every(self, k: int) -> EpisodePath:
        """Every k-th hour (k hours of market per replay step)."""
        if k == 1:
            return self
        return EpisodePath(
            self.name,
            self.times[::k],
            {s: v[::k] for s, v in self.prices.items()},
            dict(self.rates),
            dict(self.sources),
            dict(self.held),
        )

    def at(self, i: int) -> dict[str, float]:
        return {k: float(v[i]) for k, v in self.prices.items()}


def _load(name: str, directory: Path) -> PriceSeries:
    path = directory / name
    if not path.is_file():
        raise EpisodeError(f"episode data file missing: {path}")
    try:
        return history.load(name, directory)
    except CsvError as exc:
        raise EpisodeError(f"episode data file {name} is not usable: {exc}") from exc


def _hourly(series: PriceSeries, times: NDArray[np.int64], held: dict[str, int]) -> F64:
    """Closes at `times` (close times of hourly bars); known dropped rows held."""
    idx = (times - series.start) // HOUR - 1
    if idx[0] < 0 or idx[-1] >= len(series):
        raise EpisodeError(
            f"{Path(series.path).name} covers close times "
            f"{_iso(int(series.close_times()[0]))}..{_iso(series.last_close_time())}, "
            f"the episode needs {_iso(int(times[0]))}..{_iso(int(times[-1]))}"
        )
    close = series.close.copy()
    holes = np.flatnonzero(np.isnan(close[: idx[-1] + 1]))
    for h in holes:
        if h == 0:
            raise EpisodeError(f"{Path(series.path).name}: first bar is a hole")
        close[h] = close[h - 1]
    held[Path(series.path).name] = int(np.count_nonzero((holes >= idx[0]) & (holes <= idx[-1])))
    return close[idx]


def _daily(series: PriceSeries, times: NDArray[np.int64], held: dict[str, int]) -> F64:
    """Daily closes interpolated in log space at `times` (a close stands at day end)."""
    t_close = series.close_times()
    close = series.close
    ok = ~np.isnan(close)
    name = Path(series.path).name
    # A dropped known row is bridged by the interpolation between its neighbours.
    lo = np.searchsorted(t_close[ok], times[0], side="right") - 1
    hi = np.searchsorted(t_close[ok], times[-1], side="left")
    if lo < 0 or hi >= int(ok.sum()):
        raise EpisodeError(
            f"{name} covers {_iso(int(t_close[0]))}..{_iso(int(t_close[-1]))}, "
            f"the episode needs {_iso(int(times[0]))}..{_iso(int(times[-1]))}"
        )
    inside = (t_close >= times[0]) & (t_close <= times[-1])
    held[name] = int(np.count_nonzero(inside & ~ok))
    logp = np.interp(times.astype(np.float64), t_close[ok].astype(np.float64), np.log(close[ok]))
    return np.exp(logp)


def _iso(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%MZ")


def _series_for(
    spec: EpisodeSpec, asset: str, times: NDArray[np.int64], held: dict[str, int], d: Path
) -> tuple[F64, str]:
    if asset in spec.hourly:
        name = spec.hourly[asset]
        return _hourly(_load(name, d), times, held), f"hourly {name}"
    for name, f in history.FILES.items():
        if f.asset == asset and f.quote == "USD" and f.frequency == "daily":
            return _daily(_load(name, d), times, held), f"daily {name}, log-interpolated"
    raise EpisodeError(f"no shipped series for {asset}")


def _ratio_starts(asset: str, d: Path) -> tuple[str, int]:
    for name, f in history.FILES.items():
        if f.asset == asset and f.quote == "ETH":
            return name, _load(name, d).start + 86400
    raise EpisodeError(f"no shipped {asset}/ETH series")


def _covers(series: PriceSeries, start: int, end: int) -> bool:
    """Whether an hourly series has a bar closing at every hour of [start, end]."""
    return series.start + HOUR <= start and end <= series.start + len(series) * HOUR


def spec_for(name: str, directory: Path = history.HISTORY_DIR) -> EpisodeSpec:
    """A shipped episode by name, or a date range `START..END` (UTC days, END
    exclusive) built like one from the shipped files: an asset's hourly file where one
    covers the whole range, else its daily closes, log-interpolated (`sources` says
    which). The range must lie inside every daily file the path needs; the warm-up
    takes the days before it from the same files (warmup.py)."""
    spec = EPISODES.get(name)
    if spec is not None:
        return spec
    try:
        window = history.date_range(name, min_days=2)
    except ValueError as exc:
        raise EpisodeError(f"episode {exc}") from None
    if window is None:
        raise EpisodeError(
            f"unknown episode {name!r}; shipped: {', '.join(EPISODES)}, "
            f"or a date range {history.RANGE_FORMAT}"
        )
    start, end = window
    first, _, last = name.partition(history.RANGE_SEP)
    hourly: dict[str, str] = {}
    for fname, f in history.FILES.items():
        wanted = f.frequency == "hourly" and f.quote == "USD" and f.asset not in hourly
        if wanted and _covers(_load(fname, directory), start, end):
            hourly[f.asset] = fname
    return EpisodeSpec(name, f"{first} to {last} (date range)", first, last, hourly)


def build(
    name: str,
    rates: Mapping[str, float],
    directory: Path = history.HISTORY_DIR,
) -> EpisodePath:
    """The hourly USD path of every devnet asset over episode `name` (`spec_for`: a
    shipped one or a date range); `rates` are the devnet's LST exchange rates (held
    constant)."""
    spec = spec_for(name, directory)
    start, end = spec.bounds()
    times = np.arange(start, end + 1, HOUR, dtype=np.int64)
    held: dict[str, int] = {}
    prices: dict[str, F64] = {}
    sources: dict[str, str] = {}
    for devnet, asset in UNDERLYING.items():
        prices[devnet], sources[devnet] = _series_for(spec, asset, times, held, directory)
    for lst, asset in LST_RATIO.items():
        rate = _rate(rates, lst)
        ratio_file, first = _ratio_starts(asset, directory)
        if first <= start:
            ratio = _daily(_load(ratio_file, directory), times, held)
            sources[lst] = f"WETH x daily {ratio_file} (log-interpolated) x rate {rate}"
        else:
            ratio = np.ones_like(times, dtype=np.float64)
            sources[lst] = f"WETH x rate {rate} ({ratio_file} starts after the episode)"
        prices[lst] = prices["WETH"] * ratio * rate
    for lst in LST_ONLY_RATE:
        rate = _rate(rates, lst)
        prices[lst] = prices["WETH"] * rate
        sources[lst] = f"WETH x rate {rate} (no shipped series)"
    bad = [k for k, v in prices.items() if not np.all(np.isfinite(v) & (v > 0))]
    if bad:
        raise EpisodeError(f"{name}: non-finite or non-positive prices for {bad}")
    lst_rates = {k: _rate(rates, k) for k in (*LST_RATIO, *LST_ONLY_RATE)}
    return EpisodePath(name, times, prices, lst_rates, sources, held)


def _rate(rates: Mapping[str, float], lst: str) -> float:
    r = rates.get(lst)
    if r is None or not math.isfinite(r) or r <= 0:
        raise EpisodeError(f"no usable exchange rate for {lst}: {r!r}")
    return float(r)


def require_drivable(path: EpisodePath, feeds: Iterable[str], rate_tokens: Iterable[str]) -> None:
    """Every feed and LST rate the devnet has must have a path: otherwise it would sit
    at its old price while the others replay, and the run would measure nothing real."""
    no_feed = sorted(set(feeds) - set(path.prices))
    no_rate = sorted(set(rate_tokens) - set(path.rates))
    if no_feed or no_rate:
        raise EpisodeError(
            f"episode {path.name} cannot drive "
            + ", ".join([*(f"feed {s}" for s in no_feed), *(f"rate {s}" for s in no_rate)])
        )
