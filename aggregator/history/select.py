"""Which accounts a history run writes: a pure function over the ledger's arrays and
what was last written (docs/operations.md "History").

Rule: an account is a candidate when it has no point yet, its tier differs from its
last point's, or its HF or BP moved by more than the deadband relative to the last
point. Every tier change is written; the other candidates are written lowest HF first
up to the per-run cap, and the rest stay candidates for the next run (their last point
does not move, so nothing is lost, only delayed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

NEVER = -1  # tier code of an account with no point yet
# BP below this many USD is noise for the relative deadband.
BP_FLOOR_USD = 1.0


@dataclass
class LastWritten:
    """Per account index: the figures of its last point (tier NEVER: none yet)."""

    hf: NDArray[np.float64]
    bp: NDArray[np.float64]
    tier: NDArray[np.int8]

    @classmethod
    def empty(cls, n: int = 0) -> LastWritten:
        return cls(np.full(n, np.nan), np.full(n, np.nan), np.full(n, NEVER, np.int8))

    def grown(self, n: int) -> LastWritten:
        """The same, covering at least `n` accounts (new ones have no point)."""
        have = self.tier.size
        if have >= n:
            return self
        extra = LastWritten.empty(n - have)
        return LastWritten(
            np.concatenate([self.hf, extra.hf]),
            np.concatenate([self.bp, extra.bp]),
            np.concatenate([self.tier, extra.tier]),
        )

    def update(
        self, idx: NDArray[np.int64], hf: NDArray[np.float64], bp: NDArray[np.float64],
        tier: NDArray[np.int8],
    ) -> None:  # fmt: skip
        self.hf[idx] = hf[idx]
        self.bp[idx] = bp[idx]
        self.tier[idx] = tier[idx]


def relative_move(
    now: NDArray[np.float64], last: NDArray[np.float64], floor: float
) -> NDArray[np.float64]:
    """|now - last| / max(|last|, floor); 0 where equal (infinities too), +inf where
    exactly one side is infinite or NaN."""
    with np.errstate(invalid="ignore", over="ignore"):
        out = np.abs(now - last) / np.maximum(np.abs(last), floor)
    same = now == last
    out = np.where(same, 0.0, out)
    return np.where(np.isnan(out), np.inf, out)


def choose(
    hf: NDArray[np.float64],
    bp: NDArray[np.float64],
    tier: NDArray[np.int8],
    last: LastWritten,
    *,
    hf_deadband: float,
    bp_deadband: float,
    cap: int,
) -> tuple[NDArray[np.int64], int]:
    """(account indices to write, in ascending order; how many candidates were deferred)."""
    n = tier.size
    lt, lhf, lbp = last.tier[:n], last.hf[:n], last.bp[:n]
    # An account whose tier, HF and BP all equal its last point's (bit for bit; a NaN
    # never equals) has moved by 0, within any deadband >= 0: only the others can be
    # candidates, so when they are few (a steady book between price moves) the rule
    # runs on them alone, not on every account.
    cand: NDArray[np.int64] | None = None
    if hf_deadband >= 0 and bp_deadband >= 0:
        differs = np.flatnonzero((tier != lt) | (lt == NEVER) | (hf != lhf) | (bp != lbp))
        if differs.size * 4 < n:
            cand = differs
    t_now, h_now, b_now = tier, hf, bp
    if cand is not None:
        t_now, lt = tier[cand], lt[cand]
        h_now, lhf, b_now, lbp = hf[cand], lhf[cand], bp[cand], lbp[cand]
    new = lt == NEVER
    tier_changed = ~new & (t_now != lt)
    moved = (relative_move(h_now, lhf, 1e-12) > hf_deadband) | (
        relative_move(b_now, lbp, BP_FLOOR_USD) > bp_deadband
    )
    must = np.flatnonzero(tier_changed)
    rest = np.flatnonzero(~tier_changed & (new | moved))
    if cand is not None:
        must, rest = cand[must], cand[rest]
    room = max(0, cap - must.size)
    if rest.size > room:
        # Riskiest first: lowest HF (NaN last); stable so equal HFs keep index order.
        order = np.argsort(np.nan_to_num(hf[rest], nan=np.inf), kind="stable")
        deferred = rest.size - room
        rest = rest[order[:room]]
    else:
        deferred = 0
    return np.sort(np.concatenate([must, rest])).astype(np.int64), int(deferred)
