"""The log-range fetcher: eth_getLogs over an adaptive span, the headers each range is
checked against, and the one-range-ahead prefetch while backfilling.

Invariants:
- The span adapts to the provider: a range error shrinks it (to the node's hint, a
  learned ceiling, or half), a timeout on every endpoint halves it, and 3 successes in
  a row grow it (`chains.logrange.LogRange`); any other node error is raised, never
  swallowed. The span is persisted with every checkpoint by the committer.
- `header_numbers` lists every block of the range inside the unfinalized window plus
  the range's last block: the window + 1 hashes include the anchor below the window,
  which is what a reorg of exactly `window` blocks rolls back to.
- A prefetched range is only a head start: it is used only when it starts where the
  next step starts and was fetched with a head no higher than the current one (the
  kept window only moves up), and its commit checks it against the tip like any other.
"""

from __future__ import annotations

import asyncio
import logging

from chains.events import TOPIC_FILTER
from chains.index_context import IndexContext
from chains.logrange import LogRange, range_ceiling, range_hint
from chains.positions import TOPIC_FILTER as POSITION_TOPIC_FILTER
from chains.rpc import RpcLog, RpcResponseError, RpcUnavailable
from chains.types import BlockRef

log = logging.getLogger(__name__)

Fetched = tuple[int, list[RpcLog], dict[int, BlockRef]]
Ahead = tuple[int, int, "asyncio.Task[Fetched]"]


def header_numbers(start: int, end: int, head: int, window: int) -> list[int]:
    # window + 1 hashes: the anchor below the window is what a reorg of
    # exactly `window` blocks rolls back to.
    keep_from = max(0, head - window)
    return sorted({*range(max(start, keep_from), end + 1), end})


class LogFetcher:
    def __init__(self, ctx: IndexContext) -> None:
        self.ctx = ctx
        max_range = ctx.settings.max_log_range
        self.range = LogRange(max_range, max_range)
        # Backfill pipeline: (start, head, task) of the next range's fetch.
        self._ahead: Ahead | None = None

    def resume(self, log_range: int) -> None:
        """Start from the span the checkpoint remembers, so a restart does not re-probe."""
        self.range = LogRange(self.ctx.settings.max_log_range, log_range)

    async def fetch_from(self, start: int, head: int) -> Fetched:
        """The next range from `start` (the prefetched one when it fits), and, while
        backfilling, the prefetch of the range after it."""
        ahead, self._ahead = self._ahead, None
        # Fetched with an older head, it holds every header this head needs (the kept
        # window only moves up).
        if ahead is not None and ahead[0] == start and ahead[1] <= head:
            fetched = await ahead[2]
        else:
            await _discard(ahead)
            fetched = await self._fetch(start, min(head, start + self.range.current - 1), head)
        end = fetched[0]
        if end < head:
            # Backfill: fetch the next range while this one is written (the store's
            # commit runs in its driver's thread or server), so the node and the store
            # work at the same time. The next commit checks these logs against its own
            # tip like any other; a reorg in between only wastes the fetch.
            nxt = end + 1
            task = asyncio.create_task(
                self._fetch(nxt, min(head, nxt + self.range.current - 1), head),
                name=f"prefetch {self.ctx.chain} {nxt}",
            )
            self._ahead = (nxt, head, task)
        return fetched

    async def drop_ahead(self) -> None:
        ahead, self._ahead = self._ahead, None
        await _discard(ahead)

    async def _fetch(self, start: int, end: int, head: int) -> Fetched:
        """Logs of [start, end] (the span may shrink: returns the end covered) and the
        headers the commit of that range checks them against."""
        end, logs = await self._get_logs(start, end)
        numbers = header_numbers(start, end, head, self.ctx.settings.reorg_window)
        headers = await self.ctx.client.get_blocks(numbers)
        return end, logs, headers

    async def _logs_of(self, start: int, end: int) -> list[RpcLog]:
        client, markets = self.ctx.client, self.ctx.markets
        logs = await client.get_log_records(self.ctx.vault, TOPIC_FILTER, start, end)
        if markets is not None:
            logs += await client.get_log_records(markets.address, POSITION_TOPIC_FILTER, start, end)
        return logs

    async def _get_logs(self, start: int, end: int) -> tuple[int, list[RpcLog]]:
        """getLogs over [start, end], adapting the span; returns (end actually covered, logs)."""
        while True:
            span = end - start + 1
            try:
                logs = await self._logs_of(start, end)
            except RpcResponseError as exc:
                self._adapt_to_error(exc, span)
            except RpcUnavailable as exc:
                if not exc.timed_out or span == 1:
                    raise
                log.info("chain %s: getLogs span %d timed out; halving", self.ctx.chain, span)
                self.range.shrink_to(span // 2)
            else:
                self.range.succeeded()
                self.ctx.status.log_range = self.range.current
                return end, logs
            self.ctx.status.log_range = self.range.current
            end = start + self.range.current - 1

    def _adapt_to_error(self, exc: RpcResponseError, span: int) -> None:
        """Shrink the span as the node's range error says; re-raise any other error."""
        hint = range_hint(exc.message, span)
        if hint is None or span == 1:
            raise exc
        log.info(
            "chain %s: getLogs span %d rejected (%s); trying %d",
            self.ctx.chain,
            span,
            exc.message,
            hint,
        )
        self.range.shrink_to(hint)
        ceiling = range_ceiling(exc.message, span)
        if ceiling is not None:
            self.range.limit_to(ceiling)


async def _discard(ahead: Ahead | None) -> None:
    """Cancel a prefetch nobody will use; its outcome (even an error) is moot."""
    if ahead is None:
        return
    task = ahead[2]
    task.cancel()
    # wait() never raises the task's error, and our own cancellation still propagates.
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()
