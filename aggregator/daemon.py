"""The daemon: wires chains/ and oracles/ facts into the risk engine and serves the API.

Start-up order matters for safety: config is already valid; the store is
migrated; every chain must answer with its configured chain id (a wrong RPC URL
pointing at another network is fatal, not a warning); the book is loaded from
the store without RPC; then indexers, jobs and the API start.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import math
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Iterable
from typing import Any, TypeVar

from aggregator.api import Api, ApiError, checksum_address
from aggregator.cluster.wiring import ClusterWiring
from aggregator.config import AppConfig
from aggregator.jobs import Jobs
from aggregator.lock import StoreLock, StoreLockedError
from aggregator.metrics import Metrics
from aggregator.portfolio_feed import PortfolioFeed
from aggregator.push.wiring import PusherWiring
from aggregator.risk.book import MAX_AMOUNT, PositionRow
from aggregator.risk.engine import PriceInput, RiskEngine
from aggregator.store import Store
from aggregator.store.chain_repo import SqlChainStore
from aggregator.store.price_repo import PriceRepo
from aggregator.supervisor import Supervisor
from chains.indexer import ChainIndexer, Progress
from chains.lst import LstRateReader, LstSource
from chains.rpc import RpcClient, RpcError
from chains.types import ChainSettings, Position, RateSample
from chains.units import TIERS
from oracles.service import OracleService
from oracles.types import Price, PriceStatus

log = logging.getLogger(__name__)

SUBSCRIBER_QUEUE = 1000
STARTUP_STEP_TIMEOUT_S = 60.0
T = TypeVar("T")


class StartupError(RuntimeError):
    """A condition that makes running unsafe (wrong chain id, unreachable chain)."""


class _RateProvider:
    """Feeds the oracle's exchange_rate sources from samples chains/ stored."""

    def __init__(self, cfg: AppConfig, repo: SqlChainStore) -> None:
        self.repo = repo
        self.where = {a.symbol: a.rate.chain for a in cfg.assets if a.rate is not None}

    async def latest(self, asset: str) -> RateSample | None:
        chain = self.where.get(asset)
        if chain is None:
            return None
        return (await self.repo.latest_rates(chain)).get(asset)


class Daemon:
    def __init__(self, cfg: AppConfig, *, store: Store | None = None) -> None:
        self.cfg = cfg
        self.metrics = Metrics()
        self.supervisor = Supervisor(self.metrics)
        self.jobs = Jobs(self.metrics)
        self.store = store or Store(cfg.store.url)
        self.store_lock = StoreLock(self.store.url)
        self.repo = SqlChainStore(self.store)
        self.price_repo = PriceRepo(self.store)
        self.settings = {c.name: ChainSettings.from_config(c) for c in cfg.chains}
        self.clients = {name: RpcClient.from_settings(s) for name, s in self.settings.items()}
        self.indexers: dict[str, ChainIndexer] = {}
        # chain -> accounts whose stored positions are impossible, awaiting repair.
        self._impossible: dict[str, set[str]] = {}
        self.engine = RiskEngine.from_config(cfg)
        self.oracle = OracleService.from_config(
            cfg.assets,
            cfg.oracle,
            ewma_lambda=cfg.risk.ewma_lambda,
            batch_callers=self.clients,
            rate_provider=_RateProvider(cfg, self.repo),
            history=self.price_repo,
            source_timeout_s=cfg.scheduler.oracle_interval_s,
        )
        self.token_symbol: dict[tuple[str, str], str] = {
            (chain, token.lower()): a.symbol
            for a in cfg.assets
            for chain, token in a.tokens.items()
        }
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
        self.api = Api(self, request_seconds=self.metrics.api_request_seconds)
        self.stop_event = asyncio.Event()
        self._dirty: set[str] = set()
        # Monotonic time of the oldest change in _dirty, and of the oldest change in the
        # batch being recomputed (None: no recompute running): how far the ledger lags
        # what was indexed.
        self._dirty_since: float | None = None
        self._recomputing_since: float | None = None
        self.metrics.ledger_lag.set_function(self.ledger_lag_s)
        self._live: set[tuple[str, str]] = set()
        self._dirty_event = asyncio.Event()
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._last_health: dict[str, tuple[float, str, bool]] = {}
        self.prices_ready = False
        self.book_loaded = False
        self.started_at = time.time()
        self.unknown_tokens: dict[tuple[str, str], int] = {}
        # HealthRegistry pusher (docs/pusher.md); also sets the API's admin token.
        self.push = PusherWiring(self)
        # Portfolio margin (docs/portfolio-margin.md): Markets events + scenario engine.
        self.portfolio = PortfolioFeed(cfg, self.store)
        # Several instances on PostgreSQL (docs/deployment.md): leases per chain.
        self.cluster = ClusterWiring(self)

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> int:
        try:
            self.store_lock.acquire()
        except StoreLockedError as exc:
            raise StartupError(str(exc)) from None
        await self._step("store migration", self.store.upgrade())
        await self._step("chain id check", self._verify_chains())
        await self._step("book load", self._load_book())
        await self._step("derivative positions load", self.portfolio.load())
        await self._step("price history warm-up", self.oracle.start())
        for name, settings in self.settings.items():
            if settings.vault is None:
                log.warning("chain %s: no vault configured; not indexed", name)
                continue
            indexer = ChainIndexer(
                settings,
                self.clients[name],
                self.repo,
                on_accounts_changed=self._accounts_changed,
                on_progress=self._progress,
                markets=self.portfolio.watch(name),
            )
            await self._step(f"checkpoint load of {name}", indexer.load())
            self.indexers[name] = indexer
        if self._impossible:
            await self._step(
                "repair of impossible positions", self._repair_positions(at_start=True)
            )
        sch = self.cfg.scheduler
        if self.lst_readers:
            # Before the first price refresh, so LSTs are not `disputed` for a whole
            # lst_interval_s after every start for want of a rate sample.
            try:
                await self._step("initial LST rate sample", self.sample_rates())
            except (RpcError, StartupError) as exc:
                log.warning("initial LST rate sampling failed: %s", exc)
            self.jobs.add("lst_rates", self.sample_rates, sch.lst_interval_s, run_now=False)
        for indexer in self.indexers.values():
            if self.cluster.enabled:
                break  # each chain's indexer starts under its index lease
            self.supervisor.spawn(f"index:{indexer.chain}", self._index_loop(indexer))
        self.supervisor.spawn("recompute", self._recompute_loop)
        await self._step("pusher start", self.push.start())
        await self._step("cluster start", self.cluster.start())
        self.jobs.add("oracle", self.refresh_prices, sch.oracle_interval_s)
        self.jobs.add("reconcile", self.reconcile, sch.reconcile_interval_s, critical=False)
        self.jobs.add("metrics", self.refresh_metrics, 5.0, critical=False)
        self.jobs.add("prune_history", self.prune_history, 86400.0, critical=False)
        self.jobs.start()
        port = await self._step("API bind", self.api.start(self.cfg.api.host, self.cfg.api.port))
        log.info("API on http://%s:%d", self.cfg.api.host, port)
        return port

    async def _step(self, what: str, work: Awaitable[T]) -> T:
        """A start-up step that hangs is a named error, not a daemon stuck before its API."""
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(STARTUP_STEP_TIMEOUT_S):
                result = await work
        except TimeoutError:
            raise StartupError(
                f"start-up step '{what}' did not finish in {STARTUP_STEP_TIMEOUT_S:.0f}s"
            ) from None
        log.debug("start-up: %s took %.3fs", what, time.perf_counter() - t0)
        return result

    async def stop(self) -> None:
        """Drain: stop scheduling, let running work finish, close every connection."""
        self.stop_event.set()
        await self.api.stop()
        await self.jobs.shutdown()
        await self.supervisor.stop()
        await self.cluster.stop()
        await self.push.stop()
        for q in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait({"event": "shutdown"})
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

    def _index_loop(self, indexer: ChainIndexer) -> Any:
        async def run() -> None:
            await indexer.run(self.stop_event)
            if indexer.status.fatal:
                # A fatal chain (deep reorg, wrong chain) stays visible in /readyz and
                # metrics; the indexer keeps its reason in the store across restarts.
                self.metrics.chain_fatal.labels(chain=indexer.chain).set(1)

        return run

    # ------------------------------------------------------------ facts -> book
    def _row(self, p: Position) -> PositionRow | None:
        symbol = self.token_symbol.get((p.chain, p.token.lower()))
        if symbol is None:
            key = (p.chain, p.token.lower())
            if key not in self.unknown_tokens:
                log.warning(
                    "chain %s: vault position in unconfigured token %s (account %s) is ignored "
                    "for risk; add it to [[assets]] to count it",
                    p.chain,
                    p.token,
                    p.account,
                )
            self.unknown_tokens[key] = self.unknown_tokens.get(key, 0) + 1
            return None
        return PositionRow(p.account, p.chain, symbol, p.kind, p.head_amount, p.confirmed_amount)

    def _rows(self, positions: Iterable[Position]) -> list[PositionRow]:
        rows = []
        for p in positions:
            r = self._row(p)
            if r is None:
                continue
            if not (0 <= r.head <= MAX_AMOUNT and 0 <= r.confirmed <= MAX_AMOUNT):
                # The store says something the chain cannot hold (e.g. debt below zero).
                # Counting it would be a wrong number and refusing the account forever a
                # dead daemon: keep it out of the book and repair it from the chain
                # (_repair_positions) before anything is pushed.
                log.error(
                    "chain %s account %s %s %s: stored amounts head %d / confirmed %d are "
                    "impossible; repairing from the chain",
                    p.chain,
                    p.account,
                    r.asset,
                    p.kind,
                    r.head,
                    r.confirmed,
                    extra={"chain": p.chain, "account": p.account},
                )
                self._impossible.setdefault(p.chain, set()).add(p.account)
                continue
            rows.append(r)
        return rows

    async def _repair_positions(self, *, at_start: bool = False) -> None:
        """Reconcile the accounts whose stored positions were impossible against
        collateralOf/debtOf (the chain's value wins, as a correction event), then load
        them. At start an account that cannot be repaired stops the start with its name:
        serving or pushing a number known to be wrong is worse than not starting."""
        pending, self._impossible = self._impossible, {}
        deferred: dict[str, set[str]] = {}
        for chain, accounts in pending.items():
            indexer = self.indexers.get(chain)
            if indexer is None and at_start:
                raise StartupError(
                    f"chain {chain}: stored positions of {sorted(accounts)} are impossible "
                    "and the chain is not indexed here, so they cannot be repaired"
                )
            if indexer is None or (self.cluster.enabled and not self.cluster.owns_index(chain)):
                # Another instance indexes this chain (or will): its reconcile repairs it.
                deferred.setdefault(chain, set()).update(accounts)
                continue
            try:
                found = await indexer.reconcile(sorted(accounts))
            except RpcError as exc:
                if at_start:
                    raise StartupError(
                        f"chain {chain}: stored positions of {sorted(accounts)} are impossible "
                        f"and the chain could not be read to repair them: {exc}"
                    ) from exc
                self._impossible.setdefault(chain, set()).update(accounts)
                continue
            self.metrics.reconcile_mismatch.labels(chain=chain).inc(len(found))
            log.warning("chain %s: repaired %d position(s) from the chain", chain, len(found))
            await self.recompute_accounts(accounts)
        if at_start and self._impossible:
            raise StartupError(f"impossible stored positions left unrepaired: {self._impossible}")
        for chain, accounts in deferred.items():
            self._impossible.setdefault(chain, set()).update(accounts)

    async def _load_book(self) -> None:
        t0 = time.perf_counter()
        rows: list[PositionRow] = []
        for chain in self.settings:
            rows += self._rows(await self.repo.positions(chain))
        self.engine.load_positions(rows)
        self.book_loaded = True
        log.info(
            "book loaded: %d positions, %d accounts in %.3fs (no RPC)",
            len(rows),
            self.engine.book.n_accounts,
            time.perf_counter() - t0,
        )

    async def _accounts_changed(self, chain: str, accounts: set[str]) -> None:
        # Kept as the indexer wrote them: the store is queried with the same spelling.
        if self._dirty_since is None and accounts:
            self._dirty_since = time.monotonic()
        self._dirty.update(accounts)
        indexer = self.indexers.get(chain)
        if indexer is not None and indexer.status.caught_up:
            # Following the head: these changes are new activity, which the demand
            # credit policy should see. Backfilled history is not.
            self._live.update((a.lower(), chain) for a in accounts)
        self._dirty_event.set()
        await self.portfolio.accounts_changed(accounts)

    def _progress(self, p: Progress) -> None:
        self.metrics.backfill_blocks_per_s.labels(chain=p.chain).set(p.blocks_per_s)
        self.metrics.backfill_eta_s.labels(chain=p.chain).set(p.eta_s if p.eta_s else 0)

    async def _recompute_loop(self) -> None:
        """Event-driven, debounced: a burst of events for one account costs one recompute."""
        debounce = self.cfg.scheduler.recompute_debounce_s
        while not self.stop_event.is_set():
            await self._dirty_event.wait()
            await asyncio.sleep(debounce)
            self._dirty_event.clear()
            batch, self._dirty = self._dirty, set()
            since, self._dirty_since = self._dirty_since, None
            if not batch:
                continue
            started = self._recomputing_since = since if since is not None else time.monotonic()
            try:
                await self.recompute_accounts(batch)
            except BaseException:
                # Not in the ledger: back in the queue, with its age, for the task the
                # supervisor restarts (or the next start). Dropped, an account would
                # keep its old figures until its next event.
                self._dirty |= batch
                if self._dirty_since is None or started < self._dirty_since:
                    self._dirty_since = started
                self._dirty_event.set()
                raise
            finally:
                self._recomputing_since = None

    def ledger_lag_s(self) -> float:
        """Seconds the oldest indexed change not yet in the ledger has waited (0: none)."""
        pending = [t for t in (self._dirty_since, self._recomputing_since) if t is not None]
        return time.monotonic() - min(pending) if pending else 0.0

    def ledger_settled(self) -> bool:
        """Every indexed change is in the ledger (what tests wait for; /readyz allows
        `scheduler.ledger_lag_unready_s` of lag)."""
        return not self._dirty and self._recomputing_since is None

    async def recompute_accounts(self, accounts: Iterable[str]) -> None:
        accounts = list(accounts)
        rows: list[PositionRow] = []
        for chain in self.settings:
            rows += self._rows(await self.repo.positions(chain, accounts))
        now = time.time()
        live, self._live = self._live, set()
        for row in rows:
            if (row.account.lower(), row.chain) in live:
                self._record_consumption(row, now)
            self.engine.apply_position(row)
        if self.prices_ready:
            self._portfolio_override({r.account for r in rows} | set(accounts))
            self.engine.allocate_credit(accounts=[r.account for r in rows])
            self._publish({r.account.lower() for r in rows})
            self.push.wake()

    def _portfolio_override(self, accounts: set[str] | None) -> None:
        """[portfolio] mode = "portfolio": the portfolio figures become the ones the
        credit allocation and the pusher use (docs/portfolio-margin.md). A portfolio
        input that is missing (e.g. no implied volatility for an option's underlying)
        keeps the standard figures for this round and says so."""
        try:
            self.portfolio.override(self.engine, accounts)
        except (KeyError, ValueError, RuntimeError) as exc:
            log.error("portfolio margin not applied, standard figures kept: %s", exc)

    def _record_consumption(self, row: PositionRow, now: float) -> None:
        """Feed the demand credit policy: a borrow (debt up) or a withdrawal (collateral
        down) at the head consumed credit on that chain. Derived from the position
        change, so it needs no extra RPC or event table."""
        book = self.engine.book
        a = book.find_account(row.account)
        if a is None or not self.prices_ready:
            return
        side = 0 if row.side == "collateral" else 1
        r = book.lookup(book.key(a, book.chain_index[row.chain], book.asset_index[row.asset], side))
        before = 0 if r < 0 else book.exact(r)[0]
        delta = row.head - before if side == 1 else before - row.head
        if delta <= 0:
            return
        asset = self.cfg.asset(row.asset)
        price = self.oracle.price(row.asset)
        if price is None or price.value is None:
            return
        usd = delta / 10**asset.decimals * price.value * (asset.ltv if side == 0 else 1.0)
        self.engine.record_consumption(row.account, row.chain, usd, now)

    async def refresh_prices(self) -> None:
        prices = await self.oracle.refresh()
        self.engine.set_prices({sym: _price_input(p) for sym, p in prices.items()})
        sigma = {a: self.oracle.volatility(a) for a in self.engine.symbols}
        relative = {
            g.name: {
                a: self.oracle.relative_volatility(a, g.reference)
                for a in g.assets
                if a != g.reference
            }
            for g in self.cfg.correlation_groups
        }
        self.engine.set_volatility(sigma, relative)
        with self.metrics.recompute_seconds.time():
            self.engine.recompute()
            self._portfolio_override(None)
            self.engine.allocate_credit()
        self.prices_ready = True
        for sym, p in prices.items():
            self.metrics.price_ok.labels(asset=sym).set(1 if p.usable else 0)
            if p.value is not None:
                self.metrics.price.labels(asset=sym).set(p.value)
            if p.timestamp is not None:
                self.metrics.price_age.labels(asset=sym).set(max(0.0, time.time() - p.timestamp))
            for src in p.sources:
                if src.failure:
                    self.metrics.source_failures.labels(
                        asset=sym, source=src.source, reason=src.failure
                    ).inc()
        self._publish(None)
        self.push.wake()

    async def sample_rates(self) -> None:
        for chain, reader in self.lst_readers.items():
            await reader.read(self.lst_sources[chain])

    async def reconcile(self) -> None:
        if self._impossible:
            await self._repair_positions()
        for name, indexer in self.indexers.items():
            if indexer.status.fatal or not indexer.status.caught_up:
                continue
            if not self.cluster.owns_index(name):
                continue  # indexed (and reconciled) by another instance
            mismatches = await indexer.reconcile()
            if mismatches:
                self.metrics.reconcile_mismatch.labels(chain=name).inc(len(mismatches))
                await self.recompute_accounts({m.account for m in mismatches})

    async def prune_history(self) -> None:
        removed = await self.price_repo.prune(time.time() - self.cfg.oracle.history_days * 86400)
        log.info(
            "price history: pruned %d rounds older than %s days",
            removed,
            self.cfg.oracle.history_days,
        )

    async def refresh_metrics(self) -> None:
        for name, indexer in self.indexers.items():
            st = indexer.status
            self.metrics.chain_head.labels(chain=name).set(st.head_block)
            self.metrics.chain_indexed.labels(chain=name).set(st.indexed_block)
            self.metrics.chain_confirmed.labels(chain=name).set(st.confirmed_block)
            self.metrics.chain_lag.labels(chain=name).set(max(0, st.head_block - st.indexed_block))
            self.metrics.chain_fatal.labels(chain=name).set(1 if st.fatal else 0)
            for ep in self.clients[name].status():
                self.metrics.endpoint_healthy.labels(chain=name, endpoint=ep.url).set(
                    1 if ep.state == "healthy" else 0
                )
        for tier, n in self.engine.tier_counts().items():
            self.metrics.accounts.labels(tier=tier).set(n)
        self._refresh_counters_and_prices()

    def _refresh_counters_and_prices(self) -> None:
        """Counters fed from the indexers' and RPC clients' own totals, and price age
        between refreshes (a price that stops refreshing must be seen ageing)."""
        m = self.metrics
        for name, indexer in self.indexers.items():
            m.advance(m.chain_events, indexer.status.events_total, name)
            m.advance(m.reorgs, indexer.status.reorgs, name)
        for name, client in self.clients.items():
            for ep in client.status():
                m.advance(m.rpc_requests, ep.requests, name, ep.url)
                m.advance(m.rpc_errors, ep.errors, name, ep.url)
        now = time.time()
        for sym, p in self.oracle.prices().items():
            if p.timestamp is not None:
                m.price_age.labels(asset=sym).set(max(0.0, now - p.timestamp))
            for status in PriceStatus:
                m.price_status.labels(asset=sym, status=str(status)).set(
                    1 if p.status == status else 0
                )

    # ------------------------------------------------------------ SSE
    def _publish(self, accounts: set[str] | None) -> None:
        """Send health changes (tier, degraded or HF moved >= 0.1%) to stream subscribers."""
        if not self.prices_ready:
            return
        book = self.engine.book
        candidates = accounts if accounts is not None else [a.lower() for a in book.account_address]
        for addr in candidates:
            if book.find_account(addr) is None:
                continue
            h = self.engine.health(addr)
            prev = self._last_health.get(addr)
            now = (h.hf, h.tier, h.degraded)
            self._last_health[addr] = now
            if prev is not None and prev[1:] == now[1:] and _close(prev[0], h.hf):
                continue
            event = {
                "account": checksum_address(h.account),
                "hf": h.hf,
                "tier": h.tier,
                "degraded": h.degraded,
                "borrowing_power_usd": h.bp,
                "previous_tier": prev[1] if prev else None,
                "at": time.time(),
            }
            for q in list(self._subscribers):
                try:
                    q.put_nowait(event)
                except asyncio.QueueFull:
                    # A slow client is dropped rather than growing memory without bound,
                    # and told so: the oldest queued event makes room for the notice.
                    self._subscribers.discard(q)
                    q.get_nowait()
                    q.put_nowait({"event": "overflow"})

    # ------------------------------------------------------------ ApiBackend
    def readiness(self) -> tuple[bool, list[str]]:
        reasons: list[str] = []
        for name, indexer in self.indexers.items():
            st = indexer.status
            if st.fatal:
                reasons.append(f"chain {name}: FATAL {st.fatal_reason}")
            elif not st.caught_up:
                reasons.append(
                    f"chain {name}: syncing (indexed {st.indexed_block}, head {st.head_block})"
                )
        for t in self.supervisor.unhealthy():
            reasons.append(f"task {t.name}: {t.state} ({t.last_error})")
        reasons += self.jobs.unhealthy()
        lag = self.ledger_lag_s()
        if lag > self.cfg.scheduler.ledger_lag_unready_s:
            # Indexed but not yet in the ledger: what the API shows lags the chain.
            reasons.append(
                f"ledger: {len(self._dirty)} accounts waiting for recompute, the oldest "
                f"change for {lag:.1f}s (limit {self.cfg.scheduler.ledger_lag_unready_s:g}s)"
            )
        if not self.prices_ready:
            reasons.append("prices: no refresh completed yet")
        else:
            for sym, p in self.oracle.prices().items():
                if not p.usable:
                    reasons.append(f"price {sym}: {p.status} ({p.reason})")
        if self._impossible:
            reasons.append(
                "store: impossible stored positions awaiting repair from the chain: "
                + ", ".join(f"{c} {sorted(a)}" for c, a in sorted(self._impossible.items()))
            )
        reasons += self.push.readiness_reasons()
        return not reasons, reasons

    def _require_prices(self) -> None:
        if not self.prices_ready:
            # The account may well exist; answering 404 before the first price
            # refresh would tell a client something false.
            raise ApiError(
                503, "prices", "risk not computed yet (no price refresh completed); see /readyz"
            )

    def account_detail(self, address: str) -> dict[str, Any] | None:
        self._require_prices()
        if self.engine.book.find_account(address.lower()) is None:
            return None
        view = self.engine.explain(address)
        view["account"] = checksum_address(view["account"])
        _api_conventions(view, {a.symbol: a.decimals for a in self.cfg.assets})
        view["as_of"] = {
            name: {
                "indexed_block": ix.status.indexed_block,
                "confirmed_block": ix.status.confirmed_block,
                "head_block": ix.status.head_block,
            }
            for name, ix in self.indexers.items()
        }
        # What each chain's HealthRegistry holds now (last read by the pusher).
        view["onchain"] = self.push.onchain_view(address)
        return view

    def account_margin(self, address: str) -> dict[str, Any] | None:
        """Standard and portfolio margin side by side, with greeks (portfolio mode)."""
        self._require_prices()
        return self.portfolio.account_margin(self.engine, address)

    def account_health(self, address: str) -> dict[str, Any] | None:
        self._require_prices()
        eng = self.engine
        a = eng.book.find_account(address)
        if a is None:
            return None
        # The hottest route: read the stored results of the last recompute (what
        # engine.health() returns for these fields) rather than engine.health(), which
        # also re-derives the collateral sums this view does not show.
        hf = float(eng.r_hf[a])
        bp = float(eng.r_bp[a])
        finite = math.isfinite(hf)
        return {
            "account": checksum_address(eng.book.account_address[a]),
            "hf": hf if finite else None,
            "hf_text": f"{hf:.6f}" if finite else "inf",
            "borrowing_power_usd": bp if math.isfinite(bp) else None,
            "tier": TIERS[int(eng.r_tier[a])],
            # Exact decimal strings of the usd6 integers that are pushed on-chain.
            "credit_usd": {
                c: usd6_text(v) for c, v in zip(eng.chains, eng.credit[a].tolist(), strict=True)
            },
            "status": "degraded" if eng.r_degraded[a] else "ok",
        }

    # -- /v1/accounts/{address}/health fast path (bench/api_load.py) -------------------
    def account_health_body(self, address: str) -> bytes | None:
        """The JSON body of account_health(address), byte for byte what
        api.dumps(account_health(address)) encodes, formatted directly: building the
        dict and running the encoder over it was most of the route's own CPU. `address`
        is the one the client asked for (any case; the API has matched its form): it is
        the book's account, so its checksum is the view's `account`.
        tests/unit/api/test_health_body.py compares the two over every kind of account."""
        self._require_prices()
        eng = self.engine
        a = eng.book.find_account(address)
        if a is None:
            return None
        hf = float(eng.r_hf[a])
        bp = float(eng.r_bp[a])
        if math.isfinite(hf):
            hf_json, hf_text = repr(hf), f"{hf:.6f}"
        else:
            hf_json, hf_text = "null", "inf"
        credit = _credit_template(tuple(eng.chains)) % tuple(
            [usd6_text(v) for v in eng.credit[a].tolist()]
        )
        return (
            f'{{"account": "{checksum_address(address)}", "hf": {hf_json}, '
            f'"hf_text": "{hf_text}", '
            f'"borrowing_power_usd": {repr(bp) if math.isfinite(bp) else "null"}, '
            f'"tier": "{TIERS[int(eng.r_tier[a])]}", "credit_usd": {credit}, '
            f'"status": "{"degraded" if eng.r_degraded[a] else "ok"}"}}'
        ).encode()

    def list_accounts(
        self, tier: str | None, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        self._require_prices()
        start = int(cursor) if cursor else 0
        if tier is None:
            addrs = self.engine.book.account_address[start : start + limit]
            nxt_i = start + limit if start + limit < self.engine.book.n_accounts else None
        else:
            addrs, nxt_i = self.engine.accounts_by_tier(tier, limit, start)
        items = [h for h in (self.account_health(a) for a in addrs) if h is not None]
        return items, None if nxt_i is None else str(nxt_i)

    def prices(self) -> dict[str, Any]:
        return {"prices": {sym: price_view(p) for sym, p in self.oracle.prices().items()}}

    def price(self, asset: str) -> dict[str, Any] | None:
        if asset not in self.engine.symbols:
            return None
        p = self.oracle.price(asset)
        if p is None:
            return {"asset": asset, "status": "unavailable", "reason": "not refreshed yet"}
        return price_view(p)

    def chains(self) -> list[dict[str, Any]]:
        out = []
        for name, settings in self.settings.items():
            ix = self.indexers.get(name)
            st: dict[str, Any] = dataclasses.asdict(ix.snapshot()) if ix else {"indexed": False}
            st["endpoints"] = [dataclasses.asdict(e) for e in self.clients[name].status()]
            st["chain"] = name  # also for a chain without a vault (not indexed)
            st["chain_id"] = settings.chain_id
            st["confirmations"] = settings.confirmations
            st["pusher"] = self.push.chain_status(name)
            st["cluster"] = self.cluster.chain_view(name)
            out.append(st)
        return out

    async def _subscription(self) -> AsyncIterator[dict[str, Any]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self._subscribers.add(q)
        try:
            while True:
                event = await q.get()
                yield event
                if event.get("event") in ("shutdown", "overflow"):
                    return
        finally:
            self._subscribers.discard(q)

    def subscribe(self) -> AsyncIterator[dict[str, Any]]:
        return self._subscription()

    def metrics_text(self) -> bytes:
        return self.metrics.render()

    def set_push_paused(self, paused: bool) -> dict[str, Any]:
        """Admin: stop or restart sending new update batches (receipts are still followed)."""
        return self.push.set_paused(paused)


@functools.lru_cache(maxsize=8)
def _credit_template(chains: tuple[str, ...]) -> str:
    """`credit_usd` of the health view as a %-template: chain names JSON-encoded once,
    exactly as the API's encoder writes them (a % in a name is escaped)."""
    keys = [json.dumps(c).replace("%", "%%") for c in chains]
    return "{" + ", ".join(f'{k}: "%s"' for k in keys) + "}"


def usd6_text(v: int) -> str:
    """A usd6 integer as an exact decimal string ("12.5", not 12.499999999)."""
    whole, frac = divmod(int(v), 10**6)
    return f"{whole}.{frac:06d}".rstrip("0").rstrip(".")


def _api_conventions(view: dict[str, Any], decimals: dict[str, int]) -> None:
    """The API's rules for the full breakdown: HF a number or null when infinite (with
    `hf_text`), token amounts as exact decimal strings (summed from the exact raw
    `counted` amounts, not the float units the vectorised kernel works in)."""
    hf = view.get("hf")
    if isinstance(hf, str) or (isinstance(hf, float) and math.isinf(hf)):
        view["hf"] = None
        view["hf_text"] = "inf"
    else:
        view["hf_text"] = f"{hf:.6f}"
    raw: dict[tuple[str, str], int] = {}
    for rows in view.get("positions", {}).values():
        for row in rows:
            key = (row["asset"], row["side"])
            raw[key] = raw.get(key, 0) + int(row["counted"])
    for symbol, entry in view.get("assets", {}).items():
        d = decimals.get(symbol, 0)
        for side, field in (("collateral", "collateral_amount"), ("debt", "debt_amount")):
            if field in entry:
                entry[field] = _decimal_text(raw.get((symbol, side), 0), d)


def _decimal_text(amount: int, decimals: int) -> str:
    whole, frac = divmod(amount, 10**decimals)
    frac_s = str(frac).rjust(decimals, "0").rstrip("0") if decimals else ""
    return f"{whole}.{frac_s}" if frac_s else str(whole)


def _close(a: float, b: float, rel: float = 1e-3) -> bool:
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-12)


def _price_input(p: Price) -> PriceInput:
    return PriceInput(
        value=p.value,
        status=str(p.status),  # type: ignore[arg-type]
        timestamp=p.timestamp,
        sources=[dataclasses.asdict(s) for s in p.sources],
        last_good=p.last_good_value,
    )


def price_view(p: Price) -> dict[str, Any]:
    return {
        "asset": p.asset,
        "value": p.value,
        "status": str(p.status),
        "timestamp": p.timestamp,
        "computed_at": p.computed_at,
        "spread": p.spread,
        "reason": p.reason,
        "last_good_value": p.last_good_value,
        "last_good_timestamp": p.last_good_timestamp,
        "pending_value": p.pending_value,
        "sources": [dataclasses.asdict(s) for s in p.sources],
    }


async def run_daemon(cfg: AppConfig, *, ready: asyncio.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code."""
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
    if ready is not None:
        ready.set()
    await daemon.stop_event.wait()
    log.info("stopping: draining jobs and closing connections")
    await daemon.stop()
    return 0
