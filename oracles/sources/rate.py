"""LST exchange rates (underlying per LST) with a CAPO-style growth cap.

The rate itself is read on chain by chains/ (wstETH stEthPerToken, rETH
getExchangeRate, cbETH exchangeRate, ERC-4626 convertToAssets) and handed to us
through a RateProvider. An attacker who can inflate the rate (a donation to an
ERC-4626 vault, a bad oracle report) must not inflate collateral value faster
than the asset can plausibly grow, so:

    cap(t) = snapshot_rate * (1 + max_yearly_growth * (t - snapshot_time) / 1 year)
    rate_used = min(rate, cap(t))
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import ClassVar

from oracles.protocols import PriceHistory, RateProvider, RateSampleLike, RateSnapshot
from oracles.sources.base import PriceSource
from oracles.types import BadPayload, NoData, NonPositive, Observation, SourceOutcome, Stale

YEAR_S = 365.0 * 86400.0
FUTURE_TOLERANCE_S = 60.0


@dataclass(frozen=True)
class RateCap:
    max_yearly_growth: float = 0.10
    # Anchor; when unset, the first rate observed (or the one persisted in the
    # price history) becomes the anchor.
    snapshot_rate: float | None = None
    snapshot_time: float | None = None
    max_age_s: float = 3600.0

    def __post_init__(self) -> None:
        if (self.snapshot_rate is None) != (self.snapshot_time is None):
            raise ValueError("snapshot_rate and snapshot_time must be set together")
        if self.snapshot_rate is not None and not self.snapshot_rate > 0:
            raise ValueError(f"snapshot_rate must be > 0, got {self.snapshot_rate}")
        if self.max_yearly_growth < 0:
            raise ValueError(f"max_yearly_growth must be >= 0, got {self.max_yearly_growth}")


def cap_at(snapshot_rate: float, snapshot_time: float, growth: float, t: float) -> float:
    # Before the snapshot no growth is allowed (never a cap below the anchor).
    elapsed = max(0.0, t - snapshot_time)
    return snapshot_rate * (1.0 + growth * elapsed / YEAR_S)


class ExchangeRateSource(PriceSource):
    """Returns the capped rate (underlying per LST) as its Observation value."""

    kind: ClassVar[str] = "exchange_rate"

    def __init__(
        self,
        asset: str,
        cap: RateCap,
        provider: RateProvider,
        history: PriceHistory | None = None,
        name: str = "exchange_rate",
    ) -> None:
        self.asset = asset
        self.cap = cap
        self.provider = provider
        self.history = history
        self.name = name
        self.snapshot: RateSnapshot | None = None
        if cap.snapshot_rate is not None and cap.snapshot_time is not None:
            self.snapshot = RateSnapshot(asset, cap.snapshot_rate, cap.snapshot_time)
        self._loaded = self.snapshot is not None

    async def fetch(self, now: float) -> SourceOutcome:
        label = f"exchange rate of {self.asset}"
        got = self.provider.latest(self.asset)
        sample: RateSampleLike | None = await got if inspect.isawaitable(got) else got
        if sample is None:
            return NoData(self.name, f"{label}: no rate sample yet")
        if sample.scale <= 0:
            return BadPayload(self.name, f"{label}: scale {sample.scale} is not positive")
        if sample.rate <= 0:
            return NonPositive(
                self.name, f"{label}: rate {sample.rate} (block {sample.block}) is not positive"
            )
        rate = sample.rate / sample.scale
        if not math.isfinite(rate):
            return BadPayload(self.name, f"{label}: rate {sample.rate}/{sample.scale} overflows")
        age = now - sample.timestamp
        if age > self.cap.max_age_s:
            return Stale(
                self.name,
                f"{label}: sample {rate:.6g} from block {sample.block} is {age:.0f}s old "
                f"(max {self.cap.max_age_s:g}s)",
            )
        if -age > FUTURE_TOLERANCE_S:
            return BadPayload(
                self.name, f"{label}: sample timestamp {sample.timestamp} is in the future"
            )
        snap = await self._snapshot(rate, float(sample.timestamp))
        cap = cap_at(snap.rate, snap.timestamp, self.cap.max_yearly_growth, float(sample.timestamp))
        if rate > cap:
            return Observation(
                self.name,
                cap,
                float(sample.timestamp),
                f"rate {rate:.8g} (block {sample.block}) capped to {cap:.8g} "
                f"(snapshot {snap.rate:.8g} at {snap.timestamp:.0f}, "
                f"max_yearly_growth {self.cap.max_yearly_growth:g})",
            )
        return Observation(
            self.name, rate, float(sample.timestamp), f"rate {rate:.8g} (block {sample.block})"
        )

    async def _snapshot(self, rate: float, ts: float) -> RateSnapshot:
        if self.snapshot is None and not self._loaded and self.history is not None:
            self.snapshot = await self.history.load_rate_snapshot(self.asset)
        self._loaded = True
        if self.snapshot is None:
            self.snapshot = RateSnapshot(self.asset, rate, ts)
            if self.history is not None:
                await self.history.save_rate_snapshot(self.snapshot)
        return self.snapshot
