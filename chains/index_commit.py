"""Committing one fetched range: verify it against the headers, then write events,
derived balances, promotions and the checkpoint in one store transaction.

Invariants:
- Reorg in flight: the fetched headers must chain to each other and to the stored tip,
  no log may be `removed`, and every log's blockHash must equal its header's hash.
  Otherwise a reorg happened between the calls and the step is dropped (nothing is
  written); the next step's reorg check finds the common ancestor.
- One transaction (`IndexerStore.apply_batch`): events keyed by (chain, block, log
  index), so re-running a range never double-counts; the derived positions; the
  promotion of deposits/repayments that became `confirmations` deep (asymmetric
  finality: risk-lowering events count in the confirmed view only once deep, the
  others at once); the block hashes of the window; and the checkpoint (indexed block
  and hash, span, head, confirmed block). A crash loses at most the uncommitted step.
- With `compact_backfill`, the part of a range below the kept block hashes is a
  compacted range (IndexerStore.apply_batch): positions and an audit record, event
  rows only for each account's first event and liquidations.
- Derivative position events (chains/positions.py) share the ranges and header
  checks; they are written before the vault batch and rolled back before it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from operator import attrgetter

import msgspec

from chains.events import decode_records
from chains.index_context import IndexContext
from chains.index_fetch import Fetched, header_numbers
from chains.index_progress import ProgressMeter
from chains.positions import DerivativeEvent, decode_position_log, is_position_topics
from chains.rpc import RpcLog
from chains.types import BatchResult, BlockRef, Checkpoint, EventColumns

log = logging.getLogger(__name__)

_REMOVED = attrgetter("removed")


class BatchCommitter:
    def __init__(self, ctx: IndexContext, meter: ProgressMeter) -> None:
        self.ctx = ctx
        self.meter = meter

    async def commit(
        self, start: int, head: int, fetched: Fetched, log_range: int
    ) -> BatchResult | None:
        """Commit the fetched range from `start`; None when it was dropped (a reorg in
        flight) and nothing was written."""
        ctx = self.ctx
        end, logs, headers = fetched
        cp = ctx.checkpoint
        window = ctx.settings.reorg_window
        numbers = header_numbers(start, end, head, window)
        if not self._extends_tip(cp, numbers, headers):
            return None
        decoded = self._decode(logs, headers)
        if decoded is None:
            return None
        events, pos_events = decoded
        confirmed = head - ctx.settings.confirmations
        pos_accounts: set[str] = set()
        if ctx.markets is not None and pos_events:
            pos_accounts = await ctx.markets.sink.apply_position_events(ctx.chain, pos_events)
        accounts = await ctx.store.apply_batch(
            ctx.chain,
            to_block=end,
            blocks=[headers[n] for n in numbers],
            events=events,
            log_range=log_range,
            head_block=head,
            confirmed_block=confirmed,
            keep_hashes_from=max(0, head - window),
            from_block=start,
            # Below the kept hashes no rollback reaches, and window >= confirmations,
            # so no promotion either.
            compact_below=max(0, head - window) if ctx.settings.compact_backfill else None,
        )
        ctx.cp = replace(
            cp,
            indexed_block=end,
            indexed_hash=headers[end].hash,
            log_range=log_range,
            head_block=head,
            confirmed_block=confirmed,
        )
        n_events = len(events) + len(pos_events)
        self._show(head, end, confirmed, n_events)
        self.meter.record(head, end, end - start + 1, n_events)
        accounts = set(accounts) | pos_accounts
        await ctx.accounts_changed(accounts)
        return BatchResult(ctx.chain, start, end, len(events), set(accounts))

    def _show(self, head: int, end: int, confirmed: int, n_events: int) -> None:
        st = self.ctx.status
        st.indexed_block = end
        st.confirmed_block = min(confirmed, end)
        st.lag = max(0, head - end)
        st.events_total += n_events

    def _extends_tip(
        self, cp: Checkpoint, numbers: Sequence[int], headers: dict[int, BlockRef]
    ) -> bool:
        """The fetched headers must chain to each other and to our tip; a mismatch
        means a reorg happened between our calls: drop this step, the next step's
        reorg check finds the ancestor."""
        prev_hash = cp.indexed_hash
        prev_num = cp.indexed_block
        for n in numbers:
            ref = headers[n]
            if n == prev_num + 1 and prev_hash is not None and ref.parent_hash != prev_hash:
                log.warning(
                    "chain %s: block %d does not extend our tip; reorg in flight", self.ctx.chain, n
                )
                return False
            prev_hash, prev_num = ref.hash, n
        return True

    def _decode(
        self, logs: list[RpcLog], headers: dict[int, BlockRef]
    ) -> tuple[EventColumns, list[DerivativeEvent]] | None:
        """Vault and position events of the logs; None when a log was removed or names
        a block hash other than the fetched header's (a reorg in flight)."""
        chain = self.ctx.chain
        if any(map(_REMOVED, logs)):
            return None
        pos_logs: list[RpcLog] = []
        if self.ctx.markets is not None:
            pos_logs = [e for e in logs if is_position_topics(e.topics)]
            if pos_logs:
                logs = [e for e in logs if not is_position_topics(e.topics)]
        events = decode_records(chain, logs)
        pos_events = [decode_position_log(chain, msgspec.structs.asdict(e)) for e in pos_logs]
        # Each distinct (block, hash) once: a range's logs share a few blocks.
        placed = set(zip(events.block_number, events.block_hash, strict=True))
        placed.update((ev.block_number, ev.block_hash) for ev in pos_events)
        stale = sorted(n for n, h in placed if (seen := headers.get(n)) and seen.hash != h)
        if stale:
            log.warning(
                "chain %s: log in block %d has a stale hash; reorg in flight", chain, stale[0]
            )
            return None
        return events, pos_events
