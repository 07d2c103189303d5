"""The vectorised pre-filter of the trigger rules and hf_to_fixed over arrays must agree
exactly with the per-account rules: `candidates` is the complement of plan_entry's
`None` cases, whatever the mix of accounts; plan_accounts (which decides the common
cases over arrays) returns plan_chain's plan, entry for entry. The order inside a
priority puts the accounts nearest liquidation in the first batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import pytest

from aggregator.push.controller import (
    Desired,
    GasModel,
    OnchainArrays,
    Planned,
    TriggerRules,
    candidates,
    hf_fixed_array,
    margin_lost,
    plan_batches,
    plan_chain,
    plan_entry,
)
from aggregator.push.planning import plan_accounts
from aggregator.risk.view import LedgerView
from chains.registry_codec import HF_INFINITE, RegistryEntry, hf_to_fixed

NOW = 1_800_000_000
RULES = TriggerRules(hf_deviation=0.02, credit_deviation=0.05, heartbeat_s=600)


def test_hf_fixed_array_matches_hf_to_fixed() -> None:
    rng = np.random.default_rng(3)
    hf = np.concatenate(
        [
            [0.0, 1e-9, 1.0, 0.999999999, 1.8e10, 1.8446744073709551e10, 2e10, np.inf],
            rng.lognormal(0, 3, 20_000),
        ]
    )
    assert [int(x) for x in hf_fixed_array(hf)] == [hf_to_fixed(float(x)) for x in hf]
    with pytest.raises(ValueError, match="hf must be"):
        hf_fixed_array(np.array([1.0, np.nan]))


def test_candidates_cover_every_account_plan_entry_acts_on() -> None:
    rng = np.random.default_rng(11)
    n = 5_000
    accounts = [f"0x{i + 1:040x}" for i in range(n)]
    base = OnchainArrays()
    onchain: dict[str, RegistryEntry | None] = {}
    for a in accounts:
        if rng.random() < 0.2:
            onchain[a] = None
            continue
        hf = HF_INFINITE if rng.random() < 0.1 else int(rng.integers(5 * 10**8, 3 * 10**9))
        onchain[a] = RegistryEntry(
            int(rng.integers(0, 3)) * 10**9,
            hf,
            NOW - int(rng.choice([10, 599, 600, 5_000])),
            int(rng.integers(0, 4)),
        )
    base.sync(onchain, None, {a: i for i, a in enumerate(accounts)}, accounts, n)
    credit = np.empty(n, np.int64)
    hf = np.empty(n, np.uint64)
    tier = np.empty(n, np.int64)
    has_debt = rng.random(n) < 0.7
    for i, a in enumerate(accounts):
        e = onchain[a]
        same = e is not None and rng.random() < 0.6
        credit[i] = e.credit_usd6 if same else int(rng.integers(0, 3)) * 10**9  # type: ignore[union-attr]
        hf[i] = e.hf_1e9 if same else int(rng.integers(5 * 10**8, 3 * 10**9))  # type: ignore[union-attr]
        tier[i] = e.tier if same else int(rng.integers(0, 4))  # type: ignore[union-attr]
    got = set(
        candidates(
            base,
            credit=credit,
            hf=hf,
            tier=tier,
            has_debt=has_debt,
            chain_ts=NOW,
            rules=RULES,
        ).tolist()
    )
    want = {
        i
        for i, a in enumerate(accounts)
        if plan_entry(
            Desired(a, int(credit[i]), int(hf[i]), int(tier[i]), bool(has_debt[i])),
            onchain[a],
            NOW,
            RULES,
        )
        is not None
    }
    assert got == want  # exact while any difference rides along (fraction 0)
    # With a ride-along fraction, plan_entry also declines differences too small to
    # ride along: the candidates are then a superset.
    half = TriggerRules(0.02, 0.05, 600, ride_along_fraction=0.5)
    fewer = {
        i
        for i in got
        if plan_entry(
            Desired(accounts[i], int(credit[i]), int(hf[i]), int(tier[i]), bool(has_debt[i])),
            onchain[accounts[i]],
            NOW,
            half,
        )
        is not None
    }
    assert fewer < want
    assert 0 < len(want) < n  # both kinds present: the check can fail either way


def test_sync_updates_changed_and_new_accounts() -> None:
    a, b, c = (f"0x{i:040x}" for i in (1, 2, 3))
    e = RegistryEntry(5, 7, NOW, 1)
    arr = OnchainArrays()
    arr.sync({a: None, b: e}, None, {a: 0, b: 1}, [a, b], 2)
    assert arr.present[:2].tolist() == [False, True] and int(arr.credit[1]) == 5
    e2 = RegistryEntry(2**127, HF_INFINITE, NOW + 1, 0)  # credit beyond int64 saturates
    arr.sync({a: e2, b: None, c: e}, [a, b], {a: 0, b: 1, c: 2}, [a, b, c], 3)
    assert arr.present[:3].tolist() == [True, False, True]
    assert int(arr.credit[0]) == 2**63 - 1 and int(arr.hf[0]) == HF_INFINITE
    assert int(arr.as_of[2]) == NOW


@dataclass
class _Ledger:
    """The LedgerView arrays plan_accounts reads, from plain lists."""

    hf: np.ndarray
    tier: np.ndarray
    credit: np.ndarray
    addresses: list[str]

    def __post_init__(self) -> None:
        self.account_index = {a: i for i, a in enumerate(self.addresses)}

    @property
    def n_accounts(self) -> int:
        return len(self.addresses)

    def hf_array(self, n: int) -> np.ndarray:
        return self.hf[:n]

    def tier_array(self, n: int) -> np.ndarray:
        return self.tier[:n]

    def credit_array(self, chain: str, n: int) -> np.ndarray:
        return self.credit[:n]

    def degraded_array(self, n: int) -> np.ndarray:
        return np.zeros(n, np.bool_)

    def unpriced_array(self, n: int) -> np.ndarray:
        return np.zeros(n, np.bool_)


def _random_book(
    seed: int, n: int
) -> tuple[_Ledger, dict[str, RegistryEntry | None], dict[str, RegistryEntry]]:
    """A book after a price move against what is on chain and in flight: every kind of
    account plan_entry distinguishes, HF moves on both sides of hf_deviation (and at
    it, to the integer), infinite HF both ways, credit beyond int64 on chain."""
    rng = np.random.default_rng(seed)
    accounts = [f"0x{i + 1:040x}" for i in range(n)]
    onchain: dict[str, RegistryEntry | None] = {}
    inflight: dict[str, RegistryEntry] = {}
    hf = np.empty(n, np.float64)
    tier = np.empty(n, np.int64)
    credit = np.empty(n, np.int64)
    for i, a in enumerate(accounts):
        old_hf = HF_INFINITE if rng.random() < 0.05 else int(rng.integers(0, 4 * 10**9))
        old_credit = int(rng.choice([0, 10**9, int(rng.integers(1, 10**12)), 2**127]))
        e = RegistryEntry(
            old_credit, old_hf, NOW - int(rng.choice([5, 600, 4_000])), int(rng.integers(0, 4))
        )
        onchain[a] = None if rng.random() < 0.1 else e
        if rng.random() < 0.15:
            inflight[a] = RegistryEntry(min(old_credit, 10**15), old_hf, NOW + 1, e.tier)
        kind = rng.random()
        if old_hf == HF_INFINITE or kind < 0.05:
            hf[i] = np.inf if rng.random() < 0.5 else rng.uniform(0.5, 3)
        elif kind < 0.15:  # exactly at the deviation, in integer units (float rounding)
            hf[i] = old_hf * (1 - RULES.hf_deviation) / 1e9
        else:
            hf[i] = (
                old_hf * (1 - rng.choice([0.0, 0.01, 0.019999, 0.02, 0.020001, 0.04, -0.03])) / 1e9
            )
        tier[i] = min(3, max(0, e.tier + int(rng.choice([-1, 0, 0, 0, 1]))))
        credit[i] = int(min(old_credit, 2**62) * rng.choice([1.0, 0.99, 0.96, 1.1]))
    return _Ledger(hf, tier, credit, accounts), onchain, inflight


# The in-flight entries are at NOW + 1: behind the head (NOW + 30), at it (NOW + 1) or
# ahead of it (NOW), with a limit (as_of_limit) a second past the head (our clock on) or
# at it.
@pytest.mark.parametrize(
    ("seed", "chain_ts", "ahead_s"),
    [(1, NOW + 30, 1), (2, NOW + 30, 1), (3, NOW + 30, 0), (1, NOW + 1, 0), (2, NOW + 1, 1),
     (3, NOW, 1), (1, NOW, 0)],
)  # fmt: skip
def test_plan_accounts_is_plan_chain_over_every_picked_account(
    seed: int, chain_ts: int, ahead_s: int
) -> None:
    limit = chain_ts + ahead_s
    """The array path decides tier_down, credit_cut and clear hf moves; the result must
    be plan_chain's over the same accounts, entry for entry and in the same order."""
    ledger, onchain, inflight = _random_book(seed, 4_000)
    n = ledger.n_accounts
    base = OnchainArrays()
    base.sync(onchain, None, ledger.account_index, ledger.addresses, n)
    got = plan_accounts(
        cast(LedgerView, ledger), "alpha", base=base, onchain=onchain,
        chain_ts=chain_ts, inflight=inflight, rules=RULES, limit=limit,
    )  # fmt: skip
    hf = hf_fixed_array(np.maximum(ledger.hf, 0.0))
    has_debt = np.isfinite(ledger.hf)
    desired = [
        Desired(
            a,
            int(ledger.credit[i]),
            int(hf[i]),
            int(ledger.tier[i]),
            bool(has_debt[i]),
            int(ledger.credit[i]),
        )
        for i, a in enumerate(ledger.addresses)
    ]
    baseline = {a: inflight.get(a, onchain[a]) for a in ledger.addresses}
    empty = {a: onchain[a] is None for a in ledger.addresses}
    want = plan_chain(desired, baseline, chain_ts, RULES, empty, limit=limit)
    assert got == want
    reasons = {p.reason for p in got}
    assert {"tier_down", "credit_cut", "hf", "first"} <= reasons  # both paths ran
    # No entry beyond the limit; the in-flight ones that would be are held back.
    assert max(p.entry.as_of for p in got) <= limit
    held = [a for a, e in inflight.items() if e.as_of + 1 > limit]
    assert bool(held) == (limit <= NOW + 1)
    assert not {p.account for p in got} & set(held)


def test_margin_lost_orders_falls_towards_liquidation_first() -> None:
    one = 10**9
    assert margin_lost(int(1.05 * one), int(1.01 * one)) == pytest.approx(0.8)
    assert margin_lost(5 * one, int(4.8 * one)) == pytest.approx(0.05)
    assert margin_lost(2 * one, int(2.5 * one)) < 0  # a rise: after every fall
    assert margin_lost(HF_INFINITE, 2 * one) == 1.0  # debt appeared
    assert margin_lost(2 * one, HF_INFINITE) == -1.0  # debt repaid
    assert margin_lost(one // 2, one // 4) == 1.0  # already below 1
    assert margin_lost(3 * one, 3 * one) == 0.0


@pytest.mark.parametrize("credit", [0, 7 * 10**9])
def test_a_uniform_price_move_sends_the_accounts_nearest_liquidation_first(credit: int) -> None:
    """Every HF (and every share of credit) falls by the same 4%: the accounts with the
    least margin left go in the first batch when the budget holds only some of them,
    for an HF trigger (no credit) and for a credit cut (credit above the new share)."""
    one = 10**9
    olds = {f"0x{i + 1:040x}": int(h * one) for i, h in enumerate([3.0, 1.08, 1.5, 1.2])}
    share = int(credit * 0.96)
    planned = plan_chain(
        [Desired(a, share, int(h * 0.96), 0, True) for a, h in olds.items()],
        {
            a: RegistryEntry(credit and credit + k, h, NOW - 10, 0)
            for k, (a, h) in enumerate(olds.items())
        },
        NOW,
        RULES,
    )
    assert {p.reason for p in planned} == {"credit_cut" if credit else "hf"}
    model = GasModel(fixed=0, per_new=10, per_update=10)
    batches = plan_batches(planned, 20, model, max_batches=8)
    order = [[olds[p.account] / one for p in b] for b in batches]
    assert order == [[1.08, 1.2], [1.5, 3.0]]


def test_plan_batches_split_the_plan_in_order_up_to_the_room() -> None:
    e = RegistryEntry(0, 10**9, NOW, 0)
    planned = [Planned(f"0x{i + 1:040x}", e, 1, "hf", False, -i) for i in range(5)] + [
        Planned("0x" + "ff" * 20, e, 2, "ride_along", False, 0.0)
    ]
    model = GasModel(fixed=0, per_new=10, per_update=10)
    batches = plan_batches(planned, 20, model, max_batches=8)
    # The ride-along fills the last batch with a trigger, never goes alone.
    assert [[p.account[-1] for p in b] for b in batches] == [["1", "2"], ["3", "4"], ["5", "f"]]
    assert len(plan_batches(planned, 20, model, max_batches=2)) == 2
    assert plan_batches(planned[-1:], 20, model, max_batches=8) == []
