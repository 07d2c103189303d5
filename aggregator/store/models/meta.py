from __future__ import annotations

from datetime import UTC, datetime

from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class DaemonMeta(SQLModel, table=True):
    """Small key/value facts about this store (e.g. the config fingerprint it was built with)."""

    __tablename__ = "daemon_meta"
    key: str = Field(primary_key=True, max_length=64)
    value: str = Field(max_length=4096)
    updated_at: datetime = Field(default_factory=utcnow)
