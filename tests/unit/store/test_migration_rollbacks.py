"""Migration 0004 (book snapshots): existing checkpoints start with no rollback counted,
and the store gets a random `store_id` (two stores, two names)."""

from __future__ import annotations

from sqlalchemy import text

from aggregator.store.chain_repo import SqlChainStore
from tests.conftest import unmigrated_store
from tests.unit.store.test_migration_compact import _upgrade_to


async def test_upgrade_keeps_checkpoints_and_names_the_store(
    store_url: tuple[str, str | None],
) -> None:
    s = await unmigrated_store(*store_url)
    try:
        async with s.engine.begin() as conn:
            await conn.run_sync(_upgrade_to, "0003_compact_backfill")
            await conn.execute(
                text(
                    "INSERT INTO chain_checkpoint (chain, indexed_block, indexed_hash, log_range, "
                    "head_block, confirmed_block, last_reconcile_block, updated_at) "
                    "VALUES ('a', 12, '0xab', 5, 14, 10, 9, CURRENT_TIMESTAMP)"
                )
            )
        await s.upgrade()
        repo = SqlChainStore(s)
        mark = await repo.book_mark("a")
        assert mark is not None
        assert (mark.indexed_block, mark.indexed_hash, mark.last_reconcile_block) == (12, "0xab", 9)
        assert mark.rollbacks == 0
        first = await repo.store_id()
        assert first is not None and len(first) == 32
        assert await repo.book_mark("b") is None
    finally:
        await s.close()
