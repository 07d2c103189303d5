"""The ledger: the risk engine kept current with what was indexed and priced.

Invariants:
- Event-driven and debounced: the indexers report changed accounts (accounts_changed),
  one recompute per debounce interval takes them all; a burst of events for one account
  costs one recompute.
- No change is lost: a recompute that fails puts its batch back, with its age, for the
  restarted task (or the next start).
- `ledger_lag_s` is how long the oldest indexed change not yet in the ledger has
  waited; `ledger_settled` is true when every indexed change is in the ledger (what the
  pusher's readiness and the tests wait for).
- Credit and the live stream move only once prices are computed (`prices_ready`):
  before the first refresh there is no risk figure to publish or push.
- Demand credit sees only live activity: position changes indexed while the chain
  follows its head, never backfilled history.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping

from aggregator.config import AppConfig
from aggregator.metrics import Metrics
from aggregator.portfolio_feed import PortfolioFeed
from aggregator.risk.book import PositionRow
from aggregator.risk.engine import PriceInput, RiskEngine
from aggregator.risk.liquidity import AssetPools
from aggregator.risk.view import LedgerView
from aggregator.vol_forecast import VolatilityForecaster
from chains.indexer import ChainIndexer
from oracles.service import OracleService
from oracles.types import Price, PriceStatus

log = logging.getLogger(__name__)

PoolsOfRound = Callable[[Mapping[str, float | None], float], Mapping[str, AssetPools]]


class Ledger:
    def __init__(
        self,
        cfg: AppConfig,
        engine: RiskEngine,
        *,
        oracle: OracleService,
        portfolio: PortfolioFeed,
        metrics: Metrics,
        positions: Callable[[list[str]], Awaitable[list[PositionRow]]],
        indexers: Mapping[str, ChainIndexer],
        publish: Callable[[set[str] | None], None],
        wake: Callable[[], None],
        volatility: VolatilityForecaster | None = None,
        pools: PoolsOfRound | None = None,
    ) -> None:
        self.cfg = cfg
        self.engine = engine
        self.view = LedgerView(engine)
        self.oracle = oracle
        self.portfolio = portfolio
        self.metrics = metrics
        self._positions = positions
        self._indexers = indexers  # live: chains start and stop under their leases
        self._publish = publish  # health changes to the live stream
        self._wake = wake  # the pusher: new figures to compare with the chain's
        # Predictive volatility and [apc] (reads the last fit; the fit is its own job).
        self.volatility = volatility
        # This round's pools per asset, judged against the oracle prices
        # (aggregator/liquidity_feed.py); None: no pool configured.
        self._pools = pools
        self.prices_ready = False
        self._dirty: set[str] = set()
        # Monotonic time of the oldest change in _dirty, and of the oldest change in the
        # batch being recomputed (None: no recompute running).
        self._dirty_since: float | None = None
        self._recomputing_since: float | None = None
        self._live: set[tuple[str, str]] = set()
        self._dirty_event = asyncio.Event()
        metrics.ledger_lag.set_function(self.ledger_lag_s)

    # ------------------------------------------------------------ changes in
    async def accounts_changed(self, chain: str, accounts: set[str]) -> None:
        """The indexers' (and the cluster follower's) callback."""
        # Kept as the indexer wrote them: the store is queried with the same spelling.
        if self._dirty_since is None and accounts:
            self._dirty_since = time.monotonic()
        self._dirty.update(accounts)
        indexer = self._indexers.get(chain)
        if indexer is not None and indexer.status.caught_up:
            # Following the head: these changes are new activity, which the demand
            # credit policy should see. Backfilled history is not.
            self._live.update((a.lower(), chain) for a in accounts)
        self._dirty_event.set()
        await self.portfolio.accounts_changed(accounts)

    async def run(self, stop: asyncio.Event) -> None:
        """The recompute loop (a supervised task)."""
        debounce = self.cfg.scheduler.recompute_debounce_s
        while not stop.is_set():
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
                # Not in the ledger: back in the queue, with its age. Dropped, an
                # account would keep its old figures until its next event.
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

    def waiting(self) -> int:
        """Accounts whose indexed change waits for the next recompute."""
        return len(self._dirty)

    # ------------------------------------------------------------ recompute
    async def recompute_accounts(self, accounts: Iterable[str]) -> None:
        accounts = list(accounts)
        rows = await self._positions(accounts)
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
            self._wake()

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
        a = self.view.find_account(row.account)
        if a is None or not self.prices_ready:
            return
        before = self.view.head_amount(a, row.chain, row.asset, row.side)
        side = 0 if row.side == "collateral" else 1
        delta = row.head - before if side == 1 else before - row.head
        if delta <= 0:
            return
        asset = self.cfg.asset(row.asset)
        price = self.oracle.price(row.asset)
        if price is None or price.value is None:
            return
        usd = delta / 10**asset.decimals * price.value * (asset.ltv if side == 0 else 1.0)
        self.engine.record_consumption(row.account, row.chain, usd, now)

    # ------------------------------------------------------------ prices in
    async def refresh_prices(self) -> None:
        """The oracle job: new prices and volatilities, then a full recompute."""
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
        if self.volatility is not None:
            now = time.time()
            sigma = self.volatility.apply(sigma, now)
            relative = self.volatility.apply_relative(relative, now)
        self.engine.set_volatility(sigma, relative)
        if self._pools is not None:
            self.engine.set_pools(self._pools(self.engine.market.ok_prices(), time.time()))
        with self.metrics.recompute_seconds.time():
            self.engine.recompute()
            self._portfolio_override(None)
            self.engine.allocate_credit()
        self.prices_ready = True
        _price_metrics(self.metrics, prices)
        self._publish(None)
        self._wake()


def _price_input(p: Price) -> PriceInput:
    return PriceInput(
        value=p.value,
        status=str(p.status),  # type: ignore[arg-type]
        timestamp=p.timestamp,
        sources=[dataclasses.asdict(s) for s in p.sources],
        last_good=p.last_good_value,
        reason=p.reason,
    )


def _price_metrics(m: Metrics, prices: Mapping[str, Price]) -> None:
    now = time.time()
    for sym, p in prices.items():
        m.price_ok.labels(asset=sym).set(1 if p.usable else 0)
        m.price_capped.labels(asset=sym).set(1 if p.status is PriceStatus.CAPPED else 0)
        if p.value is not None:
            m.price.labels(asset=sym).set(p.value)
        if p.timestamp is not None:
            m.price_age.labels(asset=sym).set(max(0.0, now - p.timestamp))
        for src in p.sources:
            if src.failure:
                m.source_failures.labels(asset=sym, source=src.source, reason=src.failure).inc()


__all__ = ["Ledger"]
