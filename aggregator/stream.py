"""The live stream of /v1/stream: health changes pushed to subscribers.

Invariants:
- An account's event goes out when its tier or degraded flag changed or its HF moved
  by at least 0.1% since the last event; a first sight of an account is an event.
- Memory is bounded: a subscriber that falls SUBSCRIBER_QUEUE events behind is dropped
  and told so (`overflow`), never grown without limit.
- The stream ends with `shutdown` when the daemon stops, and after `overflow`.
- Read-only: the stream reads the ledger through the API's view of it (HealthSource).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any, Protocol

from aggregator.api import checksum_address
from aggregator.risk.engine import AccountHealth

SUBSCRIBER_QUEUE = 1000


class HealthSource(Protocol):
    def find(self, address: str) -> int | None: ...
    def accounts(self) -> list[str]: ...
    def health(self, address: str) -> AccountHealth: ...


class HealthStream:
    def __init__(self, source: HealthSource) -> None:
        self._source = source
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._last: dict[str, tuple[float, str, bool]] = {}

    def publish(self, accounts: Iterable[str] | None) -> None:
        """Send the health changes of `accounts` (lower-case; None: every account).
        Called by the ledger after a recompute, once prices are computed."""
        candidates = self._source.accounts() if accounts is None else accounts
        for addr in candidates:
            if self._source.find(addr) is None:
                continue
            event = self._event(addr)
            if event is not None:
                self._send(event)

    def _event(self, addr: str) -> dict[str, Any] | None:
        h = self._source.health(addr)
        prev = self._last.get(addr)
        now = (h.hf, h.tier, h.degraded)
        self._last[addr] = now
        if prev is not None and prev[1:] == now[1:] and _close(prev[0], h.hf):
            return None
        return {
            "account": checksum_address(h.account),
            "hf": h.hf,
            "tier": h.tier,
            "degraded": h.degraded,
            "borrowing_power_usd": h.bp,
            "previous_tier": prev[1] if prev else None,
            "at": time.time(),
        }

    def _send(self, event: dict[str, Any]) -> None:
        for q in list(self._subscribers):
            try:
                q.put_nowait(event)
            except asyncio.QueueFull:
                # A slow client is dropped rather than growing memory without bound,
                # and told so: the oldest queued event makes room for the notice.
                self._subscribers.discard(q)
                q.get_nowait()
                q.put_nowait({"event": "overflow"})

    def close(self) -> None:
        """The daemon stops: every open stream ends with `shutdown`."""
        for q in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait({"event": "shutdown"})

    def subscribe(self) -> AsyncIterator[dict[str, Any]]:
        return self._subscription()

    async def _subscription(self) -> AsyncIterator[dict[str, Any]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self._subscribers.add(q)
        try:
            while True:
                event = await q.get()
                yield event
                if event.get("event") in ("shutdown", "overflow"):
                    return
        finally:
            self._subscribers.discard(q)


def _close(a: float, b: float, rel: float = 1e-3) -> bool:
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-12)


__all__ = ["SUBSCRIBER_QUEUE", "HealthSource", "HealthStream"]
