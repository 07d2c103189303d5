"""compacted backfill: audit records of compacted ranges and the accounts seen per chain

Revision ID: 0003_compact_backfill
Revises: 0002_history
"""
from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0003_compact_backfill"
down_revision = "0002_history"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "chain_event_range",
        sa.Column("chain", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("from_block", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("to_block", sa.BigInteger(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("rows_kept", sa.BigInteger(), nullable=False),
        sa.Column("digest", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("chain", "from_block"),
    )
    op.create_table(
        "chain_account",
        sa.Column("chain", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("account", sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
        sa.Column("first_block", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("chain", "account"),
    )
    # Every account already indexed has its events stored as rows: seen from its first.
    op.execute(
        "INSERT INTO chain_account (chain, account, first_block) "
        "SELECT chain, account, MIN(block_number) FROM chain_event "
        "WHERE kind <> 'reconcile' GROUP BY chain, account"
    )


def downgrade() -> None:
    op.drop_table("chain_account")
    op.drop_table("chain_event_range")
