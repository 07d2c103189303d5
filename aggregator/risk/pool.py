"""The pooled book: the sparse account x column matrix the kernels stream through.

Each account owns a segment of the pool (a_start, a_cap) holding its a_cnt occupied
(column, amount) pairs in column order. After a bulk load the segments lie back to
back in account order, so a tick walks the pool like a CSR matrix. An event that
needs more room than its segment has moves the account to the end of the pool
(`place`); `compact` reclaims the holes once they outgrow the book.

Invariants: a_cnt <= a_cap; segments never overlap; an account's pairs are always
written whole, in column order (what keeps every kernel path bit for bit equal).
`grp` (e-mode group, -1 for standard) and `held` (bit set of held assets) are the
other per-account facts derived from positions alone; prices never change them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

# Positions per account in the pool: at most this many spare slots are reserved when
# an event moves an account's segment, so the next new asset usually fits in place.
SLACK = 2


def grown(old: NDArray[Any], cap: int, fill: Any, dtype: Any) -> NDArray[Any]:
    """`old` copied into a new array of `cap` rows (extra rows = `fill`)."""
    new = np.full((cap, *old.shape[1:]), fill, dtype)
    new[: old.shape[0]] = old
    return new


class Pool:
    """Segments of (column, amount) pairs per account, grown with amortised capacity."""

    # Holes in the pool below this many slots are not worth an O(book) compaction.
    COMPACT_MIN = 1 << 16

    def __init__(self, ncols: int) -> None:
        self.ncols = ncols
        self.cdt: Any = np.uint8 if ncols < 255 else np.uint16
        self.pc = np.zeros(0, self.cdt)
        self.pv = np.zeros(0)
        self.end = 0
        self.holes = 0
        self.compact_min = self.COMPACT_MIN
        self.a_start = np.zeros(0, np.int64)
        self.a_cnt: NDArray[Any] = np.zeros(0, self.cdt)
        self.a_cap: NDArray[Any] = np.zeros(0, self.cdt)
        self.grp = np.zeros(0, np.int16)
        self.held = np.zeros(0, np.int64)

    def resize(self, cap: int) -> None:
        """Per-account arrays to `cap` rows (the engine decides the capacity)."""
        self.a_start = grown(self.a_start, cap, 0, np.int64)
        self.a_cnt = grown(self.a_cnt, cap, 0, self.cdt)
        self.a_cap = grown(self.a_cap, cap, 0, self.cdt)
        self.grp = grown(self.grp, cap, -1, np.int16)
        self.held = grown(self.held, cap, 0, np.int64)

    def _grow(self, need: int) -> None:
        if need <= self.pv.size:
            return
        cap = max(1 << 16, 2 * self.pv.size, need)
        pc = np.zeros(cap, self.cdt)
        pv = np.zeros(cap)
        pc[: self.end] = self.pc[: self.end]
        pv[: self.end] = self.pv[: self.end]
        self.pc, self.pv = pc, pv

    def segments(self, acc: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """(pool index of every occupied slot of `acc` in order, its account position)."""
        cnt = self.a_cnt[acc].astype(np.int64)
        total = int(cnt.sum())
        first = np.cumsum(cnt) - cnt
        pos = np.repeat(np.arange(acc.size), cnt)
        return np.repeat(self.a_start[acc], cnt) + (np.arange(total) - first[pos]), pos

    @staticmethod
    def slack(placed: int) -> int:
        """Spare slots per moved account when `placed` accounts are placed at once: a
        bulk load lays accounts out back to back; an event leaves a little room."""
        return 0 if placed > 64 else SLACK

    def place(
        self,
        idx: NDArray[np.int64],
        count: NDArray[np.int64],
        cols: NDArray[np.int64],
        vals: NDArray[np.float64],
        n_accounts: int,
    ) -> None:
        """Write accounts' occupied (column, amount) pairs (row-major, `count` each) into
        their pool segments, moving to the end of the pool those that outgrew theirs."""
        start = self.a_start[idx].copy()
        move = np.flatnonzero(count > self.a_cap[idx])
        if move.size:
            slack = self.slack(idx.size)
            cap = np.minimum(count[move] + slack, self.ncols)
            self.holes += int(self.a_cap[idx[move]].sum())
            new = self.end + np.cumsum(cap) - cap
            end = self.end + int(cap.sum())
            self._grow(end)
            start[move] = new
            self.a_start[idx[move]] = new
            self.a_cap[idx[move]] = cap
            self.end = end
        self.a_cnt[idx] = count
        first = np.cumsum(count) - count
        row = np.repeat(np.arange(idx.size), count)
        at = np.repeat(start, count) + (np.arange(cols.size) - first[row])
        self.pc[at] = cols
        self.pv[at] = vals
        if self.holes > max(self.compact_min, self.end // 2):
            self.compact(n_accounts)

    def compact(self, n: int) -> None:
        """Lay the first `n` accounts' segments out back to back again. O(book), and only
        after events have moved as many slots as the book holds: amortised O(1) each."""
        src, _ = self.segments(np.arange(n, dtype=np.int64))
        cnt = self.a_cnt[:n].astype(np.int64)
        cap = max(1 << 16, 2 * src.size)
        pc = np.zeros(cap, self.cdt)
        pv = np.zeros(cap)
        pc[: src.size] = self.pc[src]
        pv[: src.size] = self.pv[src]
        self.pc, self.pv = pc, pv
        self.a_start[:n] = np.cumsum(cnt) - cnt
        self.a_cap[:n] = self.a_cnt[:n]
        self.end = src.size
        self.holes = 0

    def snapshot(self, n: int) -> Pool:
        """A copy of the first `n` accounts' pool for a reader off the event loop (the
        API's what-if): every array here is written in place by events (`place`), so
        all are copied, but only up to `end` and `n` (not the spare capacity)."""
        out = Pool(self.ncols)
        out.end, out.holes, out.compact_min = self.end, self.holes, self.compact_min
        out.pc, out.pv = self.pc[: self.end].copy(), self.pv[: self.end].copy()
        out.a_start, out.a_cnt = self.a_start[:n].copy(), self.a_cnt[:n].copy()
        out.a_cap, out.grp = self.a_cap[:n].copy(), self.grp[:n].copy()
        out.held = self.held[:n].copy()
        return out

    def dense(self, n: int) -> NDArray[np.float64]:
        """The matrix as a dense (capacity x columns) array: for inspection and tests."""
        x = np.zeros((self.a_start.size, self.ncols))
        src, pos = self.segments(np.arange(n, dtype=np.int64))
        x[pos, self.pc[src]] = self.pv[src]
        return x


__all__ = ["SLACK", "Pool", "grown"]
