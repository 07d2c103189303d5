"""Keep this instance's ledger current for chains another instance indexes.

Every instance serves the API from its own ledger. For a chain whose index lease is held
elsewhere, the follower watches the lease row (one small SELECT per `follow_interval_s`):
its `writes` counter moves with every protected write of the holder. When it moved, the
follower reads the chain's checkpoint (sync status for /v1/chains and /readyz) and the
positions updated since the last block it saw, minus the reorg window (a rollback stamps
the positions it reverses with the ancestor block), compares them with what it last saw,
and hands the changed accounts to the ledger exactly as a local indexer would. Bounded:
normally a handful of rows per poll; a full comparison of the chain only on the first
poll, after losing the lease, after a rollback deeper than the margin, and every
`FULL_EVERY` polls as a backstop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping

from sqlalchemy import Table, select

from aggregator.cluster.lease import LeaseRow, LeaseStore
from aggregator.store import Store
from aggregator.store.chain_repo import SqlChainStore
from aggregator.store.models.chain import ChainPosition
from chains.indexer import ChainIndexer

log = logging.getLogger(__name__)

POS: Table = ChainPosition.__table__  # type: ignore[attr-defined]
FULL_EVERY = 300
Key = tuple[str, str, str]


class Follower:
    def __init__(
        self,
        store: Store,
        repo: SqlChainStore,
        leases: LeaseStore,
        *,
        indexers: Mapping[str, ChainIndexer],
        reorg_window: Mapping[str, int],
        accounts_changed: Callable[[str, set[str]], Awaitable[None]],
        holds: Callable[[str], bool],
        interval_s: float,
    ) -> None:
        self.store = store
        self.repo = repo
        self.leases = leases
        # The indexers of every indexed chain (this instance's own or followed ones).
        self.indexers = indexers
        self.reorg_window = reorg_window
        # The ledger's callback, exactly as a local indexer calls it.
        self.accounts_changed = accounts_changed
        self._holds = holds  # this instance holds the named lease
        self.interval_s = interval_s
        self.cache: dict[str, dict[Key, tuple[int, int]]] = {}
        self.seen_block: dict[str, int] = {}
        self.marker: dict[str, tuple[int, int] | None] = {}
        self.polls = 0
        self.synced_total = 0
        self.rows: dict[str, LeaseRow] = {}

    def forget(self, chain: str) -> None:
        """This instance starts (or stops) indexing `chain`: next time, compare it fully."""
        self.cache.pop(chain, None)
        self.seen_block.pop(chain, None)
        self.marker.pop(chain, None)

    def _held(self, name: str) -> bool:
        return self._holds(name)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.poll()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)

    async def poll(self) -> None:
        self.polls += 1
        # The marker is read before the data: a write landing in between is seen now
        # and again next poll (harmless), never missed.
        self.rows = {r.name: r for r in await self.leases.all()}
        full = self.polls % FULL_EVERY == 0
        for chain in list(self.indexers):
            name = f"index:{chain}"
            if self._held(name):
                continue
            row = self.rows.get(name)
            marker = None if row is None else (row.token, row.writes)
            ix = self.indexers[chain]
            if row is not None and not row.live:
                # Holder gone and nobody took over yet: the store stops moving.
                ix.status.caught_up = False
                ix.status.last_error = (
                    f"no live holder of lease {name} (last {row.holder}); waiting for a takeover"
                )
            if not full and chain in self.marker and self.marker[chain] == marker:
                continue
            await self.sync_chain(chain)
            self.marker[chain] = marker

    async def sync_chain(self, chain: str) -> set[str]:
        """Bring the ledger up to what the store holds for `chain`; returns the accounts
        that changed (already handed to the ledger)."""
        cp = await self.repo.load_checkpoint(chain)
        ix = self.indexers.get(chain)
        if ix is not None and cp is not None:
            st = ix.status
            st.indexed_block = cp.indexed_block
            st.head_block = max(st.head_block, cp.head_block)
            st.confirmed_block = min(cp.confirmed_block, cp.indexed_block)
            st.lag = max(0, cp.head_block - cp.indexed_block)
            st.caught_up = cp.indexed_block >= cp.head_block > 0
            if cp.fatal_reason:
                st.fatal, st.fatal_reason = True, cp.fatal_reason
            row = self.rows.get(f"index:{chain}")
            if row is None or row.live:
                st.last_error = None
        cache = self.cache.get(chain)
        prev = self.seen_block.get(chain)
        window = self.reorg_window[chain]
        q = select(POS.c.account, POS.c.token, POS.c.kind, POS.c.head_amount, POS.c.pending_amount)
        q = q.where(POS.c.chain == chain)
        full = cache is None or prev is None or cp is None or self.polls % FULL_EVERY == 0
        if not full and cp is not None and prev is not None:
            if cp.indexed_block < prev - window:
                full = True  # rolled back further than the margin covers
            else:
                q = q.where(POS.c.updated_block >= min(prev, cp.indexed_block) - window - 2)
        async with self.store.session() as s:
            rows = (await s.execute(q)).all()
        cache = {} if cache is None else cache
        changed: set[str] = set()
        for account, token, kind, head, pending in rows:
            key = (str(account), str(token), str(kind))
            value = (int(head), int(pending))
            if cache.get(key) != value:
                cache[key] = value
                changed.add(str(account))
        self.cache[chain] = cache
        if cp is not None:
            self.seen_block[chain] = cp.indexed_block
        if changed:
            self.synced_total += len(changed)
            log.debug("follower %s: %d account(s) changed in the store", chain, len(changed))
            await self.accounts_changed(chain, changed)
        return changed


__all__ = ["Follower"]
