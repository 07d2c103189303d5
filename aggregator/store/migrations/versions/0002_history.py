"""risk history tables (aggregator/store/models/history.py)

Revision ID: 0002_history
Revises: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0002_history"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "history_account",
        sa.Column("step_s", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("account", sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
        sa.Column("t", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("hf", sa.Float(precision=53), nullable=False),
        sa.Column("hf_min", sa.Float(precision=53), nullable=False),
        sa.Column("bp", sa.Float(precision=53), nullable=False),
        sa.Column("tier", sa.SmallInteger(), nullable=False),
        sa.Column("tier_worst", sa.SmallInteger(), nullable=False),
        sa.Column("collateral_usd", sa.Float(precision=53), nullable=False),
        sa.Column("debt_usd", sa.Float(precision=53), nullable=False),
        sa.Column("req_standard", sa.Float(precision=53), nullable=True),
        sa.Column("req_portfolio", sa.Float(precision=53), nullable=True),
        sa.Column("req_var", sa.Float(precision=53), nullable=True),
        sa.PrimaryKeyConstraint("step_s", "account", "t"),
    )
    with op.batch_alter_table("history_account", schema=None) as batch_op:
        batch_op.create_index("ix_history_account_step_t", ["step_s", "t"], unique=False)
    op.create_table(
        "history_system",
        sa.Column("step_s", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("t", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("step_s", "t"),
    )


def downgrade() -> None:
    op.drop_table("history_system")
    with op.batch_alter_table("history_account", schema=None) as batch_op:
        batch_op.drop_index("ix_history_account_step_t")
    op.drop_table("history_account")
