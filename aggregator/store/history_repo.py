"""HistoryRepo: the store side of the risk history (docs/operations.md "History").

Invariants:
- A write goes to every level's bucket in one transaction per batch: the finest
  bucket gets the point, each coarser one merges it (last values, lowest HF, worst
  tier, samples + 1). Re-running a write of the same point only adds to `samples`.
- Pruning never deletes an account's newest point of a level, so a step-function read
  always finds the value in force at the start of its window.
- The SQL is the same on SQLite and PostgreSQL (ON CONFLICT upserts, CASE for min/max).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, case, delete, func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from aggregator.store.db import Store
from aggregator.store.models.history import HistoryAccountRecord, HistorySystemRecord

_ACC = HistoryAccountRecord.__table__  # type: ignore[attr-defined]
_SYS = HistorySystemRecord.__table__  # type: ignore[attr-defined]
# Columns a coarser bucket takes from the newest write (the others merge).
_LAST_COLUMNS = (
    "hf", "bp", "tier", "collateral_usd", "debt_usd", "req_standard", "req_portfolio", "req_var",
)  # fmt: skip


@dataclass(frozen=True)
class AccountPoint:
    """One account's figures at one write (tier as its TIERS code)."""

    account: str
    hf: float
    bp: float
    tier: int
    collateral_usd: float
    debt_usd: float
    req_standard: float | None = None
    req_portfolio: float | None = None
    req_var: float | None = None


@dataclass(frozen=True)
class StoredAccountPoint:
    t: int
    samples: int
    hf: float
    hf_min: float
    bp: float
    tier: int
    tier_worst: int
    collateral_usd: float
    debt_usd: float
    req_standard: float | None
    req_portfolio: float | None
    req_var: float | None


def bucket(ts: float, step_s: int) -> int:
    """Start (unix seconds) of the `step_s` bucket holding `ts`."""
    t = int(ts)
    return t - t % step_s


def merge_system(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """A coarse system bucket after one more sample: the new sample's values, with per
    tier the highest account count seen in the bucket (`accounts_max`)."""
    out: dict[str, Any] = {k: v for k, v in new.items()}
    tiers: dict[str, dict[str, Any]] = {n: dict(v) for n, v in new.get("tiers", {}).items()}
    before: Mapping[str, Any] = (old or {}).get("tiers", {})
    for name, row in tiers.items():
        seen = int(before.get(name, {}).get("accounts_max") or 0)
        row["accounts_max"] = max(seen, int(row.get("accounts_max", row["accounts"])))
    out["tiers"] = tiers
    return out


class HistoryRepo:
    def __init__(self, store: Store) -> None:
        self.store = store

    def _insert(self, table: Any) -> Any:
        return (pg_insert if self.store.dialect == "postgresql" else sqlite_insert)(table)

    async def write(
        self,
        ts: float,
        steps: Sequence[int],
        system: Mapping[str, Any] | None,
        points: Sequence[AccountPoint],
        batch: int = 2000,
    ) -> None:
        """Write one run's system sample and account points into every level's bucket."""
        if system is not None:
            await self._write_system(ts, steps, system)
        for i in range(0, len(points), batch):
            await self._write_accounts(ts, steps, points[i : i + batch])

    async def _write_system(
        self, ts: float, steps: Sequence[int], system: Mapping[str, Any]
    ) -> None:
        async with self.store.transaction() as s:
            for step in steps:
                t = bucket(ts, step)
                old = (
                    await s.execute(
                        select(_SYS.c.samples, _SYS.c.data).where(
                            _SYS.c.step_s == step, _SYS.c.t == t
                        )
                    )
                ).first()
                data = merge_system(None if old is None else old[1], system)
                samples = 1 if old is None else int(old[0]) + 1
                stmt = self._insert(_SYS).values(step_s=step, t=t, samples=samples, data=data)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["step_s", "t"],
                    set_={"samples": stmt.excluded.samples, "data": stmt.excluded.data},
                )
                await s.execute(stmt)

    def _account_upsert(self) -> Any:
        """One INSERT .. ON CONFLICT merge statement, executed with many parameter sets
        (compiled once and cached: a multi-row VALUES literal compiles per row)."""
        stmt = self._insert(_ACC)
        ex, cur = stmt.excluded, _ACC.c
        merged: dict[str, Any] = {c: getattr(ex, c) for c in _LAST_COLUMNS}
        merged["samples"] = cur.samples + 1
        merged["hf_min"] = case((ex.hf_min < cur.hf_min, ex.hf_min), else_=cur.hf_min)
        merged["tier_worst"] = case(
            (ex.tier_worst > cur.tier_worst, ex.tier_worst), else_=cur.tier_worst
        )
        return stmt.on_conflict_do_update(index_elements=["step_s", "account", "t"], set_=merged)

    async def _write_accounts(
        self, ts: float, steps: Sequence[int], points: Sequence[AccountPoint]
    ) -> None:
        if not points:
            return
        base = [dict(vars(p)) for p in points]  # shallow: asdict deep-copies
        rows = [
            {**r, "step_s": step, "t": bucket(ts, step), "samples": 1, "hf_min": r["hf"],
             "tier_worst": r["tier"]}
            for step in steps
            for r in base
        ]  # fmt: skip
        async with self.store.transaction() as s:
            await s.execute(self._account_upsert(), rows)

    # -- reads -------------------------------------------------------------------
    async def system_points(self, step: int, start: int, end: int) -> list[dict[str, Any]]:
        q = (
            select(_SYS.c.t, _SYS.c.samples, _SYS.c.data)
            .where(_SYS.c.step_s == step, _SYS.c.t >= bucket(start, step), _SYS.c.t <= end)
            .order_by(_SYS.c.t)
        )
        async with self.store.session() as s:
            rows = (await s.execute(q)).all()
        return [{"t": int(t), "samples": int(n), **dict(d)} for t, n, d in rows]

    async def account_points(
        self, step: int, account: str, start: int, end: int
    ) -> list[StoredAccountPoint]:
        """Points of `account` in [start, end], preceded by the last one before `start`
        (the value in force at `start`) when there is one."""
        cols = [getattr(_ACC.c, f) for f in StoredAccountPoint.__dataclass_fields__]
        mine = and_(_ACC.c.step_s == step, _ACC.c.account == account.lower())
        before = select(*cols).where(mine, _ACC.c.t < start).order_by(_ACC.c.t.desc()).limit(1)
        inside = select(*cols).where(mine, _ACC.c.t >= start, _ACC.c.t <= end).order_by(_ACC.c.t)
        async with self.store.session() as s:
            first = (await s.execute(before)).first()
            rows = (await s.execute(inside)).all()
        out = [] if first is None else [StoredAccountPoint(*first)]
        return out + [StoredAccountPoint(*r) for r in rows]

    async def has_account(self, account: str) -> bool:
        q = select(_ACC.c.t).where(_ACC.c.account == account.lower()).limit(1)
        async with self.store.session() as s:
            return (await s.execute(q)).first() is not None

    async def last_points(self, step: int) -> dict[str, tuple[float, float, int]]:
        """Each account's newest (hf, bp, tier) at level `step` (what a restarted
        recorder compares with)."""
        newest = (
            select(_ACC.c.account, func.max(_ACC.c.t).label("mt"))
            .where(_ACC.c.step_s == step)
            .group_by(_ACC.c.account)
            .subquery()
        )
        q = (
            select(_ACC.c.account, _ACC.c.hf, _ACC.c.bp, _ACC.c.tier)
            .join(newest, and_(_ACC.c.account == newest.c.account, _ACC.c.t == newest.c.mt))
            .where(_ACC.c.step_s == step)
        )
        async with self.store.session() as s:
            rows = (await s.execute(q)).all()
        return {a: (float(hf), float(bp), int(tier)) for a, hf, bp, tier in rows}

    # -- pruning -----------------------------------------------------------------
    async def prune(self, step: int, before: int) -> int:
        """Delete level `step` buckets starting before `before`, except each account's
        newest point; returns rows removed."""
        removed = 0
        async with self.store.transaction() as s:
            res = await s.execute(delete(_SYS).where(_SYS.c.step_s == step, _SYS.c.t < before))
            removed += int(getattr(res, "rowcount", 0) or 0)
            res = await s.execute(
                text(
                    "DELETE FROM history_account WHERE step_s = :s AND t < :b AND t < "
                    "(SELECT max(h2.t) FROM history_account h2 "
                    "WHERE h2.step_s = :s AND h2.account = history_account.account)"
                ),
                {"s": step, "b": before},
            )
            removed += int(getattr(res, "rowcount", 0) or 0)
        return removed
