"""Report figures: procyclicality of the margin path in market time, the margin on
the depositors, and false liquidations (plain HF back >= 1 within the window), each
against a plain reference computed here."""

from __future__ import annotations

import math
from typing import Any

import pytest

from devkit.replay import population
from devkit.replay.keeper import Claim, KeeperStats, Liquidation
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


def test_a_healthy_to_negative_row_names_the_rating_and_the_moves() -> None:
    a = next(x for x in population.generate(400, 4, PRICES) if x.shape == "eth_stable")
    coll = next(p for p in a.positions if p.side == "collateral")
    debt = next(p for p in a.positions if p.side == "debt")
    crash = dict(PRICES, WETH=0.9 * debt.amount / coll.amount)
    rec = _rec([a])
    rec.sample(PRICES, {a.address: {"tier": "healthy", "hf": 1.2}})
    # The daemon rated step 1 on prices 5% above the path's (a step behind).
    rec.sample(crash, {a.address: {"tier": "warning", "hf": 1.05}},
               {"WETH": crash["WETH"] * 1.05})  # fmt: skip
    (row,) = rec.healthy_to_negative_rows
    assert row["shape"] == "eth_stable" and row["step"] == 1 and row["asset"] == "WETH"
    assert row["rated_hf"] == 1.2 and row["lag_move"] == 0.0 and row["no_vault_debt"] is False
    assert row["step_move"] == pytest.approx(crash["WETH"] / PRICES["WETH"] - 1, abs=1e-4)
    assert row["equity_usd"] == pytest.approx(coll.amount * crash["WETH"] - debt.amount, abs=0.01)
    rec.sample(crash, {a.address: {"tier": "healthy", "hf": 1.2}})
    rec.sample(crash, {})
    assert len(rec.healthy_to_negative_rows) == 1  # one row per account


def test_a_position_liquidated_in_full_is_exactly_zero_not_a_negative_equity() -> None:
    """Pieces whose float amounts do not sum back exactly: the holdings move in token
    units, so the emptied account's equity is 0 and its next healthy rating (no debt:
    HF None) does not count as healthy -> negative."""
    a = next(x for x in population.generate(400, 4, PRICES) if x.shape == "eth_stable")
    coll = next(p for p in a.positions if p.side == "collateral")
    debt = next(p for p in a.positions if p.side == "debt")
    cuts = [(debt.raw // 4, coll.raw // 4)] * 3
    cuts.append((debt.raw - 3 * (debt.raw // 4), coll.raw - 3 * (coll.raw // 4)))
    naive_c, naive_d = coll.amount, debt.amount
    for r, s in cuts:
        naive_d -= r / 10**6
        naive_c -= s / 10**18
    # What booking float amounts left: a negative equity of about -1e-12 USD.
    assert naive_c * PRICES["WETH"] - naive_d < 0
    rec = _rec([a])
    rec.sample(PRICES, {a.address: {"tier": "liquidatable", "hf": 0.9}})
    stats = KeeperStats()
    for i, (r, s) in enumerate(cuts):
        stats.liquidations.append(
            Liquidation(0, a.address, coll.chain, "USDC", r, "WETH", s, r / 1e6, f"0x{i}")
        )
    rec.apply(stats)
    assert rec.holdings.coll[a.address]["WETH"] == 0.0
    assert rec.holdings.debt[a.address]["USDC"] == 0.0
    assert rec.holdings.equity(a.address, PRICES, {}) == 0.0
    rec.sample(PRICES, {a.address: {"tier": "healthy", "hf": None}})
    rec.sample(dict(PRICES, WETH=1.0), {a.address: {"tier": "healthy", "hf": None}})
    assert rec.healthy_to_negative == set()


def test_a_covered_call_emptied_by_the_vault_is_flagged_in_its_row() -> None:
    """The vault seized its WETH and took its debt in full: the short call left at the
    venue is all its (negative) equity, and the row says it owed the vaults nothing."""
    a = next(x for x in population.generate(400, 4, PRICES) if x.shape == "covered_call")
    rec = _rec([a])
    rec.implied_vol = {"WETH": 0.8}
    rec.sample(PRICES, {a.address: {"tier": "liquidatable", "hf": 0.95}})
    stats = KeeperStats()
    for i, p in enumerate(x for x in a.positions if x.side == "collateral"):
        debt = next(d for d in a.positions if d.side == "debt" and d.chain == p.chain)
        stats.liquidations.append(Liquidation(0, a.address, p.chain, debt.symbol, debt.raw,
                                              p.symbol, p.raw, 0.0, f"0x{i}"))  # fmt: skip
    rec.apply(stats)
    rec.sample(PRICES, {a.address: {"tier": "healthy", "hf": None}})
    rec.sample(PRICES, {a.address: {"tier": "healthy", "hf": None}})
    (row,) = rec.healthy_to_negative_rows
    assert row["no_vault_debt"] is True and row["rated_hf"] is None
    assert row["equity_usd"] < 0


def test_accounts_with_derivative_legs_are_not_depositors() -> None:
    book = population.generate(300, 1, PRICES)
    rec = _rec(book)
    assert rec.depositors == {a.address for a in book if a.shape == "depositor"}


# Bad debt by cause: one constructed account per cause, the deficit read as the vault
# would (the recorder's holdings at the last prices).


def _vault_end(rec: Recorder, prices: dict[str, float]) -> dict[str, tuple[float, float]]:
    return {a.address: rec.holdings.value(a.address, prices) for a in rec.book}


def _legs_of(a: population.Account) -> tuple[population.Position, population.Position]:
    coll = next(p for p in a.positions if p.side == "collateral")
    debt = next(p for p in a.positions if p.side == "debt")
    return coll, debt


def _at_plain_hf(a: population.Account, hf: float) -> dict[str, float]:
    """PRICES with WETH set so that the account's plain HF (lt 0.825) is `hf`."""
    coll, debt = _legs_of(a)
    return dict(PRICES, WETH=hf * debt.amount / (coll.amount * 0.825))


def _run(book: list[population.Account], path: list[dict[str, float]],
         stats: KeeperStats | None = None, liquidate_at: int | None = None,
         ) -> dict[str, Any]:  # fmt: skip
    rec = _rec(book)
    stats = stats or KeeperStats()
    healthy = {a.address: {"tier": "healthy", "hf": 1.5, "borrowing_power_usd": 0.0}
               for a in book}  # fmt: skip
    for k, p in enumerate(path):
        rec.sample(p, healthy)
        if k == liquidate_at:
            rec.apply(stats)
    from devkit.replay.report import bad_debt_causes

    return bad_debt_causes(rec, stats, _vault_end(rec, path[-1]))


def test_stranded_chains_against_a_scalar_reference() -> None:
    from devkit.replay.report import stranded_chains

    P = population.Position
    a = population.Account("0xa", "eth_stable", (
        P("alpha", "WETH", "collateral", 10**18), P("beta", "USDC", "debt", 500 * 10**6),
        P("gamma", "WETH", "collateral", 10**18), P("gamma", "USDC", "debt", 2_500 * 10**6),
    ))  # fmt: skip
    # beta: 500 USD of debt, no collateral; gamma: 2,000 USD of WETH < 2,500 of debt.
    assert stranded_chains(a, PRICES) == ["beta", "gamma"]
    assert stranded_chains(a, dict(PRICES, WETH=3_000.0)) == ["beta"]


def test_cross_chain_borrower_deficit_is_cross_chain() -> None:
    a = next(x for x in population.generate(200, 9, PRICES)
             if x.shape == "eth_stable" and len({p.chain for p in x.positions}) == 2)  # fmt: skip
    end = _at_plain_hf(a, 0.5)  # collateral worth 0.5 / 0.825 of the debt
    coll, debt = _legs_of(a)
    got = _run([a], [PRICES, _at_plain_hf(a, 0.9), end])
    deficit = debt.amount - coll.amount * end["WETH"]
    assert deficit > 0
    assert got["usd"]["cross_chain"] == pytest.approx(deficit, abs=0.01)
    assert got["gross_usd"] == pytest.approx(deficit, abs=0.01)
    assert got["rows"][0]["cause"] == "cross_chain"


def test_a_cross_chain_borrower_claimed_for_is_classified_like_any_other() -> None:
    """A remote liquidation: its repay is booked when the claim is mined (step 1), its
    seizure at settlement (step 2); the account's deficit then has the general causes
    (slow_liquidated here), not `cross_chain`; the report counts it apart, and a claim
    still unsettled at the end as pending with what it repaid."""
    from devkit.replay.report import build_report, remote_figures

    a = next(x for x in population.generate(200, 9, PRICES)
             if x.shape == "eth_stable" and len({p.chain for p in x.positions}) == 2)  # fmt: skip
    coll, debt = _legs_of(a)
    assert coll.chain != debt.chain
    path = [PRICES, _at_plain_hf(a, 0.95), _at_plain_hf(a, 0.9), _at_plain_hf(a, 0.6)]
    repaid = debt.raw // 10
    seized = int(repaid / 10**6 * 1.05 / path[1]["WETH"] * 10**18)
    claim = Claim(a.address, debt.chain, coll.chain, "USDC", "WETH", 1.0, 1, "0xc1", 0.0,
                  mined=True, repaid_raw=repaid, claim_id="0x01")  # fmt: skip
    stats = KeeperStats(claims=[claim])
    rec = _rec([a])
    healthy = {a.address: {"tier": "healthy", "hf": 1.5, "borrowing_power_usd": 0.0}}
    for k, p in enumerate(path):
        rec.sample(p, healthy)
        if k == 1:
            rec.apply(stats)
            assert rec.holdings.debt[a.address]["USDC"] == pytest.approx(
                (debt.raw - repaid) / 1e6)  # fmt: skip
            assert rec.holdings.coll[a.address]["WETH"] == pytest.approx(coll.raw / 1e18)
        if k == 2:
            claim.settled = True
            x = Liquidation(1, a.address, coll.chain, "USDC", repaid, "WETH", seized,
                            repaid / 1e6, "0xs1", remote_from=debt.chain, claim_id="0x01",
                            claim_tx="0xc1", settled_step=2)  # fmt: skip
            stats.liquidations.append(x)
            rec.apply(stats)
    # Booked once each: the repay at the claim, the seizure at the settlement.
    assert rec.holdings.debt[a.address]["USDC"] == pytest.approx((debt.raw - repaid) / 1e6)
    assert rec.holdings.coll[a.address]["WETH"] == pytest.approx((coll.raw - seized) / 1e18)
    from devkit.replay.report import bad_debt_causes

    got = bad_debt_causes(rec, stats, _vault_end(rec, path[-1]))
    row = got["rows"][0]
    assert row["cause"] == "slow_liquidated" and row["remote_liquidated"]
    assert row["pending_claims"] == 0 and got["usd"]["cross_chain"] == 0.0
    # A second claim, mined and never settled: pending at the end, with its repay.
    late = Claim(a.address, debt.chain, coll.chain, "USDC", "WETH", 1.0, 3, "0xc2", 0.0,
                 mined=True, repaid_raw=2 * 10**6, claim_id="0x02")  # fmt: skip
    stats.claims.append(late)
    assert remote_figures(stats, {a.address}) == {
        "count": 1, "usd": round(repaid / 1e6, 2), "all_accounts_count": 1,
        "pending_claims": 1, "pending_repaid_usd": 2.0, "already_settled": 0,
    }  # fmt: skip
    rep = build_report(episode="x", mode="standard", rec=rec, keeper=stats,
                       bad_debt_usd=0.0, negative_accounts=0, chains={}, meta={})  # fmt: skip
    assert rep["liquidations"]["remote"]["pending_claims"] == 1
    assert rep["liquidations"]["count"] == 1  # the remote one counts among all too
    from devkit.replay.report import render

    text = render(rep | {"wall_s": 1.0})
    assert "claims unsettled at the end (count / USD repaid)  1 / 2" in text


def test_one_step_from_above_lt_to_negative_equity_is_a_gap() -> None:
    a = _one("eth_stable")
    got = _run([a], [PRICES, _at_plain_hf(a, 1.05), _at_plain_hf(a, 0.6)])
    row = got["rows"][0]
    assert row["cause"] == "gap" and row["negative_from_step"] == 2
    assert row["plain_hf_before"] == pytest.approx(1.05, abs=1e-4)
    assert got["usd"]["gap"] == pytest.approx(row["deficit_usd"], abs=0.01)


def test_a_step_below_lt_while_solvent_is_slow_liquidated_or_not() -> None:
    a = _one("eth_stable")
    coll, debt = _legs_of(a)
    path = [PRICES, _at_plain_hf(a, 0.95), _at_plain_hf(a, 0.9), _at_plain_hf(a, 0.6)]
    stats = KeeperStats()
    stats.fail(a.address, "RepayExceedsDebt")
    got = _run([a], path, stats)
    row = got["rows"][0]
    assert row["cause"] == "slow_unliquidated" and row["steps_below_lt_solvent"] == 2
    assert row["keeper_failures"] == {"RepayExceedsDebt": 1}
    # Liquidated once at step 1 (a tenth of the debt for its value plus a 5% bonus in
    # WETH): still under water at the end.
    p1 = path[1]
    repaid = debt.raw // 10
    seized = int(repaid / 10**6 * 1.05 / p1["WETH"] * 10**18)
    liq = Liquidation(1, a.address, coll.chain, "USDC", repaid, "WETH", seized, 0.0, "0x")
    got = _run([a], path, KeeperStats(liquidations=[liq]), liquidate_at=1)
    row = got["rows"][0]
    c_end = (coll.raw - seized) / 1e18 * path[-1]["WETH"]
    assert row["cause"] == "slow_liquidated" and row["liquidations"] == 1
    assert row["deficit_usd"] == pytest.approx((debt.raw - repaid) / 1e6 - c_end, abs=0.01)


def test_the_hedge_covers_the_spot_deficit_first_the_rest_by_its_cause() -> None:
    a = next(x for x in population.generate(400, 4, PRICES)
             if x.shape == "hedged_perp" and x.positions[0].symbol == "WETH"
             and len({p.chain for p in x.positions}) == 1)  # fmt: skip
    coll, debt = _legs_of(a)
    end = _at_plain_hf(a, 0.6)
    deficit = debt.amount - coll.amount * end["WETH"]
    gain = a.perps[0].size * (end["WETH"] - a.perps[0].entry_price)
    assert deficit > 0 and gain > deficit  # a full hedge: the venue covers the vault
    got = _run([a], [PRICES, _at_plain_hf(a, 1.05), end])
    assert got["usd"]["hedge_offset"] == pytest.approx(deficit, abs=0.01)
    assert got["net_usd"] == pytest.approx(0.0, abs=0.01)
    assert got["rows"][0]["cause"] == "hedge_offset"
    # A tenth of the hedge: its gain offsets part, the rest was a gap.
    p = a.perps[0]
    tenth = population.Perp(p.chain, p.market, p.size / 10, p.entry_price)
    thin = population.Account(a.address, a.shape, a.positions, (tenth,))
    got = _run([thin], [PRICES, _at_plain_hf(a, 1.05), end])
    usd = got["usd"]
    assert usd["hedge_offset"] == pytest.approx(gain / 10, abs=0.01)
    assert usd["gap"] == pytest.approx(deficit - gain / 10, abs=0.01)
    assert got["net_usd"] == pytest.approx(deficit - gain / 10, abs=0.01)


def _queue(dust: float, past: float) -> dict[str, dict[str, float]]:
    units = 10.0 + past
    return {"WETH": {"queue_units": units, "queue_usd": units * 2_000.0, "band_units": 10.0,
                     "beyond_band_units": past, "continuation_units": 100.0,
                     "queue_impact": 0.2, "dust_impact": dust}}  # fmt: skip


def test_liquidity_queue_is_recorded_per_step_and_summarised() -> None:
    """The daemon's queue per step lands in the report's series, its worst step and
    saturated steps in `liquidity`, the HF p25 = 0 steps in `collapse_steps`, and all
    of it in the rendered text."""
    import json

    from devkit.replay.report import build_report, render

    book = [a for a in population.generate(30, 1, PRICES) if not a.has_derivatives]
    rec = _rec(book)
    fine = {a.address: {"tier": "healthy", "hf": 2.0, "borrowing_power_usd": 1.0} for a in book}
    zero = {a.address: {"tier": "liquidatable", "hf": 0.0} for a in book}
    rec.sample(PRICES, fine, queue=_queue(0.01, 0.0))
    rec.sample(PRICES, zero, queue=_queue(0.995, 40.0))
    rec.sample(PRICES, zero, queue=_queue(0.999, 60.0))
    rec.sample(PRICES, fine, queue={})  # no pool used this step
    rep = build_report(episode="x", mode="standard", rec=rec, keeper=KeeperStats(),
                       bad_debt_usd=0.0, negative_accounts=0, chains={}, meta={})  # fmt: skip
    weth = rep["liquidity"]["assets"]["WETH"]
    assert weth["saturated_steps"] == [1, 2] and weth["max_dust_impact"] == 0.999
    assert weth["max_beyond_band_units"] == 60.0 and weth["max_queue_usd"] == 70.0 * 2_000.0
    assert rep["liquidity"]["collapse_steps"] == [1, 2]
    series = rep["series"]["liquidity_queue"]["WETH"]
    assert series["dust_impact"] == [0.01, 0.995, 0.999, None]
    assert series["beyond_band_units"] == [0.0, 40.0, 60.0, None]
    json.dumps(rep, default=float)
    text = render(rep | {"wall_s": 1.0})
    assert "collapse steps (HF p25 = 0)" in text and "1-2" in text
    assert "WETH: max queue USD / past band / dust impact, saturated steps" in text


def test_step_ranges() -> None:
    from devkit.replay.report import step_ranges

    assert step_ranges(None) == "-" and step_ranges([]) == "none"
    assert step_ranges([3, 4, 5, 9]) == "3-5, 9" and step_ranges([7]) == "7"
    assert step_ranges([1, 3, 4]) == "1, 3-4"
