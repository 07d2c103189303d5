"""HistoryRecorder: the `history` and `prune_risk_history` jobs (I/O beside the pure
selection in select.py).

Invariants:
- Reads the ledger only through `LedgerView` (read-only arrays), once per run; writes
  only through `HistoryRepo`.
- Nothing is recorded before the first price refresh (no risk figure exists yet), nor
  on an instance that is not the recording one (cluster mode: the holder of the first
  chain's index lease, so two instances never write the same buckets).
- After a restart the first run compares with the store's newest points, so an
  account that moved while the daemon was down gets a point, and one that did not
  gets none.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray

from aggregator.history.config import HistoryConfig
from aggregator.history.select import LastWritten, choose
from aggregator.metrics import Metrics
from aggregator.risk.view import LedgerView
from aggregator.store.history_repo import AccountPoint, HistoryRepo
from chains.units import TIERS

log = logging.getLogger(__name__)

# (book indices) -> the pushed model's requirement in USD, or None (not evaluated).
PushedRequirement = Callable[[NDArray[np.int64]], NDArray[np.float64] | None]


@numba.njit(cache=True, nogil=True)
def _tier_sums(
    tier: NDArray[np.int8], coll: NDArray[np.float64], debt: NDArray[np.float64],
    bp: NDArray[np.float64], k: int,
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:  # pragma: no cover - compiled  # fmt: skip
    """Per tier code: the account count and the sums of coll, debt and finite bp (a
    non-finite BP adds 0.0), in one pass over the accounts in index order from 0.0:
    bit for bit the bincounts they replaced (np.bincount adds the same way), without
    their three passes and the int64 and np.where temporaries."""
    counts = np.zeros(k, np.int64)
    out = np.zeros((3, k))
    for i in range(tier.size):
        t = np.int64(tier[i])
        if t < 0:
            raise ValueError("negative tier code")  # as np.bincount
        if t >= k:
            continue  # a bincount bin past the tiers, which the sample never read
        counts[t] += 1
        out[0, t] += coll[i]
        out[1, t] += debt[i]
        b = bp[i]
        out[2, t] += b if np.isfinite(b) else 0.0
    return counts, out


def system_sample(
    view: LedgerView,
    n: int,
    *,
    hf: NDArray[np.float64],
    bp: NDArray[np.float64],
    tier: NDArray[np.int8],
    coll: NDArray[np.float64],
    debt: NDArray[np.float64],
) -> dict[str, Any]:
    """The book's totals: per tier accounts, collateral, debt and BP; per chain
    collateral, debt and credit; and the totals (vectorised)."""
    k = len(TIERS)
    counts, per_tier = _tier_sums(tier, coll, debt, bp, k)
    sums = {"collateral_usd": per_tier[0], "debt_usd": per_tier[1], "bp_usd": per_tier[2]}
    tiers = {
        name: {
            "accounts": int(counts[i]),
            "accounts_max": int(counts[i]),
            **{key: float(arr[i]) for key, arr in sums.items()},
        }
        for i, name in enumerate(TIERS)
    }
    chains = {
        c: {
            "collateral_usd": cd[0],
            "debt_usd": cd[1],
            "credit_usd": float(view.credit_array(c, n).sum()) / 1e6,
        }
        for c, cd in view.chain_values_usd().items()
    }
    total = {"accounts": int(n), **{key: float(arr.sum()) for key, arr in sums.items()}}
    return {"total": total, "tiers": tiers, "chains": chains}


class HistoryRecorder:
    def __init__(
        self,
        cfg: HistoryConfig,
        repo: HistoryRepo,
        view: LedgerView,
        *,
        metrics: Metrics,
        ready: Callable[[], bool],
        recording: Callable[[], bool] = lambda: True,
        model: str = "standard",
        pushed_requirement: PushedRequirement = lambda _idx: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.repo = repo
        self.view = view
        self.metrics = metrics
        self.model = model
        self._ready = ready
        self._recording = recording
        self._pushed_requirement = pushed_requirement
        self._clock = clock
        self._steps = [lv.step_s for lv in cfg.levels]
        self._last: LastWritten | None = None

    async def _load_last(self) -> LastWritten:
        stored = await self.repo.last_points(self._steps[0])
        index = self.view.account_index
        last = LastWritten.empty(self.view.n_accounts)
        for account, (hf, bp, tier) in stored.items():
            i = index.get(account)
            if i is not None and i < last.tier.size:
                last.hf[i], last.bp[i], last.tier[i] = hf, bp, tier
        return last

    async def run(self) -> None:
        """The `history` job: one system sample and the accounts that moved."""
        if not self._ready() or not self._recording():
            return
        started = time.perf_counter()
        if self._last is None:
            self._last = await self._load_last()
        now = self._clock()
        view = self.view
        n = view.n_accounts
        # Copies: the ledger may move while the writes below await the store.
        hf = np.array(view.hf_array(n), np.float64)
        bp = np.array(view.bp_array(n), np.float64)
        tier = np.array(view.tier_array(n), np.int8)
        last = self._last = self._last.grown(n)
        # The whole-book passes in a worker thread (numpy releases the GIL), so the API
        # is not paused for them; a position applied meanwhile moves one display total.
        # `last` changes only below, after the thread is done.
        coll, debt, system, (idx, deferred) = await asyncio.to_thread(
            self._sample, n, hf, bp, tier, last
        )
        points = self._points(idx, hf=hf, bp=bp, tier=tier, coll=coll, debt=debt)
        await self.repo.write(now, self._steps, system, points, batch=self.cfg.write_batch)
        last.update(idx, hf, bp, tier)
        self.metrics.history_points.inc(len(points))
        self.metrics.history_deferred.set(deferred)
        self.metrics.history_run_seconds.set(time.perf_counter() - started)

    def _sample(
        self,
        n: int,
        hf: NDArray[np.float64],
        bp: NDArray[np.float64],
        tier: NDArray[np.int8],
        last: LastWritten,
    ) -> tuple[
        NDArray[np.float64], NDArray[np.float64], dict[str, Any], tuple[NDArray[np.int64], int]
    ]:
        """Values, the system sample and the accounts to write (worker thread)."""
        coll, debt = (np.asarray(a, np.float64) for a in self.view.values_usd(n))
        system = system_sample(self.view, n, hf=hf, bp=bp, tier=tier, coll=coll, debt=debt)
        chosen = choose(
            hf, bp, tier, last,
            hf_deadband=self.cfg.hf_deadband, bp_deadband=self.cfg.bp_deadband,
            cap=self.cfg.max_accounts_per_bucket,
        )  # fmt: skip
        return coll, debt, system, chosen

    def _points(
        self,
        idx: NDArray[np.int64],
        *,
        hf: NDArray[np.float64],
        bp: NDArray[np.float64],
        tier: NDArray[np.int8],
        coll: NDArray[np.float64],
        debt: NDArray[np.float64],
    ) -> list[AccountPoint]:
        if idx.size == 0:
            return []
        std = self.view.standard_debt_usd(idx)
        pushed = self._pushed_requirement(idx)
        req_key = {"portfolio": "req_portfolio", "var": "req_var"}.get(self.model)
        addresses = self.view.addresses
        out = []
        for j, i in enumerate(idx.tolist()):
            extra: dict[str, float | None] = {}
            if pushed is not None and req_key is not None:
                extra[req_key] = float(pushed[j])
            out.append(
                AccountPoint(
                    account=addresses[i].lower(),
                    hf=float(hf[i]),
                    bp=float(bp[i]),
                    tier=int(tier[i]),
                    collateral_usd=float(coll[i]),
                    debt_usd=float(debt[i]),
                    req_standard=float(std[j]),
                    **extra,
                )
            )
        return out

    async def prune(self) -> None:
        """The `prune_risk_history` job: each level's buckets older than its keep_s."""
        now = int(self._clock())
        for lv in self.cfg.levels:
            removed = await self.repo.prune(lv.step_s, now - lv.keep_s)
            if removed:
                log.info("risk history: pruned %d rows of the %ds level", removed, lv.step_s)
