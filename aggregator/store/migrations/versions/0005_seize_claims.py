"""chain_event.ref: the cross-chain seize's claim id on its claim and settlement rows
(docs/contracts.md "Cross-chain seize"), with a partial index over those few rows

Revision ID: 0005_seize_claims
Revises: 0004_checkpoint_rollbacks
"""
from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0005_seize_claims"
down_revision = "0004_checkpoint_rollbacks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("chain_event") as batch:
        batch.add_column(
            sa.Column("ref", sqlmodel.sql.sqltypes.AutoString(length=66), nullable=True)
        )
        batch.create_index(
            "ix_chain_event_ref",
            ["ref"],
            unique=False,
            sqlite_where=sa.text("ref IS NOT NULL"),
            postgresql_where=sa.text("ref IS NOT NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("chain_event") as batch:
        batch.drop_index(
            "ix_chain_event_ref",
            sqlite_where=sa.text("ref IS NOT NULL"),
            postgresql_where=sa.text("ref IS NOT NULL"),
        )
        batch.drop_column("ref")
