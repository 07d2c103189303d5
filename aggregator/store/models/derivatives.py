"""Derivative position events from the Markets contract (chains/positions.py).

Each row is one PerpPositionChanged / OptionPositionChanged / FundingUpdated log with
the full new state, so positions are the latest row per (chain, account, kind, key)
and a rollback is a delete above the common ancestor. Amounts are exact signed
18-decimal fixed-point ints (BigInt). See docs/portfolio-margin.md.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from aggregator.store.db import BigInt


class DerivativeEventRow(SQLModel, table=True):
    __tablename__ = "derivative_event"
    __table_args__ = (UniqueConstraint("chain", "block_number", "log_index"),)

    id: int | None = Field(default=None, primary_key=True)
    chain: str = Field(max_length=32, index=True)
    block_number: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    block_hash: str = Field(max_length=66)
    tx_hash: str = Field(max_length=66)
    log_index: int = Field(sa_column=Column(BigInteger, nullable=False))
    kind: str = Field(max_length=16)
    account: str = Field(max_length=42, index=True)
    key: str = Field(max_length=66)
    size: int = Field(sa_column=Column(BigInt, nullable=False))
    price: int = Field(sa_column=Column(BigInt, nullable=False))
    funding: int = Field(sa_column=Column(BigInt, nullable=False))
    underlying: str | None = Field(default=None, max_length=66)
    expiry: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    is_call: bool = False
