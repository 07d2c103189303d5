"""Backtest statistics for a VaR series against realised P&L.

- breaches: period t is a breach when the realised P&L is below -VaR_t.
- Kupiec proportion of failures (POF): with n periods, x breaches, expected rate p,
  LR = -2 ln[(1-p)^(n-x) p^x] + 2 ln[(1-x/n)^(n-x) (x/n)^x] ~ chi2(1).
- Christoffersen independence: from the transition counts n_ij (state i then j, 1 =
  breach), pi01 = n01/(n00+n01), pi11 = n11/(n10+n11), pi = (n01+n11)/(all);
  LR = -2 ln[(1-pi)^(n00+n10) pi^(n01+n11)]
       + 2 ln[(1-pi01)^n00 pi01^n01 (1-pi11)^n10 pi11^n11] ~ chi2(1);
  conditional coverage LR_cc = LR_pof + LR_ind ~ chi2(2).
- Basel traffic light: with the binomial(n, p) CDF F, green while F(x) < 95%, yellow
  while F(x) < 99.99%, red from there (at n = 250, p = 1%: green 0-4, yellow 5-9,
  red 10+, the Basel table).

Invariants: 0 ln 0 is taken as 0 (the likelihoods at the boundary are exact); p-values
are from scipy.stats.chi2.sf; every function is pure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.stats import binom, chi2

F64 = NDArray[np.float64]
GREEN_CDF = 0.95
YELLOW_CDF = 0.9999


def breaches(var: F64, pnl: F64) -> NDArray[np.bool_]:
    """Breach indicator per period: realised P&L below minus VaR (VaR is a positive
    loss figure). NaN periods (no forecast) are not breaches: drop them first."""
    v = np.asarray(var, np.float64)
    p = np.asarray(pnl, np.float64)
    if v.shape != p.shape:
        raise ValueError(f"VaR {v.shape} and P&L {p.shape} differ in shape")
    return np.asarray(p < -v)


def _xlogy(x: float, y: float) -> float:
    return 0.0 if x == 0 else x * math.log(y)


@dataclass(frozen=True)
class Kupiec:
    n: int
    breaches: int
    expected: float
    lr: float
    p_value: float


def kupiec(n: int, x: int, p: float) -> Kupiec:
    if n <= 0 or not 0 <= x <= n or not 0 < p < 1:
        raise ValueError(f"kupiec needs n > 0, 0 <= x <= n, 0 < p < 1 (got {n}, {x}, {p})")
    phat = x / n
    ll0 = _xlogy(n - x, 1 - p) + _xlogy(x, p)
    ll1 = _xlogy(n - x, 1 - phat) + _xlogy(x, phat)
    lr = max(0.0, -2.0 * (ll0 - ll1))
    return Kupiec(n, x, n * p, lr, float(chi2.sf(lr, 1)))


@dataclass(frozen=True)
class Christoffersen:
    n00: int
    n01: int
    n10: int
    n11: int
    lr_ind: float
    p_value: float


def christoffersen(hits: NDArray[np.bool_]) -> Christoffersen:
    h = np.asarray(hits, bool).astype(np.int64)
    if h.size < 2:
        raise ValueError("the independence test needs at least 2 periods")
    prev, cur = h[:-1], h[1:]
    n00 = int(np.sum((prev == 0) & (cur == 0)))
    n01 = int(np.sum((prev == 0) & (cur == 1)))
    n10 = int(np.sum((prev == 1) & (cur == 0)))
    n11 = int(np.sum((prev == 1) & (cur == 1)))
    pi01 = n01 / (n00 + n01) if n00 + n01 else 0.0
    pi11 = n11 / (n10 + n11) if n10 + n11 else 0.0
    pi = (n01 + n11) / (n00 + n01 + n10 + n11)
    ll0 = _xlogy(n00 + n10, 1 - pi) + _xlogy(n01 + n11, pi)
    ll1 = _xlogy(n00, 1 - pi01) + _xlogy(n01, pi01) + _xlogy(n10, 1 - pi11) + _xlogy(n11, pi11)
    lr = max(0.0, -2.0 * (ll0 - ll1))
    return Christoffersen(n00, n01, n10, n11, lr, float(chi2.sf(lr, 1)))


def conditional_coverage_p(k: Kupiec, c: Christoffersen) -> float:
    return float(chi2.sf(k.lr + c.lr_ind, 2))


def zone_bounds(n: int, p: float = 0.01) -> tuple[int, int]:
    """(last green, last yellow) breach counts for n observations at breach rate p."""
    x = np.arange(n + 1)
    cdf = binom.cdf(x, n, p)
    green = int(np.max(x[cdf < GREEN_CDF], initial=-1))
    yellow = int(np.max(x[cdf < YELLOW_CDF], initial=-1))
    return green, yellow


def traffic_light(n: int, x: int, p: float = 0.01) -> str:
    green, yellow = zone_bounds(n, p)
    return "green" if x <= green else "yellow" if x <= yellow else "red"
