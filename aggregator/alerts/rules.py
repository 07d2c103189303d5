"""Alert conditions: pure functions of a state snapshot (docs/operations.md "Alerts").

Each rule kind is one function `(rule, snapshot, active) -> [Condition]` in
`RULE_KINDS` (the config's `kind` union lists the same names; a test checks they
agree). `active` is the rule's alerts already firing, for conditions that hold from
an event until a recovery (a tier move, a lost lease). No I/O, no clock: the
snapshot carries the time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aggregator.alerts.config import (
    AccountTierDownRule,
    ChainLagRule,
    KeeperBalanceRule,
    LeaseLostRule,
    PriceStatusRule,
    PusherStaleRule,
)
from chains.units import TIERS


@dataclass(frozen=True)
class TierMove:
    """An account whose tier got worse since the previous snapshot."""

    account: str  # checksummed
    from_tier: int
    to_tier: int
    collateral_usd: float
    debt_usd: float
    hf: float


@dataclass(frozen=True)
class ChainFacts:
    head: int
    indexed: int
    fatal: bool
    # Seconds since an update of this chain's pusher last landed; None: no pusher.
    landed_age_s: float | None = None
    keeper_balance_eth: float | None = None


@dataclass(frozen=True)
class LeaseFacts:
    held_here: bool
    live: bool
    holder: str | None


@dataclass(frozen=True)
class Snapshot:
    now: float
    # asset -> (status, reason)
    prices: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    chains: Mapping[str, ChainFacts] = field(default_factory=dict)
    tier_moves: Sequence[TierMove] = ()
    # Current tier code of the accounts named by active tier alerts (and moved ones).
    account_tiers: Mapping[str, int] = field(default_factory=dict)
    leases: Mapping[str, LeaseFacts] = field(default_factory=dict)
    # Leases held here at the previous snapshot and not any more.
    lost_leases: frozenset[str] = frozenset()
    keeper_min_eth: float = 0.0


@dataclass(frozen=True)
class Condition:
    """A rule's condition that holds now, under its alert key."""

    key: str
    subject: str
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ActiveView:
    """What a rule may know of one of its active alerts."""

    subject: str
    details: Mapping[str, Any]


Active = Mapping[str, ActiveView]


def _in(names: Sequence[str], name: str) -> bool:
    return not names or name in names


def account_tier_down(rule: AccountTierDownRule, snap: Snapshot, active: Active) -> list[Condition]:
    out: list[Condition] = []
    seen: set[str] = set()
    for key, a in active.items():
        # Holds until the account is back in the tier it left (or better).
        now_tier = snap.account_tiers.get(a.subject)
        if now_tier is not None and now_tier > int(a.details["from_tier_code"]):
            out.append(Condition(key, a.subject, "", a.details))
            seen.add(a.subject)
    for m in snap.tier_moves:
        if m.to_tier <= m.from_tier or m.collateral_usd < rule.min_usd or m.account in seen:
            continue
        details = {
            "from_tier": TIERS[m.from_tier],
            "to_tier": TIERS[m.to_tier],
            "from_tier_code": m.from_tier,
            "collateral_usd": m.collateral_usd,
            "debt_usd": m.debt_usd,
            "hf": m.hf,
        }
        msg = (
            f"account {m.account} (${m.collateral_usd:,.0f} collateral) moved "
            f"{TIERS[m.from_tier]} -> {TIERS[m.to_tier]}"
        )
        out.append(Condition(f"{rule.name}:{m.account.lower()}", m.account, msg, details))
    return out


def price_status(rule: PriceStatusRule, snap: Snapshot, active: Active) -> list[Condition]:
    return [
        Condition(
            f"{rule.name}:{asset}",
            asset,
            f"price {asset} is {status}" + (f" ({reason})" if reason else ""),
            {"status": status, "reason": reason},
        )
        for asset, (status, reason) in sorted(snap.prices.items())
        if status in rule.statuses and _in(rule.assets, asset)
    ]


def chain_lag(rule: ChainLagRule, snap: Snapshot, active: Active) -> list[Condition]:
    out = []
    for name, c in sorted(snap.chains.items()):
        lag = max(0, c.head - c.indexed)
        if _in(rule.chains, name) and (c.fatal or lag > rule.max_blocks):
            what = "stopped (fatal)" if c.fatal else f"lags {lag} blocks"
            msg = f"chain {name} {what} (limit {rule.max_blocks})"
            details = {"lag_blocks": lag, "head": c.head, "indexed": c.indexed, "fatal": c.fatal}
            out.append(Condition(f"{rule.name}:{name}", name, msg, details))
    return out


def pusher_stale(rule: PusherStaleRule, snap: Snapshot, active: Active) -> list[Condition]:
    out = []
    for name, c in sorted(snap.chains.items()):
        age = c.landed_age_s
        if _in(rule.chains, name) and age is not None and age > rule.max_age_s:
            msg = f"pusher {name}: no update landed for {age:.0f}s (limit {rule.max_age_s:g}s)"
            out.append(Condition(f"{rule.name}:{name}", name, msg, {"age_s": age}))
    return out


def keeper_balance(rule: KeeperBalanceRule, snap: Snapshot, active: Active) -> list[Condition]:
    floor = snap.keeper_min_eth if rule.min_eth is None else rule.min_eth
    out = []
    for name, c in sorted(snap.chains.items()):
        bal = c.keeper_balance_eth
        if _in(rule.chains, name) and bal is not None and bal < floor:
            msg = f"keeper on {name} holds {bal:.6f}, below {floor:g}"
            details = {"balance_eth": bal, "min_eth": floor}
            out.append(Condition(f"{rule.name}:{name}", name, msg, details))
    return out


def lease_lost(rule: LeaseLostRule, snap: Snapshot, active: Active) -> list[Condition]:
    out = []
    for key, a in active.items():
        lease = snap.leases.get(a.subject)
        # Holds until some live holder (here or elsewhere) has the lease again.
        if lease is None or not (lease.live and lease.holder):
            out.append(Condition(key, a.subject, "", a.details))
    held_before = {a.subject for a in active.values()}
    for name in sorted(snap.lost_leases - held_before):
        lease = snap.leases.get(name)
        details = {"holder": None if lease is None else lease.holder}
        out.append(Condition(f"{rule.name}:{name}", name, f"lease {name} lost here", details))
    return out


RuleFn = Callable[[Any, Snapshot, Active], list[Condition]]

RULE_KINDS: dict[str, RuleFn] = {
    "account_tier_down": account_tier_down,
    "price_status": price_status,
    "chain_lag": chain_lag,
    "pusher_stale": pusher_stale,
    "keeper_balance": keeper_balance,
    "lease_lost": lease_lost,
}
