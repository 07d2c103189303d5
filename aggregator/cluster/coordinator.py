"""Acquire, renew and give up leases; start and stop the work each one protects.

One loop per instance (a supervised task). Every `renew_every_s` it renews what it holds
and tries to take what is free. A tenure ends, and its work is cancelled at once, when

- a renewal finds the row no longer ours (a peer took over after our expiry),
- the local deadline passes without a successful renewal (database unreachable, event
  loop stalled, process paused): `last successful renewal sent + ttl`, measured on the
  monotonic clock from *before* the statement was sent, so it is never later than the
  database's own expiry,
- a protected write was refused (`FencedOut`, reported through `lost()`).

A timer, not the loop, enforces the deadline: a renewal that hangs cannot keep work
running past it. Fencing makes the remaining race (work between the database expiry
and our timer) harmless.

Which free leases to take, and which held one to hand back so that N instances share
the work, is decided each round by `balance.decide` from the lease table; each instance
keeps a membership lease so the others can count it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aggregator.cluster.balance import decide, member_lease
from aggregator.cluster.lease import Fence, LeaseRow, LeaseStore

log = logging.getLogger(__name__)

OnAcquired = Callable[[str, Fence], Awaitable[None]]
OnLost = Callable[[str, Fence, str], Awaitable[None]]


@dataclass
class Tenure:
    fence: Fence
    acquired_mono: float
    deadline: float
    previous_holder: str | None
    timer: asyncio.TimerHandle | None = None
    started: bool = False


@dataclass
class CoordinatorStats:
    acquisitions: dict[str, int] = field(default_factory=dict)
    takeovers: dict[str, int] = field(default_factory=dict)
    losses: dict[str, int] = field(default_factory=dict)
    handoffs: dict[str, int] = field(default_factory=dict)
    members: int = 1
    share: int = 0
    last_error: str | None = None


class LeaseCoordinator:
    def __init__(
        self,
        leases: LeaseStore,
        names: list[str],
        *,
        renew_every_s: float,
        on_acquired: OnAcquired,
        on_lost: OnLost,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.leases = leases
        self.names = list(names)
        self.renew_every_s = renew_every_s
        self.ttl_s = leases.ttl_s
        self.on_acquired = on_acquired
        self.on_lost = on_lost
        self.on_change = on_change
        self.held: dict[str, Tenure] = {}
        self.rows: dict[str, LeaseRow] = {}
        self.stats = CoordinatorStats()
        self._ending: dict[str, str] = {}  # name -> reason, tenures to wind down
        self._wake = asyncio.Event()
        self._closed = False
        self.member = member_lease(leases.holder)
        self._member_token: int | None = None

    @property
    def holder(self) -> str:
        return self.leases.holder

    def holds(self, name: str) -> bool:
        t = self.held.get(name)
        return t is not None and not t.fence.revoked.is_set()

    def fence(self, name: str) -> Fence | None:
        t = self.held.get(name)
        return None if t is None else t.fence

    # ------------------------------------------------------------ ending a tenure
    def lost(self, fence: Fence, reason: str) -> None:
        """Called by work that was fenced out (or any code that knows better): revoke at
        once, wind down from the loop (never from inside the work being cancelled)."""
        t = self.held.get(fence.name)
        if t is None or t.fence is not fence:
            return
        fence.revoked.set()
        self._ending.setdefault(fence.name, reason)
        self._wake.set()

    def _expire(self, name: str, fence: Fence) -> None:
        t = self.held.get(name)
        if t is None or t.fence is not fence:
            return
        log.error(
            "lease %s: no successful renewal within %.1fs (token %d); stopping its work",
            name,
            self.ttl_s,
            fence.token,
        )
        self.lost(fence, "not renewed before expiry")

    async def _end(self, name: str, reason: str, *, handoff: bool = False) -> None:
        t = self.held.pop(name, None)
        self._ending.pop(name, None)
        if t is None:
            return
        t.fence.revoked.set()
        if t.timer is not None:
            t.timer.cancel()
        if handoff:
            self.stats.handoffs[name] = self.stats.handoffs.get(name, 0) + 1
            log.info("lease %s handed back (token %d): %s", name, t.fence.token, reason)
        else:
            self.stats.losses[name] = self.stats.losses.get(name, 0) + 1
            log.warning("lease %s lost (token %d): %s", name, t.fence.token, reason)
        if t.started:
            await self.on_lost(name, t.fence, reason)
        self._changed()

    def _arm(self, name: str, t: Tenure) -> None:
        if t.timer is not None:
            t.timer.cancel()
        loop = asyncio.get_running_loop()
        delay = max(0.0, t.deadline - time.monotonic())
        t.timer = loop.call_later(delay, self._expire, name, t.fence)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # ------------------------------------------------------------ one round
    async def tick(self) -> None:
        for name, reason in list(self._ending.items()):
            await self._end(name, reason)
        budget = max(0.2, self.renew_every_s)
        for name in list(self.held):
            await self._renew(name, budget)
        await self._keep_membership(budget)
        try:
            async with asyncio.timeout(budget):
                self.rows = {r.name: r for r in await self.leases.all()}
        except Exception as exc:
            # Without a fresh view of the table the spread cannot be judged, and a dead
            # peer's lease must not wait for it: contend for every lease not held here
            # (acquisition is a compare-and-set in the database); hand-backs even it
            # out once the table can be read again.
            self._note_error(f"lease table: {type(exc).__name__}: {exc}")
            for name in self.names:
                if name not in self.held and not self._closed:
                    await self._acquire(name, budget)
            return
        d = decide(
            self.names,
            set(self.held),
            self.rows,
            self.holder,
            orphan_after_s=2 * self.renew_every_s,
        )
        self.stats.members, self.stats.share = d.members, d.share
        if self._closed:
            return
        if d.release is not None:
            await self._hand_back(d.release, d.share, d.members)
        for name in d.acquire:
            await self._acquire(name, budget)

    async def _keep_membership(self, budget: float) -> None:
        """Our `member:` lease, so peers count us when they share the work out."""
        try:
            async with asyncio.timeout(budget):
                if self._member_token is not None and await self.leases.renew(
                    self.member, self._member_token
                ):
                    return
                got = await self.leases.acquire(self.member)
        except Exception as exc:
            self._note_error(f"membership: {type(exc).__name__}: {exc}")
            return
        self._member_token = None if got is None else got.token

    async def _hand_back(self, name: str, share: int, members: int) -> None:
        """Stop the work and revoke the fence first, then release the row."""
        t = self.held.get(name)
        if t is None:
            return
        token = t.fence.token
        why = f"rebalancing: {len(self.held)} held, share {share} of {members} instances"
        await self._end(name, why, handoff=True)
        try:
            async with asyncio.timeout(2.0):
                await self.leases.release(name, token)
        except Exception as exc:
            log.warning("lease %s: release failed (%s); it expires by itself", name, exc)

    async def _renew(self, name: str, budget: float) -> None:
        t = self.held[name]
        sent = time.monotonic()
        try:
            async with asyncio.timeout(max(0.1, min(budget, t.deadline - sent))):
                ok = await self.leases.renew(name, t.fence.token)
        except Exception as exc:
            # The database is unreachable or slow: keep working until the deadline
            # (the timer stops the work then); try again next round.
            self._note_error(f"renew {name}: {type(exc).__name__}: {exc}")
            return
        if not ok:
            await self._end(name, "renewal refused: another instance holds it now")
            return
        t.deadline = sent + self.ttl_s
        self._arm(name, t)

    async def _acquire(self, name: str, budget: float) -> None:
        sent = time.monotonic()
        try:
            async with asyncio.timeout(budget):
                got = await self.leases.acquire(name)
        except Exception as exc:
            self._note_error(f"acquire {name}: {type(exc).__name__}: {exc}")
            return
        if got is None:
            return
        fence = Fence(name, self.holder, got.token)
        t = Tenure(fence, sent, sent + self.ttl_s, got.previous_holder)
        self.held[name] = t
        self._arm(name, t)
        self.stats.acquisitions[name] = self.stats.acquisitions.get(name, 0) + 1
        if got.previous_holder is not None and got.previous_holder != self.holder:
            self.stats.takeovers[name] = self.stats.takeovers.get(name, 0) + 1
        log.info(
            "lease %s acquired: token %d (previous holder %s)",
            name,
            got.token,
            got.previous_holder or "none",
        )
        try:
            await self.on_acquired(name, fence)
            t.started = True
        except Exception as exc:
            # Could not start the work (e.g. the checkpoint load failed): give the
            # lease back so a peer, or our next round, tries again.
            log.error("lease %s: starting its work failed: %s", name, exc, exc_info=exc)
            self.held.pop(name, None)
            if t.timer is not None:
                t.timer.cancel()
            fence.revoked.set()
            with contextlib.suppress(Exception):
                await self.leases.release(name, got.token)
        self._changed()

    def _note_error(self, msg: str) -> None:
        if self.stats.last_error != msg:
            log.warning("cluster: %s", msg)
        self.stats.last_error = msg

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set() and not self._closed:
            await self.tick()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.renew_every_s):
                    await self._wake.wait()

    async def close(self) -> None:
        """Clean shutdown (after the work was cancelled): hand every lease back at once."""
        self._closed = True
        for name, t in list(self.held.items()):
            if t.timer is not None:
                t.timer.cancel()
            t.fence.revoked.set()
            try:
                async with asyncio.timeout(2.0):
                    await self.leases.release(name, t.fence.token)
            except Exception as exc:
                log.warning("lease %s: release failed (%s); it expires by itself", name, exc)
        self.held.clear()
        if self._member_token is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self.leases.release(self.member, self._member_token)
            self._member_token = None


__all__ = ["CoordinatorStats", "LeaseCoordinator", "Tenure"]
