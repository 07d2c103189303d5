"""Tables written by the chain indexer (chains/indexer.py) and the LST rate reader.

Raw amounts are BigInt (exact up to 2**256-1 on both backends). Head amounts
are what the chain says at the indexed block; pending amounts are risk-lowering
deltas (deposits, repayments) not yet `confirmations` deep. See docs/chains.md.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, Index, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from aggregator.store.db import BigInt
from aggregator.store.models.meta import utcnow


class ChainEvent(SQLModel, table=True):
    """One decoded vault log (or a reconciliation correction, kind 'reconcile')."""

    __tablename__ = "chain_event"
    # Every event row is written once per log, so each index is paid on the indexing
    # hot path: only what a query uses. The unique key serves every (chain, block
    # range) lookup (dedupe, rollback); the partial index finds the few deposits and
    # repayments still waiting for confirmations.
    __table_args__ = (
        UniqueConstraint("chain", "block_number", "log_index"),
        Index(
            "ix_chain_event_pending",
            "chain",
            "block_number",
            sqlite_where=text("pending IS 1"),
            postgresql_where=text("pending IS TRUE"),
        ),
        # The few rows of the cross-chain seize (claims and settlements), paired by id.
        Index(
            "ix_chain_event_ref",
            "ref",
            sqlite_where=text("ref IS NOT NULL"),
            postgresql_where=text("ref IS NOT NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    chain: str = Field(max_length=32)
    block_number: int = Field(sa_column=Column(BigInteger, nullable=False))
    block_hash: str = Field(max_length=66)
    tx_hash: str = Field(max_length=66)
    log_index: int = Field(sa_column=Column(BigInteger, nullable=False))
    kind: str = Field(max_length=16)
    account: str = Field(max_length=42)
    token: str = Field(max_length=42)
    amount: int = Field(sa_column=Column(BigInt, nullable=False))
    counterparty: str | None = Field(default=None, max_length=42)
    debt_token: str | None = Field(default=None, max_length=42)
    debt_amount: int = Field(default=0, sa_column=Column(BigInt, nullable=False))
    adjust_kind: str | None = Field(default=None, max_length=16)
    negative: bool = False
    # True while a deposit/repayment still counts in the head view only.
    pending: bool = False
    # The cross-chain seize's claim id on both halves (chains/types.py VaultEvent.ref).
    ref: str | None = Field(default=None, max_length=66)


class ChainPosition(SQLModel, table=True):
    """Per (chain, account, token, kind) balance in both finality views."""

    __tablename__ = "chain_position"
    # The positions written since a block: what a start from a book snapshot replays
    # and what the cluster follower polls (without it, a scan of the whole table).
    __table_args__ = (Index("ix_chain_position_updated", "chain", "updated_block"),)

    chain: str = Field(max_length=32, primary_key=True)
    account: str = Field(max_length=42, primary_key=True)
    token: str = Field(max_length=42, primary_key=True)
    kind: str = Field(max_length=16, primary_key=True)
    head_amount: int = Field(sa_column=Column(BigInt, nullable=False))
    pending_amount: int = Field(sa_column=Column(BigInt, nullable=False))
    # The confirmed view, kept materialised so readers need no arithmetic:
    # collateral max(0, head - pending), debt head + pending.
    confirmed_amount: int = Field(sa_column=Column(BigInt, nullable=False))
    updated_block: int = Field(sa_column=Column(BigInteger, nullable=False))


class ChainBlock(SQLModel, table=True):
    """Hashes of the unfinalized window (and the checkpoint block)."""

    __tablename__ = "chain_block"

    chain: str = Field(max_length=32, primary_key=True)
    number: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    hash: str = Field(max_length=66)
    parent_hash: str = Field(max_length=66)


class ChainEventRange(SQLModel, table=True):
    """The audit record of a compacted backfill range (`compact_backfill`): its vault
    events changed positions but only some are stored as `chain_event` rows (each
    account's first event on the chain, and liquidations). `digest` is
    chains.events.range_digest of every vault event of [from_block, to_block] in chain
    order, so an auditor re-reads the range's logs and compares count and digest."""

    __tablename__ = "chain_event_range"

    chain: str = Field(max_length=32, primary_key=True)
    from_block: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    to_block: int = Field(sa_column=Column(BigInteger, nullable=False))
    events: int = Field(sa_column=Column(BigInteger, nullable=False))
    rows_kept: int = Field(sa_column=Column(BigInteger, nullable=False))
    digest: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class ChainAccount(SQLModel, table=True):
    """Accounts seen in a chain's vault events, with the block of their first event
    (which is always kept as a `chain_event` row, compacted range or not)."""

    __tablename__ = "chain_account"

    chain: str = Field(max_length=32, primary_key=True)
    account: str = Field(max_length=42, primary_key=True)
    first_block: int = Field(sa_column=Column(BigInteger, nullable=False))


class ChainCheckpoint(SQLModel, table=True):
    __tablename__ = "chain_checkpoint"

    chain: str = Field(max_length=32, primary_key=True)
    indexed_block: int = Field(sa_column=Column(BigInteger, nullable=False))
    indexed_hash: str | None = Field(default=None, max_length=66)
    log_range: int = Field(sa_column=Column(BigInteger, nullable=False))
    head_block: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    confirmed_block: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    last_reconcile_block: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    fatal_reason: str | None = Field(default=None, max_length=2048)
    # Rollbacks committed on this chain, ever: a book snapshot taken before one cannot
    # be brought forward by `updated_block` alone (aggregator/book_snapshot.py).
    rollbacks: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default="0")
    )
    updated_at: datetime = Field(default_factory=utcnow)


class LstRateSample(SQLModel, table=True):
    """An LST exchange-rate observation: rate / scale underlying per whole token."""

    __tablename__ = "lst_rate_sample"
    __table_args__ = (UniqueConstraint("asset", "chain", "block"),)

    id: int | None = Field(default=None, primary_key=True)
    asset: str = Field(max_length=42, index=True)
    chain: str = Field(max_length=32)
    block: int = Field(sa_column=Column(BigInteger, nullable=False))
    timestamp: int = Field(sa_column=Column(BigInteger, nullable=False))
    rate: int = Field(sa_column=Column(BigInt, nullable=False))
    scale: int = Field(sa_column=Column(BigInt, nullable=False))
    observed_at: datetime = Field(default_factory=utcnow)
