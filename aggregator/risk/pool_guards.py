"""Which pools may weigh liquidity this round (docs/risk.md "Liquidity weighting from
pools", "Guards"). Pure functions of snapshots, oracle prices and limits.

Invariants:
- A pool price never prices anything: it is only compared with the oracle median.
- A pool is ignored for the round, with its reason, when its snapshot is stale (more
  than `max_age_blocks` behind the head or `max_age_s` old), when its price is more
  than `max_deviation` from the oracle (relative), when its in-range liquidity moved by
  more than `max_liquidity_move` (relative to the larger) since the previous snapshot,
  or when the oracle has no price for either side.
- An asset none of whose pools passes falls back to depth_usd; the reason says why
  (every pool stale, or what set each aside).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aggregator.config import LiquidityConfig
from aggregator.risk.liquidity import AssetPools, IgnoredPool, PoolSale
from chains.pool_state import PoolSnapshot

STALE = "stale"
DEVIATION = "price_deviation"
LIQUIDITY_MOVE = "liquidity_moved"
UNPRICED = "no_oracle_price"
REASONS = (STALE, DEVIATION, LIQUIDITY_MOVE, UNPRICED)


@dataclass(frozen=True)
class PoolObservation:
    """A configured pool's latest snapshot as the feed holds it."""

    sale: PoolSale
    previous: PoolSnapshot | None  # the snapshot before it (None: first read)
    head_block: int  # the chain's confirmed head when judged
    read_at: float  # wall-clock seconds when the snapshot was read or last confirmed


def pool_price_usd(sale: PoolSale, quote_usd: float) -> float:
    """USD per whole unit of the sold asset implied by the pool's price and the oracle's
    quote price (compared with the oracle, never used as a price)."""
    p1_per_0 = sale.pool.price1_per_0()
    return (p1_per_0 if sale.sells_token0 else 1.0 / p1_per_0) * quote_usd


def price_deviation(sale: PoolSale, asset_usd: float, quote_usd: float) -> float:
    """|pool price / oracle price - 1|."""
    return abs(pool_price_usd(sale, quote_usd) / asset_usd - 1.0)


def liquidity_move(previous: PoolSnapshot | None, current: PoolSnapshot) -> float:
    """Relative change of the in-range liquidity between consecutive snapshots (0 with no
    previous one, or when both are empty)."""
    if previous is None:
        return 0.0
    a, b = previous.liquidity, current.liquidity
    top = max(a, b)
    return abs(b - a) / top if top > 0 else 0.0


def why_ignored(
    obs: PoolObservation,
    asset_usd: float | None,
    quote_usd: float | None,
    limits: LiquidityConfig,
    now: float,
) -> str | None:
    """The reason a pool is set aside this round, or None when it may be used."""
    snap = obs.sale.pool
    if obs.head_block - snap.block_number > limits.max_age_blocks:
        return STALE
    if now - obs.read_at > limits.max_age_s:
        return STALE
    if not _priced(asset_usd) or not _priced(quote_usd):
        return UNPRICED
    assert asset_usd is not None and quote_usd is not None
    if price_deviation(obs.sale, asset_usd, quote_usd) > limits.max_deviation:
        return DEVIATION
    if liquidity_move(obs.previous, snap) > limits.max_liquidity_move:
        return LIQUIDITY_MOVE
    return None


def _priced(x: float | None) -> bool:
    return x is not None and math.isfinite(x) and x > 0


def judge_asset(
    symbol: str,
    observations: Sequence[PoolObservation],
    prices: Mapping[str, float | None],
    limits: LiquidityConfig,
    now: float,
) -> AssetPools:
    """The pools of `symbol` used this round and those set aside (module docstring)."""
    used: list[PoolSale] = []
    ignored: list[IgnoredPool] = []
    for obs in observations:
        reason = why_ignored(obs, prices.get(symbol), prices.get(obs.sale.quote), limits, now)
        if reason is None:
            used.append(obs.sale)
        else:
            ignored.append(IgnoredPool(obs.sale.pool.chain, obs.sale.pool.address, reason))
    fallback = None
    if not used:
        reasons = sorted({i.reason for i in ignored})
        fallback = (
            "no pool read yet" if not observations
            else "every pool is stale" if reasons == [STALE]
            else "every pool was set aside: " + ", ".join(reasons)
        )  # fmt: skip
    return AssetPools(tuple(used), tuple(ignored), fallback)


__all__ = [
    "DEVIATION",
    "LIQUIDITY_MOVE",
    "REASONS",
    "STALE",
    "UNPRICED",
    "PoolObservation",
    "judge_asset",
    "liquidity_move",
    "pool_price_usd",
    "price_deviation",
    "why_ignored",
]
