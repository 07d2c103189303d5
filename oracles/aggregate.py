"""Median aggregation with quorum and outlier removal, the jump guard, and the
LST combination rule. Pure functions and small state objects; no I/O."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace

from oracles.types import Observation, Price, PriceStatus, SourceOutcome, SourceResult


@dataclass(frozen=True)
class AggregationRules:
    min_sources: int = 1
    max_deviation: float = 0.02
    jump_threshold: float = 0.20

    def __post_init__(self) -> None:
        if self.min_sources < 1:
            raise ValueError(f"min_sources must be >= 1, got {self.min_sources}")
        if not 0 < self.max_deviation <= 1:
            raise ValueError(f"max_deviation must be in (0, 1], got {self.max_deviation}")
        if not self.jump_threshold > 0:
            raise ValueError(f"jump_threshold must be > 0, got {self.jump_threshold}")


def robust_median(values: Sequence[float], max_deviation: float) -> tuple[float, list[bool]]:
    """Median, drop values beyond max_deviation of it, median again.

    The second median is clamped between the two middle values of the first pass:
    dropping honest-but-noisy sources must never hand the majority of what is left
    to colluding ones. With f liars among 2f+1 values both middle values lie within
    the honest range, so the result does too, and for an odd count the result is
    exactly the first median (the re-take only picks within the middle pair).
    Returns (value, kept mask).
    """
    ordered = sorted(values)
    n = len(ordered)
    lo, hi = ordered[(n - 1) // 2], ordered[n // 2]
    first = (lo + hi) / 2.0
    kept = [abs(v - first) <= max_deviation * first for v in values]
    survivors = [v for v, k in zip(values, kept, strict=True) if k]
    second = statistics.median(survivors) if survivors else first
    return min(max(second, lo), hi), kept


def aggregate(
    asset: str,
    outcomes: Sequence[tuple[SourceOutcome, str]],
    rules: AggregationRules,
    now: float,
) -> Price:
    """outcomes: (Observation or SourceFailure, source kind) per configured source."""
    valid = [(o, k) for o, k in outcomes if isinstance(o, Observation)]
    results = [SourceResult.of(o, k) for o, k in outcomes]
    if len(valid) < rules.min_sources:
        failed = [r for r in results if r.failure]
        why = "; ".join(f"{r.source}: {r.failure}" for r in failed) or "no sources"
        return Price(
            asset,
            PriceStatus.UNAVAILABLE,
            None,
            None,
            now,
            None,
            tuple(results),
            f"{len(valid)} valid of {len(outcomes)} sources, quorum {rules.min_sources} ({why})",
        )
    values = [o.value for o, _ in valid]
    value, kept = robust_median(values, rules.max_deviation)
    used_obs = [o for (o, _), k in zip(valid, kept, strict=True) if k]
    used_names = {o.source for o in used_obs}
    results = [replace(r, used=r.source in used_names) if r.failure is None else r for r in results]
    if used_obs:
        used_vals = [o.value for o in used_obs]
        spread = (max(used_vals) - min(used_vals)) / value
        timestamp = min(o.timestamp for o in used_obs)
    else:
        spread, timestamp = None, min(o.timestamp for o, _ in valid)
    dropped = [o for (o, _), k in zip(valid, kept, strict=True) if not k]
    reason = ""
    if dropped:
        reason = "outliers dropped: " + ", ".join(
            f"{o.source}={o.value:g} ({(o.value / value - 1) * 100:+.2f}%)" for o in dropped
        )
    if len(used_obs) < rules.min_sources:
        return Price(
            asset,
            PriceStatus.DISPUTED,
            value,
            timestamp,
            now,
            spread,
            tuple(results),
            f"only {len(used_obs)} of {len(valid)} valid sources within "
            f"{rules.max_deviation:.2%} of the median, quorum {rules.min_sources}; {reason}",
        )
    return Price(asset, PriceStatus.OK, value, timestamp, now, spread, tuple(results), reason)


class JumpGuard:
    """A move beyond jump_threshold from the last accepted price is held as
    `disputed` (pending) until the next round agrees with it (within
    max_deviation of the pending value)."""

    def __init__(self, rules: AggregationRules, last_accepted: float | None = None) -> None:
        self.rules = rules
        self.last_accepted = last_accepted
        self.pending: float | None = None

    def apply(self, price: Price) -> Price:
        if not price.valued or price.value is None:
            # The confirmation must come from the very next round.
            self.pending = None
            return price
        value = price.value
        last = self.last_accepted
        if last is None or abs(value / last - 1.0) <= self.rules.jump_threshold:
            self.pending = None
            self.last_accepted = value
            return price
        move = value / last - 1.0
        pending = self.pending
        if pending is not None and abs(value / pending - 1.0) <= self.rules.max_deviation:
            self.pending = None
            self.last_accepted = value
            note = f"jump of {move:+.2%} from {last:g} confirmed by a second round"
            return replace(price, reason=_join(price.reason, note))
        self.pending = value
        note = (
            f"jump of {move:+.2%} from last accepted {last:g} exceeds jump_threshold "
            f"{self.rules.jump_threshold:.2%}; pending confirmation by the next round"
        )
        return replace(
            price,
            status=PriceStatus.DISPUTED,
            pending_value=value,
            reason=_join(price.reason, note),
        )


def combine_lst(
    asset: str,
    market: Price | None,
    rate_leg: SourceResult,
    *,
    rate_status: PriceStatus,
    rate_reason: str,
    now: float,
) -> Price:
    """LST price = min(market median, capped rate x underlying).

    Every configured leg must be `ok` for the result to be `ok`: the minimum is
    only a defence when both sides are there. With one leg missing the other is
    shown as `disputed`; with none, `unavailable`. A rate leg whose growth cap failed
    its guard (`rate_status` CAPPED, oracles/cap_guard.py) carries the live rate: with
    both legs there the result is `capped` (valued, but credit may not rise). An LST
    priced by its rate alone has no market to hold a manipulated live rate down: then
    the result is `disputed` (the last valued price stands) until the cap is fixed.
    """
    capped = rate_status is PriceStatus.CAPPED
    legs: list[tuple[str, float, float, PriceStatus]] = []
    sources: list[SourceResult] = []
    reasons: list[str] = []
    if market is not None:
        sources.extend(market.sources)
        if market.value is not None and market.timestamp is not None:
            legs.append(("market", market.value, market.timestamp, market.status))
        if market.status is not PriceStatus.OK:
            reasons.append(f"market {market.status.value}: {market.reason}")
    if rate_leg.value is not None and rate_leg.timestamp is not None:
        legs.append(("rate", rate_leg.value, rate_leg.timestamp, rate_status))
    if rate_status is not PriceStatus.OK and not capped:
        reasons.append(f"rate leg {rate_status.value}: {rate_reason}")
    if not legs:
        sources.append(rate_leg)
        why = "; ".join(reasons)
        return Price(asset, PriceStatus.UNAVAILABLE, None, None, now, None, tuple(sources), why)
    chosen = min(legs, key=lambda leg: leg[1])
    sources.append(replace(rate_leg, used=chosen[0] == "rate"))
    if chosen[0] != "market":
        sources = [replace(s, used=False) if s is not sources[-1] else s for s in sources]
    all_ok = all(leg[3] in (PriceStatus.OK, PriceStatus.CAPPED) for leg in legs) and not reasons
    status = PriceStatus.OK if all_ok else PriceStatus.DISPUTED
    if capped:
        status = _capped_status(status, market is not None, rate_reason, reasons)
    values = [leg[1] for leg in legs]
    spread = (max(values) - min(values)) / chosen[1]
    reasons.insert(0, f"{chosen[0]} leg is the lower ({chosen[1]:g})")
    return Price(
        asset,
        status,
        chosen[1],
        chosen[2],
        now,
        spread,
        tuple(sources),
        "; ".join(reasons),
        extra={name: v for name, v, _, _ in legs},
    )


def _capped_status(
    status: PriceStatus, has_market: bool, rate_reason: str, reasons: list[str]
) -> PriceStatus:
    """The status of an LST whose cap failed its guard; says so in `reasons`."""
    if not has_market:
        status = PriceStatus.DISPUTED
        reasons.append("no market leg to hold the live rate down")
    reasons.append(
        f"cap guard: {rate_reason}; the lower of the market median and the live "
        "(uncapped) rate applies, credit may not rise"
    )
    return PriceStatus.CAPPED if status is PriceStatus.OK else status


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a else b
