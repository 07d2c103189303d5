"""Trigger rules, priorities and gas-sized batches for one chain (pure, no I/O).

Per (account, chain), against the baseline (the newest entry in flight, else what the
listener read on chain):

| trigger | priority |
| --- | --- |
| tier got worse (healthy -> warning -> liquidatable -> insolvent) | 0, at once |
| credit went down (any amount) | 0, at once |
| nothing on chain yet, and the account has debt or credit | 1 (0 if liquidatable) |
| HF moved by >= hf_deviation (relative), or between finite and infinite | 1 |
| tier got better | 1 |
| credit went up by >= credit_deviation (relative; any increase from 0) | 1 |
| on-chain entry older than heartbeat_s (chain time) | 1 |
| anything else that differs | 2: rides along when a batch goes |

A batch goes only when at least one entry has priority 0 or 1; it is then filled with
ride-alongs in order until the gas budget is used.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from chains.registry_codec import HF_INFINITE, RegistryEntry

URGENT, TRIGGER, RIDE_ALONG = 0, 1, 2
# Order inside a priority: the worst news first.
_REASON_ORDER = {
    "tier_down": 0,
    "credit_cut": 1,
    "first": 2,
    "hf": 3,
    "heartbeat": 4,
    "tier_up": 5,
    "credit_up": 6,
    "ride_along": 7,
}


@dataclass(frozen=True)
class TriggerRules:
    hf_deviation: float = 0.02
    credit_deviation: float = 0.05
    heartbeat_s: float = 600.0

    @classmethod
    def from_config(cls, pusher: Any) -> TriggerRules:
        return cls(pusher.hf_deviation, pusher.credit_deviation, pusher.heartbeat_s)


@dataclass(frozen=True)
class Desired:
    """What the ledger says now for (account, chain), in registry units."""

    account: str  # lower case
    credit_usd6: int
    hf_1e9: int
    tier: int
    has_debt: bool


@dataclass(frozen=True)
class Planned:
    account: str
    entry: RegistryEntry
    priority: int
    reason: str
    # The slot is empty on chain: a zero -> non-zero SSTORE (the expensive kind).
    new_slot: bool
    # Sort key inside (priority, reason): larger = more urgent.
    weight: float = 0.0


@dataclass(frozen=True)
class GasModel:
    """Gas of update(bytes) by entry kind, for sizing a batch before eth_estimateGas.

    Measured on anvil (bench/push_gas.py): per entry ~24.4k for a new slot (cold
    SLOAD 2,100 + zero->non-zero SSTORE 20,000 + 52 calldata bytes + the EntryUpdated
    log) and ~7.3k for an existing one; fixed part ~31k (intrinsic 21,000, the
    keeper check, BatchApplied).
    """

    fixed: int = 35_000
    per_new: int = 26_000
    per_update: int = 9_000

    def cost(self, items: Iterable[Planned]) -> int:
        return self.fixed + sum(self.per_new if p.new_slot else self.per_update for p in items)


def next_as_of(base: RegistryEntry | None, chain_ts: int) -> int:
    """Chain time, so the vault's isFresh (asOf <= block.timestamp) holds as soon as it
    is mined; strictly newer than the baseline or the registry would skip it."""
    if base is None or chain_ts > base.as_of:
        return max(1, chain_ts)
    return base.as_of + 1


def _hf_moved(old: int, new: int, deviation: float) -> bool:
    if old == new:
        return False
    if HF_INFINITE in (old, new) or old == 0:
        return True
    return abs(new - old) / old >= deviation


def plan_entry(
    d: Desired, base: RegistryEntry | None, chain_ts: int, rules: TriggerRules
) -> Planned | None:
    entry = RegistryEntry(d.credit_usd6, d.hf_1e9, next_as_of(base, chain_ts), d.tier)
    if base is None:
        if not d.has_debt and d.credit_usd6 == 0:
            return None
        prio = URGENT if d.tier >= 2 else TRIGGER
        return Planned(d.account, entry, prio, "first", True, float(d.tier))
    if d.tier > base.tier:
        return Planned(d.account, entry, URGENT, "tier_down", False, float(d.tier - base.tier))
    if d.credit_usd6 < base.credit_usd6:
        cut = (base.credit_usd6 - d.credit_usd6) / max(base.credit_usd6, 1)
        return Planned(d.account, entry, URGENT, "credit_cut", False, cut)
    if _hf_moved(base.hf_1e9, d.hf_1e9, rules.hf_deviation):
        return Planned(d.account, entry, TRIGGER, "hf", False, 0.0)
    age = chain_ts - base.as_of
    if age >= rules.heartbeat_s:
        return Planned(d.account, entry, TRIGGER, "heartbeat", False, float(age))
    if d.tier < base.tier:
        return Planned(d.account, entry, TRIGGER, "tier_up", False, 0.0)
    up = d.credit_usd6 - base.credit_usd6
    if up > 0 and (base.credit_usd6 == 0 or up / base.credit_usd6 >= rules.credit_deviation):
        return Planned(d.account, entry, TRIGGER, "credit_up", False, up / max(base.credit_usd6, 1))
    if (d.credit_usd6, d.hf_1e9, d.tier) != (base.credit_usd6, base.hf_1e9, base.tier):
        # Smaller changes: worth carrying only when a batch goes anyway; the older the
        # entry, the sooner (it also postpones that account's heartbeat).
        return Planned(d.account, entry, RIDE_ALONG, "ride_along", False, float(age))
    return None


def plan_chain(
    desired: Iterable[Desired],
    baseline: Mapping[str, RegistryEntry | None],
    chain_ts: int,
    rules: TriggerRules,
    onchain_empty: Mapping[str, bool] | None = None,
) -> list[Planned]:
    """Every entry worth pushing, most urgent first. `onchain_empty[account]` says the
    slot is empty on chain (gas), when the baseline is an in-flight entry."""
    out: list[Planned] = []
    for d in desired:
        p = plan_entry(d, baseline.get(d.account), chain_ts, rules)
        if p is None:
            continue
        if onchain_empty is not None and onchain_empty.get(d.account, False) and not p.new_slot:
            p = Planned(p.account, p.entry, p.priority, p.reason, True, p.weight)
        out.append(p)
    out.sort(key=lambda p: (p.priority, _REASON_ORDER[p.reason], -p.weight, p.account))
    return out


def select_batch(planned: list[Planned], gas_budget: int, model: GasModel) -> list[Planned]:
    """The prefix of `planned` (already ordered) that fits `gas_budget`, or nothing when
    no entry is a trigger (ride-alongs alone never make a batch go)."""
    if not planned or planned[0].priority == RIDE_ALONG:
        return []
    batch: list[Planned] = []
    gas = model.fixed
    for p in planned:
        cost = model.per_new if p.new_slot else model.per_update
        if gas + cost > gas_budget:
            continue  # a cheaper entry (an existing slot) behind it may still fit
        batch.append(p)
        gas += cost
    return batch
