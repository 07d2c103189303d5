"""Risk factors from price series: log returns of each asset's USD price at a horizon,
aligned across assets, plus one de-peg factor per liquid-staking token.

Factor set (non-redundant, so the covariance of the factors can be full rank):
- every asset that is not an LST: r_t = log(p_t / p_{t-h}) in USD;
- every LST l with underlying u: d_t = log((p_l / p_u)_t / (p_l / p_u)_{t-h}), its
  return relative to the underlying, so a de-peg is a factor of its own.
An LST's USD return is then r_u + d_l; `Factors.loadings` (assets x factors) holds
that map, so USD exposures x per asset become factor exposures loadings.T @ x.

Invariants: prices are sampled at close times on one grid of step h shared by every
asset (hourly bars aggregate to h by taking the close every h/step bars); a return
needs both ends present, and a period missing in any asset is dropped for all (no
filling). Too little history for an asset is `InsufficientHistory` naming it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from aggregator.marketdata.loader import DAY, PriceSeries

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


class InsufficientHistory(ValueError):
    def __init__(self, asset: str, needed: int, have: int, detail: str = "") -> None:
        self.asset, self.needed, self.have = asset, needed, have
        super().__init__(
            f"asset {asset!r}: needs {needed} returns of history, has {have}"
            + (f" ({detail})" if detail else "")
        )


@dataclass(frozen=True)
class Factors:
    assets: tuple[str, ...]
    names: tuple[str, ...]  # factor names, e.g. ("ETH", "BTC", "wstETH/ETH")
    loadings: F64  # assets x factors: asset log return = loadings @ factor returns
    times: I64  # unix close time at the end of each return period
    returns: F64  # periods x factors
    asset_returns: F64  # periods x assets (USD log returns)
    horizon_s: int


def sample_closes(series: Mapping[str, PriceSeries], horizon_s: int = DAY) -> tuple[I64, F64]:
    """(times, prices): each series' close at the common times t0 + k*h (NaN where a
    series has a hole). h must be a whole number of every series' steps and the grid
    must be on each series' close times."""
    if not series:
        raise ValueError("no price series")
    for name, s in series.items():
        if horizon_s % s.step:
            raise ValueError(
                f"{name}: horizon {horizon_s}s is not a multiple of its step {s.step}s"
            )
    lo = max(int(s.close_times()[0]) for s in series.values())
    hi = min(s.last_close_time() for s in series.values())
    if hi < lo:
        late = max(series, key=lambda n: int(series[n].close_times()[0]))
        raise InsufficientHistory(late, 2, 0, "no overlap with the other assets' history")
    t0 = -(-lo // horizon_s) * horizon_s  # first multiple of h at or after lo
    times = np.arange(t0, hi + 1, horizon_s, dtype=np.int64)
    prices = np.full((times.size, len(series)), np.nan)
    for j, s in enumerate(series.values()):
        pos = (times - s.start) // s.step - 1
        if np.any((times - s.start) % s.step):
            raise ValueError(f"{s.path}: its close times are not on the {horizon_s}s grid")
        prices[:, j] = s.close[pos]
    return times, prices


def build_factors(
    series: Mapping[str, PriceSeries],
    horizon_s: int = DAY,
    underlying: Mapping[str, str] | None = None,
    min_returns: int = 2,
) -> Factors:
    """Factors of the assets in `series` (USD prices), at horizon h. `underlying` maps
    each LST to its underlying asset (which must be in `series`)."""
    underlying = dict(underlying or {})
    assets = tuple(series)
    for lst, u in underlying.items():
        if lst not in series or u not in series:
            raise KeyError(f"LST {lst!r} and its underlying {u!r} both need a price series")
    for a, s in series.items():
        _t, own = sample_closes({a: s}, horizon_s)
        have = int(np.isfinite(np.diff(np.log(own[:, 0]))).sum())
        if have < min_returns:
            raise InsufficientHistory(a, min_returns, have, f"in its own {horizon_s}s history")
    times, prices = sample_closes(series, horizon_s)
    logp = np.log(prices)
    r = logp[1:] - logp[:-1]
    ok = np.all(np.isfinite(r), axis=1)
    if int(ok.sum()) < min_returns:
        late = max(assets, key=lambda a: int(series[a].close_times()[0]))
        raise InsufficientHistory(
            late, min_returns, int(ok.sum()), "periods shared with every other asset"
        )
    r, t = r[ok], times[1:][ok]
    names: list[str] = []
    cols: list[F64] = []
    loadings = np.zeros((len(assets), len(assets)))
    for j, a in enumerate(assets):
        if a in underlying:
            ui = assets.index(underlying[a])
            names.append(f"{a}/{underlying[a]}")
            cols.append(r[:, j] - r[:, ui])
            loadings[j, ui] = 1.0
        else:
            names.append(a)
            cols.append(r[:, j])
        loadings[j, j] = 1.0
    return Factors(assets, tuple(names), loadings, t, np.stack(cols, axis=1), r, horizon_s)


def factor_exposures(factors: Factors, asset_exposures: F64) -> F64:
    """USD exposures per asset (accounts x assets, or one vector) -> per factor."""
    return np.asarray(asset_exposures, np.float64) @ factors.loadings


def select(factors: Factors, names: Sequence[str]) -> list[int]:
    return [factors.names.index(n) for n in names]
