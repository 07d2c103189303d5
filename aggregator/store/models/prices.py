"""Price history written by the oracle service (oracles/service.py), one row per
asset per refresh round, and the anchors of the LST exchange-rate growth caps.
See docs/oracles.md."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Float, Index, Text
from sqlmodel import Field, SQLModel

from aggregator.store.models.meta import utcnow


class PriceRecord(SQLModel, table=True):
    __tablename__ = "price_history"
    __table_args__ = (Index("ix_price_history_asset_computed", "asset", "computed_at"),)

    id: int | None = Field(default=None, primary_key=True)
    asset: str = Field(max_length=16)
    computed_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    status: str = Field(max_length=16, index=True)
    # Prices are USD floats (the risk engine's unit), not raw token amounts.
    value: float | None = Field(default=None, sa_column=Column(Float(precision=53)))
    price_time: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    spread: float | None = Field(default=None, sa_column=Column(Float(precision=53)))
    reason: str = Field(default="", sa_column=Column(Text, nullable=False))
    # Every source's value or failure: [{source, kind, value, timestamp, failure, reason, used}]
    sources: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))


class RateSnapshotRecord(SQLModel, table=True):
    __tablename__ = "rate_snapshot"

    asset: str = Field(max_length=16, primary_key=True)
    rate: float = Field(sa_column=Column(Float(precision=53), nullable=False))
    snapshot_time: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
