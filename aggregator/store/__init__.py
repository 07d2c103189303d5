"""Persistence: sqlmodel tables over SQLite (default, WAL) or PostgreSQL, Alembic migrations."""

from aggregator.store.db import BigInt, Store

__all__ = ["BigInt", "Store"]
