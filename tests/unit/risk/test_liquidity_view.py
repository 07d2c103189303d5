"""The liquidity system view and the what-if's sale impact (risk/liquidity_view.py)."""

from __future__ import annotations

import math

import pytest

from aggregator.risk import LedgerView, PositionRow, PriceInput
from aggregator.risk.impact import SaleLeg, build_curve
from aggregator.risk.liquidity import AssetPools, IgnoredPool, PoolSale
from aggregator.risk.liquidity_view import ALL

from .helpers import engine
from .uniswap_ref import make_pool

TICK = math.floor(math.log(3000 * 1e6 / 1e18) / math.log(1.0001))
PRICES = {"USDC": 1.0, "DAI": 1.0, "WBTC": 60000.0, "WETH": 3000.0, "wstETH": 3500.0,
          "rETH": 3300.0}  # fmt: skip
A, B = "0x" + "a1" * 20, "0x" + "b2" * 20


def pool(chain, liq, address):
    return make_pool([(TICK - 600, TICK + 600, liq)], TICK, band=(TICK - 3000, TICK + 3000),
                     chain=chain, address=address)  # fmt: skip


def setup():
    eng = engine()
    eng.set_prices({s: PriceInput(p, "ok") for s, p in PRICES.items()})
    eng.set_volatility({s: 0.02 for s in eng.symbols})
    p1, p2 = (
        pool("ethereum", 10**17, "0x" + "01" * 20),
        pool("arbitrum", 3 * 10**16, "0x" + "02" * 20),
    )
    eng.market.set_pools({
        "WETH": AssetPools((PoolSale(p1, True, "USDC"), PoolSale(p2, True, "USDC")),
                           (IgnoredPool("base", "0x" + "03" * 20, "stale"),)),
    })  # fmt: skip
    eng.load_positions([
        # A: liquidatable, 10 WETH on ethereum and 5 on arbitrum
        PositionRow(A, "ethereum", "WETH", "collateral", 10 * 10**18, 10 * 10**18),
        PositionRow(A, "arbitrum", "WETH", "collateral", 5 * 10**18, 5 * 10**18),
        PositionRow(A, "base", "USDC", "debt", 45_000 * 10**6, 45_000 * 10**6),
        # B: healthy
        PositionRow(B, "ethereum", "WETH", "collateral", 10**18, 10**18),
    ])  # fmt: skip
    eng.recompute()
    return eng, p1, p2


def test_report_compares_sellable_with_liquidatable_collateral_per_chain():
    eng, p1, _ = setup()
    assert eng.health(A).tier == "liquidatable"
    rep = LedgerView(eng).liquidity_report()
    weth = rep["assets"]["WETH"]["chains"]
    assert weth["ethereum"]["at_risk"]["liquidatable"] == pytest.approx(10.0)
    assert weth["arbitrum"]["at_risk"]["liquidatable"] == pytest.approx(5.0)
    assert weth[ALL]["at_risk"]["liquidatable_usd"] == pytest.approx(45_000.0)
    alone = build_curve([SaleLeg(p1, True, 1.0)], 3000.0, 18)
    assert weth["ethereum"]["sellable"]["0.02"] == pytest.approx(alone.sellable_within(0.02))
    both = weth[ALL]["sellable"]["0.02"]
    assert both > weth["ethereum"]["sellable"]["0.02"] + weth["arbitrum"]["sellable"]["0.02"] * 0.5
    assert weth["ethereum"]["liquidatable_impact"] == pytest.approx(float(alone.impact(10.0)[0]))
    assert rep["ignored"] == {
        "WETH": [{"chain": "base", "pool": "0x" + "03" * 20, "reason": "stale"}]
    }
    assert rep["assets"]["WBTC"]["fallback"] == "no pool configured"


def test_sale_impact_for_the_whatif():
    eng, p1, _ = setup()
    out = LedgerView(eng).sale_impact({("WETH", "ethereum"): 20.0, ("WETH", "arbitrum"): 1.0,
                                       ("WBTC", "base"): 2.0})  # fmt: skip
    alone = build_curve([SaleLeg(p1, True, 1.0)], 3000.0, 18)
    assert out["WETH"]["ethereum"]["impact"] == pytest.approx(float(alone.impact(20.0)[0]))
    assert out["WETH"][ALL]["amount"] == 21.0
    assert out["WETH"][ALL]["impact"] < out["WETH"]["ethereum"]["impact"]
    assert out["WBTC"]["base"]["fallback"] == "no pool configured"
    with pytest.raises(KeyError, match="unknown chain 'gamma'"):
        LedgerView(eng).sale_impact({("WETH", "gamma"): 1.0})
    with pytest.raises(ValueError, match=r"sells\[WETH\]\[ethereum\]"):
        LedgerView(eng).sale_impact({("WETH", "ethereum"): -1.0})


def test_cli_table_shows_sellable_and_set_aside_pools():
    from aggregator.tables import liquidity_text

    eng, _, _ = setup()
    text = liquidity_text(LedgerView(eng).liquidity_report())
    weth = next(
        line for line in text.splitlines() if line.startswith("WETH") and "ethereum" in line
    )
    assert "pools" in weth and "10.00" in weth
    assert "fallback: no pool configured" in text
    assert "0x" + "03" * 20 in text and "stale" in text


def test_bad_pool_input_names_the_field():
    import numpy as np

    eng, p1, _ = setup()
    with pytest.raises(KeyError, match="pools: unknown asset 'XYZ'"):
        eng.set_pools({"XYZ": AssetPools((PoolSale(p1, True, "USDC"),))})
    with pytest.raises(KeyError, match=r"pools.WETH.used\[0\].quote: unknown asset 'EUR'"):
        eng.set_pools({"WETH": AssetPools((PoolSale(p1, True, "EUR"),))})
    with pytest.raises(ValueError, match=r"pools.WBTC.used\[0\]: pool .* 18 decimals, WBTC has 8"):
        eng.set_pools({"WBTC": AssetPools((PoolSale(p1, True, "USDC"),))})
    with pytest.raises(ValueError, match="liquidating: one finite amount >= 0 per asset"):
        eng.market.set_liquidating(np.array([1.0, -1.0, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="liquidating"):
        eng.market.set_liquidating(np.zeros(3))


def test_an_unpriced_quote_or_asset_falls_back_with_the_reason():
    eng, p1, _ = setup()
    eng.set_prices({"USDC": PriceInput(None, "unavailable")})  # keeps the last ok price
    assert eng.model.curves(eng.market)[eng.symbols.index("WETH")].curve is not None
    fresh = engine()
    fresh.set_prices({"WETH": PriceInput(3000.0, "ok")})
    fresh.set_volatility({s: 0.02 for s in fresh.symbols})
    fresh.set_pools({"WETH": AssetPools((PoolSale(p1, True, "USDC"),))})
    ac = fresh.model.curves(fresh.market)[fresh.symbols.index("WETH")]
    assert ac.curve is None and ac.fallback == "no pool's quote asset has an oracle price"


def test_pool_liquidity_for_the_whatif_measures_units_against_the_live_pools():
    """The what-if's liquidity seam: a chain with pools answers from today's curve in
    units, converted at the scenario's price (after a 30% WETH fall the same units are
    worth 30% less, the slippage of selling them is the same); a chain or asset without
    a curve answers from the depth fallback."""
    from aggregator.risk.liquidity_view import PoolLiquidity
    from aggregator.risk.whatif import DepthLiquidity

    eng, p1, _ = setup()
    view = LedgerView(eng)
    fallback = DepthLiquidity({"WBTC": 20e6}, 1.0, 0.02)
    live = PoolLiquidity(eng.market, eng.market, view.asset_decimals, fallback, 0.02)
    alone = build_curve([SaleLeg(p1, True, 1.0)], 3000.0, 18)
    impact, sellable = live.sellable("WETH", "ethereum", 30_000.0)
    assert impact == pytest.approx(float(alone.impact(10.0)[0]))
    assert sellable == pytest.approx(alone.sellable_within(0.02) * 3000.0)
    shocked = eng.market.scenario(eng.market.price * [1, 1, 1, 0.7, 1, 1], eng.market.status, 1.0)
    after = PoolLiquidity(eng.market, shocked, view.asset_decimals, fallback, 0.02)
    impact2, sellable2 = after.sellable("WETH", "ethereum", 21_000.0)  # the same 10 WETH
    assert impact2 == pytest.approx(impact)
    assert sellable2 == pytest.approx(sellable * 0.7)
    assert live.sellable("WBTC", "base", 1e6) == fallback.sellable("WBTC", "base", 1e6)
    assert live.sellable("WETH", "base", 1e6) == (None, None)  # no pool, no depth_usd
