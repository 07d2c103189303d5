from __future__ import annotations

import pytest
from sqlalchemy import Column, MetaData, Table, select

from aggregator.store import BigInt, Store
from aggregator.store.migrate import current_revision, head_revision

AMOUNTS = [0, 1, 10**6, 2**63 - 1, 2**63, 2**64 + 7, 2**255, 2**256 - 1]


async def test_migrations_reach_head(store: Store) -> None:
    assert await current_revision(store.engine) == head_revision()


async def test_upgrade_twice_is_a_noop(store: Store) -> None:
    await store.upgrade()
    assert await current_revision(store.engine) == head_revision()


async def test_bigint_round_trips_exactly(store: Store) -> None:
    md = MetaData()
    t = Table("bigint_probe", md, Column("v", BigInt()))
    async with store.engine.begin() as conn:
        await conn.run_sync(md.create_all)
        await conn.execute(t.insert(), [{"v": a} for a in AMOUNTS])
        got = (await conn.execute(select(t.c.v))).scalars().all()
    assert sorted(got) == sorted(AMOUNTS)
    assert all(type(v) is int for v in got)


@pytest.mark.parametrize("bad", [1.5, "12", True])
async def test_bigint_refuses_non_integers(store: Store, bad: object) -> None:
    md = MetaData()
    t = Table("bigint_probe2", md, Column("v", BigInt()))
    async with store.engine.begin() as conn:
        await conn.run_sync(md.create_all)
    with pytest.raises(Exception, match="BigInt columns take int"):
        async with store.engine.begin() as conn:
            await conn.execute(t.insert(), [{"v": bad}])


async def test_transaction_rolls_back_on_error(store: Store) -> None:
    from aggregator.store.models.meta import DaemonMeta

    with pytest.raises(RuntimeError):
        async with store.transaction() as s:
            s.add(DaemonMeta(key="k", value="v"))
            await s.flush()
            raise RuntimeError("crash between two writes")
    async with store.session() as s:
        # Only what the migrations wrote (0004: the store's random name).
        keys = [m.key for m in (await s.execute(select(DaemonMeta))).scalars().all()]
        assert keys == ["store_id"]


async def test_every_sqlite_connection_gets_the_pragmas(tmp_path: object) -> None:
    """Set in one hand-off to aiosqlite's thread per connection (db._sqlite_pragmas):
    each new connection (NullPool: one per session) must have all of them."""
    from sqlalchemy import text

    store = Store(f"sqlite+aiosqlite:///{tmp_path}/p.db")
    try:
        for _ in range(2):
            async with store.session() as s:
                got = [
                    (await s.execute(text(f"PRAGMA {name}"))).scalar()
                    for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
                ]
            # synchronous NORMAL is 1; foreign_keys ON is 1.
            assert got == ["wal", 1, 1, 10000]
    finally:
        await store.close()
