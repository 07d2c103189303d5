"""The daemon: composition and lifecycle. It builds the parts, wires them together
with explicit parameters, starts them in a safe order and stops them.

Start-up order matters for safety: config is already valid; the store is
migrated; every chain must answer with its configured chain id (a wrong RPC URL
pointing at another network is fatal, not a warning); the book is loaded from
the store without RPC; then indexers, jobs and the API start.

The parts (docs/architecture.md): BookSync (store -> book: load, repair, reconcile),
Ledger (recompute loop, price refresh), HealthStream (/v1/stream), ApiViews (the API's
responses from a read-only LedgerReader), Status (/readyz, gauges), IndexerFactory,
PusherWiring and ClusterWiring. Data flows one way: chains/oracles -> store -> ledger
-> views, stream and pusher.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import time
from collections.abc import Mapping, Sequence

from aggregator.alerts.service import AlertService
from aggregator.alerts.snapshot import SnapshotCollector
from aggregator.api import Api, checksum_address
from aggregator.api_views import AccountViews, ApiViews, ChainSources, LedgerReader
from aggregator.attestation_feed import AttestationFeed
from aggregator.book_snapshot import BookSnapshots
from aggregator.book_sync import BookSync, book_fingerprint
from aggregator.claims import ClaimService
from aggregator.cluster.credit_policy import credit_policy_for
from aggregator.cluster.wiring import ClusterWiring, clustered
from aggregator.config import AppConfig
from aggregator.history.queries import HistoryQueries
from aggregator.history.recorder import HistoryRecorder
from aggregator.indexing import IndexerFactory
from aggregator.jobs import Jobs
from aggregator.ledger import Ledger
from aggregator.liquidity_feed import LiquidityFeed
from aggregator.lock import StoreLock, StoreLockedError
from aggregator.metrics import Metrics
from aggregator.portfolio_feed import PortfolioFeed
from aggregator.push.wiring import PusherWiring
from aggregator.reputation_feed import ReputationFeed, rpc_timestamps
from aggregator.risk.engine import RiskEngine
from aggregator.risk.liquidity_view import PoolLiquidity
from aggregator.risk.market import MarketData
from aggregator.risk.view import LedgerView
from aggregator.risk.whatif import DepthLiquidity
from aggregator.startup import (
    StartupError,
    freeze_startup_heap,
    kept_for_life,
    startup_step,
)
from aggregator.status import Status
from aggregator.store import Store
from aggregator.store.chain_repo import SqlChainStore
from aggregator.store.history_repo import HistoryRepo
from aggregator.store.price_repo import PriceRepo
from aggregator.stream import HealthStream
from aggregator.supervisor import Supervisor
from aggregator.var_feed import VarFeed
from aggregator.vol_forecast import VolatilityForecaster
from aggregator.whatif import WhatIfService
from chains.indexer import ChainIndexer
from chains.lst import LstRateReader, LstSource
from chains.rpc import RpcClient, RpcError
from chains.types import ChainSettings, RateSample
from oracles.service import OracleService

log = logging.getLogger(__name__)


class _RateProvider:
    """Feeds the oracle's exchange_rate sources from samples chains/ stored."""

    def __init__(
        self,
        cfg: AppConfig,
        repo: SqlChainStore,
        readers: Mapping[str, LstRateReader],
        sources: Mapping[str, Sequence[LstSource]],
    ) -> None:
        self.repo = repo
        self.where = {a.symbol: a.rate.chain for a in cfg.assets if a.rate is not None}
        self.readers = readers
        self.sources = {s.asset: s for chain_sources in sources.values() for s in chain_sources}

    async def latest(self, asset: str) -> RateSample | None:
        chain = self.where.get(asset)
        if chain is None:
            return None
        return (await self.repo.latest_rates(chain)).get(asset)

    async def rate_at(self, asset: str, timestamp: float) -> RateSample | None:
        """The chain's own rate at a configured cap snapshot's time (the cap's guard)."""
        src = self.sources.get(asset)
        reader = None if src is None else self.readers.get(self.where[asset])
        if src is None or reader is None:
            return None
        return await reader.read_at_time(src, timestamp)


class Daemon:
    def __init__(self, cfg: AppConfig, *, store: Store | None = None) -> None:
        self.cfg = cfg
        self.metrics = Metrics()
        self.supervisor = Supervisor(self.metrics)
        self.jobs = Jobs(self.metrics)
        self.stop_event = asyncio.Event()
        self.store = store or Store(cfg.store.url)
        self.store_lock = StoreLock(self.store.url)
        self.repo = SqlChainStore(self.store)
        self.price_repo = PriceRepo(self.store)
        self.settings = {c.name: ChainSettings.from_config(c) for c in cfg.chains}
        self.clients = {name: RpcClient.from_settings(s) for name, s in self.settings.items()}
        # Every indexed chain's indexer; shared, as cluster leases add chains at run time.
        self.indexers: dict[str, ChainIndexer] = {}
        self.engine = RiskEngine.from_config(
            credit_policy_for(cfg, clustered=clustered(self.store))
        )
        self.lst_sources: dict[str, list[LstSource]] = {}
        for a in cfg.assets:
            if a.rate is not None:
                self.lst_sources.setdefault(a.rate.chain, []).append(
                    LstSource(asset=a.symbol, kind=a.rate.kind, address=a.rate.address)
                )
        self.lst_readers = {
            chain: LstRateReader(chain, self.clients[chain], self.repo)
            for chain in self.lst_sources
        }
        self.oracle = OracleService.from_config(
            cfg.assets,
            cfg.oracle,
            ewma_lambda=cfg.risk.ewma_lambda,
            ewma_period_s=cfg.risk.ewma_period_s,
            batch_callers=self.clients,
            rate_provider=_RateProvider(cfg, self.repo, self.lst_readers, self.lst_sources),
            history=self.price_repo,
            source_timeout_s=cfg.scheduler.oracle_interval_s,
        )
        # Portfolio margin (docs/portfolio-margin.md): Markets events + scenario engine.
        # VaR margin (docs/var.md): calibration from the price history, a scheduled job.
        self.var = VarFeed(cfg, self.price_repo)
        self.portfolio = PortfolioFeed(cfg, self.store, calibration=self.var)
        # Reputation (docs/reputation.md): off unless [reputation] enabled.
        # Its attestation input ([reputation.attestation]): read by the reputation job.
        self.attestations = AttestationFeed(cfg, self.clients)
        self.reputation = ReputationFeed(
            cfg, self.store, self.engine, LedgerView(self.engine),
            attestations=self.attestations if self.attestations.enabled else None,
            timestamps=rpc_timestamps(self.clients),
        )  # fmt: skip
        # Pool liquidity (docs/risk.md "Liquidity weighting from pools").
        self.liquidity = LiquidityFeed(cfg, self.clients, self.metrics)
        self._wire_ledger()
        self._wire_api()

    def _wire_ledger(self) -> None:
        """The parts that keep and push the ledger, each given what it reads and calls."""
        cfg, ind = self.cfg, self.indexers
        # Several instances on PostgreSQL (docs/deployment.md): leases per chain.
        self.cluster = ClusterWiring(
            cfg.cluster,
            self.store,
            self.repo,
            supervisor=self.supervisor,
            metrics=self.metrics,
            stop=self.stop_event,
            indexers=ind,
        )
        # HealthRegistry pusher (docs/pusher.md).
        self.push = PusherWiring(
            cfg,
            self.engine,
            self.store,
            self.clients,
            metrics=self.metrics,
            supervisor=self.supervisor,
            stop=self.stop_event,
            indexers=ind,
            clustered=self.cluster.enabled,
        )
        self.reader = LedgerReader(self.engine)
        self.stream = HealthStream(self.reader)
        # Book snapshot (docs/performance.md "Start-up"): off unless [store] snapshot_path.
        self.snapshots: BookSnapshots | None = None
        if cfg.store.snapshot_path is not None:
            self.snapshots = BookSnapshots(
                cfg.store.snapshot_path,
                fingerprint=book_fingerprint(cfg),
                chains=cfg.chain_names,
                store=self.repo,
                metrics=self.metrics,
            )
        self.book = BookSync(
            cfg,
            self.repo,
            metrics=self.metrics,
            indexers=ind,
            owns_index=self.cluster.owns_index,
            # Late-bound: the ledger is built next, on this book's positions.
            recompute=lambda accounts: self.ledger.recompute_accounts(accounts),  # noqa: PLW0108
            snapshots=self.snapshots,
        )
        self.volatility = VolatilityForecaster(cfg, self.price_repo, self.metrics)
        self.ledger = Ledger(
            cfg,
            self.engine,
            oracle=self.oracle,
            portfolio=self.portfolio,
            metrics=self.metrics,
            positions=self.book.positions,
            indexers=ind,
            publish=self.stream.publish,
            wake=self.push.wake,
            volatility=self.volatility,
            pools=self.liquidity.pools if self.liquidity.enabled else None,
        )
        self.indexing = IndexerFactory(
            self.settings,
            self.clients,
            metrics=self.metrics,
            stop=self.stop_event,
            accounts_changed=self.ledger.accounts_changed,
            markets=self.portfolio.watch,
        )

    def _wire_console(self) -> None:
        """Risk history and alerts (docs/operations.md "History", "Alerts"): off the hot
        path, each a job reading the ledger through its read-only view."""
        cfg, view = self.cfg, LedgerView(self.engine)
        self.history: HistoryRecorder | None = None
        self.history_queries: HistoryQueries | None = None
        if cfg.history.enabled:
            repo = HistoryRepo(self.store)
            self.history = HistoryRecorder(
                cfg.history,
                repo,
                view,
                metrics=self.metrics,
                ready=lambda: self.ledger.prices_ready,
                recording=self._records_history,
                model=cfg.portfolio.mode,
                pushed_requirement=functools.partial(
                    self.portfolio.pushed_requirement, self.engine
                ),
            )
            self.history_queries = HistoryQueries(
                cfg.history,
                repo,
                in_book=lambda a: self.reader.find(a) is not None,
                model=cfg.portfolio.mode,
            )
        self.alerts: AlertService | None = None
        if cfg.alerts.enabled:
            collector = SnapshotCollector(
                view,
                prices=self.oracle.prices,
                indexers=self.indexers,
                pusher=self.push.chain_status,
                leases=self.cluster.chain_view,
                chains=cfg.chain_names,
                ready=lambda: self.ledger.prices_ready,
                keeper_min_eth=cfg.pusher.min_keeper_balance_eth,
                checksum=checksum_address,
            )
            self.alerts = AlertService(
                cfg.alerts,
                collector,
                self.metrics,
                instance=cfg.cluster.instance_id,
                leader=self._records_history,
            )

    def _records_history(self) -> bool:
        """One writer per store and one sender of the book's alerts: in cluster mode the
        holder of the first chain's index lease, so two instances never write the same
        buckets nor send the same alert."""
        return not self.cluster.enabled or self.cluster.holds(f"index:{self.cfg.chains[0].name}")

    def _wire_api(self) -> None:
        """What the API reads: status and the views over the ledger."""
        cfg, ind = self.cfg, self.indexers
        self._wire_console()
        alerts = self.alerts
        self.status = Status(
            ind,
            self.clients,
            self.supervisor,
            self.jobs,
            self.ledger,
            self.oracle,
            self.metrics,
            impossible=lambda: self.book.impossible,
            tier_counts=self.reader.tier_counts,
            pusher_reasons=self.push.readiness_reasons,
            lag_limit_s=cfg.scheduler.ledger_lag_unready_s,
            alert_reasons=alerts.readiness_reasons if alerts is not None else list,
        )
        accounts = AccountViews(
            self.reader,
            prices_ready=lambda: self.ledger.prices_ready,
            decimals={a.symbol: a.decimals for a in cfg.assets},
            indexers=ind,
            onchain=self.push.onchain_view,
            margin=functools.partial(self.portfolio.account_margin, self.engine),
            volatility=self.volatility.view,
            pushed_plan=functools.partial(self.portfolio.pushed_plan, self.engine),
            claims=self.book.claim_view,
        )
        chains = ChainSources(
            self.settings,
            ind,
            endpoints=lambda name: self.clients[name].status(),
            pusher=self.push.chain_status,
            cluster=self.cluster.chain_view,
        )
        # What-if on the live book (docs/whatif.md): the standard model and the pushed one.
        whatif_view = LedgerView(self.engine)
        depth = {a.symbol: a.depth_usd for a in cfg.assets}

        def pool_liquidity(slippage: float, market: MarketData, live: MarketData) -> PoolLiquidity:
            # Pools where configured and fresh (as the what-if's snapshot has them), priced
            # at the scenario; depth_usd elsewhere.
            fallback = DepthLiquidity(depth, cfg.risk.impact, slippage)
            return PoolLiquidity(live, market, whatif_view.asset_decimals, fallback, slippage)

        self.whatif = WhatIfService(
            cfg,
            whatif_view,
            prices_ready=lambda: self.ledger.prices_ready,
            models=self.portfolio.evaluated_models,
            liquidity=pool_liquidity,
        )
        self.views = ApiViews(
            accounts,
            prices=self.oracle,
            chains=chains,
            readiness=self.status.readiness,
            subscribe=self.stream.subscribe,
            metrics_text=self.metrics.render,
            set_push_paused=self.push.set_paused,
            volatility=self.volatility.view,
            whatif=self.whatif.serve,
            liquidity=lambda: self.reader.liquidity_report() if self.ledger.prices_ready else None,
            reputation=self.reputation.view,
        )
        # Seize vouchers of cross-chain liquidations, signed with the pusher's keeper key.
        self.claims = ClaimService(
            cfg,
            self.clients,
            keeper=self.push.voucher_key,
            on_outcome=lambda outcome: self.metrics.vouchers.labels(outcome=outcome).inc(),
        )
        self.api = Api(
            self.views,
            request_seconds=self.metrics.api_request_seconds,
            max_streams=self.cfg.api.max_streams,
            max_body_bytes=self.cfg.api.max_body_bytes,
            history=self.history_queries,
            alerts=alerts,
            claims=self.claims,
        )
        self.api.admin_token = self.push.admin_token

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> int:
        try:
            self.store_lock.acquire()
        except StoreLockedError as exc:
            raise StartupError(str(exc)) from None
        if self.snapshots is not None:
            # Read and check the book snapshot while the store migrates and the nodes
            # answer the chain id checks; the book load then takes it (book_snapshot.py).
            self.snapshots.prefetch()
        await startup_step("store migration", self.store.upgrade())
        await startup_step("chain id check", self._verify_chains())
        await startup_step("book load", self.book.load(self.engine))
        await startup_step("derivative positions load", self.portfolio.load())
        await startup_step("price history warm-up", self.oracle.start())
        await startup_step("var calibration", self.var.start())
        if self.attestations.enabled:
            await startup_step("attestation registry validation", self.attestations.start())
        if self.liquidity.enabled:
            await startup_step("pool validation and first read", self.liquidity.start())
            for chain in self.liquidity.chains:
                # Not critical: while a chain's pools cannot be read their snapshots
                # age into `stale` and the haircut falls back to depth_usd (visible as
                # agg_task_up, agg_liquidity_fallback), the ledger stays right.
                self.supervisor.spawn(
                    f"pools:{chain}",
                    self.liquidity.supervised(chain, self.stop_event),
                    critical=False,
                    # A node that does not answer is one warning line, not a traceback.
                    expected=(RpcError,),
                )
        await self._load_indexers()
        if self.book.impossible:
            await startup_step("repair of impossible positions", self.book.repair(at_start=True))
        await self._start_rates()
        if not self.cluster.enabled:  # else each chain's indexer starts under its lease
            for indexer in self.indexers.values():
                self.supervisor.spawn(f"index:{indexer.chain}", self.indexing.supervised(indexer))
        self.supervisor.spawn("recompute", functools.partial(self.ledger.run, self.stop_event))
        await startup_step(
            "pusher start",
            self.push.start(computed=self._computed, settled=self._settled),
        )
        await startup_step("cluster start", self.cluster.start(self.indexing, self.push))
        self._add_jobs()
        port = await startup_step("API bind", self.api.start(self.cfg.api.host, self.cfg.api.port))
        log.info("API on http://%s:%d", self.cfg.api.host, port)
        return port

    def _computed(self) -> bool:
        return self.ledger.prices_ready and self.book.loaded

    def _settled(self) -> bool:
        return self.ledger.ledger_settled() and not self.book.impossible

    async def _load_indexers(self) -> None:
        for name, settings in self.settings.items():
            if settings.vault is None:
                log.warning("chain %s: no vault configured; not indexed", name)
                continue
            indexer = self.indexing.build(name, self.repo)
            await startup_step(f"checkpoint load of {name}", indexer.load())
            self.indexers[name] = indexer

    async def _start_rates(self) -> None:
        if not self.lst_readers:
            return
        # Before the first price refresh, so LSTs are not `disputed` for a whole
        # lst_interval_s after every start for want of a rate sample.
        try:
            await startup_step("initial LST rate sample", self.sample_rates())
        except (RpcError, StartupError) as exc:
            log.warning("initial LST rate sampling failed: %s", exc)
        self.jobs.add(
            "lst_rates", self.sample_rates, self.cfg.scheduler.lst_interval_s, run_now=False
        )

    def _add_jobs(self) -> None:
        sch = self.cfg.scheduler
        self.jobs.add("oracle", self.ledger.refresh_prices, sch.oracle_interval_s)
        self.jobs.add("reconcile", self.book.reconcile, sch.reconcile_interval_s, critical=False)
        self.jobs.add("metrics", self.status.refresh_metrics, 5.0, critical=False)
        self.jobs.add("prune_history", self.prune_history, 86400.0, critical=False)
        if self.history is not None:
            self.jobs.add("history", self.history.run, self.cfg.history.interval_s, critical=False)
            self.jobs.add("prune_risk_history", self.history.prune, 86400.0, critical=False)
        if self.alerts is not None:
            self.alerts.start(self.supervisor)
            self.jobs.add(
                "alerts", self.alerts.evaluate, self.cfg.alerts.interval_s, critical=False
            )
        # Off the price path: the fit runs in a worker thread, refresh_prices reads it.
        self.jobs.add(
            "vol_forecast",
            self.volatility.refit,
            self.cfg.forecast.refit_interval_s,
            critical=False,
        )
        self.jobs.add(
            "var_calibration",
            self.var.recalibrate,
            self.cfg.var.recalibrate_interval_s,
            critical=False,
            run_now=False,
        )
        if self.reputation.enabled:
            self.jobs.add(
                "reputation", self.reputation.run, self.cfg.reputation.interval_s, critical=False
            )
        if self.snapshots is not None and self.cfg.store.snapshot_interval_s > 0:
            # Not critical: a failed snapshot only makes the next start slower (visible
            # as agg_job_failures{job="book_snapshot"} and agg_book_snapshot_writes).
            self.jobs.add(
                "book_snapshot",
                self.write_snapshot,
                self.cfg.store.snapshot_interval_s,
                critical=False,
                run_now=False,
            )
        self.jobs.start()

    async def stop(self) -> None:
        """Drain: stop scheduling, let running work finish, close every connection."""
        self.stop_event.set()
        await self.api.stop()
        await self.jobs.shutdown()
        await self.supervisor.stop()
        if self.snapshots is not None and self.book.loaded:
            # Indexers and the ledger are stopped: the book is what the store holds.
            try:
                await self.write_snapshot()
            except Exception:
                log.exception("book snapshot at stop failed; the previous one stays")
        await self.cluster.stop()
        await self.push.stop()
        self.stream.close()
        await self.oracle.close()
        for client in self.clients.values():
            await client.close()
        await self.store.close()
        # Last: the next daemon on this store may start only once nothing here writes.
        self.store_lock.release()

    async def _verify_chains(self) -> None:
        problems = []
        for name, client in self.clients.items():
            try:
                await client.connect()
            except RpcError as exc:
                problems.append(f"chain {name}: {exc}")
        if problems:
            for client in self.clients.values():
                await client.close()
            raise StartupError("; ".join(problems))

    # ------------------------------------------------------------ jobs
    async def write_snapshot(self) -> None:
        """The `book_snapshot` job (and the last step of a clean stop)."""
        if self.snapshots is None:
            return
        await self.snapshots.save(
            self.engine.export_book,
            self._snapshot_blocker,
            lambda: (
                {c: sorted(a) for c, a in self.book.impossible.items()},
                [(c, t, n) for (c, t), n in self.book.unknown_tokens.items()],
            ),
        )

    def _snapshot_blocker(self) -> str | None:
        """Why a copy of the book now would not be what the store holds at the marks
        just read (book_snapshot.py), or None."""
        if not self.book.loaded:
            return "the book is not loaded"
        if not self.ledger.ledger_settled():
            return f"{self.ledger.waiting()} account(s) changed in the store wait for the ledger"
        foreign = [c for c in self.cfg.chain_names if not self.cluster.owns_index(c)]
        if foreign:
            # A followed chain's book trails its store by a poll: no mark is known safe.
            return f"chains {foreign} are indexed by another instance"
        return None

    async def sample_rates(self) -> None:
        for chain, reader in self.lst_readers.items():
            await reader.read(self.lst_sources[chain])

    async def prune_history(self) -> None:
        removed = await self.price_repo.prune(time.time() - self.cfg.oracle.history_days * 86400)
        log.info(
            "price history: pruned %d rounds older than %s days",
            removed,
            self.cfg.oracle.history_days,
        )


async def run_daemon(
    cfg: AppConfig, *, ready: asyncio.Event | None = None, freeze: bool = False
) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code. `freeze`: this process
    exists to run the daemon (`aggregator run`), so what it builds is frozen out of the
    cyclic GC's walks (startup.py `kept_for_life`)."""
    with kept_for_life(freeze=freeze):
        daemon = Daemon(cfg)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.stop_event.set)
    try:
        await daemon.start()
    except StartupError as exc:
        log.error("refusing to start: %s", exc)
        await daemon.stop()
        return 1
    if freeze:
        # What the start loaded (the book, the engine, the pusher's readings) out of
        # the collector's full walks too: a full collection in the middle of a price
        # move's pushes cost 0.2-0.5 s of the event loop (docs/performance.md, "Push
        # latency: where the time goes").
        log.info("start-up heap frozen: %d objects", freeze_startup_heap())
    if ready is not None:
        ready.set()
    await daemon.stop_event.wait()
    log.info("stopping: draining jobs and closing connections")
    await daemon.stop()
    return 0


__all__ = ["Daemon", "StartupError", "run_daemon"]
