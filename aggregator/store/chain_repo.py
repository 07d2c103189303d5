"""SQL implementation of chains.store.IndexerStore and RateStore.

Each mutating method is one `Store.transaction()`: events, derived positions,
block hashes and the checkpoint commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Table, and_, delete, func, insert, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator.store.db import Store
from aggregator.store.fence import FencedRepo
from aggregator.store.models.chain import (
    ChainBlock,
    ChainCheckpoint,
    ChainEvent,
    ChainPosition,
    LstRateSample,
)
from aggregator.store.models.meta import utcnow
from chains.types import (
    BlockRef,
    Checkpoint,
    EventKind,
    Position,
    PositionEffect,
    PositionKind,
    RateSample,
    VaultEvent,
)

# Typed Core handles on the tables (SQLModel attributes type as plain values).
EV: Table = ChainEvent.__table__  # type: ignore[attr-defined]
POS: Table = ChainPosition.__table__  # type: ignore[attr-defined]
BLK: Table = ChainBlock.__table__  # type: ignore[attr-defined]
CP: Table = ChainCheckpoint.__table__  # type: ignore[attr-defined]
RATE: Table = LstRateSample.__table__  # type: ignore[attr-defined]

# kind -> (position kind, head sign, adds to pending): VaultEvent.effects() of the
# one-effect events, for the insert loop of apply_batch.
_SIMPLE_EFFECT: dict[str, tuple[PositionKind, int, bool]] = {
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

# Reconciliation corrections live in the event table at log indexes no real log uses.
CORRECTION_LOG_INDEX = 1 << 40
_RISK_LOWERING = frozenset({"deposit", "repay"})
_ACCOUNT_CHUNK = 500


def _event_row(ev: VaultEvent) -> ChainEvent:
    return ChainEvent(
        chain=ev.chain,
        block_number=ev.block_number,
        block_hash=ev.block_hash,
        tx_hash=ev.tx_hash,
        log_index=ev.log_index,
        kind=ev.kind,
        account=ev.account,
        token=ev.token,
        amount=ev.amount,
        counterparty=ev.counterparty,
        debt_token=ev.debt_token,
        debt_amount=ev.debt_amount,
        adjust_kind=ev.adjust_kind,
        negative=ev.negative,
        pending=ev.kind in _RISK_LOWERING,
    )


def _mapping_event(m: Any) -> VaultEvent:
    return VaultEvent(
        chain=m["chain"],
        block_number=m["block_number"],
        block_hash=m["block_hash"],
        tx_hash=m["tx_hash"],
        log_index=m["log_index"],
        kind=m["kind"],
        account=m["account"],
        token=m["token"],
        amount=m["amount"],
        counterparty=m["counterparty"],
        debt_token=m["debt_token"],
        debt_amount=m["debt_amount"],
        adjust_kind=m["adjust_kind"],
        negative=m["negative"],
    )


def _row_event(row: ChainEvent) -> VaultEvent:
    return VaultEvent(
        chain=row.chain,
        block_number=row.block_number,
        block_hash=row.block_hash,
        tx_hash=row.tx_hash,
        log_index=row.log_index,
        kind=cast(EventKind, row.kind),
        account=row.account,
        token=row.token,
        amount=row.amount,
        counterparty=row.counterparty,
        debt_token=row.debt_token,
        debt_amount=row.debt_amount,
        adjust_kind=cast(PositionKind | None, row.adjust_kind),
        negative=row.negative,
    )


def _confirmed(kind: str, head: int, pending: int) -> int:
    return max(0, head - pending) if kind == "collateral" else head + pending


Key = tuple[str, str, str]


class SqlChainStore(FencedRepo):
    """IndexerStore + RateStore over the shared Store. With several instances
    (aggregator/cluster) the chain's index lease fence guards every indexer write."""

    store: Store

    # ------------------------------------------------------------ checkpoint

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

    async def _checkpoint_row(self, s: AsyncSession, chain: str) -> ChainCheckpoint:
        row = await s.get(ChainCheckpoint, chain)
        if row is None:
            row = ChainCheckpoint(chain=chain, indexed_block=-1, log_range=1)
            s.add(row)
        return row

    async def set_fatal(self, chain: str, reason: str) -> None:
        async with self.store.transaction() as s:
            await self._fenced(s)
            row = await self._checkpoint_row(s, chain)
            row.fatal_reason = reason[:2048]

    async def set_log_range(self, chain: str, log_range: int) -> None:
        async with self.store.transaction() as s:
            await self._fenced(s)
            row = await self._checkpoint_row(s, chain)
            row.log_range = log_range

    async def block_hashes(self, chain: str) -> dict[int, str]:
        async with self.store.session() as s:
            rows = (
                await s.execute(select(BLK.c.number, BLK.c.hash).where(BLK.c.chain == chain))
            ).all()
        return {int(n): str(h) for n, h in rows}

    # ------------------------------------------------------------ positions

    async def _load_positions(
        self, s: AsyncSession, chain: str, keys: Iterable[Key]
    ) -> dict[Key, ChainPosition]:
        keys = list(set(keys))
        out: dict[Key, ChainPosition] = {}
        for i in range(0, len(keys), _ACCOUNT_CHUNK):
            chunk = keys[i : i + _ACCOUNT_CHUNK]
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

    async def _apply_effects(
        self,
        s: AsyncSession,
        chain: str,
        block: int,
        deltas: dict[Key, tuple[int, int]],
    ) -> None:
        if not deltas:
            return
        rows = await self._load_positions(s, chain, deltas)
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
            row.confirmed_amount = _confirmed(row.kind, row.head_amount, row.pending_amount)
            row.updated_block = block

    @staticmethod
    def _add(
        deltas: dict[Key, tuple[int, int]], eff: PositionEffect, sign: int, pending: bool
    ) -> None:
        key = (eff.account, eff.token, eff.kind)
        h, p = deltas.get(key, (0, 0))
        deltas[key] = (h + sign * eff.head_delta, p + (sign * eff.pending_delta if pending else 0))

    def _big_value(self, value: int) -> Any:
        """A BigInt column's value as the driver takes it (see db.BigInt)."""
        if type(value) is not int:
            raise TypeError(f"BigInt columns take int, got {type(value).__name__}")
        return Decimal(value) if self.store.dialect == "postgresql" else str(value)

    def _insert_events_sql(self) -> str:
        cols = _EVENT_COLUMNS
        if self.store.dialect == "postgresql":
            marks = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
        else:
            marks = ", ".join("?" * len(cols))
        return f"INSERT INTO {EV.name} ({', '.join(cols)}) VALUES ({marks})"

    async def apply_batch(
        self,
        chain: str,
        *,
        to_block: int,
        blocks: Sequence[BlockRef],
        events: Sequence[VaultEvent],
        log_range: int,
        head_block: int,
        confirmed_block: int,
        keep_hashes_from: int,
    ) -> set[str]:
        accounts: set[str] = set()
        async with self.store.transaction() as s:
            await self._fenced(s)
            deltas: dict[Key, tuple[int, int]] = {}
            if events:
                await self._insert_events(
                    s, chain, events, confirmed_block, deltas=deltas, accounts=accounts
                )
            await self._promote_confirmed(s, chain, confirmed_block, deltas, accounts)
            await self._apply_effects(s, chain, to_block, deltas)
            await self._store_block_hashes(s, chain, blocks, to_block, keep_hashes_from)
            cp = await self._checkpoint_row(s, chain)
            cp.indexed_block = to_block
            cp.indexed_hash = next(
                (b.hash for b in blocks if b.number == to_block), cp.indexed_hash
            )
            cp.log_range = log_range
            cp.head_block = head_block
            cp.confirmed_block = confirmed_block
            cp.updated_at = utcnow()
        return accounts

    async def _insert_events(
        self,
        s: AsyncSession,
        chain: str,
        events: Sequence[VaultEvent],
        confirmed_block: int,
        *,
        deltas: dict[Key, tuple[int, int]],
        accounts: set[str],
    ) -> None:
        """Insert the events not stored yet (a re-applied batch is idempotent) and add
        their effects to `deltas`; deposits/repayments above `confirmed_block` pend."""
        ev_t = EV
        lo = min(e.block_number for e in events)
        hi = max(e.block_number for e in events)
        existing = {
            (int(b), int(i))
            for b, i in (
                await s.execute(
                    select(ev_t.c.block_number, ev_t.c.log_index).where(
                        ev_t.c.chain == chain,
                        ev_t.c.block_number >= lo,
                        ev_t.c.block_number <= hi,
                    )
                )
            ).all()
        }
        rows: list[tuple[Any, ...]] = []
        big = self._big_value
        for ev in events:
            if ev.chain != chain:
                raise ValueError(f"event of chain {ev.chain!r} in a batch for {chain!r}")
            if (ev.block_number, ev.log_index) in existing:
                continue
            existing.add((ev.block_number, ev.log_index))
            # Already deep (backfill): confirmed on arrival, never pending.
            deep = ev.block_number <= confirmed_block
            rows.append(
                (
                    chain, ev.block_number, ev.block_hash, ev.tx_hash, ev.log_index,
                    ev.kind, ev.account, ev.token, big(ev.amount), ev.counterparty,
                    ev.debt_token, big(ev.debt_amount), ev.adjust_kind, ev.negative,
                    not deep and ev.kind in _RISK_LOWERING,
                )
            )  # fmt: skip
            simple = _SIMPLE_EFFECT.get(ev.kind)
            if simple is None:
                for eff in ev.effects():
                    self._add(deltas, eff, 1, not deep)
            else:
                # VaultEvent.effects() of a deposit/withdraw/borrow, inlined: the
                # hot loop of a backfill.
                key = (ev.account, ev.token, simple[0])
                h, p = deltas.get(key, (0, 0))
                a = ev.amount
                deltas[key] = (h + simple[1] * a, p + a if simple[2] and not deep else p)
            accounts.add(ev.account)
        if rows:
            # Straight to the driver's executemany: SQLAlchemy's per-row parameter
            # processing was most of the indexer's time per event.
            conn = await s.connection()
            await conn.exec_driver_sql(self._insert_events_sql(), rows)

    async def _promote_confirmed(
        self,
        s: AsyncSession,
        chain: str,
        confirmed_block: int,
        deltas: dict[Key, tuple[int, int]],
        accounts: set[str],
    ) -> None:
        """Promote deposits/repayments that are now `confirmations` deep."""
        ev_t = EV
        promoted = (
            await s.execute(
                select(ev_t).where(
                    ev_t.c.chain == chain,
                    ev_t.c.pending.is_(True),
                    ev_t.c.block_number <= confirmed_block,
                )
            )
        ).all()
        for row in promoted:
            for eff in _mapping_event(row._mapping).effects():
                key = (eff.account, eff.token, eff.kind)
                h, p = deltas.get(key, (0, 0))
                deltas[key] = (h, p - eff.pending_delta)
            accounts.add(row.account)
        ids = [row.id for row in promoted]
        for i in range(0, len(ids), _ACCOUNT_CHUNK):
            await s.execute(
                update(ev_t).where(ev_t.c.id.in_(ids[i : i + _ACCOUNT_CHUNK])).values(pending=False)
            )

    async def _store_block_hashes(
        self,
        s: AsyncSession,
        chain: str,
        blocks: Sequence[BlockRef],
        to_block: int,
        keep_hashes_from: int,
    ) -> None:
        """Keep the batch's block hashes (the reorg window) and forget those below it,
        except the tip's."""
        blk_t = BLK
        if blocks:
            nums = [b.number for b in blocks]
            await s.execute(delete(blk_t).where(blk_t.c.chain == chain, blk_t.c.number.in_(nums)))
            await s.execute(
                insert(blk_t),
                [
                    {
                        "chain": chain,
                        "number": b.number,
                        "hash": b.hash,
                        "parent_hash": b.parent_hash,
                    }
                    for b in blocks
                ],
            )
        await s.execute(
            delete(blk_t).where(
                blk_t.c.chain == chain,
                blk_t.c.number < keep_hashes_from,
                blk_t.c.number != to_block,
            )
        )

    async def rollback(self, chain: str, ancestor: BlockRef) -> set[str]:
        accounts: set[str] = set()
        async with self.store.transaction() as s:
            await self._fenced(s)
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
            deltas: dict[Key, tuple[int, int]] = {}
            for row in rows:
                for eff in _row_event(row).effects():
                    self._add(deltas, eff, -1, row.pending)
                accounts.add(row.account)
            await self._apply_effects(s, chain, ancestor.number, deltas)
            await s.execute(
                delete(ChainEvent).where(
                    EV.c.chain == chain,
                    EV.c.block_number > ancestor.number,
                )
            )
            await s.execute(
                delete(ChainBlock).where(BLK.c.chain == chain, BLK.c.number > ancestor.number)
            )
            cp = await self._checkpoint_row(s, chain)
            cp.indexed_block = ancestor.number
            cp.indexed_hash = ancestor.hash
            cp.last_reconcile_block = min(cp.last_reconcile_block, ancestor.number)
        return accounts

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
        return [
            Position(
                chain=r.chain,
                account=r.account,
                token=r.token,
                kind=cast(PositionKind, r.kind),
                head_amount=r.head_amount,
                pending_amount=r.pending_amount,
                updated_block=r.updated_block,
            )
            for r in rows
        ]

    async def positions_of(self, account: str) -> list[Position]:
        """Every chain's positions of one account (what the ledger reads)."""
        async with self.store.session() as s:
            rows = (
                (await s.execute(select(ChainPosition).where(POS.c.account == account)))
                .scalars()
                .all()
            )
        return [
            Position(
                r.chain,
                r.account,
                r.token,
                cast(PositionKind, r.kind),
                r.head_amount,
                r.pending_amount,
                r.updated_block,
            )
            for r in rows
        ]

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
        return [_row_event(r) for r in rows]

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

    async def apply_corrections(
        self,
        chain: str,
        block: int,
        corrections: Sequence[tuple[str, str, PositionKind, int]],
        reconcile_block: int,
    ) -> None:
        async with self.store.transaction() as s:
            await self._fenced(s)
            if corrections:
                rows = await self._load_positions(
                    s, chain, [(a, t, k) for a, t, k, _ in corrections]
                )
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
                deltas: dict[Key, tuple[int, int]] = {}
                for account, token, kind, onchain in corrections:
                    if onchain < 0:
                        raise ValueError(
                            f"negative on-chain amount {onchain} for {account} {token}"
                        )
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
                    s.add(_event_row(ev))
                    for eff in ev.effects():
                        self._add(deltas, eff, 1, True)
                await self._apply_effects(s, chain, block, deltas)
            cp = await self._checkpoint_row(s, chain)
            cp.last_reconcile_block = reconcile_block

    async def reset_chain(self, chain: str) -> None:
        async with self.store.transaction() as s:
            for table in (EV, POS, BLK, CP):
                await s.execute(delete(table).where(table.c.chain == chain))

    # ------------------------------------------------------------ LST rates

    async def add_rate_samples(self, samples: Sequence[RateSample]) -> None:
        if not samples:
            return
        # Idempotent by (asset, chain, block): several instances (docs/deployment.md)
        # sample the same rates, and the database, not a read-then-write, decides.
        dialect_insert = pg_insert if self.store.dialect == "postgresql" else sqlite_insert
        stmt = dialect_insert(RATE).on_conflict_do_nothing(
            index_elements=["asset", "chain", "block"]
        )
        now = utcnow()
        rows = {
            (x.asset, x.chain, x.block): {
                "asset": x.asset,
                "chain": x.chain,
                "block": x.block,
                "timestamp": x.timestamp,
                "rate": x.rate,
                "scale": x.scale,
                "observed_at": now,
            }
            for x in samples
        }
        async with self.store.transaction() as s:
            await s.execute(stmt, list(rows.values()))

    async def latest_rates(self, chain: str | None = None) -> dict[str, RateSample]:
        async with self.store.session() as s:
            q = select(LstRateSample)
            if chain is not None:
                q = q.where(RATE.c.chain == chain)
            # Newest per asset: the sample with the greatest (timestamp, block).
            newest = select(RATE.c.asset, func.max(RATE.c.timestamp).label("ts")).group_by(
                RATE.c.asset
            )
            if chain is not None:
                newest = newest.where(RATE.c.chain == chain)
            sub = newest.subquery()
            q = q.join(sub, and_(RATE.c.asset == sub.c.asset, RATE.c.timestamp == sub.c.ts))
            rows = (await s.execute(q)).scalars().all()
        out: dict[str, RateSample] = {}
        for r in sorted(rows, key=lambda r: (r.timestamp, r.block)):
            out[r.asset] = RateSample(r.asset, r.chain, r.block, r.timestamp, r.rate, r.scale)
        return out


__all__ = ["CORRECTION_LOG_INDEX", "SqlChainStore"]
