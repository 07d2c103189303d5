"""The engine with pool-priced concentration terms against the scalar reference
(reference.py: a plain tick loop per pool, the split by bisection on the common
marginal rate), on generated books and pools."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.risk.liquidity import AssetPools, IgnoredPool, PoolSale

from .helpers import (
    DECIMALS,
    apply_market,
    engine,
    market,
    position_rows,
    ref_inputs,
    rows_by_account,
)
from .reference import account_risk, pool_impact
from .uniswap_ref import make_pool

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
QUOTE = "USDC"


def pool_near(draw, price_t: float, dec_t: int, quote_usd: float, sells0: bool, i: int):  # noqa: PLR0917
    """A pool selling an asset worth price_t against USDC (6 decimals), its price within
    a few percent of the oracle, liquidity concentrated around it."""
    raw = price_t / quote_usd * 10**6 / 10**dec_t  # quote raw per asset raw
    tick0 = math.log(raw if sells0 else 1 / raw) / math.log(1.0001)
    tick = math.floor(tick0) + draw(st.integers(-300, 300))
    sp = 60
    base = tick - tick % sp
    positions = []
    for _ in range(draw(st.integers(1, 4))):
        lo = base + sp * draw(st.integers(-80, 10))
        positions.append(
            (lo, lo + sp * draw(st.integers(1, 120)), draw(st.integers(10**10, 10**22)))
        )
    band = sp * draw(st.integers(20, 400))
    d0, d1 = (dec_t, 6) if sells0 else (6, dec_t)
    fee = draw(st.sampled_from([100, 500, 3000, 10000]))
    return make_pool(positions, tick, fee=fee, decimals0=d0, decimals1=d1,
                     band=(tick - band, tick + band), address=f"0x{i:040x}")  # fmt: skip


@st.composite
def pools_for(draw, m):
    prices = {k: v.value for k, v in m["prices"].items()}
    out: dict[str, list] = {}
    for sym, dec in (("WETH", 18), ("WBTC", 8)):
        legs = []
        for i in range(draw(st.integers(0, 2))):
            s0 = draw(st.booleans())
            legs.append((pool_near(draw, prices[sym], dec, prices[QUOTE], s0, i), s0, QUOTE))
        if legs:
            out[sym] = legs
    return out


@SETTINGS
@given(data=st.data(), rows=position_rows(), m=market())
def test_engine_with_pools_matches_reference(data, rows, m):
    pools = data.draw(pools_for(m))
    eng = engine(depth=m["depth"])
    apply_market(eng, m)
    eng.set_pools({
        s: AssetPools(tuple(PoolSale(p, s0, q) for p, s0, q in legs)) for s, legs in pools.items()
    })  # fmt: skip
    eng.load_positions(rows)
    eng.recompute()
    # L_t as a plain loop: the collateral of the accounts the reference rates
    # liquidatable with nothing sold ahead of them (the queue never feeds itself).
    inp0 = ref_inputs(eng, m)
    inp0.pools = pools
    want: dict[str, float] = {}
    for arows in rows_by_account(rows).values():
        if account_risk(inp0, arows).tier not in ("liquidatable", "insolvent"):
            continue
        for _chain, asset, side, head, confirmed in arows:
            if side == "collateral":
                q = min(head, confirmed) / 10 ** DECIMALS[asset]
                want[asset] = want.get(asset, 0.0) + q
    got = eng.market.liquidity.liquidating
    for t, sym in enumerate(eng.symbols):
        if pools:  # (only a book with pools needs L_t, so only then is it computed)
            assert got[t] == pytest.approx(want.get(sym, 0.0), rel=1e-12, abs=1e-300)
    eng.recompute()  # the same inputs: the same queue and the same ratings
    assert np.array_equal(eng.market.liquidity.liquidating, got)
    inp = ref_inputs(eng, m)
    inp.pools = pools
    inp.liquidating = {sym: float(got[t]) for t, sym in enumerate(eng.symbols)}
    for acct, arows in rows_by_account(rows).items():
        ref = account_risk(inp, arows)
        h = eng.health(acct)
        # A sale of a few raw units is resolved by the reference's bisection only to
        # ~1e-6 relative: 1e-9 USD absolute slack.
        assert abs(h.c_liq - ref.cliq) <= 1e-9 * ref.vtot + 1e-9, (acct, h, ref)
        assert abs(h.c_borrow - ref.cborrow) <= 1e-9 * ref.vtot + 1e-9
        # the tick (stored) and the per-account path agree bit for bit
        assert h.hf == eng.standard_health(acct).hf or math.isnan(h.hf)


def test_concentration_term_is_the_pool_impact_and_shows_in_the_explanation():
    eng = engine()
    eng.set_prices({s: _ok(p) for s, p in {"USDC": 1.0, "DAI": 1.0, "WBTC": 60000.0,
                    "WETH": 3000.0, "wstETH": 3500.0, "rETH": 3300.0}.items()})  # fmt: skip
    eng.set_volatility({s: 0.02 for s in eng.symbols})
    tick = math.floor(math.log(3000 * 1e6 / 1e18) / math.log(1.0001))
    pool = make_pool([(tick - 600, tick + 600, 10**17)], tick, band=(tick - 3000, tick + 3000))
    eng.market.set_pools({"WETH": AssetPools(
        (PoolSale(pool, True, "USDC"),), (IgnoredPool("beta", "0x" + "22" * 20, "stale"),)
    )})  # fmt: skip
    from aggregator.risk import PositionRow

    acct = "0x" + "a1" * 20
    eng.load_positions([
        PositionRow(acct, "ethereum", "WETH", "collateral", 200 * 10**18, 200 * 10**18),
        PositionRow(acct, "ethereum", "USDC", "debt", 10**11, 10**11),
    ])  # fmt: skip
    eng.recompute()
    ex = eng.explain(acct, now=0.0)
    hc = ex["assets"]["WETH"]["collateral"]["haircut"]
    inp = ref_inputs(eng, {"prices": {s: _ok(float(eng.market.price[i]))
                                      for i, s in enumerate(eng.symbols)},
                           "later": {}, "sigma": {}, "rel": {}})  # fmt: skip
    inp.pools = {"WETH": [(pool, True, "USDC")]}
    want = pool_impact(inp, "WETH", 200.0)
    assert hc["concentration_term"] == pytest.approx(want, rel=1e-9)
    liq = hc["liquidity"]
    assert liq["source"] == "pools"
    assert liq["pools"][0]["chain"] == "alpha" and liq["impact"] == hc["concentration_term"]
    assert liq["ignored"] == [{"chain": "beta", "pool": "0x" + "22" * 20, "reason": "stale"}]
    assert ex["assets"]["USDC"].get("collateral") is None


def _ok(v):
    from aggregator.risk import PriceInput

    return PriceInput(v, "ok")


@SETTINGS
@given(data=st.data(), rows=position_rows(), m=market())
def test_ratings_with_pools_depend_on_the_inputs_not_on_the_last_round(data, rows, m):
    """The queue is picked without a queue, so a rating is a function of positions,
    prices and pools: recomputing the same inputs again changes nothing, and a fresh
    engine agrees. (Picked from the last round's tiers, as before, every round could
    add the accounts the previous queue pushed under 1: a cascade fed by itself.)"""
    pools = data.draw(pools_for(m))
    sales = {
        s: AssetPools(tuple(PoolSale(p, s0, q) for p, s0, q in legs)) for s, legs in pools.items()
    }
    engines = []
    for rounds in (1, 3):
        eng = engine(depth=m["depth"])
        apply_market(eng, m)
        eng.set_pools(sales)
        eng.load_positions(rows)
        for _ in range(rounds):
            eng.recompute()
        engines.append(eng)
    once, thrice = engines
    n = once.book.n_accounts
    assert np.array_equal(once.r_hf[:n], thrice.r_hf[:n], equal_nan=True)
    assert np.array_equal(once.r_tier[:n], thrice.r_tier[:n])
    assert np.array_equal(once.market.liquidity.liquidating, thrice.market.liquidity.liquidating)
