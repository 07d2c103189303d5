"""Tables of the HealthRegistry pusher (chains/pusher, aggregator/push).

push_tx: every update transaction, written before it is broadcast (docs/pusher.md,
"Crash safety"). push_onchain: the last reading of each registry slot per
(chain, account), served by the API ("what is on chain now").
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Column, Index, Text
from sqlmodel import Field, SQLModel

from aggregator.store.db import BigInt
from aggregator.store.models.meta import utcnow


class PushTx(SQLModel, table=True):
    __tablename__ = "push_tx"
    __table_args__ = (Index("ix_push_tx_open", "chain", "sender", "status"),)

    id: int | None = Field(default=None, primary_key=True)
    chain: str = Field(max_length=32)
    sender: str = Field(max_length=42)
    nonce: int = Field(sa_column=Column(BigInteger, nullable=False))
    to: str = Field(max_length=42)
    status: str = Field(max_length=16)
    payload: str = Field(sa_column=Column(Text, nullable=False))  # 0x hex of update(bytes)
    payload_hash: str = Field(max_length=66)
    gas_limit: int = Field(sa_column=Column(BigInteger, nullable=False))
    max_fee: int = Field(sa_column=Column(BigInt, nullable=False))
    priority_fee: int = Field(sa_column=Column(BigInt, nullable=False))
    raw_tx: str = Field(sa_column=Column(Text, nullable=False))  # current signed attempt
    tx_hash: str = Field(max_length=66)
    hashes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: float
    last_sent_at: float | None = None
    mined_hash: str | None = Field(default=None, max_length=66)
    mined_block: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    mined_block_hash: str | None = Field(default=None, max_length=66)
    gas_used: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    replacements: int = 0
    reorgs: int = 0
    error: str | None = Field(default=None, max_length=2048)
    updated_at: datetime = Field(default_factory=utcnow)


class PushOnchain(SQLModel, table=True):
    __tablename__ = "push_onchain"

    chain: str = Field(max_length=32, primary_key=True)
    account: str = Field(max_length=42, primary_key=True)
    # The raw uint256 slot (0 = no entry); decoded fields are derived on read.
    slot: int = Field(sa_column=Column(BigInt, nullable=False))
    block: int = Field(sa_column=Column(BigInteger, nullable=False))
    read_at: float
