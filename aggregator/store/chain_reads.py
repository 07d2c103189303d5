"""Read-only queries of the chain store: checkpoint, block hashes, positions, events.

Each query is one read session; nothing here writes, so nothing here is fenced.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from sqlalchemy import select

from aggregator.store.chain_rows import BLK, EV, POS, row_event
from aggregator.store.db import Store
from aggregator.store.models.chain import ChainCheckpoint, ChainEvent, ChainPosition
from chains.types import Checkpoint, Position, PositionKind, VaultEvent


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
