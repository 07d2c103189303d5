"""HealthRegistry: keeper-only batches, replay/out-of-order safety, freshness, credit."""

from __future__ import annotations

from eth_utils import keccak, to_checksum_address

from chains.registry_codec import (
    HF_INFINITE,
    RegistryEntry,
    pack_batch,
    pack_slot,
    unpack_batch,
    unpack_slot,
)
from tests.contract.conftest import System, events, revert_reason, tx


def entry(
    as_of: int, credit: int = 1_000_000_000, hf: int = 1_500_000_000, tier: int = 0
) -> RegistryEntry:
    return RegistryEntry(credit_usd6=credit, hf_1e9=hf, as_of=as_of, tier=tier)


def test_only_keeper_can_update(system: System) -> None:
    user, stranger = system.accounts[2], system.accounts[7]
    batch = pack_batch([(user, entry(system.now()))])
    assert (
        revert_reason(system.registry.functions.update(batch), stranger)
        == f"NotKeeper({stranger.lower()})"
    )
    # The owner is not a keeper either: roles are separate.
    assert revert_reason(system.registry.functions.update(batch), system.owner).startswith(
        "NotKeeper("
    )
    tx(system.registry.functions.update(batch), system.keeper)
    assert system.registry.functions.entryOf(user).call() == int.from_bytes(batch[20:], "big")


def test_revoked_keeper_is_refused(system: System) -> None:
    tx(system.registry.functions.setKeeper(system.keeper, False), system.owner)
    batch = pack_batch([(system.accounts[2], entry(system.now()))])
    assert revert_reason(system.registry.functions.update(batch), system.keeper).startswith(
        "NotKeeper("
    )


def test_only_owner_manages_roles(system: System) -> None:
    stranger = system.accounts[7]
    reason = revert_reason(system.registry.functions.setKeeper(stranger, True), stranger)
    assert reason.startswith("OwnableUnauthorizedAccount(")
    reason = revert_reason(system.registry.functions.setConsumer(stranger, True), stranger)
    assert reason.startswith("OwnableUnauthorizedAccount(")


def test_update_stores_slot_and_emits_events(system: System) -> None:
    user = system.accounts[2]
    e = entry(system.now(), credit=123_456_789, hf=HF_INFINITE, tier=1)
    batch = pack_batch([(user, e)])
    receipt = tx(system.registry.functions.update(batch), system.keeper)
    applied = events(system.registry, "BatchApplied", receipt)
    assert (applied[0].keeper, applied[0].applied, applied[0].skipped) == (system.keeper, 1, 0)
    assert applied[0].batchHash == keccak(batch)
    # One log per batch, none per entry: entries are recovered from the calldata.
    assert len(receipt["logs"]) == 1
    assert system.registry.functions.healthOf(user).call() == [HF_INFINITE, 1, e.as_of]
    assert system.registry.functions.creditOf(user).call() == 123_456_789


def test_entry_not_newer_is_skipped_and_reported(system: System) -> None:
    user = system.accounts[2]
    t = system.now()
    tx(system.registry.functions.update(pack_batch([(user, entry(t, credit=5))])), system.keeper)
    for older in (t, t - 1):  # a replay and an out-of-order delivery
        receipt = tx(
            system.registry.functions.update(pack_batch([(user, entry(older, credit=99))])),
            system.keeper,
        )
        skipped = events(system.registry, "EntrySkipped", receipt)
        applied = events(system.registry, "BatchApplied", receipt)
        assert [(s.account, s.storedAsOf, s.givenAsOf) for s in skipped] == [(user, t, older)]
        assert (applied[0].applied, applied[0].skipped) == (0, 1)
        assert len(receipt["logs"]) == 2  # EntrySkipped + BatchApplied
        assert system.registry.functions.creditOf(user).call() == 5


def test_mixed_batch_applies_newer_and_skips_older(system: System) -> None:
    a, b, c = system.accounts[2:5]
    t = system.now()
    tx(system.registry.functions.update(pack_batch([(b, entry(t))])), system.keeper)
    batch = pack_batch(
        [(a, entry(t, credit=1)), (b, entry(t - 5, credit=2)), (c, entry(t, credit=3))]
    )
    receipt = tx(system.registry.functions.update(batch), system.keeper)
    applied = events(system.registry, "BatchApplied", receipt)[0]
    assert (applied.applied, applied.skipped) == (2, 1)
    assert applied.batchHash == keccak(batch)
    skipped = events(system.registry, "EntrySkipped", receipt)
    assert [(s.account, s.storedAsOf, s.givenAsOf) for s in skipped] == [(b, t, t - 5)]
    assert [system.registry.functions.creditOf(x).call() for x in (a, b, c)] == [
        1,
        1_000_000_000,
        3,
    ]


def test_bad_batch_length_reverts(system: System) -> None:
    good = pack_batch([(system.accounts[2], entry(system.now()))])
    for bad in (good[:-1], good + b"\x00", b"\x01"):
        reason = revert_reason(system.registry.functions.update(bad), system.keeper)
        assert reason == f"BadBatchLength({len(bad)})"


def test_empty_batch_is_a_no_op(system: System) -> None:
    receipt = tx(system.registry.functions.update(b""), system.keeper)
    applied = events(system.registry, "BatchApplied", receipt)[0]
    assert (applied.applied, applied.skipped) == (0, 0)
    assert applied.batchHash == keccak(b"")


def test_reserved_bits_revert_the_whole_batch(system: System) -> None:
    a, b = system.accounts[2:4]
    good = pack_batch([(a, entry(system.now()))])
    slot = pack_slot(entry(system.now())) | 1
    bad = good + bytes.fromhex(b[2:]) + slot.to_bytes(32, "big")
    reason = revert_reason(system.registry.functions.update(bad), system.keeper)
    assert reason == f"ReservedBitsSet({b.lower()}, {slot})"
    assert system.registry.functions.entryOf(a).call() == 0


def test_is_fresh(system: System) -> None:
    user = system.accounts[2]
    assert system.registry.functions.isFresh(user, 10**9).call() is False  # no entry at all
    t = system.now()
    tx(system.registry.functions.update(pack_batch([(user, entry(t))])), system.keeper)
    assert system.registry.functions.isFresh(user, 100).call() is True
    system.warp(101)
    assert system.registry.functions.isFresh(user, 100).call() is False
    assert system.registry.functions.isFresh(user, 10**6).call() is True


def test_future_entry_is_not_fresh(system: System) -> None:
    user = system.accounts[2]
    future = system.now() + 3600
    tx(system.registry.functions.update(pack_batch([(user, entry(future))])), system.keeper)
    assert system.registry.functions.isFresh(user, 10**9).call() is False


def test_consume_credit_only_by_consumers(system: System) -> None:
    user, stranger = system.accounts[2], system.accounts[7]
    tx(system.registry.functions.update(pack_batch([(user, entry(system.now()))])), system.keeper)
    reason = revert_reason(system.registry.functions.consumeCredit(user, 1), stranger)
    assert reason == f"NotConsumer({stranger.lower()})"


def test_consume_credit_decrements_only_credit(system: System) -> None:
    user, consumer = system.accounts[2], system.accounts[7]
    tx(system.registry.functions.setConsumer(consumer, True), system.owner)
    e = entry(system.now(), credit=1_000, hf=1_234_567_890, tier=1)
    tx(system.registry.functions.update(pack_batch([(user, e)])), system.keeper)
    receipt = tx(system.registry.functions.consumeCredit(user, 400), consumer)
    ev = events(system.registry, "CreditConsumed", receipt)[0]
    assert (ev.account, ev.consumer, ev.amount, ev.remaining) == (user, consumer, 400, 600)
    got = unpack_slot(system.registry.functions.entryOf(user).call())
    assert got == RegistryEntry(600, e.hf_1e9, e.as_of, e.tier)
    reason = revert_reason(system.registry.functions.consumeCredit(user, 601), consumer)
    assert reason == f"InsufficientCredit({user.lower()}, 600, 601)"


def test_large_batch_stores_every_entry_in_order_with_duplicates(system: System) -> None:
    """The assembly loop walks the calldata: every one of N entries lands in its own
    account's mapping slot (same storage as a Solidity mapping read by entryOf), and a
    later duplicate in the same batch with the same as-of is skipped."""
    t = system.now()
    accts = [to_checksum_address(f"0x{i:040x}") for i in range(1, 61)]
    pairs = [(a, entry(t, credit=i + 1, tier=i % 4)) for i, a in enumerate(accts)]
    # pack_batch refuses duplicates; the contract must still cope with one.
    dup = pack_batch([(accts[7], entry(t, credit=999))])
    batch = pack_batch(pairs) + dup
    assert unpack_batch(batch)[-1][0] == accts[7]
    receipt = tx(system.registry.functions.update(batch), system.keeper)
    applied = events(system.registry, "BatchApplied", receipt)[0]
    assert (applied.applied, applied.skipped) == (60, 1)
    for a, e in pairs:
        assert system.registry.functions.entryOf(a).call() == pack_slot(e)
