"""SQL implementation of chains.positions.PositionSink, and the position views the
portfolio engine reads (head and confirmed, see chains/positions.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from sqlalchemy import Table, delete, insert, select

from aggregator.store.db import Store
from aggregator.store.models.chain import ChainCheckpoint
from aggregator.store.models.derivatives import DerivativeEventRow
from chains.positions import DerivativeEvent, PositionView, position_views

DEV: Table = DerivativeEventRow.__table__  # type: ignore[attr-defined]
CP: Table = ChainCheckpoint.__table__  # type: ignore[attr-defined]


# The row's columns are the event's fields, name for name.
_FIELDS = tuple(f.name for f in dataclasses.fields(DerivativeEvent))


def _values(ev: DerivativeEvent) -> dict[str, object]:
    return {name: getattr(ev, name) for name in _FIELDS}


def _event(r: DerivativeEventRow) -> DerivativeEvent:
    return DerivativeEvent(**{name: getattr(r, name) for name in _FIELDS})


class SqlDerivativeStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def apply_position_events(
        self, chain: str, events: Sequence[DerivativeEvent]
    ) -> set[str]:
        if not events:
            return set()
        accounts: set[str] = set()
        async with self.store.transaction() as s:
            lo = min(e.block_number for e in events)
            hi = max(e.block_number for e in events)
            existing = {
                (int(b), int(i))
                for b, i in (
                    await s.execute(
                        select(DEV.c.block_number, DEV.c.log_index).where(
                            DEV.c.chain == chain, DEV.c.block_number >= lo, DEV.c.block_number <= hi
                        )
                    )
                ).all()
            }
            rows = []
            for ev in events:
                if ev.chain != chain:
                    raise ValueError(f"event of chain {ev.chain!r} in a batch for {chain!r}")
                if (ev.block_number, ev.log_index) in existing:
                    continue
                existing.add((ev.block_number, ev.log_index))
                rows.append(_values(ev))
                accounts.add(ev.account)
            if rows:
                await s.execute(insert(DEV), rows)
        return accounts

    async def rollback_positions(self, chain: str, ancestor_block: int) -> set[str]:
        async with self.store.transaction() as s:
            accounts = {
                str(a)
                for a in (
                    await s.execute(
                        select(DEV.c.account)
                        .where(DEV.c.chain == chain, DEV.c.block_number > ancestor_block)
                        .distinct()
                    )
                ).scalars()
            }
            await s.execute(
                delete(DEV).where(DEV.c.chain == chain, DEV.c.block_number > ancestor_block)
            )
        return accounts

    async def events(self, chain: str | None = None) -> list[DerivativeEvent]:
        async with self.store.session() as s:
            q = select(DerivativeEventRow)
            if chain is not None:
                q = q.where(DEV.c.chain == chain)
            rows = (
                (await s.execute(q.order_by(DEV.c.chain, DEV.c.block_number, DEV.c.log_index)))
                .scalars()
                .all()
            )
        return [_event(r) for r in rows]

    async def views(self, chain: str | None = None) -> list[PositionView]:
        """Head and confirmed view of every position (confirmed block from the chain's
        indexer checkpoint). Event-sourced: O(events) per call."""
        async with self.store.session() as s:
            cps = (await s.execute(select(CP.c.chain, CP.c.confirmed_block))).all()
        confirmed = {str(c): int(b) for c, b in cps}
        return position_views(await self.events(chain), confirmed)


__all__ = ["SqlDerivativeStore"]
