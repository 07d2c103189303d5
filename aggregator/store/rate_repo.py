"""SQL implementation of chains.store.RateStore: LST exchange-rate samples.

Samples are idempotent by (asset, chain, block): several instances sample the same
rates, and the database, not a read-then-write, decides.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import and_, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from aggregator.store.chain_rows import RATE
from aggregator.store.db import Store
from aggregator.store.models.chain import LstRateSample
from aggregator.store.models.meta import utcnow
from chains.types import RateSample


class SqlRateStore:
    def __init__(self, store: Store) -> None:
        self.store = store

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
