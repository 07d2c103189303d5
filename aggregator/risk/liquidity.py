"""Pool liquidity as a market input of the standard model (docs/risk.md "Liquidity
weighting from pools").

The I/O layer (aggregator/liquidity_feed.py) hands over, per asset, the pools that
passed the guards (aggregator/risk/pool_guards.py) as `PoolSale`s and the ones it
ignored with their reason; the model turns them into one `ImpactCurve` per asset at
the current oracle prices (`asset_curves`), continued beyond the pools' bands by the
asset's static `depth_usd` model (risk/impact.py). An asset without a usable curve
keeps the static `depth_usd` term, and `why_fallback` says why.

Invariants: quote tokens are valued at the oracle's last ok price, never at a pool
price; a curve needs the asset's own price and every used pool's quote price (a pool
whose quote asset has no price is left out, named in `why_fallback` when no pool
remains); curves are rebuilt only when the pools or the prices change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from aggregator.risk.impact import ImpactCurve, SaleLeg, build_curve
from chains.pool_state import PoolSnapshot


@dataclass(frozen=True)
class PoolSale:
    """A pool that sells asset t: t is token0 (`sells_token0`) or token1, and the other
    token is the asset `quote` (valued at the oracle)."""

    pool: PoolSnapshot
    sells_token0: bool
    quote: str


@dataclass(frozen=True)
class IgnoredPool:
    chain: str
    pool: str
    reason: str


@dataclass(frozen=True)
class AssetPools:
    """One asset's pools this round: those used and those the guards set aside."""

    used: tuple[PoolSale, ...] = ()
    ignored: tuple[IgnoredPool, ...] = ()
    # Why no pool is used at all (stale, none fresh, none configured), if so.
    fallback: str | None = None


@dataclass
class LiquidityInput:
    """What MarketData holds of the pools: per asset index, and the amount of each asset
    the book is liquidating (sold before an account's own sale)."""

    pools: dict[int, AssetPools] = field(default_factory=dict)
    liquidating: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    version: int = 0


@dataclass(frozen=True)
class AssetCurve:
    curve: ImpactCurve | None
    used: tuple[PoolSale, ...]
    fallback: str | None


def asset_curve(  # noqa: PLR0917
    pools: AssetPools | None,
    t: int,
    price: NDArray[np.float64],
    has_price: NDArray[np.bool_],
    index: Mapping[str, int],
    decimals: int,
    depth_usd: float | None = None,
) -> AssetCurve:
    """The sale curve of asset t (continued beyond the bands by `depth_usd`), or None
    with the reason the depth fallback applies."""
    if pools is None:
        return AssetCurve(None, (), "no pool configured")
    if not pools.used:
        return AssetCurve(None, (), pools.fallback or "no pool passed the guards")
    if not has_price[t]:
        return AssetCurve(None, (), "the asset has no oracle price")
    legs = [
        SaleLeg(s.pool, s.sells_token0, float(price[index[s.quote]]))
        for s in pools.used
        if has_price[index[s.quote]]
    ]
    used = tuple(s for s in pools.used if has_price[index[s.quote]])
    if not legs:
        return AssetCurve(None, (), "no pool's quote asset has an oracle price")
    return AssetCurve(build_curve(legs, float(price[t]), decimals, depth_usd), used, None)


def asset_curves(
    inp: LiquidityInput,
    price: NDArray[np.float64],
    has_price: NDArray[np.bool_],
    index: Mapping[str, int],
    decimals: Sequence[int],
    *,
    depths: Sequence[float | None] | None = None,
) -> list[AssetCurve]:
    """Per asset (config order) its curve or fallback reason; `depths` (per asset,
    depth_usd or None) continue the curves beyond the bands."""
    dep = list(depths) if depths is not None else [None] * len(decimals)
    return [
        asset_curve(inp.pools.get(t), t, price, has_price, index, d, dep[t])
        for t, d in enumerate(decimals)
    ]


def queue_state(
    curves: Sequence[AssetCurve],
    liquidating: NDArray[np.float64],
    price: NDArray[np.float64],
    symbols: Sequence[str],
) -> dict[str, dict[str, float]]:
    """Per pool-priced asset the book's liquidation queue L_t against its curve: units
    and USD queued, the bands' capacity, how far L_t runs past it, the continuation
    depth, and `dust_impact`, the PI a small sale meets behind the queue (the floor of
    every other holder's concentration term before the `impact` factor: 1 when the
    queue has used up all the curve)."""
    out: dict[str, dict[str, float]] = {}
    for t, ac in enumerate(curves):
        if ac.curve is None:
            continue
        c = ac.curve
        after = float(liquidating[t]) if t < liquidating.size else 0.0
        dust = max(c.capacity + 0.5 * c.continuation, 1e-300) * 1e-9
        out[symbols[t]] = {
            "queue_units": after,
            "queue_usd": after * float(price[t]),
            "band_units": c.capacity,
            "beyond_band_units": max(after - c.capacity, 0.0),
            "continuation_units": c.continuation,
            "queue_impact": float(c.impact(after)[0]),
            "dust_impact": float(c.impact(dust, after)[0]),
        }
    return out


__all__ = [
    "AssetCurve",
    "AssetPools",
    "IgnoredPool",
    "LiquidityInput",
    "PoolSale",
    "asset_curve",
    "asset_curves",
    "queue_state",
]
