"""registry_codec: exact round trips, range errors naming the field, and agreement with
what HealthRegistry itself decodes."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chains.registry_codec import (
    ENTRY_LEN,
    HF_INFINITE,
    MAX_AS_OF,
    MAX_CREDIT,
    RegistryEntry,
    hf_to_fixed,
    pack_batch,
    pack_entry,
    pack_slot,
    unpack_batch,
    unpack_entry,
    unpack_slot,
    usd_to_credit,
)
from tests.contract.conftest import System, tx

entries = st.builds(
    RegistryEntry,
    credit_usd6=st.integers(0, MAX_CREDIT),
    hf_1e9=st.integers(0, HF_INFINITE),
    as_of=st.integers(1, MAX_AS_OF),
    tier=st.integers(0, 3),
)
accounts = st.binary(min_size=20, max_size=20).filter(any).map(lambda b: "0x" + b.hex())


@given(entries)
def test_slot_round_trip(e: RegistryEntry) -> None:
    slot = pack_slot(e)
    assert 0 <= slot < 2**256
    assert slot & 0xFFFF == 0
    assert unpack_slot(slot) == e


@given(accounts, entries)
def test_entry_round_trip(account: str, e: RegistryEntry) -> None:
    packed = pack_entry(account, e)
    assert len(packed) == ENTRY_LEN
    got_account, got = unpack_entry(packed)
    assert got_account.lower() == account.lower()
    assert got == e


@given(st.lists(st.tuples(accounts, entries), max_size=8, unique_by=lambda t: t[0]))
def test_batch_round_trip(items: list[tuple[str, RegistryEntry]]) -> None:
    data = pack_batch(items)
    assert len(data) == ENTRY_LEN * len(items)
    assert [(a.lower(), e) for a, e in unpack_batch(data)] == [(a.lower(), e) for a, e in items]


def test_layout_is_big_endian_bit_ranges() -> None:
    e = RegistryEntry(credit_usd6=1, hf_1e9=2, as_of=3, tier=4 - 1)
    assert pack_slot(e) == (1 << 128) | (2 << 64) | (3 << 24) | (3 << 16)
    assert pack_slot(RegistryEntry(MAX_CREDIT, 0, 1, 0)) >> 128 == MAX_CREDIT


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"credit_usd6": MAX_CREDIT + 1}, "credit_usd6"),
        ({"credit_usd6": -1}, "credit_usd6"),
        ({"hf_1e9": HF_INFINITE + 1}, "hf_1e9"),
        ({"hf_1e9": -1}, "hf_1e9"),
        ({"as_of": 0}, "as_of"),
        ({"as_of": MAX_AS_OF + 1}, "as_of"),
        ({"tier": 4}, "tier"),
        ({"tier": -1}, "tier"),
        ({"tier": True}, "tier"),
        ({"credit_usd6": 1.5}, "credit_usd6"),
        ({"hf_1e9": "1"}, "hf_1e9"),
    ],
)
def test_out_of_range_names_the_field(kwargs: dict[str, object], field: str) -> None:
    base: dict[str, object] = {"credit_usd6": 1, "hf_1e9": 1, "as_of": 1, "tier": 0}
    with pytest.raises(ValueError, match=field):
        RegistryEntry(**{**base, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize("account", ["0x1234", "not an address", "0x" + "00" * 20, 42])
def test_bad_account_is_rejected(account: object) -> None:
    with pytest.raises(ValueError, match="account"):
        pack_entry(account, RegistryEntry(1, 1, 1, 0))  # type: ignore[arg-type]


def test_batch_names_the_bad_entry_and_rejects_duplicates() -> None:
    a = "0x" + "11" * 20
    good = RegistryEntry(1, 1, 1, 0)
    with pytest.raises(ValueError, match="entry 1: account"):
        pack_batch([(a, good), ("0xnope", good)])
    with pytest.raises(ValueError, match=r"entry 1: account .* twice"):
        pack_batch([(a, good), (a.upper().replace("0X", "0x"), good)])


def test_unpack_rejects_reserved_bits_and_bad_lengths() -> None:
    with pytest.raises(ValueError, match="reserved"):
        unpack_slot(pack_slot(RegistryEntry(1, 1, 1, 0)) | 0x8000)
    with pytest.raises(ValueError, match="52 bytes"):
        unpack_entry(b"\x00" * 51)
    with pytest.raises(ValueError, match="multiple of 52"):
        unpack_batch(b"\x00" * 53)


def test_quantisation_rounds_down_and_handles_infinity() -> None:
    assert hf_to_fixed(None) == HF_INFINITE
    assert hf_to_fixed(float("inf")) == HF_INFINITE
    assert hf_to_fixed(1.0) == 10**9
    assert hf_to_fixed(1.2345678919) == 1_234_567_891
    assert hf_to_fixed(1e30) == HF_INFINITE - 1  # finite never reads as "no debt"
    assert usd_to_credit(12.3456789) == 12_345_678
    assert usd_to_credit(0.0) == 0
    for bad in (float("nan"), -0.01):
        with pytest.raises(ValueError, match="hf"):
            hf_to_fixed(bad)
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match="credit"):
            usd_to_credit(bad)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(e=entries)
def test_contract_decodes_what_we_pack(system: System, e: RegistryEntry) -> None:
    user = system.accounts[3]
    # A fresh as_of per example: the registry skips anything not newer than what it holds.
    stored = int(system.registry.functions.healthOf(user).call()[2])
    if e.as_of <= stored:
        e = RegistryEntry(e.credit_usd6, e.hf_1e9, stored + 1, e.tier) if stored < MAX_AS_OF else e
    if e.as_of <= stored:
        return
    tx(system.registry.functions.update(pack_batch([(user, e)])), system.keeper)
    assert system.registry.functions.entryOf(user).call() == pack_slot(e)
    assert system.registry.functions.healthOf(user).call() == [e.hf_1e9, e.tier, e.as_of]
    assert system.registry.functions.creditOf(user).call() == e.credit_usd6
