"""Beyond the pools' snapshot band (docs/risk.md "Beyond the band"): the static depth
model continued from the band edge's marginal rate. The curve against the scalar
reference (reference.py `beyond_band_output`, a plain midpoint sum of the marginal
rate from the formula), its properties on random pools and queues, and the cliff it
removes: one liquidatable whale no longer puts every other holder of the asset at HF 0.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.risk import PositionRow, PriceInput
from aggregator.risk.impact import SaleLeg, build_curve
from aggregator.risk.liquidity import AssetPools, PoolSale

from .helpers import SYMBOLS, engine, ref_inputs
from .reference import RefInputs, account_risk, pool_output
from .test_pool_reference import pool_near
from .uniswap_ref import make_pool

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WETH = 3000.0


@st.composite
def curves(draw):
    """1-2 random WETH/USDC pools, a depth_usd (or none) and the reference inputs."""
    legs = []
    for i in range(draw(st.integers(1, 2))):
        s0 = draw(st.booleans())
        legs.append((pool_near(draw, WETH, 18, 1.0, s0, i), s0, "USDC"))
    depth = draw(st.one_of(st.none(), st.floats(1e4, 1e9)))
    curve = build_curve([SaleLeg(p, s0, 1.0) for p, s0, _ in legs], WETH, 18, depth)
    eng = engine(depth={"WETH": depth})
    inp = RefInputs(
        chains=["ethereum"], assets=eng.asset_cfgs, groups=[], risk=eng.risk_cfg,
        credit=eng.credit_cfg, price={"WETH": WETH, "USDC": 1.0}, status={}, sigma={},
        pools={"WETH": legs},
    )  # fmt: skip
    return curve, inp, depth


@SETTINGS
@given(c=curves(), f=st.floats(0.0, 3.0))
def test_output_beyond_the_band_matches_the_scalar_reference(c, f):
    curve, inp, _ = c
    x = curve.capacity * (1 + f) + f * 1e3
    want = pool_output(inp, "WETH", x)
    assert float(curve.output(x)[0]) == pytest.approx(want, rel=1e-6, abs=1e-6)


@SETTINGS
@given(c=curves(), a=st.floats(0.0, 4.0), b=st.floats(0.0, 4.0), q=st.floats(1e-6, 2.0))
def test_haircut_is_monotone_in_the_queue_and_in_the_sale(c, a, b, q):
    curve, _, _ = c
    span = curve.capacity + 0.5 * curve.continuation
    lo, hi = sorted((a * span, b * span))
    x = q * span
    assert curve.impact(x, hi)[0] >= curve.impact(x, lo)[0] - 1e-9
    assert curve.impact(x * 1.5, lo)[0] >= curve.impact(x, lo)[0] - 1e-9
    assert curve.output(lo + x)[0] >= curve.output(lo)[0]


@SETTINGS
@given(c=curves(), u=st.floats(0.0, 5.0))
def test_continuation_is_continuous_at_the_edge_and_never_above_the_edge_rate(c, u):
    curve, _, depth = c
    cap, m = curve.capacity, curve.edge_rate
    assert 0 < m <= WETH  # the edge rate is below the oracle (fee, falling price)
    eps = max(cap, 1.0) * 1e-9
    y_cap = float(curve.output(cap)[0])
    below, above = float(curve.output(cap - eps)[0]), float(curve.output(cap + eps)[0])
    # within the band the rate is at most the pools' first (within a few % of the oracle)
    tiny = 1e-12 * y_cap
    assert -tiny <= above - y_cap <= m * eps * (1 + 1e-6) + tiny
    assert -tiny <= y_cap - below <= 1.1 * WETH * eps + tiny
    w = curve.continuation
    assert w == (depth / WETH if depth else 0.0)
    more = u * max(w, 1.0)
    gain = float(curve.output(cap + more)[0]) - y_cap
    slack = 1e-12 * y_cap + 1e-9  # rounding of outputs that large
    assert -slack <= gain <= m * more + slack
    # the marginal rate just past the edge is the edge rate (the depth model's slope
    # starts there): no jump in the price a liquidator gets
    if w > 0:
        h = w * 1e-4  # the depth slope lowers the mean rate over h by 1e-4
        slope = (float(curve.output(cap + h)[0]) - y_cap) / h
        assert slope == pytest.approx(m, rel=2e-4, abs=1e-12 * y_cap / h)


@SETTINGS
@given(c=curves(), past=st.floats(0.0, 0.45), share=st.floats(1e-6, 0.04))
def test_a_small_holder_behind_a_queue_past_the_band_still_receives_something(c, past, share):
    """A queue past the band by `past` of the continuation and an own sale of `share`
    of it: the sale receives at least the marginal rate at its end, m (1 - 2u/w), so
    its impact stays below 1 (HF > 0 whenever 1 - vol - impact > 0)."""
    curve, _, depth = c
    if depth is None:
        return
    w, m = curve.continuation, curve.edge_rate
    after = curve.capacity + past * w
    x = share * w
    pi = float(curve.impact(x, after)[0])
    u_end = past * w + x
    # The impact of a tiny sale is a difference of two large outputs: each is good to a
    # few ulps of the output already received, which relative to the sale's own value
    # is what the bound must allow (sales of 3.3e-6 units right at the band's capacity
    # came out 2.1e-7, then 1.2e-6 above the bound without that scale).
    y_after = float(curve.output(after)[0])
    slack = 1e-6 + 8 * 2.2e-16 * y_after / (x * WETH)
    assert pi <= 1 - m * (1 - 2 * u_end / w) / WETH + slack
    assert pi < 1


def _book(depth: float | None):
    """The cliff: a liquidatable whale holds 4x what the WETH pool's band absorbs; a
    small holder's plain HF (its WETH counted without the pools) is ~4.9."""
    eng = engine(depth={"WETH": depth})
    prices = {"USDC": 1.0, "DAI": 1.0, "WBTC": 60000.0, "WETH": WETH, "wstETH": 3500.0,
              "rETH": 3300.0}  # fmt: skip
    eng.set_prices({s: PriceInput(p, "ok") for s, p in prices.items()})
    eng.set_volatility({s: 0.02 for s in SYMBOLS})
    tick = math.floor(math.log(WETH * 1e6 / 1e18) / math.log(1.0001))
    pool = make_pool([(tick - 600, tick + 600, 10**17)], tick, band=(tick - 3000, tick + 3000))
    eng.market.set_pools({"WETH": AssetPools((PoolSale(pool, True, "USDC"),))})
    whale, small = "0x" + "a1" * 20, "0x" + "b2" * 20
    eng.load_positions([
        PositionRow(whale, "ethereum", "WETH", "collateral", 200 * 10**18, 200 * 10**18),
        PositionRow(whale, "ethereum", "USDC", "debt", 590_000 * 10**6, 590_000 * 10**6),
        PositionRow(small, "ethereum", "WETH", "collateral", 10 * 10**18, 10 * 10**18),
        PositionRow(small, "ethereum", "USDC", "debt", 4_900 * 10**6, 4_900 * 10**6),
    ])  # fmt: skip
    eng.recompute()
    return eng, pool, whale, small


def test_one_whale_past_the_band_no_longer_puts_every_holder_at_hf_zero():
    """Regression (fails on the rule 'beyond the band gets nothing'): the whale's 200
    WETH fill the queue ~145 WETH past the band, and the small holder (plain HF ~4.9)
    went to HF 0. Now its 10 WETH meet the depth model continued from the band edge."""
    eng, pool, whale, small = _book(50e6)
    curve = eng.model.curves(eng.market)[SYMBOLS.index("WETH")].curve
    assert curve is not None and 140 < 200 - curve.capacity < 150
    assert eng.health(whale).tier in ("liquidatable", "insolvent")
    after = float(eng.market.liquidity.liquidating[SYMBOLS.index("WETH")])
    assert after == pytest.approx(200.0)
    plain = 10 * WETH * (1 - eng.risk_cfg.z * 0.02 * math.sqrt(eng.risk_cfg.horizon_days))
    assert 4.8 < min(0.83 * 10 * WETH, plain) / 4_900 < 5.1  # the holder's plain HF
    hf = eng.health(small).hf
    assert hf > 3.0, hf
    # the same figure from the scalar reference, written from the formula
    prices = {s: PriceInput(float(eng.market.price[i]), "ok") for i, s in enumerate(eng.symbols)}
    sigma = {s: 0.02 for s in SYMBOLS}
    inp = ref_inputs(eng, {"prices": prices, "later": {}, "sigma": sigma, "rel": {}})
    inp.pools = {"WETH": [(pool, True, "USDC")]}
    inp.liquidating = {"WETH": after}
    rows = [("ethereum", "WETH", "collateral", 10 * 10**18, 10 * 10**18),
            ("ethereum", "USDC", "debt", 4_900 * 10**6, 4_900 * 10**6)]  # fmt: skip
    ref = account_risk(inp, rows)
    assert hf == pytest.approx(ref.hf, rel=1e-6)


def test_without_depth_usd_beyond_the_band_still_gets_nothing():
    """No depth_usd for the asset: nothing is known past the band and nothing is
    assumed (the documented limit): the small holder is at HF 0 behind the whale."""
    eng, _, _, small = _book(None)
    assert eng.health(small).hf == 0.0


def test_the_queue_state_shows_the_whale_past_the_band():
    """What a replay records per step (engine.liquidity_queue): the queue, how far it
    runs past the band, and the haircut floor behind it (`dust_impact`), which is 1
    (the collapse) without the continuation and the depth model's slope with it."""
    for depth in (50e6, None):
        eng, _, _, _ = _book(depth)
        q = eng.liquidity_queue()
        assert set(q) == {"WETH"}
        w = q["WETH"]
        curve = eng.model.curves(eng.market)[SYMBOLS.index("WETH")].curve
        assert curve is not None
        assert w["queue_units"] == pytest.approx(200.0)
        assert w["queue_usd"] == pytest.approx(200.0 * WETH)
        assert w["band_units"] == curve.capacity
        assert w["beyond_band_units"] == pytest.approx(200.0 - curve.capacity)
        assert w["queue_impact"] == pytest.approx(float(curve.impact(200.0)[0]))
        if depth is None:
            assert w["continuation_units"] == 0.0 and w["dust_impact"] == 1.0
        else:
            u = 200.0 - curve.capacity
            floor = 1 - curve.edge_rate * (1 - 2 * u / (depth / WETH)) / WETH
            assert w["continuation_units"] == pytest.approx(depth / WETH)
            assert w["dust_impact"] == pytest.approx(floor, abs=1e-6)
