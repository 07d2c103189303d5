"""What oracles/ needs from the outside world, as small protocols.

chains/ implements BatchCaller (on its RPC client); the daemon implements
RateProvider (`_RateProvider` in aggregator/daemon.py, over the LST rate samples
chains/ stored; `MappingRateProvider` below adapts a plain `latest_rates()` call for
tests and tools); aggregator/store implements PriceHistory.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from oracles.types import Price


@runtime_checkable
class BatchCaller(Protocol):
    """One object per chain name. All sub-calls go to the node in one round trip
    (Multicall3 aggregate3 with allowFailure); None = that sub-call reverted.
    Raises when the round trip itself fails."""

    async def call_batch(
        self, calls: Sequence[tuple[str, bytes]], block: int | str = "latest"
    ) -> list[bytes | None]: ...


class RateSampleLike(Protocol):
    """What oracles/ reads of an LST rate sample (chains.types.RateSample has these):
    underlying per LST = rate / scale, read at `block` (unix `timestamp`)."""

    @property
    def rate(self) -> int: ...
    @property
    def scale(self) -> int: ...
    @property
    def block(self) -> int: ...
    @property
    def timestamp(self) -> int: ...


class RateProvider(Protocol):
    """Latest stored exchange-rate sample of an LST asset (by symbol), sync or async."""

    def latest(self, asset: str) -> RateSampleLike | Awaitable[RateSampleLike | None] | None: ...


class MappingRateProvider:
    """Adapts an `async latest_rates() -> {asset: sample}` call (what chains/'
    RateStore and LstRateReader offer) to RateProvider."""

    def __init__(self, latest_rates: Callable[[], Awaitable[Mapping[str, RateSampleLike]]]) -> None:
        self._latest_rates = latest_rates

    async def latest(self, asset: str) -> RateSampleLike | None:
        return (await self._latest_rates()).get(asset)


@dataclass(frozen=True)
class PricePoint:
    asset: str
    value: float
    # Unix seconds the round was computed.
    at: float


@dataclass(frozen=True)
class RateSnapshot:
    """The anchor of an LST's growth cap, persisted so a restart cannot re-anchor
    it at an inflated rate."""

    asset: str
    rate: float
    timestamp: float


class PriceHistory(Protocol):
    async def save_prices(self, prices: Sequence[Price]) -> None: ...

    async def ok_prices_since(self, since: float) -> list[PricePoint]:
        """Accepted (ok) prices computed at or after `since`, oldest first."""
        ...

    async def last_accepted(self, asset: str) -> PricePoint | None: ...

    async def load_rate_snapshot(self, asset: str) -> RateSnapshot | None: ...

    async def save_rate_snapshot(self, snapshot: RateSnapshot) -> None: ...
