"""`SqlChainStore.apply_batch` on SQLite: the transaction's statements as one
synchronous function run in the driver's own thread.

Why: aiosqlite runs every driver call (cursor, execute, fetchall, close) in its worker
thread and wakes the event loop with the result, and SQLAlchemy's session adds its
statement building and ORM flush around each; one indexing transaction was ~37 such
hand-offs. Here the whole write path is one hand-off: the same decisions
(chain_batches' pure functions) and the same statements, on the driver's
`sqlite3.Connection`, with PostgreSQL keeping the SQLAlchemy path (asyncpg has no
thread to run in).

Invariants:
- Same rows, deltas, audit digests and checkpoints as chain_batches' SQLAlchemy path
  (tests/unit/store/test_chain_sqlite.py applies the same batches both ways and compares
  every table); values as SQLAlchemy binds them on SQLite: BigInt as decimal text,
  booleans 0/1, datetimes by the column type's own SQLite processor.
- It runs on the session's connection inside the caller's `Store.transaction()`: the
  fence check before it and the commit after it are the same transaction, and an
  exception here rolls everything back (a crash loses at most this one transaction).
  A cancelled await (shutdown) does not stop the function, but aiosqlite's queue is
  first in, first out, so the session's rollback runs after it and undoes it.
- Read-only until its first write, like the session's statements were (sqlite3 begins
  the transaction at the first INSERT/UPDATE/DELETE); the store's write lock keeps
  other writers of this process out meanwhile.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator.store.chain_batches import (
    CompactRange,
    Deltas,
    EventWriter,
    compact_plan,
    first_blocks,
    promotion,
    take_effects,
    unstored,
    without_recorded,
)
from aggregator.store.chain_rows import (
    ACC,
    ACCOUNT_CHUNK,
    BLK,
    CP,
    EV,
    POS,
    RNG,
    Key,
    confirmed_amount,
)
from aggregator.store.models.meta import utcnow
from chains.types import BlockRef, EventColumns

T = TypeVar("T")


async def run_in_driver(s: AsyncSession, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run `fn` with the session's sqlite3 connection in aiosqlite's worker thread (the
    only thread that may use it), inside the session's transaction: one hand-off.
    aiosqlite has no public call for this; `_execute` is the method its own public
    calls are built on."""
    conn = await s.connection()
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    return await driver._execute(lambda: fn(driver._conn))


@dataclass(frozen=True)
class BatchWrite:
    """One `apply_batch` transaction's inputs (after its argument checks)."""

    chain: str
    to_block: int
    blocks: Sequence[BlockRef]
    events: EventColumns
    log_range: int
    head_block: int
    confirmed_block: int
    keep_hashes_from: int
    from_block: int | None
    compact: CompactRange | None


class SqliteBatchWriter:
    """The statements of `apply_batch` on one sqlite3 connection, built once."""

    def __init__(self, dialect: Dialect) -> None:
        self.events = EventWriter("sqlite")
        # The DateTime columns' own SQLite bind processor: the same text SQLAlchemy writes.
        processor = CP.c.updated_at.type.dialect_impl(dialect).bind_processor(dialect)
        if processor is None:
            raise RuntimeError("SQLite's DateTime type has no bind processor")
        self._datetime: Callable[[Any], Any] = processor
        self.insert_range = (
            f"INSERT INTO {RNG.name} (chain, from_block, to_block, events, rows_kept, digest, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        self.insert_account = (
            f"INSERT INTO {ACC.name} (chain, account, first_block) VALUES (?, ?, ?)"
        )
        self.insert_block = (
            f"INSERT INTO {BLK.name} (chain, number, hash, parent_hash) VALUES (?, ?, ?, ?)"
        )
        self.insert_position = (
            f"INSERT INTO {POS.name} (chain, account, token, kind, head_amount, pending_amount, "
            "confirmed_amount, updated_block) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self.update_position = (
            f"UPDATE {POS.name} SET head_amount = ?, pending_amount = ?, confirmed_amount = ?, "
            "updated_block = ? WHERE chain = ? AND account = ? AND token = ? AND kind = ?"
        )

    def apply(self, db: sqlite3.Connection, w: BatchWrite) -> set[str]:
        """The transaction's statements (the caller commits); returns the accounts whose
        positions changed. Mirrors SqlChainStore.apply_batch's generic path step by step."""
        chain = w.chain
        cp = db.execute(
            f"SELECT indexed_block, indexed_hash FROM {CP.name} WHERE chain = ?", (chain,)
        ).fetchone()
        indexed_block, indexed_hash = (-1, None) if cp is None else (int(cp[0]), cp[1])
        accounts: set[str] = set()
        deltas: Deltas = {}
        if len(w.events) or w.compact is not None:
            self._insert_events(
                db,
                w,
                deltas,
                accounts,
                stored_possible=w.from_block is None or w.from_block <= indexed_block,
            )
        self._promote(db, chain, w.confirmed_block, deltas, accounts)
        self._apply_effects(db, chain, w.to_block, deltas)
        self._block_hashes(db, chain, w.blocks, w.to_block, w.keep_hashes_from)
        tip = next((b.hash for b in w.blocks if b.number == w.to_block), indexed_hash)
        now = self._datetime(utcnow())
        if cp is None:
            db.execute(
                f"INSERT INTO {CP.name} (chain, indexed_block, indexed_hash, log_range, "
                "head_block, confirmed_block, last_reconcile_block, fatal_reason, rollbacks, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, 0, NULL, 0, ?)",
                (chain, w.to_block, tip, w.log_range, w.head_block, w.confirmed_block, now),
            )
        else:
            db.execute(
                f"UPDATE {CP.name} SET indexed_block = ?, indexed_hash = ?, log_range = ?, "
                "head_block = ?, confirmed_block = ?, updated_at = ? WHERE chain = ?",
                (w.to_block, tip, w.log_range, w.head_block, w.confirmed_block, now, chain),
            )
        return accounts

    # ------------------------------------------------------------ events
    def _insert_events(
        self,
        db: sqlite3.Connection,
        w: BatchWrite,
        deltas: Deltas,
        accounts: set[str],
        *,
        stored_possible: bool,
    ) -> None:
        """EventWriter.insert_events, statement for statement."""
        chain, events, compact = w.chain, w.events, w.compact
        if events.chain != chain:
            raise ValueError(f"events of chain {events.chain!r} in a batch for {chain!r}")
        if len(events):
            existing = self._stored_keys(db, chain, events) if stored_possible else set()
            events = unstored(events, existing)
        if compact is not None and stored_possible:
            rows = db.execute(
                f"SELECT from_block, to_block FROM {RNG.name} "
                "WHERE chain = ? AND to_block >= ? AND from_block <= ?",
                (chain, compact.from_block, compact.to_block),
            ).fetchall()
            events = without_recorded(chain, events, compact, [(int(a), int(b)) for a, b in rows])
        seen = self._seen_accounts(db, chain, events)
        stored = events
        if compact is not None:
            recorded = stored_possible and (
                db.execute(
                    f"SELECT 1 FROM {RNG.name} WHERE chain = ? AND from_block = ?",
                    (chain, compact.from_block),
                ).fetchone()
                is not None
            )
            if not recorded:
                plan = compact_plan(events, compact, seen)
                db.execute(
                    self.insert_range,
                    (
                        chain, compact.from_block, compact.to_block, plan.events,
                        plan.rows_kept, plan.digest, self._datetime(utcnow()),
                    ),
                )  # fmt: skip
                stored = plan.stored
        if not len(events):
            return
        take_effects(deltas, accounts, events, w.confirmed_block)
        firsts = first_blocks(events, seen)
        if firsts:
            db.executemany(self.insert_account, [(chain, a, n) for a, n in firsts.items()])
        if len(stored):
            columns = self.events.row_columns(chain, stored, w.confirmed_block)
            db.executemany(self.events.insert_sql, zip(*columns, strict=True))

    @staticmethod
    def _stored_keys(
        db: sqlite3.Connection, chain: str, events: EventColumns
    ) -> set[tuple[int, int]]:
        rows = db.execute(
            f"SELECT block_number, log_index FROM {EV.name} "
            "WHERE chain = ? AND block_number >= ? AND block_number <= ?",
            (chain, min(events.block_number), max(events.block_number)),
        ).fetchall()
        return {(int(b), int(i)) for b, i in rows}

    @staticmethod
    def _seen_accounts(db: sqlite3.Connection, chain: str, events: EventColumns) -> set[str]:
        batch = list(set(events.account))
        seen: set[str] = set()
        for i in range(0, len(batch), ACCOUNT_CHUNK):
            chunk = batch[i : i + ACCOUNT_CHUNK]
            rows = db.execute(
                f"SELECT account FROM {ACC.name} WHERE chain = ? AND account IN "
                f"({', '.join('?' * len(chunk))})",
                (chain, *chunk),
            )
            seen.update(str(a) for (a,) in rows)
        return seen

    # ------------------------------------------------------------ promotion
    @staticmethod
    def _promote(
        db: sqlite3.Connection, chain: str, confirmed_block: int, deltas: Deltas, accounts: set[str]
    ) -> None:
        """chain_batches.promote_confirmed."""
        cur = db.execute(
            f"SELECT * FROM {EV.name} WHERE chain = ? AND pending IS 1 AND block_number <= ?",
            (chain, confirmed_block),
        )
        names = [d[0] for d in cur.description]
        rows = []
        for values in cur.fetchall():
            row = dict(zip(names, values, strict=True))
            # As SQLAlchemy's result processors type them (BigInt text, Boolean 0/1).
            row["amount"] = int(row["amount"])
            row["debt_amount"] = int(row["debt_amount"])
            row["negative"] = bool(row["negative"])
            rows.append(row)
        ids = promotion(rows, deltas, accounts)
        for i in range(0, len(ids), ACCOUNT_CHUNK):
            chunk = ids[i : i + ACCOUNT_CHUNK]
            db.execute(
                f"UPDATE {EV.name} SET pending = 0 WHERE id IN ({', '.join('?' * len(chunk))})",
                chunk,
            )

    # ------------------------------------------------------------ positions
    def _apply_effects(
        self, db: sqlite3.Connection, chain: str, block: int, deltas: Deltas
    ) -> None:
        """chain_batches.apply_effects: the positions moved by `deltas`, stamped `block`."""
        if not deltas:
            return
        current = self._load_positions(db, chain, list(deltas))
        inserts: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        for key, (d_head, d_pending) in deltas.items():
            old = current.get(key)
            head, pending = (
                (d_head, d_pending) if old is None else (old[0] + d_head, old[1] + d_pending)
            )
            confirmed = confirmed_amount(key[2], head, pending)
            values = (str(head), str(pending), str(confirmed), block)
            if old is None:
                inserts.append((chain, *key, *values))
            else:
                updates.append((*values, chain, *key))
        if inserts:
            db.executemany(self.insert_position, inserts)
        if updates:
            db.executemany(self.update_position, updates)

    @staticmethod
    def _load_positions(
        db: sqlite3.Connection, chain: str, keys: list[Key]
    ) -> dict[Key, tuple[int, int]]:
        out: dict[Key, tuple[int, int]] = {}
        for i in range(0, len(keys), ACCOUNT_CHUNK):
            chunk = keys[i : i + ACCOUNT_CHUNK]
            params: list[Any] = [chain]
            for key in chunk:
                params.extend(key)
            rows = db.execute(
                f"SELECT account, token, kind, head_amount, pending_amount FROM {POS.name} "
                "WHERE chain = ? AND (account, token, kind) IN "
                f"(VALUES {', '.join(['(?, ?, ?)'] * len(chunk))})",
                params,
            )
            for account, token, kind, head, pending in rows:
                out[(account, token, kind)] = (int(head), int(pending))
        return out

    # ------------------------------------------------------------ block hashes
    def _block_hashes(
        self,
        db: sqlite3.Connection,
        chain: str,
        blocks: Sequence[BlockRef],
        to_block: int,
        keep_hashes_from: int,
    ) -> None:
        """chain_batches.store_block_hashes."""
        nums = [b.number for b in blocks]
        below = "(number < ? AND number != ?)"
        where = f"(number IN ({', '.join('?' * len(nums))}) OR {below})" if nums else below
        db.execute(
            f"DELETE FROM {BLK.name} WHERE chain = ? AND {where}",
            (chain, *nums, keep_hashes_from, to_block),
        )
        if blocks:
            db.executemany(
                self.insert_block, [(chain, b.number, b.hash, b.parent_hash) for b in blocks]
            )
