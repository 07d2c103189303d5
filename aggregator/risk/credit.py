"""Per-chain credit allocation: DESIGN.md "Per-chain credit allocation".

Each account's borrowing power becomes a USD6 budget (`usd6_floor`), split over the
chains by static weight shares or, under the demand policy, shares that lean towards
the chains where the account consumed credit within the demand window. A degraded
account's credit per chain is min(new, previous): bad prices never raise it.

Invariants: sum over chains of credit <= budget <= BP (floors, then any float excess
taken back); every figure is an int64 below CREDIT_CAP_USD6; a chain of weight 0
gets nothing. The result of an allocation becomes the `previous` of the next one.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from aggregator.config import CreditConfig
from aggregator.risk.pool import grown
from chains.units import USD6

# HealthRegistry stores credit as uint128 USD6; the engine works in int64 and caps the
# per-account budget here (4.6e12 USD), far above any real account, so the int64
# arithmetic that guarantees sum(credit) <= BP can never overflow.
CREDIT_CAP_USD6 = 2**62

Demand = dict[int, tuple[NDArray[np.float64], NDArray[np.float64]]]


def usd6_floor(x: NDArray[np.float64]) -> NDArray[np.int64]:
    """floor(x * 10**6) that never exceeds the exact product, so credit <= the float BP.

    Below 2**52 micro-dollars (4.5e9 USD) it is exact: a Veltkamp split (39 + 14 bits)
    makes both partial products exact and the sign of the remainder decides the floor.
    Above, integers are sparse in float64; the product is shrunk by 2**-50 (well over
    its rounding error) and truncated, which stays below the exact value.
    """
    v = np.clip(np.asarray(x, np.float64), 0.0, CREDIT_CAP_USD6 / USD6)
    c = v * 16385.0
    hi = c - (c - v)
    lo = v - hi
    a = hi * USD6
    b = lo * USD6
    f = np.floor(a + b)
    a -= f
    a += b
    f[a < 0] -= 1.0
    big = f >= 2.0**52
    if big.any():
        f[big] = np.floor((a[big] + f[big]) * (1.0 - 2.0**-50))
    return np.clip(f, 0, CREDIT_CAP_USD6).astype(np.int64)


@dataclass(frozen=True)
class Split:
    """One allocation of some accounts (rows aligned with them, columns = chains)."""

    credit: NDArray[np.int64]
    raw: NDArray[np.int64]  # before the degraded cap
    demand: Demand  # {row: (consumption per chain, shares)} for demand-policy rows
    budget: NDArray[np.int64]


class CreditAllocator:
    """Weights, demand windows and the credit (and previous credit) per account."""

    def __init__(self, chains: Sequence[str], cfg: CreditConfig) -> None:
        self.cfg = cfg
        self.chains = list(chains)
        self.chain_index = {c: i for i, c in enumerate(self.chains)}
        for name, weight in cfg.weights.items():
            if name not in self.chain_index:
                raise ValueError(f"credit.weights.{name}: unknown chain {name!r}")
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"credit.weights.{name}: must be finite and >= 0, got {weight}")
        C = len(self.chains)
        w = np.array([cfg.weights.get(c, 1.0) for c in self.chains], float)
        self.weights = w
        self.static_share = w / w.sum() if w.sum() > 0 else np.zeros(C)
        self._demand: dict[int, deque[tuple[float, int, float]]] = {}
        self.credit = np.zeros((0, C), np.int64)
        self.prev_credit = np.zeros((0, C), np.int64)

    def resize(self, cap: int) -> None:
        self.credit = grown(self.credit, cap, 0, np.int64)
        self.prev_credit = grown(self.prev_credit, cap, 0, np.int64)

    def consumption_chain(self, address: str, chain: str, usd: float) -> int:
        """The chain index of a valid consumption record (checked before the account
        is created)."""
        c = self.chain_index.get(chain)
        if c is None:
            raise KeyError(f"consumption: unknown chain {chain!r}")
        if not math.isfinite(usd) or usd < 0:
            raise ValueError(f"consumption on {chain} for {address}: usd must be >= 0, got {usd}")
        return c

    def record_consumption(self, a: int, c: int, usd: float, ts: float) -> None:
        """Account `a` consumed `usd` of credit on chain `c` at `ts` (Borrowed/Withdrawn)."""
        self._demand.setdefault(a, deque()).append((float(ts), c, float(usd)))

    def _demand_of(self, a: int, now: float) -> NDArray[np.float64]:
        u = np.zeros(len(self.chains))
        q = self._demand.get(a)
        if not q:
            return u
        horizon = now - self.cfg.demand_window_s
        while q and q[0][0] < horizon:
            q.popleft()
        if not q:
            del self._demand[a]
            return u
        for ts, c, usd in q:
            if ts <= now:
                u[c] += usd
        return u

    def shares(self, acc: NDArray[np.int64], now: float) -> Demand:
        """Demand-policy shares for the accounts (positions in `acc`) that consumed
        credit within the window. Every other account uses the static shares."""
        out: Demand = {}
        if self.cfg.policy != "demand" or not self._demand:
            return out
        s = self.cfg.demand_share
        cand = np.fromiter(self._demand.keys(), np.int64, len(self._demand))
        for i in np.flatnonzero(np.isin(acc, cand)).tolist():
            u = self._demand_of(int(acc[i]), now)
            u[self.weights <= 0] = 0.0  # a chain with weight 0 gets no credit at all
            if u.sum() > 0:
                out[i] = (u, (1.0 - s) * self.static_share + s * u / u.sum())
        return out

    def split(
        self,
        acc: NDArray[np.int64],
        bp: NDArray[np.float64],
        degraded: NDArray[np.bool_],
        now: float,
    ) -> Split:
        """The allocation of accounts `acc` with borrowing power `bp` (nothing stored)."""
        budget = usd6_floor(bp)
        budget_f = budget.astype(np.float64)
        demand = self.shares(acc, now)
        n, C = acc.size, len(self.chains)
        raw = np.empty((C, n), np.int64)
        for c in range(C):
            raw[c] = np.floor(budget_f * self.static_share[c])
        for i, (_u, share) in demand.items():
            raw[:, i] = np.floor(budget_f[i] * share)
        # Float products can land one unit high; take any excess back, largest chain first.
        excess = raw.sum(axis=0) - budget
        while (excess > 0).any():
            over = np.flatnonzero(excess > 0)
            col = np.argmax(raw[:, over], axis=0)
            take = np.minimum(excess[over], raw[col, over])
            raw[col, over] -= take
            excess[over] -= take
        raw_t = raw.T
        credit = raw_t.copy()
        dg = np.flatnonzero(degraded)
        if dg.size:
            credit[dg] = np.minimum(raw_t[dg], self.prev_credit[acc[dg]])
        return Split(credit, raw_t, demand, budget)

    def allocate(
        self,
        where: slice | NDArray[np.int64],
        acc: NDArray[np.int64],
        bp: NDArray[np.float64],
        degraded: NDArray[np.bool_],
        now: float,
    ) -> None:
        """Allocate and store the credit of accounts `acc` (`where` indexes the same
        rows, a slice when they are contiguous); it becomes their previous credit."""
        credit = self.split(acc, bp, degraded, now).credit
        self.credit[where] = credit
        self.prev_credit[where] = credit

    def set_previous(self, a: int, address: str, credit_usd6: Mapping[str, int]) -> None:
        """What is on chain for account `a`: the cap of its next degraded allocation."""
        for chain, v in credit_usd6.items():
            c = self.chain_index.get(chain)
            if c is None:
                raise KeyError(f"previous credit for {address}: unknown chain {chain!r}")
            if type(v) is not int or v < 0:
                raise ValueError(f"previous credit for {address} on {chain}: must be an int >= 0")
            self.prev_credit[a, c] = min(v, CREDIT_CAP_USD6)

    def credit_of(self, a: int) -> dict[str, int]:
        return {c: int(self.credit[a, i]) for i, c in enumerate(self.chains)}


__all__ = ["CREDIT_CAP_USD6", "CreditAllocator", "Split", "usd6_floor"]
