"""The generated book: seeded reproducibility, shapes, sizes within bounds."""

from __future__ import annotations

import pytest

from devkit.replay import population

PRICES = {"USDC": 1.0, "WBTC": 30_000.0, "WETH": 2_000.0, "wstETH": 2_300.0, "rETH": 2_150.0}


def test_same_seed_same_book_other_seed_other_book() -> None:
    a = population.generate(200, 7, PRICES)
    assert a == population.generate(200, 7, PRICES)
    b = population.generate(200, 8, PRICES)
    assert [x.address for x in a] != [x.address for x in b]
    assert len({x.address for x in a}) == 200


def test_shapes_and_sizes() -> None:
    book = population.generate(2000, 1, PRICES)
    shapes = {s: sum(1 for a in book if a.shape == s) for s in population.SHAPES}
    for s, w in population.SHAPES.items():
        assert abs(shapes[s] / 2000 - w) < 0.05, (s, shapes)
    lo, hi = population.NOTIONAL_BOUNDS
    for a in book:
        coll = [p for p in a.positions if p.side == "collateral"]
        debt = [p for p in a.positions if p.side == "debt"]
        assert len(coll) == 1 and len(debt) == (a.shape != "depositor")
        c_usd = coll[0].amount * PRICES[coll[0].symbol]
        assert lo * 0.99 <= c_usd <= hi * 1.01
        if debt:
            ltv = debt[0].amount * PRICES[debt[0].symbol] / c_usd
            cap = population.SHAPE_LTV.get(a.shape) or population.COLLATERAL_LTV[coll[0].symbol]
            assert ltv <= cap * population.UTIL_RANGE[a.shape][1] + 1e-6
    cross = sum(1 for a in book if len({p.chain for p in a.positions}) > 1)
    assert 0 < cross < 0.2 * len(book)


def test_derivative_shapes_take_their_weight_from_the_others_proportionally() -> None:
    assert sum(population.SHAPES.values()) == pytest.approx(1.0)
    assert population.SHAPES["hedged_perp"] == population.SHAPES["covered_call"] == 0.10
    base = {s: population.SHAPES[s] for s in population.BASE_SHAPES}
    total = sum(base.values())
    for s, w in population.BASE_SHAPES.items():
        assert base[s] / total == pytest.approx(w / sum(population.BASE_SHAPES.values()))


def test_derivative_legs_are_reproducible() -> None:
    a = population.generate(300, 11, PRICES)
    b = population.generate(300, 11, PRICES)
    assert [(x.perps, x.options) for x in a] == [(x.perps, x.options) for x in b]
    assert any(x.perps for x in a) and any(x.options for x in a)
    # Only the derivative shapes hold derivative legs.
    for x in a:
        assert x.has_derivatives == (x.shape in population.DERIVATIVE_SHAPES)


def test_the_short_perp_hedges_the_spot_collateral() -> None:
    book = [a for a in population.generate(2000, 5, PRICES) if a.shape == "hedged_perp"]
    assert len(book) > 100
    assert {a.positions[0].symbol for a in book} == {"WETH", "WBTC"}
    for a in book:
        coll = next(p for p in a.positions if p.side == "collateral")
        debt = next(p for p in a.positions if p.side == "debt")
        (perp,) = a.perps
        assert perp.asset == coll.symbol and perp.size < 0
        assert perp.entry_price == pytest.approx(PRICES[coll.symbol])
        spot_usd = coll.amount * PRICES[coll.symbol]
        perp_usd = perp.size * PRICES[perp.asset]
        # About the same notional: net delta within the hedge ratio's 5% (plus rounding).
        assert abs(spot_usd + perp_usd) <= 0.05 * spot_usd + 1e-3
        assert debt.symbol == "USDC"
        ltv = population.COLLATERAL_LTV[coll.symbol]
        assert debt.amount / spot_usd <= ltv * population.UTIL_RANGE["hedged_perp"][1] + 1e-6
        # A price move leaves the hedged spot + perp nearly flat.
        up = dict(PRICES, **{coll.symbol: PRICES[coll.symbol] * 1.3})
        pnl = coll.amount * (up[coll.symbol] - PRICES[coll.symbol]) + perp.size * (
            up[perp.asset] - perp.entry_price
        )
        assert abs(pnl) <= 0.3 * 0.05 * spot_usd + 1e-3


def test_covered_call_writes_at_most_its_eth_above_spot() -> None:
    book = [a for a in population.generate(2000, 5, PRICES) if a.shape == "covered_call"]
    assert len(book) > 100
    for a in book:
        coll = next(p for p in a.positions if p.side == "collateral")
        (opt,) = a.options
        assert coll.symbol == "WETH" and opt.asset == "WETH" and opt.is_call
        assert -coll.amount <= opt.size < 0
        lo, hi = population.CALL_MONEYNESS
        assert lo * PRICES["WETH"] - 0.01 <= opt.strike <= hi * PRICES["WETH"] + 0.01
        assert opt.tenor_days == population.CALL_TENOR_DAYS


def test_derivative_calls_encode_the_legs_exactly() -> None:
    from eth_abi import decode

    from chains.positions import text_bytes32
    from devkit.deploy import ChainDeployment

    book = population.generate(200, 2, PRICES)
    dep = ChainDeployment("beta", 71002, "0x1", "0x2", "0x3", markets="0x" + "11" * 20)
    calls = population.derivative_calls(dep, book, "beta", now=1_000)
    perps = [(a, p) for a in book for p in a.perps if p.chain == "beta"]
    opts = [(a, o) for a in book for o in a.options if o.chain == "beta"]
    assert len(calls) == len(perps) + len(opts) > 0
    got_perps = [
        decode(["address", "bytes32", "int256", "uint256"], d[4:])
        for d, _ in calls
        if d[:4] == population.SEL_SET_PERP
    ]
    for (a, p), (addr, market, size, entry) in zip(perps, got_perps, strict=True):
        assert addr.lower() == a.address.lower() and market == text_bytes32(p.market)
        assert size == round(p.size * 10**6) * 10**12 and size / 10**18 == pytest.approx(p.size)
        assert entry / 10**18 == pytest.approx(p.entry_price)
    got_opts = [
        decode(["address", "bytes32", "uint256", "uint64", "bool", "int256"], d[4:])
        for d, _ in calls
        if d[:4] == population.SEL_SET_OPTION
    ]
    for (a, o), (addr, und, strike, expiry, is_call, size) in zip(opts, got_opts, strict=True):
        assert addr.lower() == a.address.lower() and und == text_bytes32("ETH")
        assert strike / 10**18 == pytest.approx(o.strike) and is_call
        assert expiry == 1_000 + int(o.tenor_days * 86400) and size < 0


def test_derivative_legs_without_a_markets_contract_is_an_error_naming_the_chain() -> None:
    from devkit.deploy import ChainDeployment

    book = population.generate(200, 2, PRICES)
    dep = ChainDeployment("gamma", 71003, "0x1", "0x2", "0x3")
    with pytest.raises(population.SeedError, match=r"gamma: .*no Markets contract"):
        population.derivative_calls(dep, book, "gamma", now=0)
    # A book without derivative legs on that chain needs none.
    spot = [a for a in book if not a.has_derivatives]
    assert population.derivative_calls(dep, spot, "gamma", now=0) == []
