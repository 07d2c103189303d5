"""Backfill/follow rates of one chain's indexer: blocks/s, events/s and the ETA, shown
in its status, logged every 10 s while backfilling and passed to `on_progress`.

A rate is measured per backfill burst: once the indexer follows the head, the next
burst starts a new measurement, so a long idle follow does not dilute it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from chains.index_context import ChainStatus, Progress

log = logging.getLogger(__name__)


class ProgressMeter:
    def __init__(
        self,
        status: ChainStatus,
        clock: Callable[[], float],
        on_progress: Callable[[Progress], None] | None,
    ) -> None:
        self.status = status
        self.clock = clock
        self.on_progress = on_progress
        self._t0: float | None = None
        self._blocks = 0
        self._events = 0
        self._last_log = -1e18

    def start(self) -> None:
        """Start measuring a burst unless one is being measured."""
        if self._t0 is None:
            self._t0 = self.clock()
            self._blocks = self._events = 0

    def record(self, head: int, end: int, blocks: int, events: int) -> None:
        """A committed batch of `blocks` blocks and `events` events, up to `end`."""
        st = self.status
        now = self.clock()
        if self._t0 is None:
            self._t0 = now
        self._blocks += blocks
        self._events += events
        elapsed = max(now - self._t0, 1e-6)
        st.blocks_per_s = self._blocks / elapsed
        st.events_per_s = self._events / elapsed
        remaining = max(0, head - end)
        st.eta_s = remaining / st.blocks_per_s if st.blocks_per_s else None
        if remaining == 0:
            # Following the head: the next backfill burst measures its own rate.
            self._t0 = None
        if remaining > 0 and now - self._last_log >= 10.0:
            self._last_log = now
            log.info(
                "chain %s: backfill at block %d of %d: %.0f blocks/s, %.0f events/s, ETA %s",
                st.chain,
                end,
                head,
                st.blocks_per_s,
                st.events_per_s,
                f"{st.eta_s:.0f}s" if st.eta_s is not None else "unknown",
            )
        if self.on_progress is not None:
            self.on_progress(
                Progress(
                    chain=st.chain,
                    head_block=head,
                    indexed_block=end,
                    blocks_per_s=st.blocks_per_s,
                    events_per_s=st.events_per_s,
                    eta_s=st.eta_s,
                    events_total=st.events_total,
                )
            )
