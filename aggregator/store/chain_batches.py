"""The chain store's write path inside one transaction: events in, position deltas
applied, block hashes kept.

Invariants:
- Everything here runs inside the caller's `Store.transaction()` (SqlChainStore): the
  events, the derived positions, the block hashes and the checkpoint commit together or
  not at all, so a crash between two writes loses nothing.
- Inserting events is idempotent: an event already stored (same block and log index)
  is skipped, so a re-applied batch changes nothing. Nothing is stored above the
  checkpoint, so a batch starting above it skips that lookup.
- Compacted range (`compact_backfill`, below the kept block hashes, so never rolled
  back or promoted): every event moves positions, the range gets one audit row
  (chain_event_range: count and digest of all its events), and only each account's
  first event on the chain (chain_account) and the KEPT_KINDS are stored as rows, so
  what the reputation feed reads (first-seen, liquidations) is the same as with a row
  per event. A range is recorded once; a rollback never crosses one.
- A deposit or repayment above the confirmed block pends (counted in
  `pending_amount`) until `promote_confirmed` sees it `confirmations` deep; one already
  deep on arrival (backfill) never pends.
- `head_amount`, `pending_amount` and `confirmed_amount` of a position move together,
  from one dict of deltas per transaction.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
from sqlalchemy import and_, delete, insert, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator.store.chain_rows import (
    ACC,
    ACCOUNT_CHUNK,
    BLK,
    EV,
    KEPT_KINDS,
    POS,
    RISK_LOWERING,
    RNG,
    Key,
    confirmed_amount,
    mapping_event,
)
from aggregator.store.models.chain import ChainEventRange, ChainPosition
from chains.events import range_digest
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
    "negative", "pending", "ref",
)  # fmt: skip


def _pending(events: EventColumns, confirmed_block: int) -> list[bool]:
    """Per row: a deposit/repayment above the confirmed block (it pends)."""
    if not len(events) or max(events.block_number) <= confirmed_block:
        return [False] * len(events)
    return [
        n > confirmed_block and k in RISK_LOWERING
        for n, k in zip(events.block_number, events.kind, strict=True)
    ]


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
        compact: CompactRange | None = None,
        stored_possible: bool = True,
    ) -> None:
        """Insert the events not stored yet (a re-applied batch is idempotent) and add
        their effects to `deltas`; deposits/repayments above `confirmed_block` pend.
        With `compact`, the events of that block range change positions but only
        some are stored as rows (see `_compact`), and the range's audit record is
        written. `stored_possible` False (a batch above the checkpoint) skips looking
        for stored events and ranges of the batch's blocks."""
        if events.chain != chain:
            raise ValueError(f"events of chain {events.chain!r} in a batch for {chain!r}")
        events = await _new_rows(s, chain, events, stored_possible)
        if compact is not None and stored_possible:
            events = await _drop_compacted(s, chain, events, compact)
        seen = await _seen_accounts(s, chain, events)
        stored = events
        if compact is not None:
            stored = await _compact(
                s, chain, events, compact, seen=seen, stored_possible=stored_possible
            )
        if not len(events):
            return
        take_effects(deltas, accounts, events, confirmed_block)
        await _note_accounts(s, chain, events, seen)
        if len(stored):
            await self._insert(s, chain, stored, confirmed_block)

    def row_columns(
        self, chain: str, events: EventColumns, confirmed_block: int
    ) -> tuple[list[Any], ...]:
        """The event rows to insert as columns in `_EVENT_COLUMNS` order, the values as
        the driver takes them."""
        n = len(events)
        pending = _pending(events, confirmed_block)
        return (
            [chain] * n, events.block_number, events.block_hash, events.tx_hash,
            events.log_index, events.kind, events.account, events.token,
            self.big_values(events.amount, "amount"), events.counterparty, events.debt_token,
            self.big_values(events.debt_amount, "debt_amount"), events.adjust_kind,
            events.negative, pending, events.ref,
        )  # fmt: skip

    async def _insert(
        self, s: AsyncSession, chain: str, events: EventColumns, confirmed_block: int
    ) -> None:
        columns = self.row_columns(chain, events, confirmed_block)
        conn = await s.connection()
        if self.dialect == "postgresql":
            # COPY: one round trip for the whole batch, parsed by the server in bulk.
            raw = await conn.get_raw_connection()
            driver: Any = raw.driver_connection
            if not driver.is_in_transaction():
                # The dialect begins its transaction at the first statement it runs;
                # COPY bypasses it, so make sure it has begun (else COPY autocommits).
                await conn.exec_driver_sql("SELECT 1")
            await driver.copy_records_to_table(
                EV.name, records=zip(*columns, strict=True), columns=_EVENT_COLUMNS
            )
        else:
            # Straight to the driver's executemany: SQLAlchemy's per-row parameter
            # processing was most of the indexer's time per event.
            await conn.exec_driver_sql(self.insert_sql, list(zip(*columns, strict=True)))


def take_effects(
    deltas: Deltas, accounts: set[str], events: EventColumns, confirmed_block: int
) -> None:
    """Add the new events' position deltas (deposits/repayments above
    `confirmed_block` pend) and their accounts."""
    pending = _pending(events, confirmed_block)
    _add_deltas(deltas, events, pending, confirmed_block)
    accounts.update(events.account)


@dataclass(frozen=True)
class CompactRange:
    """Blocks [from_block, to_block] of a batch that no reorg (below the kept block
    hashes) or promotion (deeper than `confirmations`) can touch any more."""

    from_block: int
    to_block: int


async def _drop_compacted(
    s: AsyncSession, chain: str, events: EventColumns, compact: CompactRange
) -> EventColumns:
    """The batch without the events of an already recorded compacted range (a
    re-applied batch); a range overlapping a recorded one other than exactly is an
    error (the indexer never re-applies a committed range)."""
    rows = (
        await s.execute(
            select(RNG.c.from_block, RNG.c.to_block).where(
                RNG.c.chain == chain,
                RNG.c.to_block >= compact.from_block,
                RNG.c.from_block <= compact.to_block,
            )
        )
    ).all()
    return without_recorded(chain, events, compact, [(int(a), int(b)) for a, b in rows])


def without_recorded(
    chain: str, events: EventColumns, compact: CompactRange, rows: list[tuple[int, int]]
) -> EventColumns:
    """`_drop_compacted` given the recorded ranges (from_block, to_block) overlapping
    `compact`."""
    if not rows:
        return events
    if rows != [(compact.from_block, compact.to_block)]:
        raise ValueError(
            f"chain {chain!r}: compacted range {compact.from_block}..{compact.to_block} "
            f"overlaps the recorded ranges {[tuple(r) for r in rows]}"
        )
    return events.take([i for i, n in enumerate(events.block_number) if n > compact.to_block])


async def _compact(
    s: AsyncSession,
    chain: str,
    events: EventColumns,
    compact: CompactRange,
    *,
    seen: set[str],
    stored_possible: bool,
) -> EventColumns:
    """Record the audit row of the compacted range and return the events to store as
    rows: every event above the range, and in it each account's first event on the
    chain (what reputation's first-seen fact reads) and the kinds in KEPT_KINDS."""
    if stored_possible and await _recorded(s, chain, compact):
        return events  # re-applied: _drop_compacted left only events above the range
    plan = compact_plan(events, compact, seen)
    s.add(
        ChainEventRange(
            chain=chain,
            from_block=compact.from_block,
            to_block=compact.to_block,
            events=plan.events,
            rows_kept=plan.rows_kept,
            digest=plan.digest,
        )
    )
    return plan.stored


@dataclass(frozen=True)
class CompactPlan:
    """A compacted range's audit row (count, rows kept, digest) and the batch's events
    to store as rows."""

    events: int
    rows_kept: int
    digest: str
    stored: EventColumns


def compact_plan(events: EventColumns, compact: CompactRange, seen: set[str]) -> CompactPlan:
    """`_compact`'s decision for a range not recorded yet."""
    numbers, indexes = events.block_number, events.log_index
    in_order = in_chain_order(events)  # then so is any subsequence, `deep` too
    if in_order:
        # Block numbers ascend: the range's rows are a prefix.
        deep = list(range(bisect.bisect_right(numbers, compact.to_block)))
    else:
        deep = [i for i, n in enumerate(numbers) if n <= compact.to_block]
        deep.sort(key=lambda i: (numbers[i], indexes[i]))
    # The whole batch already in chain order (a backfill's): no copy of the columns.
    ordered = events if in_order and len(deep) == len(events) else events.take(deep)
    keep = _kept_rows(events, deep, seen, in_order)
    digest = range_digest(ordered)
    if len(keep) == len(deep):
        return CompactPlan(len(deep), len(keep), digest, events)
    above = list(range(len(deep), len(events))) if in_order else _above(events, compact)
    return CompactPlan(len(deep), len(keep), digest, events.take(keep + above))


def _above(events: EventColumns, compact: CompactRange) -> list[int]:
    return [i for i, n in enumerate(events.block_number) if n > compact.to_block]


def _kept_rows(events: EventColumns, deep: list[int], seen: set[str], in_order: bool) -> list[int]:
    """The rows of `deep` (in chain order; with `in_order`, a prefix of the batch)
    stored in a compacted range: each account's first row, unless the account is in
    `seen`, and every KEPT_KINDS row and row with a claim id."""
    accounts, kinds, refs = events.account, events.kind, events.ref
    if in_order:
        # A backfill's batch: `deep` is a prefix. The first row of each account from a
        # dict built backwards (the last write, the lowest row, wins), all in C.
        n = len(deep)
        firsts = dict(zip(reversed(accounts[:n]), range(n - 1, -1, -1), strict=True))
        rows = {i for a, i in firsts.items() if a not in seen}
        if not KEPT_KINDS.isdisjoint(kinds[:n]) or any(refs[:n]):
            rows.update(i for i in range(n) if kinds[i] in KEPT_KINDS or refs[i])
        return sorted(rows)
    keep: list[int] = []
    first = set(seen)
    for i in deep:
        account = accounts[i]
        if account not in first or kinds[i] in KEPT_KINDS or refs[i]:
            keep.append(i)
            first.add(account)
    return keep


async def _recorded(s: AsyncSession, chain: str, compact: CompactRange) -> bool:
    row = await s.get(ChainEventRange, (chain, compact.from_block))
    return row is not None


async def _seen_accounts(s: AsyncSession, chain: str, events: EventColumns) -> set[str]:
    """The batch's accounts already seen on the chain (in chain_account)."""
    batch = list(set(events.account))
    if not batch:
        return set()
    seen: set[str] = set()
    for i in range(0, len(batch), ACCOUNT_CHUNK):
        rows = await s.execute(
            select(ACC.c.account).where(
                ACC.c.chain == chain, ACC.c.account.in_(batch[i : i + ACCOUNT_CHUNK])
            )
        )
        seen.update(str(a) for (a,) in rows)
    return seen


async def _note_accounts(s: AsyncSession, chain: str, events: EventColumns, seen: set[str]) -> None:
    """Record the accounts first seen in this batch, at their first block."""
    firsts = first_blocks(events, seen)
    if firsts:
        await s.execute(
            insert(ACC),
            [{"chain": chain, "account": a, "first_block": n} for a, n in firsts.items()],
        )


def first_blocks(events: EventColumns, seen: set[str]) -> dict[str, int]:
    """The accounts of the batch not in `seen`, each with its lowest block."""
    numbers = events.block_number
    if numbers == sorted(numbers):
        # Blocks ascend (a backfill's batch): built backwards, the last write per
        # account (its lowest block) wins, all in C.
        lowest = dict(zip(reversed(events.account), reversed(numbers), strict=True))
        firsts = {a: n for a, n in lowest.items() if a not in seen}
    else:
        firsts = {}
        for account, n in zip(events.account, numbers, strict=True):
            if account not in seen and n < firsts.get(account, n + 1):
                firsts[account] = n
    return firsts


def _add_deltas(
    deltas: Deltas, events: EventColumns, pending: list[bool], confirmed_block: int
) -> None:
    """The position deltas of the batch's events (VaultEvent.effects(), inlined for the
    one-effect kinds: the hot loop of a backfill)."""
    if len(events) and set(events.kind) <= SIMPLE_EFFECT.keys():
        if max(events.block_number) <= confirmed_block:
            _add_deep_deltas(deltas, events)
        else:
            _add_simple_deltas(deltas, events, confirmed_block)
        return
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


def in_chain_order(events: EventColumns) -> bool:
    """Whether (block, log index) strictly increases along the batch (then no key
    repeats). Vectorised: a tuple per event was most of a backfill batch's
    garbage-collector work; numbers beyond int64 take the tuple comparison."""
    if len(events) < 2:
        return True
    try:
        blocks = np.asarray(events.block_number, dtype=np.int64)
        indexes = np.asarray(events.log_index, dtype=np.int64)
    except OverflowError:
        keys = list(zip(events.block_number, events.log_index, strict=True))
        return all(a < b for a, b in itertools.pairwise(keys))
    step = np.diff(blocks)
    return bool(np.all((step > 0) | ((step == 0) & (np.diff(indexes) > 0))))


def _add_deep_deltas(deltas: Deltas, events: EventColumns) -> None:
    """`_add_deltas` of a batch of one-effect kinds at or below the confirmed block (a
    backfill's): nothing pends, so the amounts are first summed per (kind, account,
    token) in plain ints (keys built by zip in C, no pair per event), then folded in."""
    sums: dict[tuple[str, str, str], int] = {}
    get = sums.get
    for key, amount in zip(
        zip(events.kind, events.account, events.token, strict=True), events.amount, strict=True
    ):
        sums[key] = get(key, 0) + amount
    for (kind, account, token), total in sums.items():
        position_kind, sign, _ = SIMPLE_EFFECT[kind]
        position = (account, token, position_kind)
        h, p = deltas.get(position, (0, 0))
        deltas[position] = (h + sign * total, p)


def _add_simple_deltas(deltas: Deltas, events: EventColumns, confirmed_block: int) -> None:
    """`_add_deltas` of a batch of one-effect kinds reaching above the confirmed block
    (the window part of a backfill, a live step): the amounts are summed per (kind,
    account, token, above the confirmed block) in plain ints, then folded in; only
    the kinds that add to pending (deposits) pend, and only above the confirmed block."""
    sums: dict[tuple[str, str, str, bool], int] = {}
    get = sums.get
    above = map(confirmed_block.__lt__, events.block_number)
    keys = zip(events.kind, events.account, events.token, above, strict=True)
    for key, amount in zip(keys, events.amount, strict=True):
        sums[key] = get(key, 0) + amount
    for (kind, account, token, is_above), total in sums.items():
        position_kind, sign, adds_pending = SIMPLE_EFFECT[kind]
        position = (account, token, position_kind)
        h, p = deltas.get(position, (0, 0))
        deltas[position] = (h + sign * total, p + total if adds_pending and is_above else p)


async def _new_rows(
    s: AsyncSession, chain: str, events: EventColumns, stored_possible: bool
) -> EventColumns:
    """The events not stored yet, each (block, log index) once."""
    if not len(events):
        return events
    existing = await _stored_keys(s, chain, events) if stored_possible else set()
    return unstored(events, existing)


def unstored(events: EventColumns, existing: set[tuple[int, int]]) -> EventColumns:
    """The events whose (block, log index) is not in `existing`, each key once
    (`existing` is extended)."""
    # In chain order no key repeats: a backfill's batch needs no set of its keys.
    if not existing and in_chain_order(events):
        return events  # a backfill's batch: every event is new
    keys = list(zip(events.block_number, events.log_index, strict=True))
    if not existing and len(set(keys)) == len(keys):
        return events
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
    ids = promotion([row._mapping for row in promoted], deltas, accounts)
    for i in range(0, len(ids), ACCOUNT_CHUNK):
        await s.execute(
            update(EV).where(EV.c.id.in_(ids[i : i + ACCOUNT_CHUNK])).values(pending=False)
        )


def promotion(rows: Iterable[Any], deltas: Deltas, accounts: set[str]) -> list[int]:
    """Take the promoted event rows (mappings of a `chain_event` row, typed) out of
    pending in `deltas`; returns their ids."""
    ids: list[int] = []
    for row in rows:
        for eff in mapping_event(row).effects():
            key = (eff.account, eff.token, eff.kind)
            h, p = deltas.get(key, (0, 0))
            deltas[key] = (h, p - eff.pending_delta)
        accounts.add(row["account"])
        ids.append(row["id"])
    return ids


async def store_block_hashes(
    s: AsyncSession,
    chain: str,
    blocks: Sequence[BlockRef],
    to_block: int,
    keep_hashes_from: int,
) -> None:
    """Keep the batch's block hashes (the reorg window) and forget those below it,
    except the tip's."""
    nums = [b.number for b in blocks]
    # One delete: the batch's own heights (replaced below) and those below the window.
    await s.execute(
        delete(BLK).where(
            BLK.c.chain == chain,
            or_(
                BLK.c.number.in_(nums),
                and_(BLK.c.number < keep_hashes_from, BLK.c.number != to_block),
            ),
        )
    )
    if blocks:
        await s.execute(
            insert(BLK),
            [
                {"chain": chain, "number": b.number, "hash": b.hash, "parent_hash": b.parent_hash}
                for b in blocks
            ],
        )
