"""The pusher inside the daemon: key loading, supervised per-chain tasks, views.

Kept out of aggregator/daemon.py so the daemon only calls a handful of methods. It gets
everything through its constructor and start(): the engine, store, clients and task
supervisor, and two readiness inputs from the ledger. It imports nothing of the daemon.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aggregator.cluster.lease import Fence
from aggregator.config import AppConfig, load_secrets
from aggregator.metrics import Metrics
from aggregator.push.chain_pusher import ChainPusher
from aggregator.push.service import PushService
from aggregator.risk.engine import RiskEngine
from aggregator.startup import StartupError
from aggregator.store import Store
from aggregator.store.push_repo import SqlPushStore
from aggregator.supervisor import Supervisor
from chains.indexer import ChainIndexer
from chains.pusher.keys import KeeperKey, KeyLoadError, load_keeper_key
from chains.rpc import RpcClient

log = logging.getLogger(__name__)


class PusherWiring:
    def __init__(
        self,
        cfg: AppConfig,
        engine: RiskEngine,
        store: Store,
        clients: dict[str, RpcClient],
        *,
        metrics: Metrics,
        supervisor: Supervisor,
        stop: asyncio.Event,
        indexers: Mapping[str, ChainIndexer],
        clustered: bool,
    ) -> None:
        self.cfg = cfg
        self.engine = engine
        self.store = store
        self.clients = clients
        self.metrics = metrics
        self.supervisor = supervisor
        self.stop_event = stop
        self._indexers = indexers  # live: chains start and stop under their leases
        # Several instances (aggregator/cluster): each chain's loop starts under its lease.
        self.clustered = clustered
        self.service: PushService | None = None
        self._key: KeeperKey | None = None
        self.disabled_reason: str | None = None
        self._caught_up: set[str] = set()
        secrets = load_secrets()
        self._keeper_secret = secrets.keeper_key
        token = secrets.admin_token.get_secret_value() if secrets.admin_token else None
        # For the API's admin routes, which answer 403 while no token is configured.
        self.admin_token: str | None = token or None

    def _load_key(self) -> KeeperKey | None:
        p = self.cfg.pusher
        secret = self._keeper_secret.get_secret_value() if self._keeper_secret else None
        return load_keeper_key(
            secret,
            keystore=p.keystore_path,
            password_env=p.keystore_password_env,
            password_file=p.keystore_password_file,
        )

    def _readiness(
        self, computed: Callable[[], bool], settled: Callable[[], bool]
    ) -> Callable[[], bool]:
        """Push only from a complete ledger: prices computed and the book loaded
        (`computed`), every indexed chain caught up once (a half-indexed book would
        under-count debt and over-grant credit), no fatal chain, and (`settled`) no
        indexed change waiting for the ledger and no impossible stored position: one
        is out of the book until repaired, and pushing meanwhile could grant credit
        against debt the book does not see."""

        def ready() -> bool:
            if not computed():
                return False
            for name, ix in self._indexers.items():
                if ix.status.fatal:
                    return False
                if ix.status.caught_up:
                    self._caught_up.add(name)
                if name not in self._caught_up:
                    return False
            return settled()

        return ready

    async def start(self, *, computed: Callable[[], bool], settled: Callable[[], bool]) -> None:
        """`computed`: prices computed and the book loaded; `settled`: every indexed
        change in the ledger and no impossible stored position awaiting repair."""
        p = self.cfg.pusher
        if not p.enabled:
            self.disabled_reason = "pusher.enabled = false"
            return
        try:
            key = self._load_key()
        except KeyLoadError as exc:
            raise StartupError(f"keeper key: {exc}") from None
        if key is None and not p.dry_run:
            self.disabled_reason = (
                "no keeper key: set AGG_KEEPER_KEY or pusher.keystore_path (or pusher.dry_run)"
            )
            log.warning("pusher disabled: %s", self.disabled_reason)
            return
        service = PushService(
            self.cfg,
            self.engine,
            SqlPushStore(self.store),
            self.clients,
            metrics=self.metrics,
            key=key,
            ready=self._readiness(computed, settled),
        )
        await service.load()
        self.service = service
        self._key = key
        log.info(
            "pusher: keeper %s on %s%s",
            key.address if key else "(none)",
            ", ".join(service.chains) or "no chain with a registry",
            " [dry run]" if p.dry_run else "",
        )
        if self.clustered:
            return  # each chain's loop starts under its push lease (start_chain)
        for name in service.chains:
            self.supervisor.spawn(
                f"push:{name}", functools.partial(service.run_chain, name, self.stop_event)
            )

    async def start_chain(
        self,
        name: str,
        fence: Fence,
        guard: Callable[[Callable[[], Awaitable[None]]], Callable[[], Awaitable[None]]],
    ) -> None:
        """Multi-instance: this instance now holds `push:<name>` (aggregator/cluster). A
        fresh sender over a store fenced by the lease: its first step reconciles the
        stored nonce and pending records with the chain, as after a restart."""
        s = self.service
        if s is None or name not in s.chains:
            return
        old = s.chains[name]
        cp = ChainPusher(
            old.settings,
            old.client,
            SqlPushStore(self.store, fence=fence),
            self._key,
            dry_run=s.dry_run,
        )
        await cp.listener.load()
        s.chains[name] = cp
        self.supervisor.spawn(
            f"push:{name}", guard(functools.partial(s.run_chain, name, self.stop_event))
        )

    async def stop(self) -> None:
        """Every record is persisted before its broadcast, so stopping needs no flush; say
        what the next start will reconcile."""
        s = self.service
        if s is None:
            return
        for name, cp in s.chains.items():
            if cp.sender is not None and cp.sender.records:
                log.info(
                    "pusher %s: stopping with %d transaction(s) in flight (nonces %s); "
                    "the next start reconciles them with the chain",
                    name,
                    len(cp.sender.records),
                    ", ".join(str(r.nonce) for r in cp.sender.open_records()),
                )

    def wake(self) -> None:
        if self.service is not None:
            self.service.wake()

    def set_paused(self, paused: bool) -> dict[str, Any]:
        if self.service is None:
            return {"paused": paused, "enabled": False, "reason": self.disabled_reason}
        out = self.service.set_paused(paused)
        self.metrics.pusher_paused.set(1 if paused else 0)
        return {**out, "enabled": True}

    def chains(self) -> list[str]:
        """The chains with a registry this pusher updates (none while disabled)."""
        return [] if self.service is None else list(self.service.chains)

    def voucher_key(self, chain: str) -> KeeperKey | None:
        """The key that signs cross-chain seize vouchers settled on `chain`
        (aggregator/claims.py): the one this pusher updates `chain`'s registry with, so
        the vault's keeper check on the signer is the trust the registry already has.
        None while the pusher runs without a key, or `chain` has no registry."""
        if self.service is None or chain not in self.service.chains:
            return None
        return self._key

    def readiness_reasons(self) -> list[str]:
        return [] if self.service is None else self.service.readiness_reasons()

    def chain_status(self, name: str) -> dict[str, Any]:
        if self.service is None:
            return {"enabled": False, "reason": self.disabled_reason or "not started"}
        return self.service.chain_status(name)

    def onchain_view(self, address: str) -> dict[str, Any] | None:
        return None if self.service is None else self.service.onchain_view(address)
