"""The write fence the store's repositories honour, defined here so the store layer
depends on nothing above it: aggregator/cluster/lease.py's `Fence` implements
`WriteFence` (one lease tenure, checked on PostgreSQL), and cluster wiring hands a
fence to each repository whose writes a lease protects.

Invariant: every protected transaction of a `FencedRepo` starts with `_fenced(s)`, so a
write of an instance that lost its lease rolls back instead of landing."""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from aggregator.store.db import Store


class WriteFence(Protocol):
    async def check(self, s: AsyncSession) -> None:
        """First statement of a protected transaction; raises (rolling it back) unless
        the writer still holds the right to write."""
        ...


class FencedRepo:
    """A repository whose writes a lease protects: each protected transaction starts
    with `_fenced(session)`. Without a fence (one instance, SQLite) it checks nothing."""

    def __init__(self, store: Store, *, fence: WriteFence | None = None) -> None:
        self.store = store
        self.fence = fence

    async def _fenced(self, s: AsyncSession) -> None:
        if self.fence is not None:
            await self.fence.check(s)
