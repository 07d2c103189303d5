"""Exact encoding of HealthRegistry entries (see contracts/HealthRegistry.sol).

Slot layout (uint256, big-endian bit ranges):
    255..128 credit  uint128  USD, 6 decimals (1 USD = 1_000_000)
    127..64  hf      uint64   health factor, 9 decimals; HF_INFINITE = no debt
     63..24  as_of   uint40   unix seconds the entry was computed for
     23..16  tier    uint8    0 healthy, 1 warning, 2 liquidatable, 3 insolvent
     15..0   reserved, zero (the contract reverts the batch otherwise)

A batch for `update(bytes)` is N x (20-byte account ++ 32-byte slot). Everything here is
int arithmetic; out-of-range values raise ValueError naming the field instead of being
truncated, because a truncated credit would be a silently wrong on-chain limit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from eth_utils import is_hex_address, to_checksum_address

from chains.units import TIERS, USD6

CREDIT_BITS = 128
HF_BITS = 64
AS_OF_BITS = 40
TIER_BITS = 8

CREDIT_SHIFT = 128
HF_SHIFT = 64
AS_OF_SHIFT = 24
TIER_SHIFT = 16
RESERVED_MASK = 0xFFFF

HF_ONE = 10**9
HF_INFINITE = 2**64 - 1
MAX_CREDIT = 2**128 - 1
MAX_AS_OF = 2**40 - 1

ENTRY_LEN = 52
_MAX_TIER = len(TIERS) - 1
ZERO_ADDRESS = "0x" + "00" * 20


@dataclass(frozen=True)
class RegistryEntry:
    """One account's slot, in exact on-chain units."""

    credit_usd6: int
    hf_1e9: int
    as_of: int
    tier: int

    def __post_init__(self) -> None:
        c, h, a, t = self.credit_usd6, self.hf_1e9, self.as_of, self.tier
        # The same checks as below in one expression (`type(x) is int` excludes bool
        # and numpy integers as isinstance + the bool test do): the pusher builds
        # tens of thousands of entries per price move, and the four calls were about
        # a third of the time to build one (1.5-2.3 -> 1.2-1.5 us on the shared box).
        # Any failure goes through the named checks, for their messages.
        if (
            type(c) is int
            and type(h) is int
            and type(a) is int
            and type(t) is int
            and 0 <= c <= MAX_CREDIT
            and 0 <= h <= HF_INFINITE
            and 1 <= a <= MAX_AS_OF
            and 0 <= t <= _MAX_TIER
        ):
            return
        _check_int("credit_usd6", c, 0, MAX_CREDIT)
        _check_int("hf_1e9", h, 0, HF_INFINITE)
        # as_of 0 is the contract's "no entry"; an entry with it would always be skipped.
        _check_int("as_of", a, 1, MAX_AS_OF)
        _check_int("tier", t, 0, _MAX_TIER)

    @property
    def infinite_hf(self) -> bool:
        return self.hf_1e9 == HF_INFINITE


def _check_int(field: str, value: object, lo: int, hi: int) -> None:
    # bool is an int subclass; True as a credit is a bug, not 1 micro-dollar.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{field} must be an int, got {type(value).__name__} {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{field} out of range [{lo}, {hi}]: {value}")


def _check_account(account: object) -> str:
    if not isinstance(account, str) or not is_hex_address(account):
        raise ValueError(f"account is not a 20-byte hex address: {account!r}")
    if int(account, 16) == 0:
        raise ValueError("account must not be the zero address")
    return to_checksum_address(account)


def pack_slot(entry: RegistryEntry) -> int:
    return (
        (entry.credit_usd6 << CREDIT_SHIFT)
        | (entry.hf_1e9 << HF_SHIFT)
        | (entry.as_of << AS_OF_SHIFT)
        | (entry.tier << TIER_SHIFT)
    )


def unpack_slot(slot: int) -> RegistryEntry:
    """Decode a slot as read from entryOf(). Raises ValueError for an empty (never written)
    slot or reserved bits set; use `is_empty_slot` first where "no entry" is expected."""
    _check_int("slot", slot, 0, 2**256 - 1)
    if slot & RESERVED_MASK:
        raise ValueError(f"slot has reserved bits 15..0 set: {slot:#x}")
    return RegistryEntry(
        credit_usd6=slot >> CREDIT_SHIFT,
        hf_1e9=(slot >> HF_SHIFT) & HF_INFINITE,
        as_of=(slot >> AS_OF_SHIFT) & MAX_AS_OF,
        tier=(slot >> TIER_SHIFT) & 0xFF,
    )


def is_empty_slot(slot: int) -> bool:
    return slot == 0


_HEX_ADDRESS = re.compile(r"(0[xX])?[0-9a-fA-F]{40}")


def _account_bytes(account: object) -> bytes:
    """The 20 bytes of a hex address (the checks of _check_account, without building
    its checksum: a batch of thousands of entries paid more for that than for
    everything else)."""
    if not isinstance(account, str) or _HEX_ADDRESS.fullmatch(account) is None:
        raise ValueError(f"account is not a 20-byte hex address: {account!r}")
    raw = bytes.fromhex(account[-40:])
    if raw == _ZERO20:
        raise ValueError("account must not be the zero address")
    return raw


_ZERO20 = bytes(20)


def pack_entry(account: str, entry: RegistryEntry) -> bytes:
    """20-byte account ++ 32-byte big-endian slot."""
    return _account_bytes(account) + pack_slot(entry).to_bytes(32, "big")


def unpack_entry(data: bytes) -> tuple[str, RegistryEntry]:
    if len(data) != ENTRY_LEN:
        raise ValueError(f"entry must be {ENTRY_LEN} bytes, got {len(data)}")
    account = to_checksum_address(data[:20])
    return account, unpack_slot(int.from_bytes(data[20:], "big"))


def pack_batch(entries: Iterable[tuple[str, RegistryEntry]]) -> bytes:
    """Concatenate entries for HealthRegistry.update(). Duplicate accounts are rejected:
    the contract would skip the second one (same or older as_of) or let it win, and
    either way the caller meant something else."""
    out = bytearray()
    seen: set[bytes] = set()
    for n, (account, entry) in enumerate(entries):
        try:
            packed = pack_entry(account, entry)
        except ValueError as exc:
            raise ValueError(f"entry {n}: {exc}") from None
        key = packed[:20]
        if key in seen:
            addr = to_checksum_address(key)
            raise ValueError(f"entry {n}: account {addr} appears twice in one batch")
        seen.add(key)
        out += packed
    return bytes(out)


def unpack_batch(data: bytes) -> list[tuple[str, RegistryEntry]]:
    if len(data) % ENTRY_LEN:
        raise ValueError(f"batch length {len(data)} is not a multiple of {ENTRY_LEN}")
    return [unpack_entry(data[i : i + ENTRY_LEN]) for i in range(0, len(data), ENTRY_LEN)]


def hf_to_fixed(hf: float | None) -> int:
    """Quantise a float health factor (None or inf = no debt) to 9 decimals, rounding
    down so the on-chain value never looks healthier than computed; values beyond the
    uint64 range saturate just below the infinite sentinel."""
    if hf is None or hf == float("inf"):
        return HF_INFINITE
    if math.isnan(hf) or hf < 0:
        raise ValueError(f"hf must be >= 0 or infinite, got {hf!r}")
    return min(int(hf * HF_ONE), HF_INFINITE - 1)


def usd_to_credit(usd: float) -> int:
    """Quantise a USD credit to 6 decimals, rounding down (never grant more than computed)."""
    if not math.isfinite(usd) or usd < 0:
        raise ValueError(f"credit must be a finite value >= 0, got {usd!r}")
    return min(int(usd * USD6), MAX_CREDIT)
