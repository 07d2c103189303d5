"""Trigger rules, priorities and gas-sized batches (aggregator/push/controller.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.push.controller import (
    RIDE_ALONG,
    TRIGGER,
    URGENT,
    Desired,
    GasModel,
    TriggerRules,
    as_of_limit,
    buffered_credit,
    next_as_of,
    plan_chain,
    plan_entry,
    select_batch,
)
from chains.registry_codec import HF_INFINITE, RegistryEntry

RULES = TriggerRules(hf_deviation=0.02, credit_deviation=0.05, heartbeat_s=300)
A = "0x" + "a1" * 20
B = "0x" + "b2" * 20
NOW = 1_000_000
BASE = RegistryEntry(credit_usd6=1_000_000_000, hf_1e9=1_500_000_000, as_of=NOW - 10, tier=0)


def want(
    credit: int = 1_000_000_000, hf: int = 1_500_000_000, tier: int = 0, debt: bool = True
) -> Desired:
    return Desired(A, credit, hf, tier, debt)


@pytest.mark.parametrize(
    ("desired", "prio", "reason"),
    [
        (want(tier=1), URGENT, "tier_down"),
        (want(credit=999_999_999), URGENT, "credit_cut"),  # any decrease, however small
        (want(hf=1_469_000_000), TRIGGER, "hf"),  # -2.07%
        (want(hf=1_531_000_000), TRIGGER, "hf"),  # +2.07%
        (want(hf=HF_INFINITE), TRIGGER, "hf"),  # debt repaid
        (want(credit=1_050_000_000), TRIGGER, "credit_up"),  # +5%
        (want(credit=1_049_999_999), RIDE_ALONG, "ride_along"),  # +4.99%
        (want(hf=1_480_000_000), RIDE_ALONG, "ride_along"),  # -1.3%
    ],
)
def test_each_trigger(desired: Desired, prio: int, reason: str) -> None:
    p = plan_entry(desired, BASE, NOW, RULES)
    assert p is not None and (p.priority, p.reason) == (prio, reason)
    assert p.entry.as_of == NOW
    assert (p.entry.credit_usd6, p.entry.hf_1e9, p.entry.tier) == (
        desired.credit_usd6,
        desired.hf_1e9,
        desired.tier,
    )


def test_tier_upgrade_is_a_trigger_but_not_urgent() -> None:
    base = RegistryEntry(0, 1_050_000_000, NOW - 10, 1)
    p = plan_entry(want(credit=0, hf=1_060_000_000, tier=0), base, NOW, RULES)
    assert p is not None and (p.priority, p.reason) == (TRIGGER, "tier_up")


def test_unchanged_entry_is_not_pushed_until_its_heartbeat() -> None:
    assert plan_entry(want(), BASE, NOW, RULES) is None
    old = RegistryEntry(BASE.credit_usd6, BASE.hf_1e9, NOW - 300, 0)
    p = plan_entry(want(), old, NOW, RULES)
    assert p is not None and (p.priority, p.reason) == (TRIGGER, "heartbeat")


def test_first_value_only_for_accounts_with_debt_or_credit() -> None:
    assert plan_entry(want(credit=0, debt=False, hf=HF_INFINITE), None, NOW, RULES) is None
    p = plan_entry(want(credit=5, debt=False, hf=HF_INFINITE), None, NOW, RULES)
    assert p is not None and (p.priority, p.reason, p.new_slot) == (TRIGGER, "first", True)
    p = plan_entry(want(credit=0, tier=2, hf=900_000_000), None, NOW, RULES)
    assert p is not None and p.priority == URGENT


def test_as_of_is_chain_time_and_strictly_newer_than_the_baseline() -> None:
    assert next_as_of(None, NOW) == NOW
    assert next_as_of(BASE, NOW) == NOW
    same_second = RegistryEntry(1, 1, NOW, 0)
    assert next_as_of(same_second, NOW) == NOW + 1  # else the registry would skip it
    p = plan_entry(want(credit=0), same_second, NOW, RULES)
    assert p is not None and p.entry.as_of == NOW + 1


def test_as_of_never_runs_ahead_of_a_chain_with_sub_second_blocks() -> None:
    """Blocks within one second share its timestamp: the next second is only fresh in a
    block that late, so it waits for the chain's clock or ours (as_of_limit)."""
    same_second = RegistryEntry(1, 1, NOW, 0)
    # Our clock in the head's second (sub-second blocks, or a block just mined): wait.
    assert as_of_limit(NOW, NOW + 0.7) == NOW
    assert next_as_of(same_second, NOW, as_of_limit(NOW, NOW + 0.7)) is None
    # The chain's clock turned: its second.
    assert next_as_of(same_second, NOW + 1, as_of_limit(NOW + 1, NOW + 1.2)) == NOW + 1
    # No block since ours (12-s blocks, on-demand mining): our clock's second, once a
    # whole second more has passed (a block mined at the turn of NOW + 1 may still
    # carry NOW), never further.
    assert next_as_of(same_second, NOW, as_of_limit(NOW, NOW + 1.01)) is None
    assert next_as_of(same_second, NOW, as_of_limit(NOW, NOW + 2.01)) == NOW + 1
    ahead = RegistryEntry(1, 1, NOW + 1, 0)  # an entry already a second ahead
    assert next_as_of(ahead, NOW, as_of_limit(NOW, NOW + 0.5)) is None
    assert next_as_of(ahead, NOW, as_of_limit(NOW, NOW + 3.5)) == NOW + 2
    # A liquidatable tier waits too: a pushed entry from the future is refused by the
    # vault until then, the one on chain (this second's) stays usable meanwhile.
    liq = want(tier=2, hf=900_000_000)
    assert plan_entry(liq, same_second, NOW, RULES, NOW) is None
    p = plan_entry(liq, same_second, NOW + 1, RULES, NOW + 1)
    assert p is not None and (p.reason, p.entry.as_of) == ("tier_down", NOW + 1)


@settings(max_examples=300, deadline=None)
@given(
    head_lag=st.floats(0.0, 30.0),  # how long ago the node mined its head
    now_frac=st.floats(0.0, 0.999),
    skew=st.floats(-2.0, 5.0),  # our clock minus the node's (negative: the node's ahead)
    mined_after=st.floats(0.0, 3.0),  # from planning to the block that mines the entry
)
def test_the_as_of_limit_is_never_ahead_of_the_mining_block_beyond_the_clock_skew(
    head_lag: float, now_frac: float, skew: float, mined_after: float
) -> None:
    """The block that mines an entry carries the node's clock's second then (or a later
    one): an asOf within the limit is fresh in it whenever the clocks agree to within
    CLOCK_MARGIN_S, and at most the skew's excess early when our clock runs ahead."""
    now = NOW + now_frac
    node_now = now - skew
    head_ts = math.floor(node_now - head_lag)
    block_ts = math.floor(node_now + mined_after)  # anvil, an L2 sequencer: its clock
    early = as_of_limit(head_ts, now) - max(block_ts, head_ts)
    assert early <= max(0, math.ceil(skew) - 1)
    if skew <= 1:
        assert early <= 0


def test_downgrades_and_cuts_go_first_then_triggers_then_ride_alongs() -> None:
    accounts = [f"0x{i:040x}" for i in range(1, 7)]
    base = {a: BASE for a in accounts}
    desired = [
        Desired(accounts[0], BASE.credit_usd6 * 103 // 100, BASE.hf_1e9, 0, True),  # ride-along
        Desired(accounts[1], BASE.credit_usd6, 1_200_000_000, 0, True),  # hf trigger
        Desired(accounts[2], BASE.credit_usd6 - 5, BASE.hf_1e9, 0, True),  # small cut
        Desired(accounts[3], 0, 900_000_000, 2, True),  # downgrade to liquidatable
        Desired(accounts[4], BASE.credit_usd6 // 2, BASE.hf_1e9, 0, True),  # big cut
        Desired(accounts[5], BASE.credit_usd6, BASE.hf_1e9, 0, True),  # unchanged
    ]
    plan = plan_chain(desired, base, NOW, RULES)
    assert [(p.account, p.reason) for p in plan] == [
        (accounts[3], "tier_down"),
        (accounts[4], "credit_cut"),
        (accounts[2], "credit_cut"),
        (accounts[1], "hf"),
        (accounts[0], "ride_along"),
    ]


def test_a_difference_below_half_a_trigger_does_not_ride_along() -> None:
    """Every entry costs gas; one that changed by less than half of any trigger waits
    for its own trigger (or half a heartbeat)."""
    tiny = [
        Desired(A, BASE.credit_usd6 + 1, BASE.hf_1e9, 0, True),
        Desired(A, BASE.credit_usd6 * 1024 // 1000, BASE.hf_1e9, 0, True),  # +2.4% < 2.5%
        Desired(A, BASE.credit_usd6, BASE.hf_1e9 * 1009 // 1000, 0, True),  # +0.9% < 1%
    ]
    rules = TriggerRules(0.02, 0.05, 300, ride_along_fraction=0.5)
    for d in tiny:
        assert plan_entry(d, BASE, NOW, rules) is None
        p = plan_entry(d, BASE, NOW, RULES)  # fraction 0: any difference rides along
        assert p is not None and p.reason == "ride_along"
    half_old = RegistryEntry(BASE.credit_usd6, BASE.hf_1e9, NOW - 150, 0)
    p = plan_entry(tiny[0], half_old, NOW, rules)
    assert p is not None and p.reason == "ride_along"


def test_ride_alongs_alone_never_make_a_batch() -> None:
    d = [Desired(A, BASE.credit_usd6 * 103 // 100, BASE.hf_1e9, 0, True)]
    plan = plan_chain(d, {A: BASE}, NOW, RULES)
    assert [p.reason for p in plan] == ["ride_along"]
    assert select_batch(plan, 3_000_000, GasModel()) == []
    d.append(Desired(B, 1, BASE.hf_1e9, 0, True))  # a cut on B: now A rides along
    plan = plan_chain(d, {A: BASE, B: BASE}, NOW, RULES)
    assert [p.account for p in select_batch(plan, 3_000_000, GasModel())] == [B, A]


def test_batch_is_cut_at_the_gas_budget_keeping_priority_order() -> None:
    model = GasModel(fixed=30_000, per_new=25_000, per_update=8_000)
    accounts = [f"0x{i:040x}" for i in range(1, 301)]
    desired = [Desired(a, 0, 900_000_000, 2, True) for a in accounts]
    plan = plan_chain(desired, {}, NOW, RULES)
    batch = select_batch(plan, 1_000_000, model)
    assert len(batch) == (1_000_000 - 30_000) // 25_000
    assert model.cost(batch) <= 1_000_000
    assert [p.account for p in batch] == [p.account for p in plan[: len(batch)]]


def test_in_flight_baseline_with_empty_slot_still_counts_as_a_new_slot() -> None:
    inflight = RegistryEntry(5, BASE.hf_1e9, NOW - 1, 0)
    d = [Desired(A, 4, BASE.hf_1e9, 0, True)]
    (p,) = plan_chain(d, {A: inflight}, NOW, RULES, onchain_empty={A: True})
    assert p.reason == "credit_cut" and p.new_slot


# -- credit buffer ----------------------------------------------------------------
def test_a_fall_of_the_share_within_the_buffer_needs_no_push() -> None:
    """Credit is pushed 1% under the share: a share that falls by less than that
    leaves the on-chain credit still below it (nothing to push); a fall past the buffer,
    on-chain credit above the share, goes at once with the buffered credit."""
    rules = TriggerRules(0.02, 0.05, 300, credit_buffer=0.01, ride_along_fraction=0.5)
    share = 1_000_000_000
    pushed = int(buffered_credit(np.array([share]), 0.01)[0])
    assert pushed == 990_000_000
    base = RegistryEntry(pushed, 1_500_000_000, NOW - 10, 0)
    small = Desired(
        A,
        int(buffered_credit(np.array([995_000_000]), 0.01)[0]),
        1_500_000_000,
        0,
        True,
        995_000_000,
    )
    assert plan_entry(small, base, NOW, rules) is None
    past = Desired(A, 980_100_000, 1_500_000_000, 0, True, 989_999_999)
    p = plan_entry(past, base, NOW, rules)
    assert p is not None and (p.priority, p.reason) == (URGENT, "credit_cut")
    assert p.entry.credit_usd6 == 980_100_000


def _scalar_buffered(share: int, buffer: float) -> int:
    """From the rule: share x (1 - b), rounded down, never above the share."""
    return min(share, math.floor(share * (1.0 - buffer)))


@given(
    st.lists(st.floats(0.9, 1.1), min_size=1, max_size=200),
    st.sampled_from([0.0, 0.005, 0.01, 0.03]),
    st.sampled_from([0.0, 0.5, 1.0]),
)
@settings(max_examples=200, deadline=None)
def test_on_chain_credit_never_exceeds_the_share(
    moves: list[float], buffer: float, ride_along: float
) -> None:
    """The safety property under any path of the share: after every round (a batch goes
    when anything urgent or a trigger is planned, and lands), the credit on chain is at
    or below the account's true share."""
    rules = TriggerRules(0.02, 0.05, 300, credit_buffer=buffer, ride_along_fraction=ride_along)
    share = 1_000_000_000
    onchain: RegistryEntry | None = None
    t = NOW
    for m in moves:
        share = max(0, int(share * m))
        t += 5
        credit = int(buffered_credit(np.array([share]), buffer)[0])
        assert credit == _scalar_buffered(share, buffer)
        p = plan_entry(Desired(A, credit, 1_500_000_000, 0, True, share), onchain, t, rules)
        if p is not None and p.priority != RIDE_ALONG:
            onchain = p.entry
        assert onchain is None or onchain.credit_usd6 <= share


def test_credit_buffer_is_validated() -> None:
    with pytest.raises(ValueError, match="credit_buffer"):
        TriggerRules(credit_buffer=1.0)
