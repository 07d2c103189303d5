"""The cluster inside the daemon: which chain work runs here, under which lease.

On a PostgreSQL store every instance contends for two leases per chain, `index:<chain>`
and `push:<chain>`. Holding one starts that work with a store bound to the tenure's
fence (a fresh indexer from the stored checkpoint; a fresh sender that reconciles the
stored nonce and pending records with the chain); losing it cancels the work at once.
Oracle refresh, recompute and the API run on every instance; chains indexed elsewhere
reach this instance's ledger through the follower. On SQLite nothing here runs: the
store lock (aggregator/lock.py) keeps it to one instance.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from aggregator.cluster.coordinator import LeaseCoordinator
from aggregator.cluster.follower import Follower
from aggregator.cluster.lease import Fence, FencedOut, LeaseStore, end_idle_transactions_after
from aggregator.config import ClusterConfig
from aggregator.metrics import Metrics
from aggregator.store import Store
from aggregator.store.chain_repo import SqlChainStore
from aggregator.supervisor import Supervisor
from chains.indexer import ChainIndexer
from chains.store import IndexerStore
from chains.types import ChainSettings

log = logging.getLogger(__name__)

Guard = Callable[[Callable[[], Awaitable[None]]], Callable[[], Awaitable[None]]]


class IndexWork(Protocol):
    """How this instance indexes a chain it holds the index lease of
    (aggregator/indexing.py)."""

    settings: Mapping[str, ChainSettings]
    accounts_changed: Callable[[str, set[str]], Awaitable[None]]

    def build(self, chain: str, store: IndexerStore) -> ChainIndexer: ...
    def supervised(self, indexer: ChainIndexer) -> Callable[[], Awaitable[None]]: ...


class PushWork(Protocol):
    """How this instance pushes for a chain it holds the push lease of
    (aggregator/push/wiring.py)."""

    def chains(self) -> list[str]: ...
    async def start_chain(self, name: str, fence: Fence, guard: Guard) -> None: ...


def clustered(store: Store) -> bool:
    """Leases run on PostgreSQL only: on SQLite the store lock keeps it to one instance."""
    return store.dialect == "postgresql"


class ClusterWiring:
    def __init__(
        self,
        cfg: ClusterConfig,
        store: Store,
        repo: SqlChainStore,
        *,
        supervisor: Supervisor,
        metrics: Metrics,
        stop: asyncio.Event,
        indexers: dict[str, ChainIndexer],
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.repo = repo
        self.supervisor = supervisor
        self.metrics = metrics
        self.stop_event = stop
        # Shared with the daemon's other parts: a chain's indexer is added here when
        # this instance takes its index lease.
        self.indexers = indexers
        self.enabled = clustered(store)
        self.instance_id = cfg.instance_id
        self.coordinator: LeaseCoordinator | None = None
        self.follower: Follower | None = None
        self._indexing: IndexWork | None = None
        self._push: PushWork | None = None
        if self.enabled:
            end_idle_transactions_after(store.engine, cfg.lease_ttl_s)

    # ------------------------------------------------------------ lifecycle
    async def start(self, indexing: IndexWork, push: PushWork) -> None:
        """After the indexers were loaded and the pusher built (not spawned)."""
        if not self.enabled:
            return
        self._indexing, self._push = indexing, push
        leases = LeaseStore(self.store.engine, self.instance_id, self.cfg.lease_ttl_s)
        names = [f"index:{c}" for c in self.indexers] + [f"push:{c}" for c in push.chains()]
        self.coordinator = LeaseCoordinator(
            leases,
            names,
            renew_every_s=self.cfg.renew_every_s,
            on_acquired=self._acquired,
            on_lost=self._lost,
            on_change=self._metrics,
        )
        self.follower = Follower(
            self.store,
            self.repo,
            leases,
            indexers=self.indexers,
            reorg_window={c: s.reorg_window for c, s in indexing.settings.items()},
            accounts_changed=indexing.accounts_changed,
            holds=self.holds,
            interval_s=self.cfg.follow_interval_s,
        )
        log.info(
            "cluster: instance %s contends for %s (lease ttl %.1fs, renew every %.1fs)",
            self.instance_id,
            ", ".join(names),
            self.cfg.lease_ttl_s,
            self.cfg.renew_every_s,
        )
        coordinator = self.coordinator
        self.supervisor.spawn("cluster", functools.partial(coordinator.run, self.stop_event))
        self.supervisor.spawn("follow", functools.partial(self.follower.run, self.stop_event))

    async def stop(self) -> None:
        """After the supervisor cancelled the work: hand the leases back at once."""
        if self.coordinator is not None:
            await self.coordinator.close()

    def holds(self, name: str) -> bool:
        return self.coordinator is not None and self.coordinator.holds(name)

    def owns_index(self, chain: str) -> bool:
        """True when this instance may write `chain`'s indexed data (always on SQLite)."""
        return not self.enabled or self.holds(f"index:{chain}")

    # ------------------------------------------------------------ tenures
    def _guard(self, fence: Fence, work: Callable[[], Awaitable[None]]) -> Callable[[], Any]:
        return tenure_work(fence, work, self._fenced_out)

    def _fenced_out(self, fence: Fence) -> None:
        if self.coordinator is not None:
            self.coordinator.lost(fence, "a protected write was fenced out")

    async def _acquired(self, name: str, fence: Fence) -> None:
        kind, chain = name.split(":", 1)
        if kind == "index":
            await self._start_index(chain, fence)
        elif kind == "push" and self._push is not None:
            await self._push.start_chain(chain, fence, functools.partial(self._guard, fence))

    async def _start_index(self, chain: str, fence: Fence) -> None:
        assert self._indexing is not None  # set by start(), before any lease
        if self.follower is not None:
            # Everything the previous holder committed goes into our ledger first: the
            # new indexer only reports what it indexes itself.
            await self.follower.sync_chain(chain)
            self.follower.forget(chain)
        indexer = self._indexing.build(chain, SqlChainStore(self.store, fence=fence))
        # The checkpoint as the previous holder left it (its last write committed before
        # our acquisition could take the row lock).
        await indexer.load()
        self.indexers[chain] = indexer
        work = self._guard(fence, self._indexing.supervised(indexer))
        self.supervisor.spawn(f"index:{chain}", work)

    async def _lost(self, name: str, fence: Fence, reason: str) -> None:
        kind, chain = name.split(":", 1)
        await self._cancel(name)
        if kind == "index" and self.follower is not None:
            self.follower.forget(chain)

    async def _cancel(self, task_name: str) -> None:
        info = self.supervisor.tasks.get(task_name)
        if info is None or info.task is None:
            return
        if info.task.done():
            info.state = "stopped" if info.state != "failed" else info.state
            return
        info.task.cancel()
        # asyncio.wait, not await: never re-raise the task's cancellation here.
        await asyncio.wait({info.task}, timeout=10.0)
        # Cancelled while waiting to restart after a crash, the supervisor leaves the
        # task marked "backoff": mark it stopped, or the next tenure could not spawn it.
        info.state = "stopped"
        self.metrics.task_up.labels(task=task_name).set(0)

    # ------------------------------------------------------------ views
    def _metrics(self) -> None:
        c = self.coordinator
        if c is None:
            return
        m = self.metrics
        for name in c.names:
            m.cluster_lease_held.labels(lease=name).set(1 if c.holds(name) else 0)
            m.advance(m.cluster_takeovers, c.stats.takeovers.get(name, 0), name)
            m.advance(m.cluster_acquisitions, c.stats.acquisitions.get(name, 0), name)
            m.advance(m.cluster_losses, c.stats.losses.get(name, 0), name)
            m.advance(m.cluster_handoffs, c.stats.handoffs.get(name, 0), name)

    def chain_view(self, chain: str) -> dict[str, Any] | None:
        """`cluster` in /v1/chains: who holds this chain's index and push leases."""
        if not self.enabled:
            return None
        rows = {}
        if self.coordinator is not None:
            rows.update(self.coordinator.rows)
        if self.follower is not None:
            rows.update(self.follower.rows)  # polled more often
        out: dict[str, Any] = {"instance_id": self.instance_id}
        for kind in ("index", "push"):
            name = f"{kind}:{chain}"
            row = rows.get(name)
            fence = None if self.coordinator is None else self.coordinator.fence(name)
            out[kind] = {
                "lease": name,
                "holder": None if row is None else row.holder,
                "token": None if row is None else row.token,
                "live": False if row is None else row.live,
                "held_here": self.holds(name),
                "local_token": None if fence is None else fence.token,
                "acquired_at": None if row is None else row.acquired_at.timestamp(),
                "expires_at": None if row is None else row.expires_at.timestamp(),
                "previous_holder": None if row is None else row.previous_holder,
            }
        return out


def tenure_work(
    fence: Fence, work: Callable[[], Awaitable[None]], fenced_out: Callable[[Fence], None]
) -> Callable[[], Awaitable[None]]:
    """The supervised body of work a lease protects. A refused write ends the tenure,
    and so does a failure once the tenure is over: the lease expired while the work was
    mid-write (paused, stalled), the server may have closed the connection that write
    held, and cancelling it can surface as a driver error rather than a cancellation.
    Neither is a crash to restart with backoff; the next tenure starts fresh work."""

    async def run() -> None:
        try:
            await work()
        except FencedOut as exc:
            log.warning("%s", exc)
            fenced_out(fence)
        except Exception as exc:
            if not fence.revoked.is_set():
                raise
            log.warning(
                "lease %s: work stopped after the tenure (token %d) ended: %s: %s",
                fence.name,
                fence.token,
                type(exc).__name__,
                str(exc).splitlines()[0] if str(exc) else "",
            )

    return run


__all__ = ["ClusterWiring", "IndexWork", "PushWork", "clustered", "tenure_work"]
