"""The oracle-config guard of an LST growth cap: is the cap itself still right?

A growth cap (oracles/sources/rate.py) holds an inflated exchange rate down. A cap that
is itself wrong does the opposite: in Aave's wstETH CAPO incident (2025) the cap's
snapshot ratio and snapshot time fell out of step, the cap sat 2.85% under the real
rate, and 10,938 wstETH were liquidated over a price nobody traded at. So every
round, before a capped rate is used, the cap is checked against the live rate:

- `cap_below_rate`: cap(t) < live rate x (1 - cap_tolerance). A cap that has fallen
  under the rate is either broken or holding down a manipulated rate; the guard cannot
  tell which, so it answers both at once (below).
- `snapshot_stale`: the snapshot is older than `max_snapshot_age_s` (when configured):
  the cap has grown unchecked for too long to be trusted as a bound.
- `snapshot_mismatch`: the snapshot ratio differs from the chain's own rate at the
  snapshot's time by more than `snapshot_tolerance` (the incident's shape: a ratio
  of one day paired with the time of another). Only a configured snapshot is checked:
  one anchored at an observed rate agrees by construction.

Invariant (enforced by the caller, oracles/service.py): while any finding stands the
rate leg carries the live, uncapped rate, the LST's price is the lower of the market
median and live rate x underlying, and the price's status is `capped`, which values
the account but lets its credit go down and never up. A broken cap alone therefore
cannot liquidate anyone, and a manipulated rate is still held down by the market.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FindingKind = Literal["cap_below_rate", "snapshot_stale", "snapshot_mismatch"]


@dataclass(frozen=True)
class CapFinding:
    kind: FindingKind
    detail: str


@dataclass(frozen=True)
class CapGuardRules:
    cap_tolerance: float = 0.001
    max_snapshot_age_s: float | None = None
    snapshot_tolerance: float = 0.001

    def __post_init__(self) -> None:
        if not 0 <= self.cap_tolerance < 1:
            raise ValueError(f"cap_tolerance must be in [0, 1), got {self.cap_tolerance}")
        if not 0 <= self.snapshot_tolerance < 1:
            raise ValueError(f"snapshot_tolerance must be in [0, 1), got {self.snapshot_tolerance}")
        if self.max_snapshot_age_s is not None and not self.max_snapshot_age_s > 0:
            raise ValueError(f"max_snapshot_age_s must be > 0, got {self.max_snapshot_age_s}")


def check_cap(
    *,
    live_rate: float,
    cap: float,
    snapshot_rate: float,
    snapshot_time: float,
    now: float,
    chain_rate_at_snapshot: float | None,
    rules: CapGuardRules,
) -> tuple[CapFinding, ...]:
    """Every finding against the cap this round (empty: the cap may be used).
    `chain_rate_at_snapshot` is None when the snapshot was not configured (an observed
    anchor) or the chain's rate at that time could not be read."""
    out: list[CapFinding] = []
    if cap < live_rate * (1.0 - rules.cap_tolerance):
        out.append(
            CapFinding(
                "cap_below_rate",
                f"cap {cap:.8g} is {1 - cap / live_rate:.3%} below the live rate "
                f"{live_rate:.8g} (tolerance {rules.cap_tolerance:.3%})",
            )
        )
    age = now - snapshot_time
    if rules.max_snapshot_age_s is not None and age > rules.max_snapshot_age_s:
        out.append(
            CapFinding(
                "snapshot_stale",
                f"snapshot from {snapshot_time:.0f} is {age / 86400:.1f} days old "
                f"(max {rules.max_snapshot_age_s / 86400:.1f} days)",
            )
        )
    if chain_rate_at_snapshot is not None:
        off = abs(snapshot_rate / chain_rate_at_snapshot - 1.0)
        if off > rules.snapshot_tolerance:
            out.append(
                CapFinding(
                    "snapshot_mismatch",
                    f"snapshot ratio {snapshot_rate:.8g} differs by {off:.3%} from the "
                    f"chain's rate {chain_rate_at_snapshot:.8g} at the snapshot time "
                    f"{snapshot_time:.0f} (tolerance {rules.snapshot_tolerance:.3%})",
                )
            )
    return tuple(out)
