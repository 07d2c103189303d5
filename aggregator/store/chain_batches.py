"""The chain store's write path inside one transaction: events in, position deltas
applied, block hashes kept.

Invariants:
- Everything here runs inside the caller's `Store.transaction()` (SqlChainStore): the
  events, the derived positions, the block hashes and the checkpoint commit together or
  not at all, so a crash between two writes loses nothing.
- Inserting events is idempotent: an event already stored (same block and log index)
  is skipped, so a re-applied batch changes nothing.
- A deposit or repayment above the confirmed block pends (counted in
  `pending_amount`) until `promote_confirmed` sees it `confirmations` deep; one already
  deep on arrival (backfill) never pends.
- `head_amount`, `pending_amount` and `confirmed_amount` of a position move together,
  from one dict of deltas per transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator.store.chain_rows import (
    ACCOUNT_CHUNK,
    BLK,
    EV,
    POS,
    RISK_LOWERING,
    Key,
    confirmed_amount,
    mapping_event,
)
from aggregator.store.models.chain import ChainPosition
from chains.types import BlockRef, EventColumns, PositionEffect, PositionKind

Deltas = dict[Key, tuple[int, int]]

# kind -> (position kind, head sign, adds to pending): VaultEvent.effects() of the
# one-effect events, for the insert loop of apply_batch.
SIMPLE_EFFECT: dict[str, tuple[PositionKind, int, bool]] = {
    "deposit": ("collateral", 1, True),
    "withdraw": ("collateral", -1, False),
    "borrow": ("debt", 1, False),
}

# Column order of the driver-level event insert in apply_batch.
_EVENT_COLUMNS = (
    "chain", "block_number", "block_hash", "tx_hash", "log_index", "kind", "account",
    "token", "amount", "counterparty", "debt_token", "debt_amount", "adjust_kind",
    "negative", "pending",
)  # fmt: skip


def add_effect(deltas: Deltas, eff: PositionEffect, sign: int, pending: bool) -> None:
    key = (eff.account, eff.token, eff.kind)
    h, p = deltas.get(key, (0, 0))
    deltas[key] = (h + sign * eff.head_delta, p + (sign * eff.pending_delta if pending else 0))


async def load_positions(
    s: AsyncSession, chain: str, keys: Iterable[Key]
) -> dict[Key, ChainPosition]:
    keys = list(set(keys))
    out: dict[Key, ChainPosition] = {}
    for i in range(0, len(keys), ACCOUNT_CHUNK):
        chunk = keys[i : i + ACCOUNT_CHUNK]
        rows = (
            await s.execute(
                select(ChainPosition).where(
                    POS.c.chain == chain,
                    tuple_(POS.c.account, POS.c.token, POS.c.kind).in_(chunk),
                )
            )
        ).scalars()
        for row in rows:
            out[(row.account, row.token, row.kind)] = row
    return out


async def apply_effects(s: AsyncSession, chain: str, block: int, deltas: Deltas) -> None:
    if not deltas:
        return
    rows = await load_positions(s, chain, deltas)
    for key, (d_head, d_pending) in deltas.items():
        row = rows.get(key)
        if row is None:
            row = ChainPosition(
                chain=chain,
                account=key[0],
                token=key[1],
                kind=key[2],
                head_amount=0,
                pending_amount=0,
                confirmed_amount=0,
                updated_block=block,
            )
            s.add(row)
        row.head_amount += d_head
        row.pending_amount += d_pending
        row.confirmed_amount = confirmed_amount(row.kind, row.head_amount, row.pending_amount)
        row.updated_block = block


class EventWriter:
    """Driver-level event inserts for one dialect (the backfill's hot path): the
    batch's columns go to the driver in bulk (SQLite `executemany`, PostgreSQL
    `COPY`), with no SQLAlchemy parameter processing and no object per event."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        cols = _EVENT_COLUMNS
        if dialect == "postgresql":
            marks = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
        else:
            marks = ", ".join("?" * len(cols))
        self.insert_sql = f"INSERT INTO {EV.name} ({', '.join(cols)}) VALUES ({marks})"

    def big_values(self, values: list[int], column: str) -> list[Any]:
        """A BigInt column's values as the driver takes them (see db.BigInt)."""
        if not set(map(type, values)) <= {int}:
            bad = next(v for v in values if type(v) is not int)
            raise TypeError(f"BigInt column {column} takes int, got {type(bad).__name__}")
        if self.dialect == "postgresql":
            return list(map(Decimal, values))
        return list(map(str, values))

    async def insert_events(
        self,
        s: AsyncSession,
        chain: str,
        events: EventColumns,
        confirmed_block: int,
        *,
        deltas: Deltas,
        accounts: set[str],
    ) -> None:
        """Insert the events not stored yet (a re-applied batch is idempotent) and add
        their effects to `deltas`; deposits/repayments above `confirmed_block` pend."""
        if events.chain != chain:
            raise ValueError(f"events of chain {events.chain!r} in a batch for {chain!r}")
        events = await _new_rows(s, chain, events)
        if not len(events):
            return
        # Already deep (backfill): confirmed on arrival, never pending.
        pending = [
            n > confirmed_block and k in RISK_LOWERING
            for n, k in zip(events.block_number, events.kind, strict=True)
        ]
        _add_deltas(deltas, events, pending, confirmed_block)
        accounts.update(events.account)
        n = len(events)
        columns = (
            [chain] * n, events.block_number, events.block_hash, events.tx_hash,
            events.log_index, events.kind, events.account, events.token,
            self.big_values(events.amount, "amount"), events.counterparty, events.debt_token,
            self.big_values(events.debt_amount, "debt_amount"), events.adjust_kind,
            events.negative, pending,
        )  # fmt: skip
        conn = await s.connection()
        if self.dialect == "postgresql":
            # COPY: one round trip for the whole batch, parsed by the server in bulk.
            raw = await conn.get_raw_connection()
            driver: Any = raw.driver_connection
            await driver.copy_records_to_table(
                EV.name, records=zip(*columns, strict=True), columns=_EVENT_COLUMNS
            )
        else:
            # Straight to the driver's executemany: SQLAlchemy's per-row parameter
            # processing was most of the indexer's time per event.
            await conn.exec_driver_sql(self.insert_sql, list(zip(*columns, strict=True)))


def _add_deltas(
    deltas: Deltas, events: EventColumns, pending: list[bool], confirmed_block: int
) -> None:
    """The position deltas of the batch's events (VaultEvent.effects(), inlined for the
    one-effect kinds: the hot loop of a backfill)."""
    rows = zip(
        events.kind, events.account, events.token, events.amount, events.block_number,
        strict=True,
    )  # fmt: skip
    for i, (kind, account, token, amount, number) in enumerate(rows):
        simple = SIMPLE_EFFECT.get(kind)
        if simple is None:
            for eff in events.event(i).effects():
                add_effect(deltas, eff, 1, number > confirmed_block)
            continue
        key = (account, token, simple[0])
        h, p = deltas.get(key, (0, 0))
        deltas[key] = (
            h + simple[1] * amount,
            p + amount if simple[2] and number > confirmed_block else p,
        )


async def _new_rows(s: AsyncSession, chain: str, events: EventColumns) -> EventColumns:
    """The events not stored yet, each (block, log index) once."""
    if not len(events):
        return events
    keys = list(zip(events.block_number, events.log_index, strict=True))
    existing = await _stored_keys(s, chain, events)
    if not existing and len(set(keys)) == len(keys):
        return events  # a backfill's batch: every event is new
    keep: list[int] = []
    for i, key in enumerate(keys):
        if key not in existing:
            existing.add(key)
            keep.append(i)
    return events.take(keep)


async def _stored_keys(s: AsyncSession, chain: str, events: EventColumns) -> set[tuple[int, int]]:
    """(block, log index) of the events already stored in the batch's block range."""
    lo = min(events.block_number)
    hi = max(events.block_number)
    rows = (
        await s.execute(
            select(EV.c.block_number, EV.c.log_index).where(
                EV.c.chain == chain, EV.c.block_number >= lo, EV.c.block_number <= hi
            )
        )
    ).all()
    return {(int(b), int(i)) for b, i in rows}


async def promote_confirmed(
    s: AsyncSession, chain: str, confirmed_block: int, deltas: Deltas, accounts: set[str]
) -> None:
    """Promote deposits/repayments that are now `confirmations` deep."""
    promoted = (
        await s.execute(
            select(EV).where(
                EV.c.chain == chain,
                EV.c.pending.is_(True),
                EV.c.block_number <= confirmed_block,
            )
        )
    ).all()
    for row in promoted:
        for eff in mapping_event(row._mapping).effects():
            key = (eff.account, eff.token, eff.kind)
            h, p = deltas.get(key, (0, 0))
            deltas[key] = (h, p - eff.pending_delta)
        accounts.add(row.account)
    ids = [row.id for row in promoted]
    for i in range(0, len(ids), ACCOUNT_CHUNK):
        await s.execute(
            update(EV).where(EV.c.id.in_(ids[i : i + ACCOUNT_CHUNK])).values(pending=False)
        )


async def store_block_hashes(
    s: AsyncSession,
    chain: str,
    blocks: Sequence[BlockRef],
    to_block: int,
    keep_hashes_from: int,
) -> None:
    """Keep the batch's block hashes (the reorg window) and forget those below it,
    except the tip's."""
    if blocks:
        nums = [b.number for b in blocks]
        await s.execute(delete(BLK).where(BLK.c.chain == chain, BLK.c.number.in_(nums)))
        await s.execute(
            insert(BLK),
            [
                {"chain": chain, "number": b.number, "hash": b.hash, "parent_hash": b.parent_hash}
                for b in blocks
            ],
        )
    await s.execute(
        delete(BLK).where(
            BLK.c.chain == chain,
            BLK.c.number < keep_hashes_from,
            BLK.c.number != to_block,
        )
    )
