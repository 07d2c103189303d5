"""VaR and Expected Shortfall for many accounts at once (pure numpy).

Inputs are per-account USD exposures X (accounts x positions: one column per risk
position, e.g. an asset's net USD value over all chains) and, per position, one-period
log returns: a covariance S for the parametric model, or scenarios R (scenarios x
positions) for historical simulation. Horizon h is in periods (sqrt(h) scaling).

Parametric (delta-normal, zero mean): sigma_p = sqrt(h * x' S x);
VaR_a = z_a sigma_p; ES_a = phi(z_a) / (1 - a) sigma_p, z_a = Phi^-1(a).
Euler contributions c_i = x_i (S x)_i h / sigma_p * k (k = z_a or phi(z_a)/(1-a))
sum to the total exactly.

Historical / filtered historical simulation: P&L_s = sum_i x_i (exp(sqrt(h) R_si) - 1)
(linear positions fully revalued in price) plus, through a `Revalue` hook, the P&L of
non-linear positions (options via Black-76). With S scenarios and k = ceil((1 - a) S):
VaR_a = the k-th largest loss, ES_a = the mean of the k largest losses (so ES >= VaR at
the same level). Euler contributions to ES: minus the mean of each position's P&L over
that account's k tail scenarios; they sum to ES exactly (the non-linear part is one
more column). FHS scenarios: each factor's historical return rescaled by its current
EWMA volatility over its volatility then (Eurex Prisma, LCH), see `filtered_scenarios`.

The historical P&L of a scenario is summed per account over its non-zero positions in
column order, in one compiled pass that keeps only each account's tail (`_tail_losses`):
bit for bit the scalar sum sum_i x_i expm1(sqrt(h) R_si) over i = 0..k-1 (a zero x_i
adds nothing), so the figures no longer depend on the BLAS build or its threads; against
the dense matrix product used before they differ by summation rounding only (within
1e-13 of sum_i |x_i| max|g|; tests/unit/risk/test_var.py).

Invariants: a zero-exposure account gives zero everywhere; results never depend on
other accounts (rows are independent), so accounts can be processed in chunks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np
from numpy.typing import NDArray

from aggregator.marketdata.covariance import DAILY_LAMBDA, ewma_vol_series

F64 = NDArray[np.float64]
ES_LEVEL = 0.975  # FRTB
VAR_LEVEL = 0.99
CHUNK = 2048

# (scenario log returns, horizon-scaled: scenarios x positions; account rows) ->
# P&L of those accounts' non-linear positions, rows x scenarios.
Revalue = Callable[[F64, slice], F64]


# The standard normal's quantile and density by scipy.stats.norm's formulas (ndtri;
# exp(-x**2/2) / sqrt(2 pi)) without importing scipy.stats (~2 s of the daemon's
# start-up on a loaded 2-core box): the quantile bit for bit, the density within a few
# ulp (norm.pdf's own path differs in the last bit at some levels; tests/unit/risk/
# test_var.py).
_SQRT_2PI = np.sqrt(2 * np.pi)


def ndtri(p: float) -> np.float64:
    """scipy.special.ndtri, imported at the first quantile rather than with the daemon:
    scipy.special with scipy's array-API layer costs 0.15-0.2 s of CPU that a start
    does not need before its book is loaded and rated (docs/performance.md
    "Start-up"; tests/unit/daemon/test_startup_imports.py)."""
    from scipy.special import ndtri as scipy_ndtri

    return np.float64(scipy_ndtri(p))


def z_of(level: float) -> float:
    return float(ndtri(level))


def es_multiplier(level: float) -> float:
    """ES / sigma for a normal P&L: phi(z_a) / (1 - a)."""
    z = np.float64(ndtri(level))
    return float(np.exp(-(z**2) / 2.0) / _SQRT_2PI / (1.0 - level))


def tail_count(level: float, n_scenarios: int) -> int:
    return max(1, math.ceil(round((1.0 - level) * n_scenarios, 9)))


# -- parametric -------------------------------------------------------------------------
def portfolio_sigma(x: F64, cov: F64, horizon: float = 1.0, chunk: int = 1 << 16) -> F64:
    """sqrt(h * x' S x) per row of x (accounts x positions), in chunks of rows so the
    temporary x @ S stays in cache-sized blocks."""
    x = np.asarray(x, np.float64)
    if x.ndim == 1:
        x = x[None, :]
    n = x.shape[0]
    out = np.empty(n)
    for lo in range(0, n, chunk):
        xc = x[lo : lo + chunk]
        q = np.einsum("ij,ij->i", xc @ cov, xc)
        out[lo : lo + chunk] = q
    np.maximum(out, 0.0, out=out)
    np.sqrt(out * horizon, out=out)
    return out


@dataclass(frozen=True)
class Parametric:
    sigma: F64  # accounts: sqrt(h x'Sx)
    var: F64  # accounts, at var_level
    es: F64  # accounts, at es_level
    contributions: F64 | None  # accounts x positions, Euler contributions to ES


def parametric(
    x: F64,
    cov: F64,
    *,
    var_level: float = VAR_LEVEL,
    es_level: float = ES_LEVEL,
    horizon: float = 1.0,
    contributions: bool = False,
) -> Parametric:
    x = np.atleast_2d(np.asarray(x, np.float64))
    sigma = portfolio_sigma(x, cov, horizon)
    contrib = None
    if contributions:
        with np.errstate(divide="ignore", invalid="ignore"):
            marginal = (x @ cov) * horizon / sigma[:, None]
        marginal[sigma == 0.0] = 0.0
        contrib = x * marginal * es_multiplier(es_level)
    return Parametric(sigma, z_of(var_level) * sigma, es_multiplier(es_level) * sigma, contrib)


# Rows per parallel block of `_tail_losses`: one P&L buffer per block, reused row by row.
_BLOCK_ROWS = 64


@numba.njit(cache=True, nogil=True, inline="always")
def _row_losses(
    x: F64, r: int, gt: F64, extra: F64, loss: F64
) -> None:  # pragma: no cover - compiled
    """loss[s] = -(sum_j x[r, j] gt[j, s]) - extra[r, s] (no extra when it has 0 rows),
    summed over the row's non-zero positions in column order. -0.0 start: minus a sum
    that starts at +0.0 (an all-zero row gives -0.0, as the negated product did)."""
    loss[:] = -0.0
    for j in range(x.shape[1]):
        xj = x[r, j]
        if xj != 0.0:  # a zero exposure adds nothing, not even 0 * inf
            for s in range(loss.size):
                loss[s] -= xj * gt[j, s]
    if extra.shape[0] > 0:
        for s in range(loss.size):
            loss[s] -= extra[r, s]


@numba.njit(cache=True, nogil=True, inline="always")
def _select_top(
    loss: F64, vals: F64, out: NDArray[np.int64]
) -> None:  # pragma: no cover - compiled
    """The len(vals) largest of loss, largest first, into vals and their indices into
    out; a tie goes to the earlier index. Insertion into the sorted array: one
    comparison for most of a row."""
    k = vals.size
    filled = 0
    for s in range(loss.size):
        v = loss[s]
        if filled == k and v <= vals[k - 1]:
            continue
        i = filled if filled < k else k - 1
        while i > 0 and vals[i - 1] < v:
            vals[i] = vals[i - 1]
            out[i] = out[i - 1]
            i -= 1
        vals[i] = v
        out[i] = s
        if filled < k:
            filled += 1


# Rows per parallel block of `_tail_losses`: one P&L buffer per block, reused row by row.
_BLOCK_ROWS = 64


@numba.njit(cache=True, nogil=True, parallel=True)
def _tail_losses(
    x: F64, gt: F64, extra: F64, k: int
) -> tuple[F64, NDArray[np.int64]]:  # pragma: no cover - compiled
    """Per account row of x (rows x positions), the k largest scenario losses, largest
    first, and their scenario indices (`_row_losses`, `_select_top`): one row's P&L
    buffer at a time, no rows x scenarios temporary."""
    n = x.shape[0]
    vals = np.empty((n, k))
    out = np.empty((n, k), np.int64)
    for b in numba.prange((n + _BLOCK_ROWS - 1) // _BLOCK_ROWS):
        loss = np.empty(gt.shape[1])
        for r in range(b * _BLOCK_ROWS, min(n, (b + 1) * _BLOCK_ROWS)):
            _row_losses(x, r, gt, extra, loss)
            _select_top(loss, vals[r], out[r])
    return vals, out


# -- historical simulation --------------------------------------------------------------
def filtered_scenarios(
    returns: F64, lam: float = DAILY_LAMBDA, n_scenarios: int = 500, init: int = 20
) -> F64:
    """FHS scenarios from periods x factors log returns: the last `n_scenarios` returns
    r_t (after the EWMA seed of `init`), each scaled per factor by sigma_now / sigma_t,
    where sigma_t is the EWMA forecast for t from returns before t and sigma_now the
    forecast for the next period from all of them. A factor whose past volatility is 0
    keeps its raw return."""
    r = np.asarray(returns, np.float64)
    if r.shape[0] <= init:
        raise ValueError(f"{r.shape[0]} returns: FHS needs more than the {init}-return seed")
    return filtered_scenarios_at(r, ewma_vol_series(r, lam, init), r.shape[0], n_scenarios, init)


def filtered_scenarios_at(returns: F64, vol: F64, t: int, n_scenarios: int, init: int) -> F64:
    """FHS scenarios for period t from returns[:t], given the EWMA forecasts `vol` of
    the whole series (`ewma_vol_series`: element s uses returns[:s] only, so one series
    serves every t of a rolling backtest without look-ahead)."""
    use = slice(max(init, t - n_scenarios), t)
    then, now = vol[use], vol[t]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(then > 0, now / then, 1.0)
    return np.asarray(returns[use] * ratio, np.float64)


def scenario_pnl(x: F64, scenarios: F64, horizon: float = 1.0) -> F64:
    """accounts x scenarios P&L of linear positions, fully revalued in price."""
    g = np.expm1(np.asarray(scenarios, np.float64) * math.sqrt(horizon))
    return np.asarray(np.atleast_2d(x) @ g.T, np.float64)


@dataclass(frozen=True)
class Historical:
    var: F64
    es: F64
    contributions: F64 | None  # accounts x (positions [+ 1 non-linear column])


def historical(
    x: F64,
    scenarios: F64,
    *,
    var_level: float = VAR_LEVEL,
    es_level: float = ES_LEVEL,
    horizon: float = 1.0,
    revalue: Revalue | None = None,
    contributions: bool = False,
    chunk: int = CHUNK,
) -> Historical:
    """VaR/ES of each account over the scenarios (historical or FHS). With `revalue`,
    its P&L is added to the linear P&L and contributions get one more column for it."""
    x = np.atleast_2d(np.asarray(x, np.float64))
    n, k = x.shape
    r = np.asarray(scenarios, np.float64) * math.sqrt(horizon)
    g = np.expm1(r)  # scenarios x positions, per-unit-USD P&L
    n_s = g.shape[0]
    kv, ke = tail_count(var_level, n_s), tail_count(es_level, n_s)
    var = np.empty(n)
    es = np.empty(n)
    width = k + (1 if revalue is not None else 0)
    contrib = np.empty((n, width)) if contributions else None
    gt = np.ascontiguousarray(g.T)
    xs = np.ascontiguousarray(x)
    no_extra = np.empty((0, n_s))
    for lo in range(0, n, chunk):
        rows = slice(lo, min(n, lo + chunk))
        xc = xs[rows]
        extra = None
        if revalue is not None:
            extra = np.ascontiguousarray(revalue(r, rows), np.float64)
        # the largest losses first, their values as the old full loss row held them.
        top, idx = _tail_losses(xc, gt, no_extra if extra is None else extra, max(kv, ke))
        var[rows] = top[:, kv - 1]
        idx = idx[:, :ke]
        es[rows] = top[:, :ke].mean(axis=1)
        if contrib is not None:
            # mean over the tail scenarios of each position's P&L (minus: a loss).
            tail_g = g[idx]  # rows x ke x positions
            contrib[rows, :k] = -np.einsum("rsk,rk->rk", tail_g, xc) / ke
            if extra is not None:
                contrib[rows, k] = -np.take_along_axis(extra, idx, axis=1).mean(axis=1)
    return Historical(var, es, contrib)


# -- stressed period ----------------------------------------------------------------------
def stressed_window(
    returns: F64, window: int, weights: F64 | None = None, level: float = ES_LEVEL
) -> tuple[int, int]:
    """[start, end) of the `window` consecutive periods whose historical ES at `level`
    is largest for the reference book `weights` (default: long 1 USD of every factor,
    a crash of everything). The floor then prices each account on those returns."""
    r = np.asarray(returns, np.float64)
    t = r.shape[0]
    if t < window:
        raise ValueError(f"{t} returns, the stressed window needs {window}")
    w = np.ones(r.shape[1]) if weights is None else np.asarray(weights, np.float64)
    loss = -(np.expm1(r) @ w)
    ke = tail_count(level, window)
    best, best_es = 0, -math.inf
    for s in range(0, t - window + 1):
        seg = np.partition(loss[s : s + window], window - ke)[window - ke :]
        v = float(seg.mean())
        if v > best_es:
            best, best_es = s, v
    return best, best + window


def margin(es: F64, stressed_es: F64) -> F64:
    """MM = max(ES over the liquidation horizon, stressed-period ES)."""
    return np.asarray(np.maximum(es, stressed_es), np.float64)


# -- options through the hook --------------------------------------------------------------
def option_revaluer(
    column: int,
    *,
    spot: float,
    strike: float,
    t_years: float,
    implied_vol: float,
    is_call: bool,
    size: F64,
    horizon_years: float = 1.0 / 365.0,
) -> Revalue:
    """A `Revalue` for one European option series on position `column`'s underlying,
    held in `size` contracts per account: Black-76 (aggregator.risk.portfolio) at the
    scenario spot spot*exp(r), one horizon closer to expiry, minus today's value."""
    from aggregator.risk.portfolio import black76

    sizes = np.asarray(size, np.float64)
    v0 = float(black76(spot, strike, t_years, implied_vol, is_call))

    def revalue(scen: F64, rows: slice) -> F64:
        f = spot * np.exp(scen[:, column])
        dv = black76(f, strike, max(t_years - horizon_years, 0.0), implied_vol, is_call) - v0
        return np.asarray(sizes[rows, None] * dv[None, :], np.float64)

    return revalue
