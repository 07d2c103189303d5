"""EIP-1559 fees from the node's eth_feeHistory, and replacement bumps.

max priority fee: the `fee_percentile` reward of recent blocks (median of the
non-zero ones), at least `min_priority_fee_wei`. max fee: twice the next block's
base fee (survives six full blocks of +12.5% each) plus the priority fee, never above
the configured cap. Integer wei throughout.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from chains.rpc import RpcClient


@dataclass(frozen=True)
class Fees:
    max_fee: int
    priority_fee: int
    base_fee: int
    capped: bool = False


def _int(value: Any) -> int:
    return int(str(value), 16)


def fees_from_history(history: dict[str, Any], *, min_priority: int, cap: int) -> Fees:
    bases = history.get("baseFeePerGas") or []
    if not bases:
        raise ValueError("eth_feeHistory returned no baseFeePerGas")
    # The last element is the base fee of the block after the newest one returned.
    next_base = _int(bases[-1])
    rewards = [_int(r[0]) for r in history.get("reward") or [] if r]
    nonzero = [r for r in rewards if r > 0]
    priority = max(min_priority, int(statistics.median(nonzero)) if nonzero else 0)
    max_fee = 2 * next_base + priority
    capped = max_fee > cap
    max_fee = min(max_fee, cap)
    return Fees(max_fee, min(priority, max_fee), next_base, capped)


async def suggest_fees(
    client: RpcClient,
    *,
    min_priority: int,
    cap: int,
    blocks: int = 10,
    percentile: float = 50.0,
) -> Fees:
    history = await client.request("eth_feeHistory", [hex(blocks), "latest", [percentile]])
    if not isinstance(history, dict):
        raise ValueError(f"malformed eth_feeHistory answer: {str(history)[:80]}")
    return fees_from_history(history, min_priority=min_priority, cap=cap)


def bump(value: int, fee_bump: float) -> int:
    """value * (1 + fee_bump), rounded up, exact (no float drift below the minimum)."""
    factor = 1 + Fraction(str(fee_bump))
    return -((-value * factor.numerator) // factor.denominator)


@dataclass(frozen=True)
class Replacement:
    max_fee: int
    priority_fee: int
    # False when the cap stops a valid bump: the node would refuse it as underpriced.
    valid: bool


def replacement_fees(
    old_max: int, old_priority: int, current: Fees, *, fee_bump: float, cap: int
) -> Replacement:
    """Both fees raised by at least `fee_bump` (and at least to the current suggestion),
    within `cap`."""
    need_max = bump(old_max, fee_bump)
    need_prio = bump(old_priority, fee_bump)
    max_fee = min(cap, max(need_max, current.max_fee))
    priority = min(max_fee, max(need_prio, current.priority_fee))
    return Replacement(max_fee, priority, max_fee >= need_max and priority >= need_prio)
