"""Price impact of selling an asset through Uniswap v3 pools (docs/risk.md "Liquidity
weighting from pools").

A sale of X of asset t is split across every pool that sells t (any chain, t as token0
or token1) so that each pool ends at the same marginal rate r (USD received per unit of
t sold, after the pool's fee, quote tokens valued at the oracle): the split no other
split beats, since output is concave in each pool's input. Per pool the swap follows
Uniswap v3's SwapMath/SqrtPriceMath: within a tick range of liquidity L the input
(fee taken on it) and the output between sqrt prices a > b (of t in the quote token,
raw units) are L*(1/b - 1/a)/(1 - fee) and L*(a - b). With s = sqrt(r), pool i's sqrt
price is s*c_i (c_i = 1/sqrt((1 - fee_i) * quote USD per raw unit)), so between two
consecutive breakpoints of s (a pool starting, a tick crossed, a band edge) the total
input is linear in 1/s and the total output linear in s: the curve is exact, stored as
one row per breakpoint, and any X is evaluated in closed form after a binary search.

Invariants:
- `ImpactCurve.table` rows (x, y, s, b, d), one per breakpoint in falling s: x and y
  (units of t sold, USD received) are non-decreasing; between rows k and k+1 the
  input rate is b and the output rate d. The last row is (x_n, y_n, m, 0, w): the
  bands' capacity and output, the marginal rate m at the band edge (USD per unit of
  t, the lowest edge of all pools) and the continuation depth w (units of t).
- A walk never leaves a pool's snapshot band: beyond it the pools' liquidity is
  unknown. What they cannot absorb (`beyond_band`, u = x - x_n units) is valued by
  the static depth model continued from the edge: output y_n + m (u - u^2 / w) up
  to u = w / 2, flat beyond (w = depth_usd / oracle price; no depth_usd: w = 0,
  nothing beyond). Its marginal rate m (1 - 2u / w) starts at the edge's own rate
  (output and impact continuous, marginal rate non-increasing: output stays
  concave) and never exceeds it (conservative: at most m per unit beyond).
- The pool price never values anything: impact is measured against the oracle price,
  and the concentration term is max(0, impact) (a pool above the oracle earns nothing).
- Zero sold is zero impact; impact is non-decreasing in X (output is concave).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit
from numpy.typing import NDArray

from chains.pool_state import Q96, PoolSnapshot

FEE_UNITS = 1_000_000  # Uniswap fee denominator (fee is in hundredths of a bip)
COLS = 5  # x, y, s, b, d (last row: x, y, m, 0, w)


def sqrt_ratio(tick: int) -> float:
    """sqrt(1.0001^tick): the sqrt price (token1 per token0, raw) at a tick boundary."""
    # log1p: the float 1.0001 is off by 1e-16, which log() turns into 1e-12 relative in
    # the exponent's slope; two ticks' sqrt prices a fraction of a tick apart (a price
    # just off a boundary) then differ by a capacity 1e-4 wrong. 1e-4 is off by 5e-17.
    return math.exp(tick * 0.5 * math.log1p(1e-4))


@dataclass(frozen=True)
class SaleLeg:
    """One pool as the seller of asset t sees it: which side t is and what one whole
    quote token is worth at the oracle."""

    pool: PoolSnapshot
    sells_token0: bool
    quote_usd: float

    @property
    def quote_decimals(self) -> int:
        return self.pool.decimals1 if self.sells_token0 else self.pool.decimals0

    @property
    def sold_decimals(self) -> int:
        return self.pool.decimals0 if self.sells_token0 else self.pool.decimals1


def leg_pieces(leg: SaleLeg) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(sigma, L): the walk of a sale through one pool, in the sale direction.

    sigma[j] > sigma[j+1] are sqrt prices of t in the quote token (raw units) at the
    piece boundaries (current price, each initialised tick crossed, the band edge); L[j]
    is the in-range liquidity between sigma[j] and sigma[j+1]. Selling token0 moves the
    pool's tick down (crossing tick i removes liquidity_net[i]; a tick at the current
    index is crossed first, as Uniswap's nextInitializedTick(lte) does); selling
    token1 moves it up (ticks strictly above, adding liquidity_net).
    """
    p = leg.pool
    sp = p.sqrt_price_x96 / Q96
    liq = p.liquidity
    bounds = [sp]
    ls: list[int] = []
    if leg.sells_token0:
        for tk in reversed(p.ticks):
            if tk.index > p.tick or tk.index < p.band_lower:
                continue
            bounds.append(min(sqrt_ratio(tk.index), bounds[-1]))
            ls.append(liq)
            liq -= tk.liquidity_net
        end = sqrt_ratio(p.band_lower)
    else:
        for tk in p.ticks:
            if tk.index <= p.tick or tk.index > p.band_upper:
                continue
            bounds.append(max(sqrt_ratio(tk.index), bounds[-1]))
            ls.append(liq)
            liq += tk.liquidity_net
        end = sqrt_ratio(p.band_upper)
    if (end < bounds[-1]) if leg.sells_token0 else (end > bounds[-1]):
        bounds.append(end)
        ls.append(liq)
    sig = np.array(bounds, np.float64)
    if not leg.sells_token0:
        sig = 1.0 / sig  # t's sqrt price in the quote token
    return sig, np.maximum(np.array(ls, np.float64), 0.0)


@dataclass(frozen=True)
class ImpactCurve:
    """Output of selling any amount of one asset through a set of pools (docstring)."""

    table: NDArray[np.float64]  # (n, COLS): x (units of t), y (USD), s, b, d
    price_usd: float  # the oracle price impact is measured against

    @property
    def capacity(self) -> float:
        """Units of t the pools absorb within their bands."""
        return float(self.table[-1, 0]) if self.table.shape[0] else 0.0

    @property
    def edge_rate(self) -> float:
        """Marginal USD per unit of t at the band edge (0 for an empty curve)."""
        return float(self.table[-1, 2]) if self.table.shape[0] else 0.0

    @property
    def continuation(self) -> float:
        """Depth w (units of t) of the static-depth continuation beyond the band."""
        return float(self.table[-1, 4]) if self.table.shape[0] else 0.0

    def output(self, x: NDArray[np.float64] | float) -> NDArray[np.float64]:
        """USD received for selling x units (vectorised; beyond capacity: the depth
        continuation)."""
        xs = np.ascontiguousarray(np.atleast_1d(np.asarray(x, np.float64)))
        out = np.empty_like(xs)
        curve_output_many(xs, self.table, 0, self.table.shape[0], out)
        return out

    def impact(self, x: NDArray[np.float64] | float, after: float = 0.0) -> NDArray[np.float64]:
        """1 - (USD received) / (x * oracle price) for selling x units after `after`
        units were sold already (the book's liquidations); 0 for x = 0."""
        xs = np.ascontiguousarray(np.atleast_1d(np.asarray(x, np.float64)))
        out = np.empty_like(xs)
        impact_many(xs, float(after), self.table, 0, self.table.shape[0], self.price_usd, out)
        return out

    def sellable_within(self, slippage: float, after: float = 0.0) -> float:
        """Largest amount whose impact stays <= slippage (after `after` units sold)."""
        n = self.table.shape[0]
        return float(max_within(slippage, after, self.table, 0, n, self.price_usd))


EMPTY = np.zeros((0, COLS))


def build_curve(
    legs: Sequence[SaleLeg], price_usd: float, decimals: int, depth_usd: float | None = None
) -> ImpactCurve:
    """The optimally split sale curve of asset t (oracle price `price_usd`, `decimals`)
    through `legs`, continued beyond the bands by the static depth model of `depth_usd`
    (docstring; None: nothing beyond). No legs: an empty curve (capacity 0)."""
    if not (math.isfinite(price_usd) and price_usd > 0):
        raise ValueError(f"price_usd: must be finite and > 0, got {price_usd}")
    if depth_usd is not None and not (math.isfinite(depth_usd) and depth_usd > 0):
        raise ValueError(f"depth_usd: must be finite and > 0, got {depth_usd}")
    parts = []
    for i, leg in enumerate(legs):
        if leg.sold_decimals != decimals:
            raise ValueError(
                f"legs[{i}]: pool {leg.pool.address} sells a token of {leg.sold_decimals} "
                f"decimals, the asset has {decimals}"
            )
        if not (math.isfinite(leg.quote_usd) and leg.quote_usd > 0):
            raise ValueError(f"legs[{i}].quote_usd: must be finite and > 0, got {leg.quote_usd}")
        sig, liq = leg_pieces(leg)
        if liq.size == 0:
            continue
        fee = leg.pool.fee / FEE_UNITS
        q = leg.quote_usd / 10.0**leg.quote_decimals
        c = 1.0 / math.sqrt((1.0 - fee) * q)
        # Per unit of L: input rate in 1/s (raw t), output rate in s (USD).
        parts.append((sig / c, liq, 1.0 / ((1.0 - fee) * c), c * q))
    if not parts:
        return ImpactCurve(EMPTY.copy(), price_usd)
    s = np.unique(np.concatenate([p[0] for p in parts]))[::-1]
    b = np.zeros(s.size)
    d = np.zeros(s.size)
    for sb, liq, bi, di in parts:
        # Segment k runs from s[k] down to s[k+1]; the pool's piece holding it is the
        # one whose upper bound is the first >= s[k] in falling order.
        j = np.searchsorted(-sb, -s, side="right") - 1
        inside = (j >= 0) & (j < liq.size)
        lj = np.where(inside, liq[np.clip(j, 0, liq.size - 1)], 0.0)
        b += lj * bi
        d += lj * di
    b[-1] = d[-1] = 0.0
    scale = 10.0**decimals
    dx = np.zeros(s.size)
    dy = np.zeros(s.size)
    dx[1:] = b[:-1] * (1.0 / s[1:] - 1.0 / s[:-1]) / scale
    dy[1:] = d[:-1] * (s[:-1] - s[1:])
    table = np.stack([np.cumsum(dx), np.cumsum(dy), s, b / scale, d], axis=1)
    # Last row: the edge's marginal rate s^2 (USD per raw unit after fees, the common
    # rate every pool ends at) per whole unit, and the continuation depth in units.
    table[-1, 2] = s[-1] * s[-1] * scale
    table[-1, 4] = depth_usd / price_usd if depth_usd is not None else 0.0
    return ImpactCurve(np.ascontiguousarray(table), price_usd)


@njit(cache=True, nogil=True, error_model="numpy")
def curve_output(x, tab, off, n):
    """USD received for selling x units through curve rows tab[off:off+n]."""
    if n == 0 or x <= 0.0:
        return 0.0
    lo, hi = off, off + n  # last row with tab[row, 0] <= x
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if tab[mid, 0] <= x:
            lo = mid
        else:
            hi = mid
    b = tab[lo, 3]
    if lo == off + n - 1:
        # Beyond the bands: the static depth model continued from the edge rate m.
        w = tab[lo, 4]
        if w <= 0.0:
            return tab[lo, 1]
        u = min(x - tab[lo, 0], 0.5 * w)
        return tab[lo, 1] + tab[lo, 2] * (u - u * u / w)
    if b <= 0.0:
        return tab[lo, 1]
    s0 = tab[lo, 2]
    w = (x - tab[lo, 0]) / b * s0  # the level falls from s0 to s0 / (1 + w)
    return tab[lo, 1] + tab[lo, 4] * s0 * w / (1.0 + w)


@njit(cache=True, nogil=True, error_model="numpy")
def curve_impact(x, after, tab, off, n, price):  # noqa: PLR0917
    """1 - output / (x * price) of selling x after `after` units were sold; 0 at x = 0."""
    if x <= 0.0:
        return 0.0
    y = curve_output(after + x, tab, off, n) - curve_output(after, tab, off, n)
    return 1.0 - y / (x * price)


@njit(cache=True, nogil=True, error_model="numpy")
def curve_output_many(xs, tab, off, n, out):
    for i in range(xs.size):
        out[i] = curve_output(xs[i], tab, off, n)


@njit(cache=True, nogil=True, error_model="numpy")
def impact_many(xs, after, tab, off, n, price, out):  # noqa: PLR0917
    for i in range(xs.size):
        out[i] = curve_impact(xs[i], after, tab, off, n, price)


@njit(cache=True, nogil=True, error_model="numpy")
def max_within(level, after, tab, off, n, price):  # noqa: PLR0917
    """Largest x with curve_impact(x) <= level (impact is non-decreasing in x), found
    by bisection to float resolution; 0 when even the first unit costs more."""
    if n == 0:
        return 0.0
    # Past the continuation's peak (u = w / 2) nothing more is received: the answer is
    # at most that far.
    cap = max(tab[off + n - 1, 0] + 0.5 * tab[off + n - 1, 4] - after, 0.0)
    if cap <= 0.0 or curve_impact(cap * 1e-12, after, tab, off, n, price) > level:
        return 0.0
    lo, hi = cap * 1e-12, cap
    if curve_impact(hi, after, tab, off, n, price) <= level:
        return hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        if curve_impact(mid, after, tab, off, n, price) <= level:
            lo = mid
        else:
            hi = mid
    return lo


__all__ = [
    "ImpactCurve",
    "SaleLeg",
    "build_curve",
    "curve_impact",
    "curve_output",
    "leg_pieces",
    "sqrt_ratio",
]
