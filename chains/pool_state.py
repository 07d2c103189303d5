"""What a Uniswap v3 pool looks like to the risk code: plain data, read at one block.

The pool reader (chains/) produces `PoolSnapshot`s; the impact kernel (aggregator/risk/)
consumes them. Neither side needs the other's code, only this file.

Invariants:
- `ticks` holds every *initialised* tick the reader read, sorted ascending by index, each
  with its `liquidity_net` exactly as the pool stores it (signed, raw units). Ticks
  outside the read band are absent; `band_lower`/`band_upper` say how far the snapshot is
  complete, and a walk that leaves the band must stop there (liquidity beyond it is
  unknown, not zero).
- `sqrt_price_x96`, `tick` and `liquidity` are slot0's price, current tick and the
  in-range liquidity at the same block (`block_number`, `block_hash`).
- `token0 < token1` (as the factory orders them); `decimals0`/`decimals1` are theirs.
- `fee` is in hundredths of a bip (500 = 0.05%), as the pool's `fee()` returns it.
"""

from __future__ import annotations

from dataclasses import dataclass

Q96 = 1 << 96
MIN_TICK = -887272
MAX_TICK = 887272


@dataclass(frozen=True, slots=True)
class TickLiquidity:
    index: int
    liquidity_net: int


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    chain: str
    address: str
    token0: str
    token1: str
    decimals0: int
    decimals1: int
    fee: int
    tick_spacing: int
    sqrt_price_x96: int
    tick: int
    liquidity: int
    ticks: tuple[TickLiquidity, ...]
    band_lower: int
    band_upper: int
    block_number: int
    block_hash: str

    def price1_per_0(self) -> float:
        """Human price of token0 in token1 units (decimals applied)."""
        raw = (self.sqrt_price_x96 / Q96) ** 2
        return raw * 10 ** (self.decimals0 - self.decimals1)
