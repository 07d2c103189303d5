"""The keeper attempts a liquidation only when the vault's registry rule allows it."""

from __future__ import annotations

from chains.registry_codec import RegistryEntry
from devkit.replay.keeper import registry_allows

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
