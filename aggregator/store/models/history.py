"""Risk history (aggregator/history, docs/operations.md "History").

`history_account`: one row per (level step, account, bucket start) holding the last
figures written in the bucket, the lowest HF and the worst tier written in it.
`history_system`: one row per (level step, bucket start), the book's totals as JSON
(the last sample, with per tier the highest account count of the bucket).
Times are unix seconds (integers): bucket arithmetic is exact on both backends.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Float, Index, Integer, SmallInteger
from sqlmodel import Field, SQLModel


class HistoryAccountRecord(SQLModel, table=True):
    __tablename__ = "history_account"
    __table_args__ = (Index("ix_history_account_step_t", "step_s", "t"),)

    step_s: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    account: str = Field(primary_key=True, max_length=42)
    t: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    samples: int = Field(sa_column=Column(Integer, nullable=False))
    hf: float = Field(sa_column=Column(Float(precision=53), nullable=False))
    hf_min: float = Field(sa_column=Column(Float(precision=53), nullable=False))
    bp: float = Field(sa_column=Column(Float(precision=53), nullable=False))
    tier: int = Field(sa_column=Column(SmallInteger, nullable=False))
    tier_worst: int = Field(sa_column=Column(SmallInteger, nullable=False))
    collateral_usd: float = Field(sa_column=Column(Float(precision=53), nullable=False))
    debt_usd: float = Field(sa_column=Column(Float(precision=53), nullable=False))
    req_standard: float | None = Field(default=None, sa_column=Column(Float(precision=53)))
    req_portfolio: float | None = Field(default=None, sa_column=Column(Float(precision=53)))
    req_var: float | None = Field(default=None, sa_column=Column(Float(precision=53)))


class HistorySystemRecord(SQLModel, table=True):
    __tablename__ = "history_system"

    step_s: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    t: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    samples: int = Field(sa_column=Column(Integer, nullable=False))
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
