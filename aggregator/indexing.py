"""Chain indexers as the daemon runs them: built with the ledger's callbacks, supervised.

Invariants:
- Every indexer reports changed accounts to the ledger (`accounts_changed`) and its
  backfill progress to the metrics, whoever builds it (the daemon at start, or the
  cluster wiring when this instance takes a chain's index lease with a fenced store).
- A fatal chain (deep reorg, wrong chain) stays visible in /readyz and the metrics; the
  indexer keeps its reason in the store across restarts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from aggregator.metrics import Metrics
from chains.indexer import ChainIndexer, MarketsWatch, Progress
from chains.rpc import RpcClient
from chains.store import IndexerStore
from chains.types import ChainSettings


class IndexerFactory:
    def __init__(
        self,
        settings: Mapping[str, ChainSettings],
        clients: Mapping[str, RpcClient],
        *,
        metrics: Metrics,
        stop: asyncio.Event,
        accounts_changed: Callable[[str, set[str]], Awaitable[None]],
        markets: Callable[[str], MarketsWatch | None],
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.metrics = metrics
        self.stop = stop
        self.accounts_changed = accounts_changed
        self._markets = markets

    def build(self, chain: str, store: IndexerStore) -> ChainIndexer:
        return ChainIndexer(
            self.settings[chain],
            self.clients[chain],
            store,
            on_accounts_changed=self.accounts_changed,
            on_progress=self.progress,
            markets=self._markets(chain),
        )

    def progress(self, p: Progress) -> None:
        self.metrics.backfill_blocks_per_s.labels(chain=p.chain).set(p.blocks_per_s)
        self.metrics.backfill_eta_s.labels(chain=p.chain).set(p.eta_s if p.eta_s else 0)

    def supervised(self, indexer: ChainIndexer) -> Callable[[], Awaitable[None]]:
        """The body of the supervised `index:<chain>` task."""

        async def run() -> None:
            await indexer.run(self.stop)
            if indexer.status.fatal:
                self.metrics.chain_fatal.labels(chain=indexer.chain).set(1)

        return run


__all__ = ["IndexerFactory"]
