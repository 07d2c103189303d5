"""SQL implementation of chains.store.IndexerStore and RateStore.

Each mutating method is one `Store.transaction()`: events, derived positions,
block hashes and the checkpoint commit together or not at all. With several instances
(aggregator/cluster) the chain's index lease fence is checked first in every indexer
write transaction.

The parts: `chain_rows.py` (tables, row conversions, shared facts), `chain_batches.py`
(the write path inside a transaction: event inserts, promotion, position deltas, block
hashes), `chain_sqlite.py` (on SQLite, `apply_batch`'s statements as one synchronous
function in the driver's thread, same decisions and rows), `chain_reads.py` (read-only
queries), `rate_repo.py` (LST rate samples).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator.store.chain_batches import (
    CompactRange,
    Deltas,
    EventWriter,
    add_effect,
    apply_effects,
    load_positions,
    promote_confirmed,
    store_block_hashes,
)
from aggregator.store.chain_reads import BookMark, ChainReads, StoredPosition
from aggregator.store.chain_rows import (
    ACC,
    BLK,
    CORRECTION_LOG_INDEX,
    CP,
    EV,
    POS,
    RNG,
    checkpoint_row,
    event_row,
    row_event,
)
from aggregator.store.chain_sqlite import BatchWrite, SqliteBatchWriter, run_in_driver
from aggregator.store.db import Store
from aggregator.store.fence import FencedRepo, WriteFence
from aggregator.store.models.chain import ChainBlock, ChainEvent
from aggregator.store.models.meta import utcnow
from aggregator.store.rate_repo import SqlRateStore
from chains.types import (
    BlockRef,
    Checkpoint,
    EventColumns,
    Position,
    PositionKind,
    RateSample,
    SeizeClaim,
    VaultEvent,
)

Correction = tuple[str, str, PositionKind, int]


class SqlChainStore(FencedRepo):
    """IndexerStore + RateStore over the shared Store. With several instances
    (aggregator/cluster) the chain's index lease fence guards every indexer write."""

    def __init__(self, store: Store, *, fence: WriteFence | None = None) -> None:
        super().__init__(store, fence=fence)
        self.reads = ChainReads(store)
        self.rates = SqlRateStore(store)
        # On SQLite a batch's statements run in the driver's thread in one hand-off
        # (chain_sqlite.py); `sqlite = None` keeps the SQLAlchemy path (PostgreSQL's).
        self.sqlite: SqliteBatchWriter | None = (
            SqliteBatchWriter(store.engine.dialect) if store.dialect == "sqlite" else None
        )

    # ------------------------------------------------------------ reads
    async def load_checkpoint(self, chain: str) -> Checkpoint | None:
        return await self.reads.load_checkpoint(chain)

    async def block_hashes(self, chain: str) -> dict[int, str]:
        return await self.reads.block_hashes(chain)

    async def positions(self, chain: str, accounts: Iterable[str] | None = None) -> list[Position]:
        return await self.reads.positions(chain, accounts)

    def position_batches(
        self, chain: str, *, since_block: int | None = None
    ) -> AsyncIterator[list[StoredPosition]]:
        """Every stored position of `chain` (with `since_block`: only those written at
        or after that block), streamed in batches (the start-up load)."""
        return self.reads.position_batches(chain, since_block=since_block)

    async def store_id(self) -> str | None:
        """This store's random name (book snapshots are tied to it)."""
        return await self.reads.store_id()

    async def book_mark(self, chain: str) -> BookMark | None:
        """Where the chain's positions stand, for a book snapshot (None: never indexed)."""
        return await self.reads.book_mark(chain)

    async def positions_of(self, account: str) -> list[Position]:
        """Every chain's positions of one account (what the ledger reads)."""
        return await self.reads.positions_of(account)

    async def events(self, chain: str) -> list[VaultEvent]:
        """The stored event rows in chain order. Inside a compacted backfill range
        (compact_backfill) only each account's first event and the liquidations are
        rows; the range's audit record (chain_event_range) stands for the rest."""
        return await self.reads.events(chain)

    async def pending_claims(self, accounts: Iterable[str] | None = None) -> list[SeizeClaim]:
        """Cross-chain seize claims not settled on any chain (the ledger's hold)."""
        return await self.reads.pending_claims(accounts)

    async def claim_accounts(self) -> set[str]:
        """Accounts with any cross-chain seize claim, settled or not."""
        return await self.reads.claim_accounts()

    async def sample_accounts(self, chain: str, after: str, limit: int) -> list[str]:
        return await self.reads.sample_accounts(chain, after, limit)

    # ------------------------------------------------------------ checkpoint
    async def set_fatal(self, chain: str, reason: str) -> None:
        async with self.store.transaction() as s:
            await self._fenced(s)
            row = await checkpoint_row(s, chain)
            row.fatal_reason = reason[:2048]

    async def set_log_range(self, chain: str, log_range: int) -> None:
        async with self.store.transaction() as s:
            await self._fenced(s)
            row = await checkpoint_row(s, chain)
            row.log_range = log_range

    # ------------------------------------------------------------ event batches
    async def apply_batch(
        self,
        chain: str,
        *,
        to_block: int,
        blocks: Sequence[BlockRef],
        events: EventColumns | Sequence[VaultEvent],
        log_range: int,
        head_block: int,
        confirmed_block: int,
        keep_hashes_from: int,
        from_block: int | None = None,
        compact_below: int | None = None,
    ) -> set[str]:
        accounts: set[str] = set()
        if not isinstance(events, EventColumns):
            events = EventColumns.from_events(chain, events)
        compact = None
        if compact_below is not None:
            if from_block is None:
                raise ValueError("compact_below needs the batch's from_block")
            if compact_below > keep_hashes_from or compact_below > confirmed_block + 1:
                raise ValueError(
                    f"chain {chain!r}: cannot compact below {compact_below}: blocks from "
                    f"{min(keep_hashes_from, confirmed_block + 1)} may still be rolled "
                    "back or promoted"
                )
            if from_block <= min(to_block, compact_below - 1):
                compact = CompactRange(from_block, min(to_block, compact_below - 1))
        if self.sqlite is not None:
            write = BatchWrite(
                chain, to_block, blocks, events, log_range, head_block, confirmed_block,
                keep_hashes_from, from_block, compact,
            )  # fmt: skip
            sqlite = self.sqlite
            async with self.store.transaction() as s:
                await self._fenced(s)
                return await run_in_driver(s, lambda db: sqlite.apply(db, write))
        async with self.store.transaction() as s:
            await self._fenced(s)
            cp = await checkpoint_row(s, chain)
            deltas: Deltas = {}
            if len(events) or compact is not None:
                await EventWriter(self.store.dialect).insert_events(
                    s,
                    chain,
                    events,
                    confirmed_block,
                    deltas=deltas,
                    accounts=accounts,
                    compact=compact,
                    # Nothing is ever stored above the checkpoint (rollbacks delete
                    # above their ancestor, corrections sit at the indexed block): a
                    # batch starting above it needs no lookup of what is stored.
                    stored_possible=from_block is None or from_block <= cp.indexed_block,
                )
            await promote_confirmed(s, chain, confirmed_block, deltas, accounts)
            await apply_effects(s, chain, to_block, deltas)
            await store_block_hashes(s, chain, blocks, to_block, keep_hashes_from)
            cp.indexed_block = to_block
            cp.indexed_hash = next(
                (b.hash for b in blocks if b.number == to_block), cp.indexed_hash
            )
            cp.log_range = log_range
            cp.head_block = head_block
            cp.confirmed_block = confirmed_block
            cp.updated_at = utcnow()
        return accounts

    async def rollback(self, chain: str, ancestor: BlockRef) -> set[str]:
        accounts: set[str] = set()
        async with self.store.transaction() as s:
            await self._fenced(s)
            compacted = (
                await s.execute(
                    select(func.max(RNG.c.to_block)).where(
                        RNG.c.chain == chain, RNG.c.to_block > ancestor.number
                    )
                )
            ).scalar()
            if compacted is not None:
                # Cannot happen by construction (ranges are compacted only below the
                # kept block hashes, and the ancestor is one of those); refuse rather
                # than leave positions that no stored event explains.
                raise ValueError(
                    f"chain {chain!r}: rollback to block {ancestor.number} would cross "
                    f"the compacted range ending at block {compacted}"
                )
            rows = (
                (
                    await s.execute(
                        select(ChainEvent).where(
                            EV.c.chain == chain, EV.c.block_number > ancestor.number
                        )
                    )
                )
                .scalars()
                .all()
            )
            deltas: Deltas = {}
            for row in rows:
                for eff in row_event(row).effects():
                    add_effect(deltas, eff, -1, row.pending)
                accounts.add(row.account)
            await apply_effects(s, chain, ancestor.number, deltas)
            await s.execute(
                delete(ChainEvent).where(
                    EV.c.chain == chain,
                    EV.c.block_number > ancestor.number,
                )
            )
            await s.execute(
                delete(ChainBlock).where(BLK.c.chain == chain, BLK.c.number > ancestor.number)
            )
            await s.execute(
                delete(ACC).where(ACC.c.chain == chain, ACC.c.first_block > ancestor.number)
            )
            cp = await checkpoint_row(s, chain)
            cp.indexed_block = ancestor.number
            cp.indexed_hash = ancestor.hash
            cp.last_reconcile_block = min(cp.last_reconcile_block, ancestor.number)
            # The reverted positions are stamped with the ancestor, below what a book
            # snapshot may have seen: the count tells a snapshot it cannot be replayed.
            cp.rollbacks = (cp.rollbacks or 0) + 1
        return accounts

    # ------------------------------------------------------------ reconciliation
    async def apply_corrections(
        self,
        chain: str,
        block: int,
        corrections: Sequence[Correction],
        reconcile_block: int,
    ) -> None:
        async with self.store.transaction() as s:
            await self._fenced(s)
            if corrections:
                deltas = await self._correction_events(s, chain, block, corrections)
                await apply_effects(s, chain, block, deltas)
            cp = await checkpoint_row(s, chain)
            cp.last_reconcile_block = reconcile_block

    @staticmethod
    async def _correction_events(
        s: AsyncSession, chain: str, block: int, corrections: Sequence[Correction]
    ) -> Deltas:
        """Store one `reconcile` event per position that differs from the chain (at log
        indexes from CORRECTION_LOG_INDEX up); returns their effects."""
        rows = await load_positions(s, chain, [(a, t, k) for a, t, k, _ in corrections])
        next_index = (
            await s.execute(
                select(func.max(EV.c.log_index)).where(
                    EV.c.chain == chain,
                    EV.c.block_number == block,
                    EV.c.log_index >= CORRECTION_LOG_INDEX,
                )
            )
        ).scalar()
        idx = CORRECTION_LOG_INDEX if next_index is None else int(next_index) + 1
        deltas: Deltas = {}
        for account, token, kind, onchain in corrections:
            if onchain < 0:
                raise ValueError(f"negative on-chain amount {onchain} for {account} {token}")
            row = rows.get((account, token, kind))
            current = row.head_amount if row is not None else 0
            diff = onchain - current
            if diff == 0:
                continue
            ev = VaultEvent(
                chain=chain,
                block_number=block,
                block_hash="",
                tx_hash="reconcile",
                log_index=idx,
                kind="reconcile",
                account=account,
                token=token,
                amount=abs(diff),
                adjust_kind=kind,
                negative=diff < 0,
            )
            idx += 1
            s.add(event_row(ev))
            for eff in ev.effects():
                add_effect(deltas, eff, 1, True)
        return deltas

    async def reset_chain(self, chain: str) -> None:
        async with self.store.transaction() as s:
            for table in (EV, POS, BLK, CP, RNG, ACC):
                await s.execute(delete(table).where(table.c.chain == chain))

    # ------------------------------------------------------------ LST rates
    async def add_rate_samples(self, samples: Sequence[RateSample]) -> None:
        await self.rates.add_rate_samples(samples)

    async def latest_rates(self, chain: str | None = None) -> dict[str, RateSample]:
        return await self.rates.latest_rates(chain)


__all__ = ["CORRECTION_LOG_INDEX", "SqlChainStore"]
