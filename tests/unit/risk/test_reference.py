"""The vectorised engine against the scalar reference on generated books."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.config import CreditConfig
from aggregator.risk import RiskEngine

from .helpers import (
    CHAINS,
    apply_market,
    engine,
    market,
    position_rows,
    ref_inputs,
    rows_by_account,
)
from .reference import account_risk, credit_split

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def close(a: float, b: float, scale: float) -> bool:
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= 1e-9 * max(abs(scale), 1e-300)


def check_against_reference(eng: RiskEngine, m: dict, rows: list) -> None:
    inp = ref_inputs(eng, m)
    for acct, arows in rows_by_account(rows).items():
        ref = account_risk(inp, arows)
        h = eng.health(acct)
        assert close(h.collateral_usd, ref.vtot, ref.vtot), (acct, h, ref)
        assert close(h.debt_usd, ref.debt, ref.debt)
        assert close(h.c_liq, ref.cliq, ref.vtot)
        assert close(h.c_borrow, ref.cborrow, ref.vtot)
        assert close(h.bp, ref.bp, ref.cborrow + ref.debt)
        assert h.degraded == ref.degraded
        if ref.debt == 0:
            assert h.hf == math.inf
        else:
            assert close(h.hf, ref.hf, ref.hf)
        near = (
            abs(ref.hf - 1) < 1e-9
            or abs(ref.hf - eng.risk_cfg.warn_hf) < 1e-9
            or abs(ref.hf - eng.risk_cfg.full_close_hf) < 1e-9
            or abs(ref.vtot - ref.debt) <= 1e-9 * max(ref.vtot, ref.debt)
        )
        if not near:
            assert h.tier == ref.tier, (acct, h, ref)
            assert h.close_factor == ref.close_factor
            if ref.plan_margin > 1e-7:
                plan = eng.explain(acct, now=0.0)["liquidation"]
                if ref.plan is None:
                    assert plan is None
                else:
                    kind, repay, chain, asset = ref.plan
                    assert plan is not None and plan["kind"] == kind, (plan, ref.plan)
                    assert close(plan["repay_usd"], repay, repay)
                    if kind == "partial":
                        assert (plan["chain"], plan["asset"]) == (chain, asset)


@SETTINGS
@given(rows=position_rows(), m=market())
def test_engine_matches_reference(rows: list, m: dict) -> None:
    eng = engine(depth=m["depth"])
    apply_market(eng, m)
    eng.load_positions(rows)
    eng.recompute()
    check_against_reference(eng, m, rows)


@SETTINGS
@given(rows=position_rows(), m=market())
def test_events_equal_bulk_load(rows: list, m: dict) -> None:
    """The one-account event path gives the full recompute's results (BLAS may sum a
    1-row and an n-row mat-vec in different orders, hence 1e-12, not bit equality)."""
    bulk = engine(depth=m["depth"])
    apply_market(bulk, m)
    bulk.load_positions(rows)
    bulk.recompute()
    events = engine(depth=m["depth"])
    apply_market(events, m)
    for r in rows:
        events.apply_position(r)
    for acct in rows_by_account(rows):
        a, b = bulk.health(acct), events.health(acct)
        assert (a.tier, a.degraded, a.close_factor) == (b.tier, b.degraded, b.close_factor)
        for f in ("collateral_usd", "c_liq", "c_borrow", "debt_usd", "hf", "bp"):
            x, y = getattr(a, f), getattr(b, f)
            assert x == y or abs(x - y) <= 1e-12 * max(abs(x), abs(y)), (f, a, b)
    check_against_reference(events, m, rows)


@SETTINGS
@given(
    rows=position_rows(),
    m=market(),
    policy=st.sampled_from(["static", "demand"]),
    share=st.floats(0, 1),
    weights=st.lists(st.sampled_from([0.0, 0.5, 1.0, 3.0, 7.25]), min_size=3, max_size=3),
    use=st.dictionaries(st.sampled_from(CHAINS), st.floats(0, 1e9), max_size=3),
    prev=st.lists(st.integers(0, 10**15), min_size=3, max_size=3),
)
def test_credit_sum_never_exceeds_bp(  # noqa: PLR0917
    rows: list, m: dict, policy: str, share: float, weights: list, use: dict, prev: list
) -> None:
    credit = CreditConfig(
        policy=policy,  # type: ignore[arg-type]
        demand_share=share,
        weights=dict(zip(CHAINS, weights, strict=True)),
    )
    eng = engine(depth=m["depth"], credit=credit)
    apply_market(eng, m)
    eng.load_positions(rows)
    eng.recompute()
    accts = list(rows_by_account(rows))
    for acct in accts:
        for chain, usd in use.items():
            eng.record_consumption(acct, chain, usd, ts=100.0)
        eng.set_previous_credit(acct, dict(zip(CHAINS, prev, strict=True)))
    eng.allocate_credit(now=200.0)
    inp = ref_inputs(eng, m)
    for acct in accts:
        h = eng.health(acct)
        got = eng.credit_of(acct)
        assert all(v >= 0 for v in got.values())
        assert Fraction(sum(got.values()), 10**6) <= Fraction(h.bp)
        want = credit_split(inp, h.bp, h.degraded, dict(zip(CHAINS, prev, strict=True)), use)
        budget = math.floor(Fraction(h.bp) * 10**6)
        for c in CHAINS:
            # Exact below 2**52 USD6, except the one-unit sum correction.
            if budget < 2**52:
                assert abs(got[c] - want[c]) <= 1, (c, got, want)
            else:
                assert got[c] <= want[c] + 1 and got[c] >= want[c] * (1 - 1e-12) - 1
            if h.degraded:
                assert got[c] <= prev[CHAINS.index(c)]
        if h.bp == 0:
            assert sum(got.values()) == 0


@SETTINGS
@given(rows=position_rows(), m=market())
def test_hf_and_tier_agree(rows: list, m: dict) -> None:
    eng = engine(depth=m["depth"])
    apply_market(eng, m)
    eng.load_positions(rows)
    eng.recompute()
    n = eng.book.n_accounts
    hf, tier = eng.r_hf[:n], eng.r_tier[:n]
    totals = eng._risk(np.arange(n))
    insolvent = totals.vtot < totals.debt
    assert np.array_equal(tier == 3, insolvent)
    assert np.all(hf[insolvent] < 1)
    assert np.all((tier == 2) == (~insolvent & (hf < 1)))
    assert np.all((tier == 1) == ((hf >= 1) & (hf < eng.risk_cfg.warn_hf)))
    assert np.all((tier == 0) == (hf >= eng.risk_cfg.warn_hf))
    assert np.all(np.isinf(hf) == (totals.debt == 0))
    for t, name in enumerate(("healthy", "warning", "liquidatable", "insolvent")):
        page, _ = eng.accounts_by_tier(name, limit=10_000)
        assert len(page) == int((tier == t).sum())
