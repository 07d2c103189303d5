"""Migration 0003 (compacted backfill): accounts already indexed are recorded as seen,
at the block of their first vault event (corrections do not count)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection

from aggregator.store import Store
from aggregator.store.migrate import alembic_config
from tests.conftest import unmigrated_store


def _upgrade_to(conn: Connection, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, revision)


@pytest.fixture
async def old_store(store_url: tuple[str, str | None]) -> AsyncIterator[Store]:
    """A store migrated only up to 0002 (before compacted backfill)."""
    s = await unmigrated_store(*store_url)
    async with s.engine.begin() as conn:
        await conn.run_sync(_upgrade_to, "0002_history")
    yield s
    await s.close()


async def test_upgrade_records_the_accounts_already_indexed(old_store: Store) -> None:
    rows = [
        ("a", 7, 0, "deposit", "0xA1"), ("a", 5, 1, "borrow", "0xA1"),
        ("a", 9, 0, "deposit", "0xB2"), ("b", 3, 0, "withdraw", "0xA1"),
        ("a", 2, 1 << 40, "reconcile", "0xC3"),
    ]  # fmt: skip
    async with old_store.engine.begin() as conn:
        for chain, block, idx, kind, account in rows:
            await conn.execute(
                text(
                    "INSERT INTO chain_event (chain, block_number, block_hash, tx_hash, "
                    "log_index, kind, account, token, amount, debt_amount, negative, pending) "
                    "VALUES (:c, :b, '0x', '0x', :i, :k, :a, '0xT', '1', '0', false, false)"
                ),
                {"c": chain, "b": block, "i": idx, "k": kind, "a": account},
            )
    await old_store.upgrade()
    async with old_store.engine.connect() as conn:
        seen = (
            await conn.execute(text("SELECT chain, account, first_block FROM chain_account"))
        ).all()
    assert sorted(tuple(r) for r in seen) == [("a", "0xA1", 5), ("a", "0xB2", 9), ("b", "0xA1", 3)]
