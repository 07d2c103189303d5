"""LST exchange rates (underlying per LST) with a CAPO-style growth cap.

The rate itself is read on chain by chains/ (wstETH stEthPerToken, rETH
getExchangeRate, cbETH exchangeRate, ERC-4626 convertToAssets) and handed to us
through a RateProvider. An attacker who can inflate the rate (a donation to an
ERC-4626 vault, a bad oracle report) must not inflate collateral value faster
than the asset can plausibly grow, so:

    cap(t) = snapshot_rate * (1 + max_yearly_growth * (t - snapshot_time) / 1 year)
    rate_used = min(rate, cap(t))

unless the cap itself fails its guard (oracles/cap_guard.py): then the observation is
the live, uncapped rate and `findings` says why; the service marks the price `capped`.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import ClassVar

from oracles.cap_guard import CapFinding, CapGuardRules, check_cap
from oracles.protocols import PriceHistory, RateProvider, RateSampleLike, RateSnapshot
from oracles.sources.base import PriceSource
from oracles.types import BadPayload, NoData, NonPositive, Observation, SourceOutcome, Stale

log = logging.getLogger(__name__)

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
    guard: CapGuardRules = field(default_factory=CapGuardRules)

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
        *,
        name: str = "exchange_rate",
        rate_at: Callable[[str, float], Awaitable[RateSampleLike | None]] | None = None,
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
        # The chain's own rate at a configured snapshot's time (oracles/cap_guard.py).
        self.rate_at = rate_at
        self._rate_at_snapshot: float | None = None
        self._rate_at_checked = False
        self.findings: tuple[CapFinding, ...] = ()

    async def fetch(self, now: float) -> SourceOutcome:
        got = self.provider.latest(self.asset)
        sample: RateSampleLike | None = await got if inspect.isawaitable(got) else got
        if sample is None:
            return NoData(self.name, f"exchange rate of {self.asset}: no rate sample yet")
        checked = self._checked(sample, now)
        if not isinstance(checked, float):
            return checked
        return await self._capped(checked, sample, now)

    def _checked(self, sample: RateSampleLike, now: float) -> float | SourceOutcome:
        """The sample's rate, or the failure that makes it unusable."""
        label = f"exchange rate of {self.asset}"
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
        return rate

    async def _capped(self, rate: float, sample: RateSampleLike, now: float) -> Observation:
        snap = await self._snapshot(rate, float(sample.timestamp))
        cap = cap_at(snap.rate, snap.timestamp, self.cap.max_yearly_growth, float(sample.timestamp))
        self.findings = check_cap(
            live_rate=rate,
            cap=cap,
            snapshot_rate=snap.rate,
            snapshot_time=snap.timestamp,
            now=now,
            chain_rate_at_snapshot=await self._chain_rate_at_snapshot(),
            rules=self.cap.guard,
        )
        if self.findings:
            return Observation(
                self.name,
                rate,
                float(sample.timestamp),
                f"rate {rate:.8g} (block {sample.block}) used uncapped: the cap "
                f"{cap:.8g} failed its guard ("
                + "; ".join(f"{f.kind}: {f.detail}" for f in self.findings)
                + ")",
            )
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

    async def _chain_rate_at_snapshot(self) -> float | None:
        """Only a configured snapshot is checked: an observed anchor is the chain's
        rate by construction. Read once; a failed read is retried next round."""
        snap_time = self.cap.snapshot_time
        if self._rate_at_checked or self.rate_at is None or snap_time is None:
            return self._rate_at_snapshot
        try:
            sample = await self.rate_at(self.asset, snap_time)
        except Exception as exc:  # the guard must not stop pricing; the next round retries
            log.warning(
                "%s: reading the chain's rate at the snapshot time failed: %s", self.asset, exc
            )
            return None
        self._rate_at_checked = True
        if sample is not None and sample.scale > 0 and sample.rate > 0:
            self._rate_at_snapshot = sample.rate / sample.scale
        return self._rate_at_snapshot

    async def _snapshot(self, rate: float, ts: float) -> RateSnapshot:
        if self.snapshot is None and not self._loaded and self.history is not None:
            self.snapshot = await self.history.load_rate_snapshot(self.asset)
        self._loaded = True
        if self.snapshot is None:
            self.snapshot = RateSnapshot(self.asset, rate, ts)
            if self.history is not None:
                await self.history.save_rate_snapshot(self.snapshot)
        return self.snapshot
