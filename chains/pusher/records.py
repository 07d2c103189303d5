"""The open transaction records of one keeper key, in memory.

Invariants:
- `records` holds every record of this key that is not final yet (prepared, sent,
  mined), by id; it is loaded from the store by reconcile, and a record only leaves it
  (`forget`) after its final state was persisted.
- A payload never changes under a record (a replacement re-signs the same payload), so
  its parsed entries are cached per record id.
- A final record stays findable by every hash it was sent under for a while: the
  listener may see a batch's log after the record left `records`.
"""

from __future__ import annotations

from chains.pusher.types import TxRecord
from chains.registry_codec import RegistryEntry, unpack_slot

# How many hashes of final records stay findable by payload_of.
RECENT_HASHES = 512


class OpenRecords:
    def __init__(self) -> None:
        self.records: dict[int, TxRecord] = {}  # open records by id
        # Payloads of records that became final lately, by every hash they were sent
        # under: the listener may see a batch's log after the record left `records`.
        self._recent_payloads: dict[str, bytes] = {}
        # Parsed entries of open records (a payload never changes), by record id.
        self._entries_cache: dict[int, list[tuple[str, RegistryEntry]]] = {}

    def load(self, stored: list[TxRecord]) -> None:
        self.records = {r.id: r for r in stored if r.id is not None}

    def add(self, rec: TxRecord) -> None:
        assert rec.id is not None
        self.records[rec.id] = rec

    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, rid: object) -> bool:
        return rid in self.records

    def ordered(self) -> list[TxRecord]:
        return sorted(self.records.values(), key=lambda r: (r.nonce, r.id or 0))

    def max_nonce(self) -> int:
        return max((r.nonce for r in self.records.values()), default=-1)

    def inflight_entries(self) -> dict[str, RegistryEntry]:
        """account (lower) -> newest entry in an open record (sent, not yet final)."""
        out: dict[str, RegistryEntry] = {}
        for rec in self.ordered():
            for key, entry in self._record_entries(rec):
                if key not in out or out[key].as_of < entry.as_of:
                    out[key] = entry
        return out

    def _record_entries(self, rec: TxRecord) -> list[tuple[str, RegistryEntry]]:
        """(lower-case account, entry) of a record's payload, parsed once per record."""
        rid = rec.id if rec.id is not None else -1
        got = self._entries_cache.get(rid)
        if got is None:
            p = rec.payload
            got = [
                ("0x" + p[i : i + 20].hex(), unpack_slot(int.from_bytes(p[i + 20 : i + 52], "big")))
                for i in range(0, len(p), 52)
            ]
            self._entries_cache[rid] = got
        return got

    def payload_of(self, tx_hash: str) -> bytes | None:
        """The payload we sent under `tx_hash` (any attempt of an open or recently final
        record), else None."""
        h = tx_hash.lower()
        for rec in self.records.values():
            if h in (x.lower() for x in rec.hashes):
                return rec.payload
        return self._recent_payloads.get(h)

    def forget(self, rec: TxRecord) -> None:
        """A record became final: keep its payload findable by hash for a while."""
        self.records.pop(rec.id or -1, None)
        self._entries_cache.pop(rec.id or -1, None)
        for h in rec.hashes:
            self._recent_payloads[h.lower()] = rec.payload
        while len(self._recent_payloads) > RECENT_HASHES:
            del self._recent_payloads[next(iter(self._recent_payloads))]
