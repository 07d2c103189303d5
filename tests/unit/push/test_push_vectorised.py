"""The vectorised pre-filter of the trigger rules and hf_to_fixed over arrays must agree
exactly with the per-account rules: `candidates` is the complement of plan_entry's
`None` cases, whatever the mix of accounts."""

from __future__ import annotations

import numpy as np
import pytest

from aggregator.push.controller import (
    Desired,
    OnchainArrays,
    TriggerRules,
    candidates,
    hf_fixed_array,
    plan_entry,
)
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
