"""Trigger rules, priorities and gas-sized batches for one chain (pure, no I/O).

Per (account, chain), against the baseline (the newest entry in flight, else what the
listener read on chain):

| trigger | priority |
| --- | --- |
| tier got worse (healthy -> warning -> liquidatable -> insolvent) | 0, at once |
| credit on chain above the account's share (`ceiling`) | 0, at once |
| nothing on chain yet, and the account has debt or credit | 1 (0 if liquidatable) |
| HF moved by >= hf_deviation (relative), or between finite and infinite | 1 |
| tier got better | 1 |
| credit went up by >= credit_deviation (relative; any increase from 0) | 1 |
| on-chain entry older than heartbeat_s (chain time) | 1 |
| `ride_along_fraction` of a trigger (HF, credit, heartbeat age), or another tier | 2: rides along |

Inside a priority the worst news goes first (`_REASON_ORDER`, then the weight): a
larger tier step, a larger credit cut (to 0.1 point), an HF move that took more of the
margin to liquidation (`margin_lost`); between equal tier steps and cuts, the larger
margin lost. When more accounts changed than the next block's gas holds, the batches
sent first, and so mined first, carry them.

A batch goes only when at least one entry has priority 0 or 1; it is then filled with
ride-alongs in order until the gas budget is used. With `ride_along_fraction` f > 0,
smaller differences wait: every entry in a batch costs ~6.5k gas, and in a calm market
nearly every account differs a little from what is on chain every cycle
(bench/push_economy.py).

Credit buffer (`credit_buffer` = b): the credit pushed is the share x (1 - b), never
more than the share (`Desired.ceiling_usd6`). A fall of the share by less than b leaves
what is on chain still at or below it: nothing to push (it rides along with the next
batch). Only a fall past the buffer, on-chain credit above the share, goes at once. The
safety property is unchanged: the credit a vault can spend is never above the account's
share of its true BP. With b = 0 the ceiling is the pushed credit and any decrease
goes at once (the rule before the buffer).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from chains.registry_codec import HF_INFINITE, HF_ONE, RegistryEntry

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
    credit_buffer: float = 0.0
    # A difference rides along when it is at least this fraction of a trigger (0: any).
    ride_along_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.credit_buffer < 1:
            raise ValueError(f"credit_buffer must be in [0, 1), got {self.credit_buffer}")
        if not 0 <= self.ride_along_fraction <= 1:
            raise ValueError(
                f"ride_along_fraction must be in [0, 1], got {self.ride_along_fraction}"
            )

    @classmethod
    def from_config(cls, pusher: Any) -> TriggerRules:
        return cls(
            pusher.hf_deviation,
            pusher.credit_deviation,
            pusher.heartbeat_s,
            pusher.credit_buffer,
            pusher.ride_along_fraction,
        )


def buffered_credit(share: NDArray[np.int64], buffer: float) -> NDArray[np.int64]:
    """The credit pushed for a share: share x (1 - buffer), rounded down, never above the
    share (float rounding cannot lift it over)."""
    if buffer == 0:
        return share
    cut = np.floor(share.astype(np.float64) * (1.0 - buffer)).astype(np.int64)
    return np.minimum(cut, share)


@dataclass(frozen=True)
class Desired:
    """What the ledger says now for (account, chain), in registry units."""

    account: str  # lower case
    credit_usd6: int  # what to push
    hf_1e9: int
    tier: int
    has_debt: bool
    # The account's share of its true BP on this chain: on-chain credit above it goes
    # at once. None: the pushed credit itself (no buffer).
    ceiling_usd6: int | None = None

    @property
    def ceiling(self) -> int:
        return self.credit_usd6 if self.ceiling_usd6 is None else self.ceiling_usd6


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
    # Between equal weights, larger first: the share of the margin to liquidation the
    # HF move took (margin_lost), for the urgent reasons.
    then: float = 0.0


@dataclass(frozen=True)
class GasModel:
    """Gas of update(bytes) by entry kind, for sizing a batch before eth_estimateGas.

    Measured on anvil (bench/push_gas.py, batch of 200): per entry ~23.0k for a new
    slot (cold SLOAD 2,100 + zero->non-zero SSTORE 20,000 + 52 calldata bytes + ~280 of
    loop and batch hash) and ~5.9k for an existing one; fixed part ~26k (intrinsic
    21,000, the keeper check, BatchApplied). Rounded up: the estimate prices the
    exact batch anyway.
    """

    fixed: int = 30_000
    per_new: int = 24_000
    per_update: int = 6_500

    def cost(self, items: Iterable[Planned]) -> int:
        return self.fixed + sum(self.per_new if p.new_slot else self.per_update for p in items)


def next_as_of(base: RegistryEntry | None, chain_ts: int, limit: int | None = None) -> int | None:
    """Chain time, so the vault's isFresh (asOf <= block.timestamp) holds as soon as it
    is mined; strictly newer than the baseline or the registry would skip it.

    A baseline already at the head's second (pushed in this block, or in flight) needs
    a later second, which is only fresh in a block at least that late: allowed up to
    `limit` (the latest asOf a block mined now would take as fresh: `as_of_limit`;
    None: `default_limit`), else None, and the entry waits for the clocks. On a chain with
    sub-second blocks every block of a second shares its timestamp; pushing the same
    account again within it would put asOf in the future, where the vault refuses it
    (no liquidation) until the chain's clock reaches it, and each further push would
    move it one second further."""
    if base is None or chain_ts > base.as_of:
        return max(1, chain_ts)
    if base.as_of + 1 > default_limit(chain_ts, limit):
        return None
    return base.as_of + 1


# Our clock's second is only used once a whole further second has passed: a block
# mined at the turn of a second (the transaction sent just after it) still carries
# the previous one. Measured: without it a 2020-03 replay at 0.5-s blocks had 7 of 511
# mined liquidation attempts revert `Stale` (an entry a second ahead of its block).
CLOCK_MARGIN_S = 1


def as_of_limit(chain_ts: int, now: float) -> int:
    """The latest asOf a block mined now takes as fresh, whatever the chain's block
    time: the head's second, or our own clock's second less CLOCK_MARGIN_S when later.
    Any next block is at least as late as both: a chain with fixed block times (12 s
    on Ethereum) mines its next one later still, a chain that mines on demand (anvil's
    automine, an idle L2) takes the node's clock then, and one with sub-second blocks
    stays in the head's second until the clock turns. (A limit from the chain's mean
    block time would over-reach on an on-demand chain that was idle.) A node clock
    behind ours by more than the margin can make an entry that many seconds early,
    never more."""
    return max(chain_ts, math.floor(now) - CLOCK_MARGIN_S)


def default_limit(chain_ts: int, limit: int | None) -> int:
    """`limit`, or for a caller without a clock (tests, benchmarks): the head's next
    second, which a chain whose blocks are at least a second apart always reaches.
    The daemon always passes `as_of_limit`."""
    return chain_ts + 1 if limit is None else limit


def _hf_moved(old: int, new: int, deviation: float) -> bool:
    if old == new:
        return False
    if HF_INFINITE in (old, new) or old == 0:
        return True
    return abs(new - old) / old >= deviation


def margin_lost(old: int, new: int) -> float:
    """The share of an account's margin to liquidation (HF 1) that an HF move took, in
    [-1, 1]: the `hf` trigger's weight. A fall from 1.05 to 1.01 took 0.8 of it, one from
    5.0 to 4.8 took 0.05: when a price move changes more accounts than the next block
    holds, those whose HF fell furthest towards liquidation go first. (A uniform price
    move lowers every HF by the same fraction, so the fraction alone would not order
    them.) A rise is negative (after every fall); debt appearing (HF from infinite) is
    1, debt repaid (to infinite) -1."""
    if old == new:
        return 0.0
    if new == HF_INFINITE:
        return -1.0
    if old == HF_INFINITE or old <= HF_ONE:
        return 1.0 if new < old else -1.0
    return max(-1.0, min(1.0, (old - new) / (old - HF_ONE)))


def plan_entry(
    d: Desired,
    base: RegistryEntry | None,
    chain_ts: int,
    rules: TriggerRules,
    limit: int | None = None,
) -> Planned | None:
    """The push `d` needs against `base` (in flight, else on chain), or None; None too
    while its asOf would be ahead of the chain's clock (next_as_of, `limit`)."""
    as_of = next_as_of(base, chain_ts, limit)
    if as_of is None:
        return None
    entry = RegistryEntry(d.credit_usd6, d.hf_1e9, as_of, d.tier)
    if base is None:
        return _plan_first(d, entry)
    urgent = _plan_urgent(d, base, entry)
    if urgent is not None:
        return urgent
    return _plan_trigger(d, base, entry, chain_ts, rules)


def _plan_first(d: Desired, entry: RegistryEntry) -> Planned | None:
    """Nothing on chain yet: worth a slot only when there is debt or credit."""
    if not d.has_debt and d.credit_usd6 == 0:
        return None
    prio = URGENT if d.tier >= 2 else TRIGGER
    return Planned(d.account, entry, prio, "first", True, float(d.tier))


def _plan_urgent(d: Desired, base: RegistryEntry, entry: RegistryEntry) -> Planned | None:
    """The bad news that goes at once: a worse tier, less credit."""
    if d.tier > base.tier:
        step, then = float(d.tier - base.tier), margin_lost(base.hf_1e9, d.hf_1e9)
        return Planned(d.account, entry, URGENT, "tier_down", False, step, then)
    if base.credit_usd6 > d.ceiling:
        cut = cut_weight(base.credit_usd6, d.credit_usd6)
        then = margin_lost(base.hf_1e9, d.hf_1e9)
        return Planned(d.account, entry, URGENT, "credit_cut", False, cut, then)
    return None


def cut_weight(old: int, new: int) -> float:
    """A credit cut's weight: the relative cut, to 0.1 percentage point. A uniform price
    move cuts every share by about the same fraction; equal to that precision, the
    account whose HF fell furthest towards liquidation goes first (`then`)."""
    return round((old - new) / max(old, 1), 3)


def _plan_trigger(
    d: Desired, base: RegistryEntry, entry: RegistryEntry, chain_ts: int, rules: TriggerRules
) -> Planned | None:
    """No urgent news: the triggers in their order, else a ride-along for any change."""
    if _hf_moved(base.hf_1e9, d.hf_1e9, rules.hf_deviation):
        return Planned(d.account, entry, TRIGGER, "hf", False, margin_lost(base.hf_1e9, d.hf_1e9))
    age = chain_ts - base.as_of
    if age >= rules.heartbeat_s:
        return Planned(d.account, entry, TRIGGER, "heartbeat", False, float(age))
    if d.tier < base.tier:
        return Planned(d.account, entry, TRIGGER, "tier_up", False, 0.0)
    up = d.credit_usd6 - base.credit_usd6
    if up > 0 and (base.credit_usd6 == 0 or up / base.credit_usd6 >= rules.credit_deviation):
        return Planned(d.account, entry, TRIGGER, "credit_up", False, up / max(base.credit_usd6, 1))
    if _worth_riding(d, base, age, rules):
        # Smaller changes: worth carrying only when a batch goes anyway; the older the
        # entry, the sooner (it also postpones that account's heartbeat).
        return Planned(d.account, entry, RIDE_ALONG, "ride_along", False, float(age))
    return None


def _worth_riding(d: Desired, base: RegistryEntry, age: int, rules: TriggerRules) -> bool:
    """At least `ride_along_fraction` of some trigger: smaller differences wait for
    their own trigger."""
    if (d.credit_usd6, d.hf_1e9, d.tier) == (base.credit_usd6, base.hf_1e9, base.tier):
        return False
    f = rules.ride_along_fraction
    if f == 0 or d.tier != base.tier or age >= rules.heartbeat_s * f:
        return True
    if _hf_moved(base.hf_1e9, d.hf_1e9, rules.hf_deviation * f):
        return True
    moved = abs(d.credit_usd6 - base.credit_usd6)
    return base.credit_usd6 == 0 or moved / base.credit_usd6 >= rules.credit_deviation * f


def plan_chain(
    desired: Iterable[Desired],
    baseline: Mapping[str, RegistryEntry | None],
    chain_ts: int,
    rules: TriggerRules,
    onchain_empty: Mapping[str, bool] | None = None,
    *,
    limit: int | None = None,
) -> list[Planned]:
    """Every entry worth pushing, most urgent first. `onchain_empty[account]` says the
    slot is empty on chain (gas), when the baseline is an in-flight entry; `limit`:
    next_as_of."""
    out: list[Planned] = []
    for d in desired:
        p = plan_entry(d, baseline.get(d.account), chain_ts, rules, limit)
        if p is None:
            continue
        if onchain_empty is not None and onchain_empty.get(d.account, False) and not p.new_slot:
            p = dataclasses.replace(p, new_slot=True)
        out.append(p)
    out.sort(key=plan_order)
    return out


def plan_order(p: Planned) -> tuple[int, int, float, float, str]:
    """The order of a plan: priority, then the reason, then the larger weight first."""
    return (p.priority, _REASON_ORDER[p.reason], -p.weight, -p.then, p.account)


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


def plan_batches(
    planned: list[Planned], gas_budget: int, model: GasModel, max_batches: int
) -> list[list[Planned]]:
    """Up to `max_batches` batches, each `select_batch` of what the ones before left (in
    the plan's order, so the first batch carries the most urgent entries). Stops when
    only ride-alongs are left: they never make a batch go alone."""
    out: list[list[Planned]] = []
    rest = planned
    while len(out) < max_batches:
        batch = select_batch(rest, gas_budget, model)
        if not batch:
            break
        out.append(batch)
        taken = {p.account for p in batch}
        rest = [p for p in rest if p.account not in taken]
    return out


class OnchainArrays:
    """What the listener holds on chain, per account of the book, as arrays aligned with
    the engine's account index: the trigger rules can then skip, in one vectorised
    pass, every account that has nothing to push (the common case) and the per-account
    rules above only run for the rest. Updated from the listener's changed accounts."""

    def __init__(self) -> None:
        self.n = 0
        self.present = np.zeros(0, np.bool_)
        self.credit = np.zeros(0, np.int64)  # saturated at int64 (engine credit is int64)
        self.hf = np.zeros(0, np.uint64)
        self.tier = np.zeros(0, np.int64)
        self.as_of = np.zeros(0, np.int64)

    def _grow(self, n: int) -> None:
        if n <= self.present.size:
            return
        cap = max(n, 2 * self.present.size, 1024)
        for name in ("present", "credit", "hf", "tier", "as_of"):
            old = getattr(self, name)
            new = np.zeros(cap, old.dtype)
            new[: old.size] = old
            setattr(self, name, new)

    def _set(self, i: int, e: RegistryEntry | None) -> None:
        if e is None:
            self.present[i] = False
            self.credit[i] = self.hf[i] = self.tier[i] = self.as_of[i] = 0
            return
        self.present[i] = True
        self.credit[i] = min(e.credit_usd6, _INT64_MAX)
        self.hf[i] = e.hf_1e9
        self.tier[i] = e.tier
        self.as_of[i] = e.as_of

    def sync(
        self,
        entries: Mapping[str, RegistryEntry | None],
        changed: Iterable[str] | None,
        index: Mapping[str, int],
        addresses: Sequence[str],
        n: int,
    ) -> None:
        """`changed` None: every account may have changed (a full read)."""
        self._grow(n)
        if changed is None:
            for i in range(n):
                self._set(i, entries.get(addresses[i]))
        else:
            for a in changed:
                k = index.get(a)
                if k is not None and k < self.n:
                    self._set(k, entries.get(a))
            for i in range(self.n, n):  # accounts new to the book
                self._set(i, entries.get(addresses[i]))
        self.n = n


_INT64_MAX = 2**63 - 1
_HF_INF_U64 = np.uint64(HF_INFINITE)


def hf_fixed_array(hf: NDArray[np.float64]) -> NDArray[np.uint64]:
    """hf_to_fixed over an array (same rounding and saturation, bit for bit)."""
    if np.isnan(hf).any() or (hf < 0).any():
        bad = hf[np.isnan(hf) | (hf < 0)][0]
        raise ValueError(f"hf must be >= 0 or infinite, got {float(bad)!r}")
    x = hf * float(HF_ONE)
    out = np.full(hf.shape, HF_INFINITE - 1, np.uint64)
    fin = x < 2.0**64  # float(2**64 - 1) == 2**64: anything at or above saturates
    out[fin] = x[fin].astype(np.uint64)
    out[np.isinf(hf)] = _HF_INF_U64
    return out


def candidates(
    base: OnchainArrays,
    *,
    credit: NDArray[np.int64],
    hf: NDArray[np.uint64],
    tier: NDArray[np.int64],
    has_debt: NDArray[np.bool_],
    chain_ts: int,
    rules: TriggerRules,
) -> NDArray[np.int64]:
    """Indices of the accounts for which plan_entry (against what is on chain) may return
    something: everything but its two cheap `None` cases (empty slot with no debt and
    no credit; an entry equal to the ledger's that is not due a heartbeat). A superset:
    plan_entry also declines differences too small to ride along."""
    n = credit.size
    present = base.present[:n]
    differs = (credit != base.credit[:n]) | (hf != base.hf[:n]) | (tier != base.tier[:n])
    due = (chain_ts - base.as_of[:n]) >= rules.heartbeat_s
    first = ~present & (has_debt | (credit != 0))
    return np.flatnonzero(first | (present & (differs | due)))
