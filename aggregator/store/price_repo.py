"""PriceRepo: the store side of oracles.protocols.PriceHistory."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import col, select

from aggregator.store.db import Store
from aggregator.store.models.prices import PriceRecord, RateSnapshotRecord
from oracles.protocols import PricePoint, RateSnapshot
from oracles.types import Price, PriceStatus, SourceResult


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _ts(dt: datetime) -> float:
    # SQLite hands back naive datetimes; everything we write is UTC.
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


class PriceRepo:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def save_prices(self, prices: Sequence[Price]) -> None:
        rows = [
            PriceRecord(
                asset=p.asset,
                computed_at=_dt(p.computed_at),
                status=p.status.value,
                value=p.value,
                price_time=None if p.timestamp is None else _dt(p.timestamp),
                spread=p.spread,
                reason=p.reason,
                sources=[asdict(s) for s in p.sources],
            )
            for p in prices
        ]
        async with self.store.transaction() as s:
            s.add_all(rows)

    async def ok_prices_since(self, since: float) -> list[PricePoint]:
        q = (
            select(col(PriceRecord.asset), col(PriceRecord.value), col(PriceRecord.computed_at))
            .where(
                col(PriceRecord.status) == PriceStatus.OK.value,
                col(PriceRecord.computed_at) >= _dt(since),
            )
            .order_by(col(PriceRecord.computed_at), col(PriceRecord.id))
        )
        async with self.store.session() as s:
            rows = (await s.execute(q)).all()
        return [PricePoint(a, float(v), _ts(at)) for a, v, at in rows if v is not None]

    async def last_accepted(self, asset: str) -> PricePoint | None:
        q = (
            select(col(PriceRecord.value), col(PriceRecord.computed_at))
            .where(
                col(PriceRecord.asset) == asset,
                col(PriceRecord.status) == PriceStatus.OK.value,
            )
            .order_by(col(PriceRecord.computed_at).desc(), col(PriceRecord.id).desc())
            .limit(1)
        )
        async with self.store.session() as s:
            row = (await s.execute(q)).first()
        if row is None or row[0] is None:
            return None
        return PricePoint(asset, float(row[0]), _ts(row[1]))

    async def history(self, asset: str, limit: int = 100) -> list[Price]:
        """Most recent rounds of one asset, newest first (for the API / audits)."""
        q = (
            select(PriceRecord)
            .where(col(PriceRecord.asset) == asset)
            .order_by(col(PriceRecord.computed_at).desc(), col(PriceRecord.id).desc())
            .limit(limit)
        )
        async with self.store.session() as s:
            recs = (await s.execute(q)).scalars().all()
        return [
            Price(
                asset=r.asset,
                status=PriceStatus(r.status),
                value=r.value,
                timestamp=None if r.price_time is None else _ts(r.price_time),
                computed_at=_ts(r.computed_at),
                spread=r.spread,
                sources=tuple(SourceResult(**d) for d in r.sources),
                reason=r.reason,
            )
            for r in recs
        ]

    async def prune(self, before: float) -> int:
        """Delete rounds computed before `before` (unix seconds); returns rows removed.
        Keep at least [oracle].history_days so restarts can warm up volatility."""
        stmt = delete(PriceRecord).where(col(PriceRecord.computed_at) < _dt(before))
        async with self.store.transaction() as s:
            result = await s.execute(stmt)
        return int(getattr(result, "rowcount", 0) or 0)

    async def load_rate_snapshot(self, asset: str) -> RateSnapshot | None:
        async with self.store.session() as s:
            rec = await s.get(RateSnapshotRecord, asset)
        if rec is None:
            return None
        return RateSnapshot(asset, rec.rate, _ts(rec.snapshot_time))

    async def save_rate_snapshot(self, snapshot: RateSnapshot) -> None:
        """First anchor wins: an existing snapshot is never overwritten here
        (moving the anchor is a governance action, done in the config)."""
        values = {
            "asset": snapshot.asset,
            "rate": snapshot.rate,
            "snapshot_time": _dt(snapshot.timestamp),
            "created_at": datetime.now(UTC),
        }
        ins = pg_insert if self.store.dialect == "postgresql" else sqlite_insert
        stmt = ins(RateSnapshotRecord).values(**values).on_conflict_do_nothing()
        async with self.store.transaction() as s:
            await s.execute(stmt)
