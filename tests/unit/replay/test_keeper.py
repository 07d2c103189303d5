"""The keeper attempts a liquidation only when the vault's registry rule allows it, and
sizes one without a daemon plan only when given a fallback close factor."""

from __future__ import annotations

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


VIEW = {
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
