"""The what-if with reputation multipliers (risk/whatif.py, risk/reputation.py): it
shocks the figures the engine pushes. Zero shock: every account's standard HF, BP and
tier equal the engine's stored (personalised) ones bit for bit, on random books with a
random multiplier per account; a shock: a penalised account (m = 1.3) is liquidatable
where a neutral twin is not, and its plan restores the personal HF; a pushed model's
tiers carry the multiplier as `adopt` does."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.risk import LedgerView, PositionRow, PriceInput, RiskEngine
from aggregator.risk.book import COLLATERAL
from aggregator.risk.model import MarginResult, health
from aggregator.risk.reputation import Params, Reputation
from aggregator.risk.whatif import ShockSet, Universe, whatif

from .helpers import CHAINS, apply_market, engine, market, position_rows
from .test_properties import SETTINGS

P = Params()
A = "0x00000000000000000000000000000000000000a1"
B = "0x00000000000000000000000000000000000000b2"
UNDERLYING = {"wstETH": "WETH", "rETH": "WETH"}


def _rep(a: str) -> Reputation:
    return Reputation(a, 0.0, 1.0, 0.0)


def _run(eng: RiskEngine, shocks: ShockSet, models: dict | None = None) -> object:
    return whatif(LedgerView(eng).snapshot(), shocks, Universe(CHAINS, UNDERLYING, {}), models,
                  im_factor=1.25)  # fmt: skip


@SETTINGS
@given(position_rows(), market(), st.data())
def test_zero_shock_is_the_stored_personalised_figures(
    rows: list, m: dict, data: st.DataObject
) -> None:
    eng = engine(depth=m["depth"])
    apply_market(eng, m)
    eng.load_positions(rows)
    addrs = list(eng.book.account_address)
    mults = {a: data.draw(st.sampled_from([P.lower, 0.95, 1.0, 1.2, P.upper])) for a in addrs}
    eng.set_reputation(P, mults, _rep)
    eng.recompute()
    res = _run(eng, ShockSet())
    o = res.outcomes["standard"]  # type: ignore[attr-defined]
    n = eng.book.n_accounts
    assert np.array_equal(o.hf_after, eng.r_hf[:n])
    assert np.array_equal(o.tier_after, eng.r_tier[:n])
    assert np.array_equal(res.standard.bp, eng.r_bp[:n])  # type: ignore[attr-defined]


@SETTINGS
@given(position_rows(), market(), st.data())
def test_zero_shock_with_a_phased_maintenance_multiplier(
    rows: list, m: dict, data: st.DataObject
) -> None:
    """The same with a maintenance multiplier mm in [1, max(m, 1)] apart from m (a
    penalty not yet phased in): the snapshot carries both, the figures stay bit for bit."""
    eng = engine(depth=m["depth"])
    apply_market(eng, m)
    eng.load_positions(rows)
    addrs = list(eng.book.account_address)
    mults = {a: data.draw(st.sampled_from([P.lower, 1.0, 1.2, P.upper])) for a in addrs}
    maint = {a: data.draw(st.sampled_from([1.0, max(x, 1.0)])) for a, x in mults.items()}
    eng.set_reputation(P, mults, _rep, maint)
    eng.recompute()
    res = _run(eng, ShockSet())
    o = res.outcomes["standard"]  # type: ignore[attr-defined]
    n = eng.book.n_accounts
    assert np.array_equal(o.hf_after, eng.r_hf[:n])
    assert np.array_equal(o.tier_after, eng.r_tier[:n])
    assert np.array_equal(res.standard.bp, eng.r_bp[:n])  # type: ignore[attr-defined]


def _twins() -> RiskEngine:
    eng = engine()
    prices = {"USDC": 1.0, "DAI": 1.0, "WBTC": 6e4, "WETH": 3e3, "wstETH": 3.5e3, "rETH": 3.3e3}
    eng.set_prices({k: PriceInput(v, "ok") for k, v in prices.items()})
    eng.set_volatility(dict.fromkeys(prices, 0.02), {})
    e18 = 10**18
    eng.load_positions([
        row
        for a in (A, B)
        for row in (
            PositionRow(a, "ethereum", "WETH", "collateral", 10 * e18, 10 * e18),
            PositionRow(a, "base", "USDC", "debt", 20_000 * 10**6, 20_000 * 10**6),
        )
    ])  # fmt: skip
    eng.set_reputation(P, {A: 1.3}, _rep)
    eng.recompute()
    return eng


def test_a_shock_liquidates_the_penalised_twin_and_its_plan_follows_the_multiplier() -> None:
    eng = _twins()
    res = _run(eng, ShockSet(price={"WETH": -0.18}))
    o = res.outcomes["standard"]  # type: ignore[attr-defined]
    a, b = eng.index_of(A), eng.index_of(B)
    assert o.tier_after[b] < 2 <= o.tier_after[a]
    liq = o.liquidations
    assert liq.accounts.tolist() == [a]
    # The plan's repay brings the personal HF to target: (C_liq' - seize) / (D - repay).
    v = res.standard.vtot[a]  # type: ignore[attr-defined]
    cl, d = res.standard.cliq[a], res.standard.debt[a]  # type: ignore[attr-defined]
    repay = float(liq.repay[0])
    seize = float(liq.s_usd[0])
    lte = 1.0 - (v - cl) / v  # one holding: C_liq' = v x personal lt
    hf = (cl - seize * lte) / (d - repay)
    assert hf == pytest.approx(eng.risk_cfg.target_hf, rel=1e-9)


class _Model:
    """A pushed model stand-in: equity = collateral - debt, requirement = 10% of debt."""

    name = "portfolio"

    def evaluate(self, book: object, market: object, idx: np.ndarray, now: object) -> MarginResult:
        # From the rows, as every pushed model reads a book (the plan solver's copies too).
        rows, lengths = book.rows_with_lengths(idx)  # type: ignore[attr-defined]
        usd = book.r_amount[rows] * market.price[book.r_asset[rows]]  # type: ignore[attr-defined]
        owner = np.repeat(np.arange(idx.size), lengths)
        is_coll = book.r_side[rows] == COLLATERAL  # type: ignore[attr-defined]
        coll = np.bincount(owner[is_coll], usd[is_coll], minlength=idx.size)
        debt = np.bincount(owner[~is_coll], usd[~is_coll], minlength=idx.size)
        eq, req = coll - debt, 0.1 * debt
        h, bp, t = health(eq, req, 1.25, 1.1)
        return MarginResult.of(idx, equity_usd=eq, requirement_usd=req, hf=h, bp=bp, tier=t)


def test_a_pushed_models_tiers_carry_the_multiplier() -> None:
    eng = _twins()
    res = _run(eng, ShockSet(price={"WETH": -0.30}), {"portfolio": _Model()})
    o = res.outcomes["portfolio"]  # type: ignore[attr-defined]
    a, b = eng.index_of(A), eng.index_of(B)
    # Same book: the penalised twin's HF is the neutral one / 1.3.
    assert o.hf_after[a] == pytest.approx(o.hf_after[b] / 1.3)
    assert o.hf_before[a] == pytest.approx(o.hf_before[b] / 1.3)
