"""Report figures: procyclicality of the margin path in market time, the margin on
the depositors, and false liquidations (plain HF back >= 1 within the window), each
against a plain reference computed here."""

from __future__ import annotations

import math

import pytest

from devkit.replay import population
from devkit.replay.keeper import KeeperStats, Liquidation
from devkit.replay.report import Holdings, Recorder

PRICES = {"USDC": 1.0, "WBTC": 30_000.0, "WETH": 2_000.0, "wstETH": 2_300.0, "rETH": 2_150.0}
LT = {"USDC": 0.88, "WBTC": 0.75, "WETH": 0.825, "wstETH": 0.79, "rETH": 0.78}


def _rec(book: list[population.Account], steps_per_day: float = 24.0) -> Recorder:
    groups = [(frozenset({"WETH", "wstETH", "rETH"}), 0.93)]
    return Recorder(book, LT, groups, false_window_h=5, steps_per_day=steps_per_day)


def test_procyclicality_on_daily_medians() -> None:
    rec = _rec([], steps_per_day=2)
    rec.margin = [0.10, 0.12, 0.20, 0.15, 0.30, 0.25, 0.10, 0.11, 0.12, 0.40, 0.35, 0.2, 0.3]
    f = rec.procyclicality()
    # Daily medians of pairs (and the partial last day), then the figures.
    d = [0.11, 0.175, 0.275, 0.105, 0.26, 0.275, 0.3]
    assert f["calm"] == pytest.approx(0.11) and f["peak"] == pytest.approx(0.3)
    assert f["peak_over_trough"] == pytest.approx(0.3 / 0.105)
    assert f["max_1d_rise"] == pytest.approx(max(d[i] - d[i - 1] for i in range(1, len(d))))
    assert f["max_5d_rise"] == pytest.approx(max(d[i] - d[i - 5] for i in range(5, len(d))))


def test_margin_is_the_depositors_haircut() -> None:
    book = population.generate(40, 1, PRICES)
    rec = _rec(book)
    deps = [a for a in book if a.shape == "depositor"]
    ratings = {a.address: {"tier": "healthy", "hf": 2.0, "borrowing_power_usd": 1.0}
               for a in book}  # fmt: skip
    rec.sample(PRICES, ratings)
    coll = sum(p.amount * PRICES[p.symbol] for a in deps for p in a.positions)
    assert rec.margin[0] == pytest.approx(1 - len(deps) / coll)


def _one(shape: str) -> population.Account:
    return next(a for a in population.generate(80, 9, PRICES) if a.shape == shape
                and len({p.chain for p in a.positions}) == 1)  # fmt: skip


def test_false_liquidation_recovers_within_the_window() -> None:
    a = _one("eth_stable")  # WETH collateral, USDC debt, plain lt 0.825
    coll = next(p for p in a.positions if p.side == "collateral")
    debt = next(p for p in a.positions if p.side == "debt")
    hf0 = coll.amount * PRICES["WETH"] * 0.825 / (debt.amount * 1.0)
    crash = dict(PRICES, WETH=PRICES["WETH"] * 0.9 / hf0)  # plain HF 0.9
    back = dict(PRICES, WETH=PRICES["WETH"] * 1.05 / hf0)  # plain HF 1.05
    rec = _rec([a])
    for p in (crash, crash, crash, back, crash, crash, crash, crash, crash, crash):
        rec.prices.append(p)
    liq = Liquidation(1, a.address, coll.chain, "USDC", debt.raw // 2, "WETH", 0, 0.0, "0x")
    late = Liquidation(4, a.address, coll.chain, "USDC", debt.raw // 4, "WETH", 0, 0.0, "0x")
    stats = KeeperStats(liquidations=[liq, late])
    got = rec.false_liquidations(stats, Holdings.of([a]))
    # Liquidation 1 recovers at step 3 (within 5 steps); liquidation 2 (positions after
    # the first: half the debt, the same collateral) sees only crash prices after step 4
    # but its plain HF there is 2 x 0.9 >= 1: counted, and it was above lt when taken.
    assert got["count"] == 2 and got["accounts"] == 1
    assert got["above_lt_at_liquidation"] == 1


def _bs_call(f: float, k: float, t: float, sigma: float) -> float:
    """Black-76 call, zero rates, from the formula with math.erf."""
    sd = sigma * math.sqrt(t)
    d1 = (math.log(f / k) + 0.5 * sd * sd) / sd
    n = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    return f * n(d1) - k * n(d1 - sd)


def test_equity_counts_the_derivative_legs_against_a_scalar_reference() -> None:
    book = population.generate(400, 4, PRICES)
    iv = {"WETH": 0.7, "WBTC": 0.6}
    h = Holdings.of(book)
    moved = dict(PRICES, WETH=1_500.0, WBTC=36_000.0)
    for a in [x for x in book if x.has_derivatives][:40]:
        ref = 0.0
        for p in a.perps:
            ref += p.size * (moved[p.asset] - p.entry_price)
        for o in a.options:
            ref += o.size * _bs_call(moved["WETH"], o.strike, o.tenor_days / 365, iv["WETH"])
        c = sum(p.amount * moved[p.symbol] for p in a.positions if p.side == "collateral")
        d = sum(p.amount * moved[p.symbol] for p in a.positions if p.side == "debt")
        assert h.derivatives_value(a.address, moved, iv) == pytest.approx(ref, rel=1e-9, abs=1e-6)
        assert h.equity(a.address, moved, iv) == pytest.approx(c - d + ref, rel=1e-9, abs=1e-6)
    opt = next(x for x in book if x.options)
    with pytest.raises(ValueError, match="WETH"):
        h.derivatives_value(opt.address, moved, {})


def test_a_hedged_account_is_not_negative_while_its_hedge_covers_the_spot() -> None:
    a = next(
        x for x in population.generate(400, 4, PRICES)
        if x.shape == "hedged_perp" and x.positions[0].symbol == "WETH"
    )  # fmt: skip
    coll = next(p for p in a.positions if p.side == "collateral")
    debt = next(p for p in a.positions if p.side == "debt")
    # WETH low enough that the spot legs alone are under water.
    crash = dict(PRICES, WETH=0.9 * debt.amount / coll.amount)
    rec = _rec([a])
    healthy = {a.address: {"tier": "healthy", "hf": 5.0, "borrowing_power_usd": 1.0}}
    rec.sample(PRICES, healthy)
    rec.sample(crash, healthy)
    spot_equity = coll.amount * crash["WETH"] - debt.amount
    assert spot_equity < 0
    assert rec.holdings.equity(a.address, crash, {}) > 0
    assert rec.healthy_to_negative == set()
    # The same account without its hedge is counted.
    bare = population.Account(a.address, "eth_stable", a.positions)
    rec = _rec([bare])
    rec.sample(PRICES, healthy)
    rec.sample(crash, healthy)
    assert rec.healthy_to_negative == {a.address}


def test_accounts_with_derivative_legs_are_not_depositors() -> None:
    book = population.generate(300, 1, PRICES)
    rec = _rec(book)
    assert rec.depositors == {a.address for a in book if a.shape == "depositor"}
