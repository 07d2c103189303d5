"""The one interface every price source implements, and what sources are built from."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import aiohttp

from oracles.protocols import BatchCaller
from oracles.types import SourceOutcome


class SourceConfigError(ValueError):
    """A source cannot be built from its config (missing env var, unknown chain, ...)."""


class HttpClient:
    """The one aiohttp ClientSession every http source shares; closed by its owner."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # Per-request timeouts are set by each source; no global cap here.
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


@dataclass
class SourceContext:
    batch_callers: Mapping[str, BatchCaller] = field(default_factory=dict)
    http: HttpClient = field(default_factory=HttpClient)
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)


class PriceSource:
    """Base class: `fetch(now)` returns an Observation or a typed SourceFailure and
    never raises for a bad answer. Sources that can share one round trip return the
    same `group_key` and implement `fetch_group`."""

    kind: ClassVar[str] = ""
    name: str

    @property
    def group_key(self) -> str | None:
        return None

    async def fetch(self, now: float) -> SourceOutcome:
        raise NotImplementedError

    @classmethod
    async def fetch_group(cls, sources: Sequence[Any], now: float) -> list[SourceOutcome]:
        return list(await asyncio.gather(*(s.fetch(now) for s in sources)))
