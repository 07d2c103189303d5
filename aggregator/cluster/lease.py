"""Leases with fencing tokens on PostgreSQL (the `cluster_lease` table).

A lease row names one piece of work that must run on exactly one instance
("index:alpha", "push:alpha"). Every statement uses the database's clock, so instances
with skewed clocks agree on who holds what:

- acquire: one UPDATE that succeeds only when the lease has expired (or this instance
  is its holder) and bumps `token`; a lease never seen before is inserted with token 1;
- renew: an UPDATE that succeeds only while holder and token are still ours;
- release (clean shutdown): expire our own tenure at once, so a peer takes over
  without waiting for the TTL.

The token is the fence: every write the lease protects starts its transaction with
`Fence.check`, an UPDATE of the lease row `WHERE holder = me AND token = mine`. No row
means another instance took over: `FencedOut` is raised and the transaction rolls back.
The UPDATE also row-locks the lease until the write commits, so a takeover waits for
an in-flight protected write and the new holder reads the store after it. A holder
paused inside such a transaction (SIGSTOP, a VM freeze) would hold that lock, and so
the lease, for as long as it stays paused: `end_idle_transactions_after` makes the
server end any session idle inside a transaction for longer than a lease TTL.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

log = logging.getLogger(__name__)


class FencedOut(RuntimeError):
    """A protected write by an instance whose lease tenure has ended."""

    def __init__(self, name: str, holder: str, token: int) -> None:
        super().__init__(
            f"lease {name}: token {token} of {holder} is no longer current "
            "(another instance took over); write refused"
        )
        self.name, self.holder, self.token = name, holder, token


_TTL = "CAST(:ttl AS double precision) * interval '1 second'"

_ACQUIRE = text(
    f"""
    UPDATE cluster_lease SET
        previous_holder = holder, holder = :holder, token = token + 1,
        expires_at = clock_timestamp() + {_TTL},
        acquired_at = clock_timestamp(), renewed_at = clock_timestamp(),
        first_write_at = NULL, last_write_at = NULL, writes = 0
    WHERE name = :name AND (expires_at < clock_timestamp() OR holder = :holder)
    RETURNING token, previous_holder
    """
)
_INSERT = text(
    f"""
    INSERT INTO cluster_lease
        (name, holder, token, expires_at, acquired_at, renewed_at, writes)
    VALUES (:name, :holder, 1, clock_timestamp() + {_TTL},
            clock_timestamp(), clock_timestamp(), 0)
    ON CONFLICT (name) DO NOTHING
    RETURNING token
    """
)
_RENEW = text(
    f"""
    UPDATE cluster_lease SET expires_at = clock_timestamp() + {_TTL},
        renewed_at = clock_timestamp()
    WHERE name = :name AND holder = :holder AND token = :token
    RETURNING token
    """
)
_RELEASE = text(
    """
    UPDATE cluster_lease SET expires_at = clock_timestamp() - interval '1 millisecond'
    WHERE name = :name AND holder = :holder AND token = :token
    """
)
_FENCE = text(
    """
    UPDATE cluster_lease SET writes = writes + 1, last_write_at = clock_timestamp(),
        first_write_at = COALESCE(first_write_at, clock_timestamp())
    WHERE name = :name AND holder = :holder AND token = :token
    RETURNING token
    """
)
_ALL = text(
    """
    SELECT name, holder, token, expires_at, acquired_at, previous_holder,
           first_write_at, writes, expires_at > clock_timestamp() AS live,
           GREATEST(0, EXTRACT(EPOCH FROM clock_timestamp() - expires_at)) AS expired_for_s
    FROM cluster_lease ORDER BY name
    """
)


@dataclass(frozen=True)
class Acquired:
    name: str
    token: int
    previous_holder: str | None  # None: first holder ever


@dataclass(frozen=True)
class LeaseRow:
    """A lease as stored (what /v1/chains shows and followers watch)."""

    name: str
    holder: str
    token: int
    expires_at: datetime
    acquired_at: datetime
    previous_holder: str | None
    first_write_at: datetime | None
    writes: int
    live: bool
    # Seconds since the lease expired (database clock); 0 while live.
    expired_for_s: float = 0.0


class LeaseStore:
    """The SQL of leases. Uses the engine directly, not Store.transaction(): renewals
    must not queue behind this process's own writes on its write lock."""

    def __init__(self, engine: AsyncEngine, holder: str, ttl_s: float) -> None:
        self.engine = engine
        self.holder = holder
        self.ttl_s = ttl_s

    async def acquire(self, name: str) -> Acquired | None:
        params = {"name": name, "holder": self.holder, "ttl": self.ttl_s}
        async with self.engine.begin() as conn:
            row = (await conn.execute(_ACQUIRE, params)).first()
            if row is not None:
                return Acquired(name, int(row.token), row.previous_holder)
            row = (await conn.execute(_INSERT, params)).first()
            if row is not None:
                return Acquired(name, int(row.token), None)
        return None

    async def renew(self, name: str, token: int) -> bool:
        params = {"name": name, "holder": self.holder, "token": token, "ttl": self.ttl_s}
        async with self.engine.begin() as conn:
            return (await conn.execute(_RENEW, params)).first() is not None

    async def release(self, name: str, token: int) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(_RELEASE, {"name": name, "holder": self.holder, "token": token})

    async def all(self) -> list[LeaseRow]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(_ALL)).all()
        return [
            LeaseRow(
                name=r.name,
                holder=r.holder,
                token=int(r.token),
                expires_at=r.expires_at,
                acquired_at=r.acquired_at,
                previous_holder=r.previous_holder,
                first_write_at=r.first_write_at,
                writes=int(r.writes),
                live=bool(r.live),
                expired_for_s=float(r.expired_for_s),
            )
            for r in rows
        ]


class Fence:
    """The fencing check of one lease tenure (name, holder, token). Immutable: a new
    tenure gets a new Fence, so a task of an old tenure can never borrow a newer token.

    `revoked` is set when this instance itself decided the tenure is over (a missed
    renewal): writes then fail without asking the database."""

    def __init__(self, name: str, holder: str, token: int) -> None:
        self.name, self.holder, self.token = name, holder, token
        self.revoked = asyncio.Event()

    async def check(self, s: AsyncSession) -> None:
        """First statement of a protected transaction; raises FencedOut (rolling the
        transaction back) unless this tenure is still the current one."""
        if self.revoked.is_set():
            raise FencedOut(self.name, self.holder, self.token)
        params = {"name": self.name, "holder": self.holder, "token": self.token}
        if (await s.execute(_FENCE, params)).first() is None:
            self.revoked.set()
            raise FencedOut(self.name, self.holder, self.token)

    def __repr__(self) -> str:
        return f"Fence({self.name!r}, {self.holder!r}, token={self.token})"


def end_idle_transactions_after(engine: AsyncEngine, seconds: float) -> None:
    """Every connection `engine` opens from now on has PostgreSQL end its session once
    it sits idle inside a transaction for `seconds`: the row lock of a paused holder's
    protected write is released by the time its lease expires, and its late commit
    fails instead of landing."""
    ms = max(1, int(seconds * 1000))

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute(f"SET idle_in_transaction_session_timeout = {ms}")
        cur.close()
        # The driver adapter ran the SET inside a transaction it opened itself; the
        # pool's rollback on return would undo it (SET is transactional), leaving the
        # setting on the connection's first use only.
        dbapi_conn.commit()

    event.listen(engine.sync_engine, "connect", on_connect)


__all__ = [
    "Acquired",
    "Fence",
    "FencedOut",
    "LeaseRow",
    "LeaseStore",
    "end_idle_transactions_after",
]
