"""Read-only queries of the chain store: checkpoint, block hashes, positions, events.

Each query is one read session; nothing here writes, so nothing here is fenced.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import cast

from sqlalchemy import select

from aggregator.store.chain_rows import ACCOUNT_CHUNK, BLK, EV, POS, row_event
from aggregator.store.db import Store
from aggregator.store.models.chain import ChainCheckpoint, ChainEvent, ChainPosition
from aggregator.store.models.meta import DaemonMeta
from chains.types import Checkpoint, Position, PositionKind, SeizeClaim, VaultEvent


def _position(r: ChainPosition) -> Position:
    return Position(
        chain=r.chain,
        account=r.account,
        token=r.token,
        kind=cast(PositionKind, r.kind),
        head_amount=r.head_amount,
        pending_amount=r.pending_amount,
        updated_block=r.updated_block,
    )


# Positions per round trip of the start-up read: enough to amortise the driver's
# per-fetch cost, few enough that one batch of Python rows stays small (~10 MB).
POSITION_BATCH = 50_000

# (account, token, kind, head_amount, confirmed_amount) of one stored position.
StoredPosition = tuple[str, str, str, int, int]


@dataclass(frozen=True)
class BookMark:
    """A chain's checkpoint as a book snapshot needs it: every position write after
    this point is stamped at or above `min(indexed_block, last_reconcile_block)`
    unless a rollback (counted in `rollbacks`) came in between."""

    indexed_block: int
    indexed_hash: str | None
    last_reconcile_block: int
    rollbacks: int


class ChainReads:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def load_checkpoint(self, chain: str) -> Checkpoint | None:
        async with self.store.session() as s:
            row = await s.get(ChainCheckpoint, chain)
        if row is None:
            return None
        return Checkpoint(
            chain=row.chain,
            indexed_block=row.indexed_block,
            indexed_hash=row.indexed_hash,
            log_range=row.log_range,
            head_block=row.head_block,
            confirmed_block=row.confirmed_block,
            fatal_reason=row.fatal_reason,
            last_reconcile_block=row.last_reconcile_block,
        )

    async def block_hashes(self, chain: str) -> dict[int, str]:
        async with self.store.session() as s:
            rows = (
                await s.execute(select(BLK.c.number, BLK.c.hash).where(BLK.c.chain == chain))
            ).all()
        return {int(n): str(h) for n, h in rows}

    async def positions(self, chain: str, accounts: Iterable[str] | None = None) -> list[Position]:
        async with self.store.session() as s:
            q = select(ChainPosition).where(POS.c.chain == chain)
            if accounts is not None:
                accs = list(accounts)
                if not accs:
                    return []
                q = q.where(POS.c.account.in_(accs))
            rows = (
                (await s.execute(q.order_by(POS.c.account, POS.c.token, POS.c.kind)))
                .scalars()
                .all()
            )
        return [_position(r) for r in rows]

    async def store_id(self) -> str | None:
        """The random name migration 0004 gave this store (None: not migrated so far)."""
        async with self.store.session() as s:
            row = await s.get(DaemonMeta, "store_id")
        return None if row is None else row.value

    async def book_mark(self, chain: str) -> BookMark | None:
        async with self.store.session() as s:
            row = await s.get(ChainCheckpoint, chain)
        if row is None:
            return None
        return BookMark(
            indexed_block=int(row.indexed_block),
            indexed_hash=row.indexed_hash,
            last_reconcile_block=int(row.last_reconcile_block),
            rollbacks=int(row.rollbacks or 0),
        )

    async def position_batches(
        self, chain: str, size: int | None = None, *, since_block: int | None = None
    ) -> AsyncIterator[list[StoredPosition]]:
        """Every stored position of `chain` in batches of at most `size`, read through
        one cursor as plain columns (no ORM object, no Position): what the start-up
        book load streams, so the whole table is never in memory as Python objects.
        The confirmed amount is the stored one (kept in step with head and pending by
        every write, chain_batches.py). With `since_block`, only the positions whose
        last write was stamped at or after that block (`updated_block`)."""
        q = select(
            POS.c.account, POS.c.token, POS.c.kind, POS.c.head_amount, POS.c.confirmed_amount
        ).where(POS.c.chain == chain)
        if since_block is not None:
            q = q.where(POS.c.updated_block >= since_block)
        # In key order, so the book's account order (and /v1/accounts) is the same on
        # every start: without it SQLite chose the (chain, updated_block) index of
        # migration 0004 and a restart listed the accounts in write order.
        q = q.order_by(POS.c.account, POS.c.token, POS.c.kind)
        size = size or POSITION_BATCH
        async with self.store.engine.connect() as conn:
            result = await conn.stream(q.execution_options(yield_per=size))
            async for part in result.partitions(size):
                yield cast("list[StoredPosition]", part)

    async def positions_of(self, account: str) -> list[Position]:
        """Every chain's positions of one account (what the ledger reads)."""
        async with self.store.session() as s:
            rows = (
                (await s.execute(select(ChainPosition).where(POS.c.account == account)))
                .scalars()
                .all()
            )
        return [_position(r) for r in rows]

    async def events(self, chain: str) -> list[VaultEvent]:
        async with self.store.session() as s:
            rows = (
                (
                    await s.execute(
                        select(ChainEvent)
                        .where(EV.c.chain == chain)
                        .order_by(EV.c.block_number, EV.c.log_index)
                    )
                )
                .scalars()
                .all()
            )
        return [row_event(r) for r in rows]

    async def pending_claims(self, accounts: Iterable[str] | None = None) -> list[SeizeClaim]:
        """Cross-chain seize claims of `accounts` (None: all) whose settlement no chain
        has indexed: claim rows (a `repay` with a claim id) with no `liquidation` row of
        the same id, on any chain. The store is shared by every chain (and instance),
        so a claim and its settlement meet here whichever instance indexed each."""
        settled = select(EV.c.ref).where(EV.c.ref.is_not(None), EV.c.kind == "liquidation")
        q = select(
            EV.c.chain, EV.c.account, EV.c.token, EV.c.amount, EV.c.block_number, EV.c.ref
        ).where(EV.c.ref.is_not(None), EV.c.kind == "repay", EV.c.ref.not_in(settled))
        chunks: list[list[str] | None] = [None]
        if accounts is not None:
            accs = list(accounts)
            chunks = [accs[i : i + ACCOUNT_CHUNK] for i in range(0, len(accs), ACCOUNT_CHUNK)]
        out: list[SeizeClaim] = []
        async with self.store.session() as s:
            for chunk in chunks:
                part = q if chunk is None else q.where(EV.c.account.in_(chunk))
                for chain, account, token, amount, block, ref in await s.execute(part):
                    out.append(SeizeClaim(chain, account, token, int(amount), int(block), ref))
        return sorted(out, key=lambda c: (c.chain, c.block_number, c.ref))

    async def claim_accounts(self) -> set[str]:
        """Every account with a cross-chain seize claim row, settled or not (after a
        book snapshot's load, whose holds may have been settled since)."""
        async with self.store.session() as s:
            rows = await s.execute(
                select(EV.c.account).where(EV.c.ref.is_not(None), EV.c.kind == "repay").distinct()
            )
            return {str(a) for (a,) in rows}

    async def sample_accounts(self, chain: str, after: str, limit: int) -> list[str]:
        async with self.store.session() as s:
            rows = (
                (
                    await s.execute(
                        select(POS.c.account)
                        .where(POS.c.chain == chain, POS.c.account > after)
                        .distinct()
                        .order_by(POS.c.account)
                        .limit(limit)
                    )
                )
                .scalars()
                .all()
            )
        return [str(a) for a in rows]
