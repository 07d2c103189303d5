"""chain_checkpoint.rollbacks: how many rollbacks a chain has committed; daemon_meta
store_id: a random name for this store; an index of chain_position by (chain,
updated_block) (all for book snapshots)

Revision ID: 0004_checkpoint_rollbacks
Revises: 0003_compact_backfill
"""
from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0004_checkpoint_rollbacks"
down_revision = "0003_compact_backfill"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("chain_checkpoint") as batch:
        batch.add_column(
            sa.Column("rollbacks", sa.BigInteger(), nullable=False, server_default="0")
        )
    op.create_index("ix_chain_position_updated", "chain_position", ["chain", "updated_block"])
    meta = sa.table(
        "daemon_meta",
        sa.column("key", sqlmodel.sql.sqltypes.AutoString(length=64)),
        sa.column("value", sqlmodel.sql.sqltypes.AutoString(length=4096)),
        sa.column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime()),
    )
    # A store created again at the same URL is another store: a book snapshot of the
    # old one must not be replayed against it.
    op.bulk_insert(
        meta, [{"key": "store_id", "value": uuid.uuid4().hex, "updated_at": datetime.now(UTC)}]
    )


def downgrade() -> None:
    op.drop_index("ix_chain_position_updated", table_name="chain_position")
    op.execute("DELETE FROM daemon_meta WHERE key = 'store_id'")
    with op.batch_alter_table("chain_checkpoint") as batch:
        batch.drop_column("rollbacks")
