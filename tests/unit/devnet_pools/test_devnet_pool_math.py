"""The devnet pools' pure parts: position ranges and amounts (against Uniswap's
liquidity formulas written out here), the arbitrage limit, the LP's move choice."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devkit.pool_market import MoveChoice, PoolMarket, _ChainBook, arbitrage_limit
from devkit.pools import (
    POOL_PLANS,
    POSITION_SHAPE,
    PoolRecord,
    UniswapDeployment,
    amounts_for_value,
    mint_params,
    position_ticks,
    price_tick,
    sqrt_price_x96,
)

MIN_TICK, MAX_TICK = -887272, 887272


@given(
    st.integers(-400_000, 400_000),
    st.sampled_from([1, 10, 60, 200]),
    st.sampled_from([h for h, _ in POSITION_SHAPE]),
)
def test_position_ticks_are_spaced_and_cover_the_band(
    tick: int, spacing: int, half_width: float | None
) -> None:
    lower, upper = position_ticks(tick, half_width, spacing)
    assert lower % spacing == 0 and upper % spacing == 0
    assert MIN_TICK <= lower < tick < upper <= MAX_TICK
    if half_width is None:
        assert lower - spacing < MIN_TICK and upper + spacing > MAX_TICK
    else:
        assert 1.0001 ** (upper - tick) >= 1 + half_width - 1e-12
        assert 1.0001 ** (tick - lower) >= 1 / (1 - half_width) - 1e-12


@given(
    st.floats(1e-12, 1e12),
    st.floats(1e3, 1e30),
    st.sampled_from([h for h, _ in POSITION_SHAPE if h is not None]),
)
def test_amounts_are_worth_the_value_in_the_formulas_ratio(
    price: float, value1: float, half_width: float
) -> None:
    tick = price_tick(price)
    lower, upper = position_ticks(tick, half_width, 10)
    a0, a1 = amounts_for_value(value1, price, lower, upper)
    sp, sa, sb = math.sqrt(price), math.sqrt(1.0001**lower), math.sqrt(1.0001**upper)
    # Same liquidity L on both sides: a0 = L (1/sp - 1/sb), a1 = L (sp - sa).
    ratio = (sp - sa) / (1 / sp - 1 / sb)
    if a0 > 1e6 and a1 > 1e6:
        assert a1 / a0 == pytest.approx(ratio, rel=1e-6)
    assert a0 * price + a1 == pytest.approx(value1, rel=1e-6, abs=price + 2)


def test_sqrt_price_round_trips_to_the_tick() -> None:
    for price in (3000 * 1e-12, 1 / 0.847, 60_000 * 1e-2, 1.08):
        sp = sqrt_price_x96(price)
        assert (sp / 2**96) ** 2 == pytest.approx(price, rel=1e-12)
        t = price_tick(price)
        assert 1.0001**t <= price < 1.0001 ** (t + 1)


@pytest.mark.parametrize("fee", [100, 500, 3000])
def test_arbitrage_limit_moves_to_the_near_edge_of_the_fee_band(fee: int) -> None:
    sqrt_price = 2**96
    band = fee / 1e6
    assert arbitrage_limit(sqrt_price, sqrt_price * math.exp(band / 4), fee) is None
    for direction in (1, -1):
        target = sqrt_price * math.exp(direction * 0.05)
        got = arbitrage_limit(sqrt_price, target, fee)
        assert got is not None
        zero_for_one, limit = got
        # Price must rise toward a higher target: buy token0 (not zeroForOne).
        assert zero_for_one == (direction < 0)
        gap = 2 * math.log(target / limit)
        assert abs(gap) == pytest.approx(band, rel=1e-6)
        assert (limit > sqrt_price) == (direction > 0)


def record(label: str = "WETH/USDC") -> PoolRecord:
    return PoolRecord(
        label,
        "0x" + "99" * 20,
        "0x" + "11" * 20,
        "0x" + "22" * 20,
        "WETH",
        "USDC",
        500,
        10,
        "USDC",
        "WETH",
        40e6,
        1.0,
    )


def test_mint_params_hold_the_price_and_carry_headroom() -> None:
    price = 1 / 3000 * 1e12  # WETH per USDC, raw
    tick = price_tick(price)
    p = mint_params(
        record(),
        tick=tick,
        price_raw=price,
        half_width=0.01,
        value1=1e21,
        recipient="0x" + "77" * 20,
        skew=0.2,
    )
    lower, upper = p[3], p[4]
    assert lower < tick < upper and lower % 10 == 0 and upper % 10 == 0
    a0, a1 = amounts_for_value(1e21, price, lower, upper)
    assert p[5] > a0 and p[6] > a1 and p[7] == p[8] == 0


def market(probability: float, max_positions: int) -> PoolMarket:
    pools = {r.label: r for r in (record(), record("WBTC/USDC"))}
    uni = UniswapDeployment(
        *(["0x" + "aa" * 20] * 8), tokens={}, pools=pools, base_positions=18, depth=1.0
    )
    book = _ChainBook(uni, 1.0)
    return PoolMarket(
        {"beta": book}, random.Random(3), move_probability=probability, max_positions=max_positions
    )


def test_moves_follow_the_probability_and_burn_only_what_was_minted() -> None:
    assert all(market(0.0, 4).choose_move("beta") is None for _ in range(50))
    m = market(1.0, 1)
    first = m.choose_move("beta")
    assert isinstance(first, MoveChoice) and first.burn_id is None
    assert 0.02 <= first.share <= 0.08 and first.half_width in (0.002, 0.005, 0.01, 0.03)
    m.books["beta"].open[first.pool] = [101]
    for _ in range(20):
        move = m.choose_move("beta")
        assert move is not None
        if move.pool == first.pool:
            assert move.burn_id == 101  # at the cap: the held one goes, nothing else
            break
    else:
        pytest.fail("never chose the pool again")


def test_every_plan_has_a_standard_fee_tier() -> None:
    from chains.pool_reader import FEE_TICK_SPACING

    assert {p.fee for p in POOL_PLANS} <= set(FEE_TICK_SPACING)
    assert sum(share for _, share in POSITION_SHAPE) == pytest.approx(1.0)


async def test_recentre_mints_the_base_book_around_the_moved_price() -> None:
    """After a move to ETH 1,500 the LP's new base book is centred on the pool's price
    and worth the pool's depth at the new prices; every amount it mints is funded."""
    from eth_abi import decode, encode

    from devkit.simulator import MarketModel

    m = market(0.0, 4)
    m.books["beta"].uni.pools = {"WETH/USDC": record()}
    price = 1 / 1500 * 1e12  # WETH raw per USDC raw (token0 USDC)
    tick = price_tick(price)

    async def rpc(method: str, params: list) -> str:
        assert method == "eth_call"
        words = encode(
            ["uint160", "int24", "uint16", "uint16", "uint16", "uint8", "bool"],
            [sqrt_price_x96(price), tick, 0, 0, 0, 0, True],
        )
        return "0x" + words.hex()

    model = MarketModel(random.Random(0), prices={"WETH": 1500.0, "USDC": 1.0})
    funds, mints = await m.recentre_txs(rpc, "beta", model, "0x" + "dd" * 20)
    assert len(mints) == len(POSITION_SHAPE) and len(funds) == 2 * len(mints)
    kinds = "(address,address,uint24,int24,int24,uint256,uint256,uint256,uint256,address,uint256)"
    usd = 0.0
    for k, tx in enumerate(mints):
        (p,) = decode([kinds], bytes.fromhex(tx["data"][10:]))
        assert p[3] < tick < p[4]
        a0, a1 = p[5], p[6]
        usd += a0 / 1e6 + a1 / 1e18 * 1500.0
        funded = [decode(["address", "uint256"], bytes.fromhex(f["data"][10:])) for f in
                  funds[2 * k : 2 * k + 2]]  # fmt: skip
        assert [a for _, a in funded] == [a0, a1]
        assert tx["from"] == m.books["beta"].uni.lp
    assert usd == pytest.approx(40e6, rel=2e-3)


def test_recentre_is_due_after_a_ten_percent_move_either_way() -> None:
    from devkit.pool_market import RECENTRE_MOVE, recentre_due

    centre = {"WETH": 2000.0, "WBTC": 30000.0, "USDC": 1.0}
    assert not recentre_due(centre, dict(centre))
    assert not recentre_due(centre, {**centre, "WETH": 2000.0 * 1.099})
    assert recentre_due(centre, {**centre, "WETH": 2000.0 * (1 + RECENTRE_MOVE)})
    assert recentre_due(centre, {**centre, "WBTC": 30000.0 / (1 + RECENTRE_MOVE)})
    assert not recentre_due(centre, {**centre, "WBTC": 30000.0 * 0.95})
    # Only the USD-priced pool assets count (a stablecoin's wobble never re-centres).
    assert not recentre_due(centre, {**centre, "USDC": 0.8})
