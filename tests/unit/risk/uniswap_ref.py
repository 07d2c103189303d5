"""Scalar reference of a Uniswap v3 exact-input swap, in exact integers, written from the
whitepaper and v3-core's SwapMath / SqrtPriceMath / FullMath (not from
aggregator/risk/impact.py): one loop over the initialised ticks, fee taken on input,
stopping at the snapshot band. Plus a builder of pool snapshots from positions."""

from __future__ import annotations

from decimal import Decimal, getcontext

from chains.pool_state import Q96, PoolSnapshot, TickLiquidity

getcontext().prec = 80
FEE_UNITS = 1_000_000


def sqrt_at_tick(tick: int) -> int:
    """floor(sqrt(1.0001^tick) * 2^96)."""
    return int((Decimal("1.0001") ** tick).sqrt() * Q96)


def mul_div(a: int, b: int, d: int) -> int:
    return a * b // d


def mul_div_up(a: int, b: int, d: int) -> int:
    return -(-(a * b) // d)


def amount0_delta(sa: int, sb: int, liq: int, up: bool) -> int:
    lo, hi = min(sa, sb), max(sa, sb)
    num = (liq << 96) * (hi - lo)
    return -(-num // hi // lo) if up else num // hi // lo


def amount1_delta(sa: int, sb: int, liq: int, up: bool) -> int:
    lo, hi = min(sa, sb), max(sa, sb)
    return mul_div_up(liq, hi - lo, Q96) if up else mul_div(liq, hi - lo, Q96)


def next_sqrt_from_input(sp: int, liq: int, amount: int, zero_for_one: bool) -> int:
    if zero_for_one:  # token0 in: sqrt' = L*sp / (L + amount*sp), rounded up
        num = liq << 96
        return -(-(num * sp) // (num + amount * sp))
    return sp + (amount << 96) // liq  # token1 in: sqrt' = sp + amount/L, rounded down


def swap_step(
    sp: int, target: int, liq: int, remaining: int, fee: int
) -> tuple[int, int, int, int]:
    """(sqrt after, amount in, amount out, fee amount) of one step, exact input."""
    zfo = sp >= target
    less_fee = mul_div(remaining, FEE_UNITS - fee, FEE_UNITS)
    full_in = amount0_delta(target, sp, liq, True) if zfo else amount1_delta(sp, target, liq, True)
    nxt = target if less_fee >= full_in else next_sqrt_from_input(sp, liq, less_fee, zfo)
    reached = nxt == target
    if zfo:
        a_in = full_in if reached else amount0_delta(nxt, sp, liq, True)
        a_out = amount1_delta(nxt, sp, liq, False)
    else:
        a_in = full_in if reached else amount1_delta(sp, nxt, liq, True)
        a_out = amount0_delta(sp, nxt, liq, False)
    fee_amt = remaining - a_in if not reached else mul_div_up(a_in, fee, FEE_UNITS - fee)
    return nxt, a_in, a_out, fee_amt


def swap_exact_in(pool: PoolSnapshot, zero_for_one: bool, amount: int) -> tuple[int, int]:
    """(amount out, amount left unsold at the band edge) of selling `amount` raw units of
    token0 (zero_for_one) or token1 into `pool`, walking its ticks one by one."""
    sp, liq, tick = pool.sqrt_price_x96, pool.liquidity, pool.tick
    remaining, out = amount, 0
    ticks = sorted(pool.ticks, key=lambda t: t.index)
    while remaining > 0:
        if zero_for_one:
            below = [t for t in ticks if t.index <= tick and t.index >= pool.band_lower]
            nxt_tick = below[-1] if below else None
            edge = pool.band_lower
        else:
            above = [t for t in ticks if t.index > tick and t.index <= pool.band_upper]
            nxt_tick = above[0] if above else None
            edge = pool.band_upper
        t_idx = nxt_tick.index if nxt_tick is not None else edge
        target = sqrt_at_tick(t_idx)
        if (zero_for_one and target > sp) or (not zero_for_one and target < sp):
            target = sp
        if liq > 0 and target != sp:
            sp, a_in, a_out, fee_amt = swap_step(sp, target, liq, remaining, pool.fee)
            remaining -= a_in + fee_amt
            out += a_out
        else:
            sp = target
        if sp != target:
            break  # the input ran out inside this range
        if nxt_tick is None:
            break  # band edge: liquidity beyond it is unknown
        liq += -nxt_tick.liquidity_net if zero_for_one else nxt_tick.liquidity_net
        tick = t_idx - 1 if zero_for_one else t_idx
    return out, remaining


def make_pool(
    positions: list[tuple[int, int, int]],
    tick: int,
    *,
    fee: int = 3000,
    spacing: int = 60,
    decimals0: int = 18,
    decimals1: int = 6,
    band: tuple[int, int] | None = None,
    chain: str = "alpha",
    address: str = "0x" + "11" * 20,
    offset: float = 0.5,
) -> PoolSnapshot:
    """A snapshot of a pool holding `positions` (tick_lower, tick_upper, liquidity),
    its price `offset` of the way from tick to tick + 1."""
    nets: dict[int, int] = {}
    liq = 0
    for lo, hi, amount in positions:
        nets[lo] = nets.get(lo, 0) + amount
        nets[hi] = nets.get(hi, 0) - amount
        if lo <= tick < hi:
            liq += amount
    sa, sb = sqrt_at_tick(tick), sqrt_at_tick(tick + 1)
    sp = sa + int((sb - sa) * offset)
    lo_b, hi_b = band if band is not None else (-887272, 887272)
    ticks = tuple(
        TickLiquidity(i, n) for i, n in sorted(nets.items()) if n != 0 and lo_b <= i <= hi_b
    )
    return PoolSnapshot(
        chain=chain, address=address, token0="0x" + "01" * 20, token1="0x" + "02" * 20,
        decimals0=decimals0, decimals1=decimals1, fee=fee, tick_spacing=spacing,
        sqrt_price_x96=sp, tick=tick, liquidity=liq, ticks=ticks, band_lower=lo_b,
        band_upper=hi_b, block_number=1, block_hash="0x" + "00" * 32,
    )  # fmt: skip


__all__ = ["make_pool", "sqrt_at_tick", "swap_exact_in"]
