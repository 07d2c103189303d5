"""SQL implementation of chains.pusher.store.PushStore (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from aggregator.store.db import Store
from aggregator.store.fence import FencedRepo, WriteFence
from aggregator.store.models.meta import utcnow
from aggregator.store.models.push import PushOnchain, PushTx
from chains.pusher.types import (
    FINAL_STATUSES,
    MINED_FINAL_STATUSES,
    OPEN_STATUSES,
    OnchainEntry,
    TxRecord,
    TxStatus,
)
from chains.registry_codec import pack_slot, unpack_slot

TX: Table = PushTx.__table__  # type: ignore[attr-defined]
ONCHAIN: Table = PushOnchain.__table__  # type: ignore[attr-defined]

_MUTABLE = (
    "status",
    "gas_limit",
    "max_fee",
    "priority_fee",
    "raw_tx",
    "tx_hash",
    "hashes",
    "last_sent_at",
    "mined_hash",
    "mined_block",
    "mined_block_hash",
    "gas_used",
    "replacements",
    "reorgs",
    "error",
)


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def _values(rec: TxRecord, *, raw: bool = True) -> dict[str, Any]:
    """The row of a record. `raw` False: without the bytes columns (payload, raw_tx),
    for an update that does not change them."""
    out = {
        "chain": rec.chain,
        "sender": rec.sender,
        "nonce": rec.nonce,
        "to": rec.to,
        "status": rec.status,
        "payload_hash": rec.payload_hash,
        "gas_limit": rec.gas_limit,
        "max_fee": rec.max_fee,
        "priority_fee": rec.priority_fee,
        "tx_hash": rec.tx_hash,
        "hashes": list(rec.hashes),
        "created_at": rec.created_at,
        "last_sent_at": rec.last_sent_at,
        "mined_hash": rec.mined_hash,
        "mined_block": rec.mined_block,
        "mined_block_hash": rec.mined_block_hash,
        "gas_used": rec.gas_used,
        "replacements": rec.replacements,
        "reorgs": rec.reorgs,
        "error": None if rec.error is None else rec.error[:2048],
        "updated_at": utcnow(),
    }
    if raw:
        out["payload"] = _hex(rec.payload)
        out["raw_tx"] = _hex(rec.raw_tx)
    return out


def _record(m: Any) -> TxRecord:
    return TxRecord(
        id=m["id"],
        chain=m["chain"],
        sender=m["sender"],
        nonce=m["nonce"],
        to=m["to"],
        status=cast(TxStatus, m["status"]),
        payload=bytes.fromhex(m["payload"][2:]),
        payload_hash=m["payload_hash"],
        gas_limit=m["gas_limit"],
        max_fee=m["max_fee"],
        priority_fee=m["priority_fee"],
        raw_tx=bytes.fromhex(m["raw_tx"][2:]),
        tx_hash=m["tx_hash"],
        hashes=list(m["hashes"]),
        created_at=m["created_at"],
        last_sent_at=m["last_sent_at"],
        mined_hash=m["mined_hash"],
        mined_block=m["mined_block"],
        mined_block_hash=m["mined_block_hash"],
        gas_used=m["gas_used"],
        replacements=m["replacements"],
        reorgs=m["reorgs"],
        error=m["error"],
    )


class SqlPushStore(FencedRepo):
    """Transaction records and on-chain readings of the pusher. With several instances
    (aggregator/cluster) the push lease's fence guards every tx record (nonce) write.

    `update_tx` writes the signed bytes (`raw_tx`, ~170 KB as hex for a 3,200-entry
    batch) only when they are not the ones this object last wrote for the record: the
    bytes change only with `tx_hash` (the hash of those bytes: a replacement), so a
    row whose stored hash is the record's holds its bytes already. Rewriting them on
    every state change (sent, mined, final) cost ~60-110 ms per change on the sending
    path (docs/performance.md, "Push latency: where the time goes"). A record this
    object has not written (loaded after a restart, or by another instance) gets its
    bytes written again on its first update."""

    store: Store

    def __init__(self, store: Store, *, fence: WriteFence | None = None) -> None:
        super().__init__(store, fence=fence)
        self._raw_written: dict[int, str] = {}  # record id -> tx_hash of the stored raw_tx

    async def insert_tx(self, rec: TxRecord) -> int:
        await self.insert_txs([rec])
        assert rec.id is not None
        return rec.id

    async def insert_txs(self, recs: list[TxRecord]) -> None:
        if not recs:
            return
        async with self.store.transaction() as s:
            await self._fenced(s)
            ids = [
                int(
                    (
                        await s.execute(insert(TX).values(**_values(r)).returning(TX.c.id))
                    ).scalar_one()
                )
                for r in recs
            ]
        for rec, rid in zip(recs, ids, strict=True):
            rec.id = rid
            self._raw_written[rid] = rec.tx_hash

    async def update_tx(self, rec: TxRecord) -> None:
        await self.update_txs([rec])

    async def update_txs(self, recs: list[TxRecord]) -> None:
        if any(r.id is None for r in recs):
            raise ValueError("update_tx needs a record that was inserted (id is None)")
        if not recs:
            return
        raw = [self._raw_written.get(r.id) != r.tx_hash for r in recs]  # type: ignore[arg-type]
        async with self.store.transaction() as s:
            await self._fenced(s)
            for rec, write_raw in zip(recs, raw, strict=True):
                values = _values(rec, raw=write_raw)
                changes = {k: values[k] for k in (*_MUTABLE, "updated_at") if k in values}
                await s.execute(update(TX).where(TX.c.id == rec.id).values(**changes))
        for rec, write_raw in zip(recs, raw, strict=True):
            assert rec.id is not None
            if rec.status in FINAL_STATUSES:
                self._raw_written.pop(rec.id, None)  # never updated again
            elif write_raw:
                self._raw_written[rec.id] = rec.tx_hash

    async def check_lease(self) -> None:
        async with self.store.transaction() as s:
            await self._fenced(s)

    async def open_txs(self, chain: str, sender: str) -> list[TxRecord]:
        q = (
            select(TX)
            .where(TX.c.chain == chain, TX.c.sender == sender, TX.c.status.in_(OPEN_STATUSES))
            .order_by(TX.c.nonce, TX.c.id)
        )
        async with self.store.session() as s:
            rows = (await s.execute(q)).mappings().all()
        return [_record(r) for r in rows]

    async def final_txs_at(self, chain: str, sender: str, nonces: range) -> list[TxRecord]:
        if not nonces:
            return []
        q = (
            select(TX)
            .where(
                TX.c.chain == chain,
                TX.c.sender == sender,
                TX.c.status.in_(MINED_FINAL_STATUSES),
                TX.c.nonce >= nonces.start,
                TX.c.nonce < nonces.stop,
            )
            .order_by(TX.c.nonce, TX.c.id)
        )
        async with self.store.session() as s:
            rows = (await s.execute(q)).mappings().all()
        return [_record(r) for r in rows]

    async def recent_txs(self, chain: str, limit: int = 20) -> list[TxRecord]:
        q = select(TX).where(TX.c.chain == chain).order_by(TX.c.id.desc()).limit(limit)
        async with self.store.session() as s:
            rows = (await s.execute(q)).mappings().all()
        return [_record(r) for r in rows]

    async def save_onchain(self, entries: Iterable[OnchainEntry]) -> None:
        rows = [
            {
                "chain": e.chain,
                "account": e.account.lower(),
                "slot": 0 if e.entry is None else pack_slot(e.entry),
                "block": e.block,
                "read_at": e.read_at,
            }
            for e in entries
        ]
        if not rows:
            return
        dialect_insert = pg_insert if self.store.dialect == "postgresql" else sqlite_insert
        stmt = dialect_insert(ONCHAIN)
        stmt = stmt.on_conflict_do_update(
            index_elements=[ONCHAIN.c.chain, ONCHAIN.c.account],
            set_={
                "slot": stmt.excluded.slot,
                "block": stmt.excluded.block,
                "read_at": stmt.excluded.read_at,
            },
        )
        # One statement executed per row (the driver's executemany): 10,000 readings
        # (one price move's batches on one chain) in ~0.1 s of CPU where multi-row
        # VALUES statements of 500 took ~0.7-1 s (SQLAlchemy compiling 10k bound rows),
        # on the event loop of every chain's pusher (docs/performance.md).
        async with self.store.transaction() as s:
            await s.execute(stmt, rows)

    async def load_onchain(self, chain: str) -> dict[str, OnchainEntry]:
        q = select(ONCHAIN).where(ONCHAIN.c.chain == chain)
        async with self.store.session() as s:
            rows = (await s.execute(q)).mappings().all()
        return {
            r["account"]: OnchainEntry(
                chain,
                r["account"],
                None if r["slot"] == 0 else unpack_slot(r["slot"]),
                r["block"],
                r["read_at"],
            )
            for r in rows
        }
