"""Pool guards (aggregator/risk/pool_guards.py): deviation from the oracle, liquidity
moves between consecutive snapshots, staleness; the fallback reason."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from aggregator.config import LiquidityConfig
from aggregator.risk.liquidity import PoolSale
from aggregator.risk.pool_guards import (
    DEVIATION,
    LIQUIDITY_MOVE,
    STALE,
    UNPRICED,
    PoolObservation,
    judge_asset,
    liquidity_move,
    pool_price_usd,
    price_deviation,
)

from .uniswap_ref import make_pool

TICK = math.floor(math.log(3000 * 1e6 / 1e18) / math.log(1.0001))  # WETH/USDC ~ 3000
LIMITS = LiquidityConfig(max_deviation=0.02, max_liquidity_move=0.5, max_age_blocks=10,
                         max_age_s=60)  # fmt: skip


def sale(tick=TICK, liq=10**18, block=100, address="0x" + "11" * 20, sells0=True):
    pool = make_pool([(tick - 600, tick + 600, liq)], tick, address=address)
    return PoolSale(replace(pool, block_number=block), sells0, "USDC")


def obs(s, previous=None, head=100, read_at=1000.0):
    return PoolObservation(s, previous, head, read_at)


def test_pool_price_in_usd_both_orientations():
    s = sale()
    assert pool_price_usd(s, 1.0) == pytest.approx(3000, rel=2e-4)
    flipped = PoolSale(s.pool, False, "USDC")
    assert pool_price_usd(flipped, 1.0) == pytest.approx(1 / s.pool.price1_per_0())
    assert price_deviation(s, 3000.0, 1.0) < 2e-4


def test_a_pool_that_agrees_is_used():
    ap = judge_asset("WETH", [obs(sale())], {"WETH": 3000.0, "USDC": 1.0}, LIMITS, 1000.0)
    assert len(ap.used) == 1 and ap.ignored == () and ap.fallback is None


def test_deviation_beyond_the_bound_is_ignored_and_named():
    far = sale(tick=TICK + 300)  # ~3% above the oracle
    near = sale(tick=TICK + 150, address="0x" + "22" * 20)  # ~1.5%
    ap = judge_asset("WETH", [obs(far), obs(near)], {"WETH": 3000.0, "USDC": 1.0}, LIMITS, 1000.0)
    assert [u.pool.address for u in ap.used] == ["0x" + "22" * 20]
    assert [(i.pool, i.reason) for i in ap.ignored] == [("0x" + "11" * 20, DEVIATION)]
    assert ap.fallback is None


def test_liquidity_moved_within_a_block_is_ignored():
    prev = sale(liq=10**18, block=99).pool
    jumped = sale(liq=3 * 10**18)
    assert liquidity_move(prev, jumped.pool) == pytest.approx(2 / 3)
    assert liquidity_move(None, jumped.pool) == 0.0
    ap = judge_asset("WETH", [obs(jumped, prev)], {"WETH": 3000.0, "USDC": 1.0}, LIMITS, 1000.0)
    assert ap.used == () and ap.ignored[0].reason == LIQUIDITY_MOVE
    assert ap.fallback == "every pool was set aside: liquidity_moved"
    small = sale(liq=12 * 10**17)
    ap = judge_asset("WETH", [obs(small, prev)], {"WETH": 3000.0, "USDC": 1.0}, LIMITS, 1000.0)
    assert len(ap.used) == 1


def test_stale_by_blocks_or_seconds_falls_back():
    old = sale(block=80)
    ap = judge_asset("WETH", [obs(old, head=100)], {"WETH": 3000.0, "USDC": 1.0}, LIMITS, 1000.0)
    assert ap.ignored[0].reason == STALE and ap.fallback == "every pool is stale"
    ap = judge_asset("WETH", [obs(sale(), read_at=900.0)], {"WETH": 3000.0, "USDC": 1.0},
                     LIMITS, 1000.0)  # fmt: skip
    assert ap.ignored[0].reason == STALE


def test_unpriced_quote_or_asset_is_ignored_and_no_pool_says_so():
    ap = judge_asset("WETH", [obs(sale())], {"WETH": 3000.0, "USDC": None}, LIMITS, 1000.0)
    assert ap.ignored[0].reason == UNPRICED
    assert judge_asset("WETH", [], {}, LIMITS, 1000.0).fallback == "no pool read yet"
