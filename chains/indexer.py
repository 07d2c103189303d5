"""Reorg-safe vault event indexer for one chain.

One step = read the head, verify the stored tip is still canonical (else roll
back to the common ancestor), fetch logs for the next range, verify them against
the headers of the unfinalized window, and commit events + derived balances +
checkpoint in one store transaction. A crash at any point loses at most the
uncommitted step, which the next run redoes (inserts are keyed by
(chain, block, log index), so re-running a range never double-counts).

`ChainIndexer` is the loop and the facade its callers use; the parts, each stating
its own invariants:

- `chains.index_context`: what the parts share (checkpoint, status, fatal state);
- `chains.index_reorg`: the reorg check, the rollback, the too-deep fatal state;
- `chains.index_fetch`: the adaptive getLogs span, headers, backfill prefetch;
- `chains.index_commit`: reorg-in-flight checks and the one-transaction commit
  (including the promotion of newly confirmed events: asymmetric finality);
- `chains.index_reconcile`: reconciliation against the vault;
- `chains.index_progress`: blocks/s, events/s, ETA.

See docs/chains.md for the finality views, reorg window and failure modes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from chains.index_commit import BatchCommitter
from chains.index_context import AccountsCallback, ChainStatus, IndexContext, Progress
from chains.index_fetch import LogFetcher
from chains.index_progress import ProgressMeter
from chains.index_reconcile import Mismatch, Reconciler
from chains.index_reorg import ReorgGuard
from chains.logrange import LogRange
from chains.positions import MarketsWatch
from chains.rpc import ChainIdMismatch, ChainMoved, RpcClient, RpcError
from chains.store import IndexerStore
from chains.types import ChainSettings, Checkpoint

log = logging.getLogger(__name__)


class ChainIndexer:
    def __init__(
        self,
        settings: ChainSettings,
        client: RpcClient,
        store: IndexerStore,
        *,
        on_accounts_changed: AccountsCallback | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        markets: MarketsWatch | None = None,
    ) -> None:
        if settings.vault is None:
            raise ValueError(f"chain {settings.name!r}: no vault address configured")
        self.settings = settings
        self.chain = settings.name
        self.store = store
        self.clock = clock
        self.markets = markets
        self.ctx = IndexContext(
            settings, client, store, on_accounts_changed=on_accounts_changed, markets=markets
        )
        self.meter = ProgressMeter(self.ctx.status, clock, on_progress)
        self.fetcher = LogFetcher(self.ctx)
        self.committer = BatchCommitter(self.ctx, self.meter)
        self.reorgs = ReorgGuard(self.ctx)
        self.reconciler = Reconciler(self.ctx)
        # Steps and reconciliation runs one at a time (see Reconciler).
        self._lock = asyncio.Lock()

    # ----------------------------------------------------------- shared state

    @property
    def client(self) -> RpcClient:
        return self.ctx.client

    @client.setter
    def client(self, client: RpcClient) -> None:
        self.ctx.client = client

    @property
    def status(self) -> ChainStatus:
        return self.ctx.status

    @property
    def range(self) -> LogRange:
        return self.fetcher.range

    @property
    def on_accounts_changed(self) -> AccountsCallback | None:
        return self.ctx.on_accounts_changed

    @property
    def on_progress(self) -> Callable[[Progress], None] | None:
        return self.meter.on_progress

    @property
    def checkpoint(self) -> Checkpoint:
        return self.ctx.checkpoint

    # ----------------------------------------------------------- lifecycle

    async def load(self) -> Checkpoint:
        cp = await self.store.load_checkpoint(self.chain)
        if cp is None:
            cp = Checkpoint(
                chain=self.chain,
                indexed_block=self.settings.start_block - 1,
                indexed_hash=None,
                log_range=self.settings.max_log_range,
            )
        self.ctx.cp = cp
        self.fetcher.resume(cp.log_range)
        st = self.status
        st.indexed_block = cp.indexed_block
        st.confirmed_block = cp.confirmed_block
        st.head_block = cp.head_block
        st.log_range = self.range.current
        if cp.fatal_reason:
            st.fatal, st.fatal_reason = True, cp.fatal_reason
        return cp

    def snapshot(self) -> ChainStatus:
        self.status.endpoints = [vars(s) for s in self.client.status()]
        return replace(self.status)

    async def run(self, stop: asyncio.Event) -> None:
        """Index until `stop` is set; transient RPC trouble is retried with backoff."""
        if self.ctx.cp is None:
            await self.load()
        try:
            await self._run(stop)
        finally:
            await self.fetcher.drop_ahead()

    async def _run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set() and not self.status.fatal:
            try:
                progressed = await self.step()
                failures = 0
                self.status.last_error = None
            except ChainIdMismatch as exc:
                await self.ctx.fatal(str(exc))
                break
            except RpcError as exc:
                failures += 1
                self.status.last_error = str(exc)
                log.warning("chain %s: indexing step failed: %s", self.chain, exc)
                progressed = False
            delay = 0.0 if progressed else self.settings.block_time
            if failures:
                delay = min(60.0, self.settings.block_time * 2 ** min(failures, 6))
            if delay:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)

    async def sync_to_head(self, max_steps: int = 100_000, max_idle_steps: int = 20) -> ChainStatus:
        """Index until caught up with the head seen at the last step (tests, CLI)."""
        if self.ctx.cp is None:
            await self.load()
        idle = 0
        try:
            for _ in range(max_steps):
                if self.status.fatal:
                    break
                progressed = await self.step()
                # A dropped step (reorg in flight) leaves `caught_up` as the last commit
                # set it: only the checkpoint at the head seen says there is nothing left.
                at_head = self.checkpoint.indexed_block >= self.status.head_block
                if not progressed and self.status.caught_up and at_head:
                    break
                idle = 0 if progressed else idle + 1
                if idle >= max_idle_steps:
                    break  # e.g. only a lagging node is reachable: last_error says so
                if idle:
                    await asyncio.sleep(self.settings.block_time)
        finally:
            await self.fetcher.drop_ahead()
        return self.snapshot()

    # ----------------------------------------------------------- one step

    async def step(self) -> bool:
        """Do one unit of work. Returns True if something was committed."""
        # Serialised with reconcile(): a correction computed against balances that
        # a concurrent batch has moved on from would overwrite that batch's effect.
        async with self._lock:
            return await self._step()

    async def _step(self) -> bool:
        if self.status.fatal:
            return False
        head = await self.client.block_number()
        self.status.head_block = head
        if await self.reorgs.check(head):
            await self.fetcher.drop_ahead()
            return True
        if self.status.fatal:
            return False
        start = self.checkpoint.indexed_block + 1
        if start > head:
            self._caught_up(head)
            return await self._maybe_reconcile()
        self.meter.start()
        try:
            fetched = await self.fetcher.fetch_from(start, head)
        except ChainMoved as exc:
            # Like a reorg seen by the commit's checks: nothing read is kept, and the
            # next step's reorg check finds the common ancestor.
            log.info("%s; step dropped", exc)
            await self.fetcher.drop_ahead()
            return False
        try:
            result = await self.committer.commit(start, head, fetched, self.range.current)
        except BaseException:
            await self.fetcher.drop_ahead()
            raise
        if result is None:
            await self.fetcher.drop_ahead()
            return False
        self.status.caught_up = fetched[0] >= head
        if self.status.caught_up:
            await self._maybe_reconcile()
        return True

    def _caught_up(self, head: int) -> None:
        self.status.caught_up = True
        self.status.lag = max(0, head - self.checkpoint.indexed_block)
        self.status.eta_s = 0.0

    async def _maybe_reconcile(self) -> bool:
        if self.reconciler.due():
            await self.reconciler.reconcile()
        return False

    # ----------------------------------------------------------- reconciliation

    async def reconcile(self, accounts: Sequence[str] | None = None) -> list[Mismatch]:
        async with self._lock:
            return await self.reconciler.reconcile(accounts)


__all__ = [
    "ChainIndexer",
    "ChainStatus",
    "MarketsWatch",
    "Mismatch",
    "Progress",
]
