"""SQL implementation of chains.pusher.store.PushStore (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from aggregator.store.db import Store
from aggregator.store.fence import FencedRepo
from aggregator.store.models.meta import utcnow
from aggregator.store.models.push import PushOnchain, PushTx
from chains.pusher.types import (
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


def _values(rec: TxRecord) -> dict[str, Any]:
    return {
        "chain": rec.chain,
        "sender": rec.sender,
        "nonce": rec.nonce,
        "to": rec.to,
        "status": rec.status,
        "payload": _hex(rec.payload),
        "payload_hash": rec.payload_hash,
        "gas_limit": rec.gas_limit,
        "max_fee": rec.max_fee,
        "priority_fee": rec.priority_fee,
        "raw_tx": _hex(rec.raw_tx),
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
    (aggregator/cluster) the push lease's fence guards every tx record (nonce) write."""

    store: Store

    async def insert_tx(self, rec: TxRecord) -> int:
        values = _values(rec)
        async with self.store.transaction() as s:
            await self._fenced(s)
            result = await s.execute(insert(TX).values(**values).returning(TX.c.id))
            rec.id = int(result.scalar_one())
        return rec.id

    async def update_tx(self, rec: TxRecord) -> None:
        if rec.id is None:
            raise ValueError("update_tx needs a record that was inserted (id is None)")
        values = _values(rec)
        changes = {k: values[k] for k in (*_MUTABLE, "updated_at")}
        async with self.store.transaction() as s:
            await self._fenced(s)
            await s.execute(update(TX).where(TX.c.id == rec.id).values(**changes))

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
        async with self.store.transaction() as s:
            for start in range(0, len(rows), 500):
                stmt = dialect_insert(ONCHAIN).values(rows[start : start + 500])
                stmt = stmt.on_conflict_do_update(
                    index_elements=[ONCHAIN.c.chain, ONCHAIN.c.account],
                    set_={
                        "slot": stmt.excluded.slot,
                        "block": stmt.excluded.block,
                        "read_at": stmt.excluded.read_at,
                    },
                )
                await s.execute(stmt)

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
