"""The keeper attempts a liquidation only when the vault's registry rule allows it, and
sizes one without a daemon plan only when given a fallback close factor."""

from __future__ import annotations

from typing import Any

from chains.registry_codec import RegistryEntry
from devkit.replay.keeper import Attempt, choose, has_plan, registry_allows

NOW, MAX_AGE = 1_000_000, 900


def entry(tier: int, as_of: int = NOW - 10) -> RegistryEntry:
    return RegistryEntry(credit_usd6=0, hf_1e9=900_000_000, as_of=as_of, tier=tier)


def test_fresh_liquidatable_and_insolvent_entries_allow() -> None:
    assert registry_allows(entry(2), NOW, MAX_AGE) is None
    assert registry_allows(entry(3), NOW, MAX_AGE) is None
    assert registry_allows(entry(2, as_of=NOW - MAX_AGE), NOW, MAX_AGE) is None


def test_a_tier_not_yet_pushed_waits() -> None:
    assert registry_allows(entry(0), NOW, MAX_AGE) == "registry_tier"
    assert registry_allows(entry(1), NOW, MAX_AGE) == "registry_tier"


def test_stale_future_or_missing_entries_wait() -> None:
    assert registry_allows(entry(3, as_of=NOW - MAX_AGE - 1), NOW, MAX_AGE) == "registry_stale"
    assert registry_allows(entry(3, as_of=NOW + 1), NOW, MAX_AGE) == "registry_stale"
    assert registry_allows(None, NOW, MAX_AGE) == "registry_empty"


VIEW: dict[str, Any] = {
    "account": "0x" + "ab" * 20,
    "positions": {
        "alpha": [
            {"side": "collateral", "asset": "WETH", "counted": "10", "amount": "1",
             "value_usd": 2000.0},
            {"side": "debt", "asset": "USDC", "counted": "1500000000", "amount": "1500",
             "value_usd": 1500.0},
        ],
        "beta": [
            {"side": "debt", "asset": "USDC", "counted": "900000000", "amount": "900",
             "value_usd": 900.0},
        ],
    },
}  # fmt: skip


def test_no_plan_waits_unless_a_fallback_close_factor_is_given() -> None:
    assert choose({**VIEW, "liquidation": None}) == "no_plan"
    a = choose({**VIEW, "liquidation": None}, 0.5)
    assert isinstance(a, Attempt)
    # The chain with debt and collateral (alpha), half its debt, its largest collateral.
    assert (a.chain, a.debt, a.collateral, a.repay_raw) == ("alpha", "USDC", "WETH", 750_000_000)


def test_the_pushed_models_plan_is_used_and_only_a_missing_one_falls_back() -> None:
    """A portfolio-model plan sizes the attempt (its chain, collateral, repay from the
    chain's largest debt row); kind "unavailable" (the model could not evaluate) is no
    plan: the fallback close factor, or a wait without one."""
    plan = {"model": "portfolio", "kind": "partial", "chain": "alpha", "asset": "WETH",
            "repay_usd": 600.0, "seize_usd": 630.0, "target_hf": 1.05}  # fmt: skip
    view = {**VIEW, "liquidation": plan}
    assert has_plan(view)
    a = choose(view, 0.5)
    assert isinstance(a, Attempt)
    assert (a.chain, a.debt, a.collateral, a.repay_raw) == ("alpha", "USDC", "WETH", 600_000_000)
    gone = {**VIEW, "liquidation": {"model": "var", "kind": "unavailable", "reason": "x"}}
    assert not has_plan(gone)
    assert choose(gone) == "no_plan"
    b = choose(gone, 0.5)
    assert isinstance(b, Attempt) and b.repay_raw == 750_000_000


def test_an_account_without_vault_debt_has_nothing_a_vault_can_liquidate() -> None:
    # Rated at risk for derivative legs alone (e.g. a written call, no borrow).
    view = {
        "account": VIEW["account"],
        "positions": {"alpha": [p for p in VIEW["positions"]["alpha"] if p["side"] != "debt"]},
        "liquidation": None,
    }
    assert choose(view) == "no_vault_debt"
    assert choose(view, 0.5) == "no_vault_debt"


def row(side: str, asset: str, amount: float, usd: float) -> dict[str, object]:
    dec = {"USDC": 6, "WETH": 18, "WBTC": 8}[asset]
    return {"side": side, "asset": asset, "counted": str(int(amount * 10**dec)),
            "amount": str(amount), "value_usd": usd}  # fmt: skip


# Debt on alpha (USDC) and gamma (WETH), collateral only on beta.
CROSS: dict[str, Any] = {
    "account": VIEW["account"],
    "positions": {
        "alpha": [row("debt", "USDC", 1200, 1200.0)],
        "beta": [row("collateral", "WETH", 1, 2000.0), row("collateral", "WBTC", 0.01, 300.0)],
        "gamma": [row("debt", "WETH", 0.2, 400.0)],
    },
}


def test_a_cross_chain_borrower_is_repaid_on_its_largest_debt_row_and_seized_remotely() -> None:
    """The plan's chain (beta) holds no debt: repay on alpha, the chain with the largest
    debt row, naming beta's collateral; the repay is capped at that row."""
    plan = {"kind": "partial", "chain": "beta", "asset": "WETH", "repay_usd": 600.0}
    a = choose({**CROSS, "liquidation": plan})
    assert a == Attempt(VIEW["account"], "alpha", "USDC", 600_000_000, "WETH", 1.0, "beta")
    assert a.remote
    big = choose({**CROSS, "liquidation": {**plan, "repay_usd": 5000.0}})
    assert isinstance(big, Attempt) and (big.chain, big.repay_raw) == ("alpha", 1_200_000_000)
    # A full plan: no chain holds both, so the largest collateral (beta's WETH) is seized.
    full = choose({**CROSS, "liquidation": {"kind": "full", "repay_usd": 900.0}})
    assert isinstance(full, Attempt)
    assert (full.chain, full.target_chain, full.collateral, full.repay_raw) == (
        "alpha", "beta", "WETH", 900_000_000)  # fmt: skip
    # The fallback repays the close factor of the repaying chain's (alpha's) debt.
    fb = choose({**CROSS, "liquidation": None}, 0.5)
    assert isinstance(fb, Attempt)
    assert (fb.chain, fb.target_chain, fb.repay_raw) == ("alpha", "beta", 600_000_000)


def test_a_collateral_chain_with_too_little_debt_goes_remote_only_for_a_larger_row() -> None:
    """Beta holds 100 USD of debt: a 600 USD plan repays alpha's larger row remotely; a
    plan beta's row covers stays on beta; with no larger row elsewhere it stays too,
    capped at beta's row."""
    view = {**CROSS, "positions": {**CROSS["positions"],
            "beta": [*CROSS["positions"]["beta"], row("debt", "USDC", 100, 100.0)]}}  # fmt: skip
    plan = {"kind": "partial", "chain": "beta", "asset": "WETH", "repay_usd": 600.0}
    a = choose({**view, "liquidation": plan})
    assert isinstance(a, Attempt) and (a.chain, a.target_chain) == ("alpha", "beta")
    small = choose({**view, "liquidation": {**plan, "repay_usd": 80.0}})
    assert isinstance(small, Attempt)
    assert (small.chain, small.target_chain, small.repay_raw) == ("beta", None, 80_000_000)
    alone = {**view, "positions": {"beta": view["positions"]["beta"]}}
    capped = choose({**alone, "liquidation": plan})
    assert isinstance(capped, Attempt)
    assert (capped.chain, capped.target_chain, capped.repay_raw) == ("beta", None, 100_000_000)


def test_a_same_chain_borrower_is_unchanged() -> None:
    plan = {"kind": "partial", "chain": "alpha", "asset": "WETH", "repay_usd": 600.0}
    a = choose({**VIEW, "liquidation": plan})
    assert a == Attempt(VIEW["account"], "alpha", "USDC", 600_000_000, "WETH", 1.0)
    assert not a.remote


def test_an_account_with_a_pending_claim_gets_no_new_attempt() -> None:
    plan = {"kind": "partial", "chain": "beta", "asset": "WETH", "repay_usd": 600.0}
    assert choose({**CROSS, "liquidation": plan}, 0.5, claim_pending=True) == "claim_pending"
    assert choose({**VIEW, "liquidation": None}, 0.5, claim_pending=True) == "claim_pending"


def test_debt_without_any_collateral_has_nothing_to_seize() -> None:
    view = {"account": VIEW["account"], "positions": {"alpha": [row("debt", "USDC", 5, 5.0)]}}
    assert choose({**view, "liquidation": {"kind": "full", "repay_usd": 5.0}}) == "no_collateral"
