"""The generated book: seeded reproducibility, shapes, sizes within bounds."""

from __future__ import annotations

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
            assert ltv <= population.SHAPE_LTV[a.shape] * 0.97 + 1e-6
    cross = sum(1 for a in book if len({p.chain for p in a.positions}) > 1)
    assert 0 < cross < 0.2 * len(book)
