"""Async engine and session layer shared by every repository in the store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiosqlite
from sqlalchemy import NUMERIC, String, event
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator, TypeEngine
from sqlalchemy.util import await_


class BigInt(TypeDecorator[int]):
    """An exact unsigned 256-bit-capable integer.

    PostgreSQL stores NUMERIC(78,0). SQLite would turn integers beyond 2**63 into
    REAL (silently losing wei), so there it is a decimal string and sums happen
    in Python.
    """

    impl = String(80)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(NUMERIC(78, 0))
        return dialect.type_descriptor(String(80))

    def process_bind_param(self, value: int | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"BigInt columns take int, got {type(value).__name__}")
        if dialect.name == "postgresql":
            return Decimal(value)
        return str(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        return int(value)


# WAL lets the API read while the indexer writes; NORMAL sync is durable across process
# crashes (kill -9), which is the failure we guard against.
_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=10000",
)


def _set_pragmas(conn: Any) -> None:
    cur = conn.cursor()
    for pragma in _PRAGMAS:
        cur.execute(pragma)
    cur.close()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    driver = getattr(dbapi_conn, "_connection", None)
    if isinstance(driver, aiosqlite.Connection):
        # Every connection (one per session: NullPool) sets these; through the adapter
        # that is ~8 hand-offs to aiosqlite's thread, here one: the same statements
        # run in that thread on its sqlite3 connection (as SQLAlchemy's own adapter
        # does for isolation_level).
        await_(driver._execute(_set_pragmas, driver._conn))
        return
    _set_pragmas(dbapi_conn)


class Store:
    """Owns the engine; hands out sessions and transactions."""

    def __init__(self, url: str, *, echo: bool = False, pg_schema: str | None = None) -> None:
        self.url = url
        self.pg_schema = pg_schema
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        kwargs: dict[str, Any] = {"echo": echo}
        if self.dialect == "sqlite":
            db = parsed.database
            if db and db != ":memory:":
                Path(db).parent.mkdir(parents=True, exist_ok=True)
            # One writer at a time is SQLite's model anyway; NullPool avoids
            # connections outliving the event loop that opened them.
            kwargs["poolclass"] = NullPool
        else:
            kwargs["pool_pre_ping"] = True
            kwargs["pool_size"] = 5
            if pg_schema:
                # Tests run side by side in one database, each in its own schema.
                kwargs["connect_args"] = {"server_settings": {"search_path": pg_schema}}
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # SQLite allows a single writer; serialising our own writers avoids
        # "database is locked" under concurrent chain indexers.
        self.write_lock = asyncio.Lock()

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as s:
            yield s

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One atomic unit of work: committed on success, rolled back on any error."""
        async with self.write_lock, self._sessions() as s, s.begin():
            yield s

    async def upgrade(self) -> None:
        """Apply Alembic migrations up to head (what `aggregator db upgrade` runs)."""
        from aggregator.store.migrate import upgrade_async

        await upgrade_async(self.engine)

    async def close(self) -> None:
        await self.engine.dispose()
