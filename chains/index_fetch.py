"""The log-range fetcher: eth_getLogs over an adaptive span, the headers each range is
checked against, and the read-ahead while backfilling.

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
- While backfilling, one task reads consecutive ranges ahead (at most
  `READ_AHEAD_RANGES` ranges or `READ_AHEAD_LOGS` logs not yet taken) while the store
  writes; a step takes every range read so far as one contiguous range, so a slow
  store commits fewer, larger transactions instead of falling behind. The headers of
  the merged range are a subset of the ranges' own (each holds the window blocks of
  its span for a head no higher than the step's, and its last block).
- Ranges without logs are merged harder: a step that finds only empty ranges ready
  waits for up to `READ_AHEAD_EMPTY_RANGES` of them (or a range with logs, or the
  end of the reading), since a commit costs the same store round trips with or
  without events (a history's quiet stretches were most of a backfill's commits).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from chains.events import TOPIC_FILTER
from chains.index_context import IndexContext
from chains.logrange import LogRange, range_ceiling, range_hint
from chains.positions import TOPIC_FILTER as POSITION_TOPIC_FILTER
from chains.rpc import RpcLog, RpcResponseError, RpcUnavailable
from chains.types import BlockRef

log = logging.getLogger(__name__)

Fetched = tuple[int, list[RpcLog], dict[int, BlockRef]]

# Read-ahead bounds: ranges and logs fetched but not yet taken by a step.
READ_AHEAD_RANGES = 4
READ_AHEAD_LOGS = 20_000
# Ranges without logs hold only a header or two each: many more of them are merged
# into one commit (whose ~35 driver hand-offs cost ~7 ms of CPU on SQLite).
READ_AHEAD_EMPTY_RANGES = 32


def header_numbers(start: int, end: int, head: int, window: int) -> list[int]:
    # window + 1 hashes: the anchor below the window is what a reorg of
    # exactly `window` blocks rolls back to.
    keep_from = max(0, head - window)
    return sorted({*range(max(start, keep_from), end + 1), end})


class ReadAhead:
    """Consecutive ranges from `start` fetched in order by one task, up to `head`."""

    def __init__(self, fetch: Callable[[int], Awaitable[Fetched]], start: int, head: int):
        self.next_start = start  # first block not yet taken by a step
        self.head = head
        self.ready: list[Fetched] = []
        self._changed = asyncio.Event()  # a range is ready, or the task ended
        self._room = asyncio.Event()
        self._room.set()
        self.task = asyncio.create_task(self._run(fetch, start), name=f"read-ahead {start}")

    async def _run(self, fetch: Callable[[int], Awaitable[Fetched]], nxt: int) -> None:
        try:
            while nxt <= self.head:
                await self._room.wait()
                fetched = await fetch(nxt)
                self.ready.append(fetched)
                if self._full():
                    self._room.clear()
                self._changed.set()
                nxt = fetched[0] + 1
        finally:
            self._changed.set()

    def _full(self) -> bool:
        ready = self.ready
        with_logs = sum(1 for f in ready if f[1])
        return (
            with_logs >= READ_AHEAD_RANGES
            or len(ready) >= READ_AHEAD_EMPTY_RANGES
            or sum(len(f[1]) for f in ready) >= READ_AHEAD_LOGS
        )

    def _worth_taking(self) -> bool:
        """A range with logs is ready, the reading is full, or it ended."""
        ready = self.ready
        if not ready:
            return False
        return any(f[1] for f in ready) or self._full() or self.task.done()

    def serves(self, start: int, head: int) -> bool:
        """Whether the next step (from `start`, seeing `head`) can use these ranges."""
        task = self.task
        ended = task.done() and (task.cancelled() or task.exception() is None)
        exhausted = not self.ready and ended
        return start == self.next_start and self.head <= head and not exhausted

    async def take(self) -> Fetched:
        """Every range read so far, as one (waits for the first, and while only
        ranges without logs are ready, for more of them; raises the task's error when
        it failed before reading one)."""
        while not self._worth_taking():
            if self.task.done() and not self.ready:
                error = None if self.task.cancelled() else self.task.exception()
                raise error or RuntimeError("read-ahead ended before reading a range")
            self._changed.clear()
            await self._changed.wait()
        batch, self.ready = self.ready, []
        self._room.set()
        logs = [entry for f in batch for entry in f[1]]
        headers = {n: ref for f in batch for n, ref in f[2].items()}
        end = batch[-1][0]
        self.next_start = end + 1
        return end, logs, headers

    async def cancel(self) -> None:
        """Stop reading; the outcome (even an error) is moot."""
        self.task.cancel()
        # wait() never raises the task's error, and our own cancellation still propagates.
        await asyncio.wait([self.task])
        if not self.task.cancelled():
            self.task.exception()


class LogFetcher:
    def __init__(self, ctx: IndexContext) -> None:
        self.ctx = ctx
        max_range = ctx.settings.max_log_range
        self.range = LogRange(max_range, max_range)
        # Backfill read-ahead: the ranges after the one being committed.
        self._ahead: ReadAhead | None = None

    def resume(self, log_range: int) -> None:
        """Start from the span the checkpoint remembers, so a restart does not re-probe."""
        self.range = LogRange(self.ctx.settings.max_log_range, log_range)

    async def fetch_from(self, start: int, head: int) -> Fetched:
        """The next range from `start` (every range read ahead so far, when they fit),
        and, while backfilling, the reading of the ranges after it."""
        ahead = self._ahead
        if ahead is not None and not ahead.serves(start, head):
            await self.drop_ahead()
            ahead = None
        if ahead is None:
            fetched = await self._fetch(start, min(head, start + self.range.current - 1), head)
        else:
            try:
                fetched = await ahead.take()
            except BaseException:
                await self.drop_ahead()
                raise
        end = fetched[0]
        if end < head and self._ahead is None:
            # Backfill: read the next ranges while this one is written (the store's
            # commit runs in its driver's thread or server), so the node and the store
            # work at the same time. The next commit checks these logs against its own
            # tip like any other; a reorg in between only wastes the reads.
            self._ahead = ReadAhead(
                lambda nxt: self._fetch(nxt, min(head, nxt + self.range.current - 1), head),
                end + 1,
                head,
            )
        return fetched

    async def drop_ahead(self) -> None:
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            await ahead.cancel()

    async def _fetch(self, start: int, end: int, head: int) -> Fetched:
        """Logs of [start, end] (the span may shrink: returns the end covered) and the
        headers the commit of that range checks them against. The headers are read
        first and the logs anchored to the range's last one (ChainMoved when it changed
        meanwhile): logs older than their headers could lack a log that only the
        headers' branch has, and nothing in the commit could see it."""
        window = self.ctx.settings.reorg_window
        headers = await self.ctx.client.get_blocks(header_numbers(start, end, head, window))
        end, logs = await self._get_logs(start, end, headers)
        return end, logs, {n: headers[n] for n in header_numbers(start, end, head, window)}

    async def _logs_of(self, start: int, end: int, end_hash: str) -> list[RpcLog]:
        client, markets = self.ctx.client, self.ctx.markets
        logs = await client.get_log_records(
            self.ctx.vault, TOPIC_FILTER, start, end, end_hash=end_hash
        )
        if markets is not None:
            logs += await client.get_log_records(
                markets.address, POSITION_TOPIC_FILTER, start, end, end_hash=end_hash
            )
        return logs

    async def _get_logs(
        self, start: int, end: int, headers: dict[int, BlockRef]
    ) -> tuple[int, list[RpcLog]]:
        """getLogs over [start, end], adapting the span; returns (end actually covered,
        logs). A shrunk span's last block is read (into `headers`) before its logs."""
        while True:
            span = end - start + 1
            if end not in headers:
                headers.update(await self.ctx.client.get_blocks([end]))
            try:
                logs = await self._logs_of(start, end, headers[end].hash)
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
