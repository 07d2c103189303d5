"""OracleService: refreshes every asset's price in one round, keeps the last good
price for display, persists history and feeds the volatility estimators."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from oracles.aggregate import AggregationRules, JumpGuard, aggregate, combine_lst
from oracles.cap_guard import CapGuardRules
from oracles.config import OracleDefaults
from oracles.protocols import BatchCaller, PriceHistory, RateProvider
from oracles.sources import (
    ExchangeRateSource,
    HttpClient,
    PriceSource,
    RateCap,
    SourceConfigError,
    SourceContext,
    build_source,
)
from oracles.types import (
    Dependency,
    Observation,
    Price,
    PriceStatus,
    SourceCrashed,
    SourceFailure,
    SourceOutcome,
    SourceResult,
    Timeout,
)
from oracles.volatility import DAY_S, EwmaEstimator, VolatilitySettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AssetPricing:
    """Everything the service needs to price one asset, as plain values."""

    symbol: str
    sources: tuple[Any, ...] = ()  # oracles.config.SourceConfig instances
    rules: AggregationRules = field(default_factory=AggregationRules)
    # LSTs: the asset the rate is denominated in, and the growth cap of the rate.
    underlying: str | None = None
    rate: RateCap | None = None

    def __post_init__(self) -> None:
        if (self.underlying is None) != (self.rate is None):
            raise ValueError(f"asset {self.symbol!r}: 'underlying' and 'rate' go together")
        if not self.sources and self.rate is None:
            raise ValueError(f"asset {self.symbol!r}: no price sources and no exchange rate")


class _RateLike(Protocol):
    max_yearly_growth: float
    snapshot_rate: float | None
    snapshot_time: int | None
    cap_tolerance: float
    max_snapshot_age_s: float | None
    snapshot_tolerance: float


def build_asset_pricing(asset: Any, defaults: OracleDefaults) -> AssetPricing:
    """From anything shaped like aggregator.config.AssetConfig (duck-typed, so
    oracles/ does not import aggregator/)."""
    rate: _RateLike | None = getattr(asset, "rate", None)
    return AssetPricing(
        symbol=asset.symbol,
        sources=tuple(asset.sources),
        rules=AggregationRules(
            min_sources=asset.min_sources or defaults.min_sources,
            max_deviation=asset.max_deviation or defaults.max_deviation,
            jump_threshold=asset.jump_threshold or defaults.jump_threshold,
        ),
        underlying=asset.underlying if rate is not None else None,
        rate=None
        if rate is None
        else RateCap(
            max_yearly_growth=rate.max_yearly_growth,
            snapshot_rate=rate.snapshot_rate,
            snapshot_time=None if rate.snapshot_time is None else float(rate.snapshot_time),
            max_age_s=defaults.rate_max_age_s,
            guard=CapGuardRules(
                cap_tolerance=rate.cap_tolerance,
                max_snapshot_age_s=rate.max_snapshot_age_s,
                snapshot_tolerance=rate.snapshot_tolerance,
            ),
        ),
    )


def _dependency_order(assets: Sequence[AssetPricing]) -> list[AssetPricing]:
    by_symbol = {a.symbol: a for a in assets}
    order: list[AssetPricing] = []
    state: dict[str, int] = {}

    def visit(sym: str, chain: list[str]) -> None:
        if state.get(sym) == 2:
            return
        if state.get(sym) == 1:
            raise SourceConfigError(f"underlying cycle: {' -> '.join([*chain, sym])}")
        state[sym] = 1
        a = by_symbol[sym]
        if a.underlying is not None:
            if a.underlying not in by_symbol:
                raise SourceConfigError(f"asset {sym!r}: unknown underlying {a.underlying!r}")
            visit(a.underlying, [*chain, sym])
        state[sym] = 2
        order.append(a)

    for a in assets:
        visit(a.symbol, [])
    return order


class OracleService:
    def __init__(
        self,
        assets: Sequence[AssetPricing],
        *,
        batch_callers: Mapping[str, BatchCaller] | None = None,
        rate_provider: RateProvider | None = None,
        history: PriceHistory | None = None,
        volatility: VolatilitySettings | None = None,
        history_days: float = 90.0,
        clock: Callable[[], float] = time.time,
        env: Mapping[str, str] | None = None,
        source_timeout_s: float = 15.0,
    ) -> None:
        symbols = [a.symbol for a in assets]
        dupes = {s for s in symbols if symbols.count(s) > 1}
        if dupes:
            raise SourceConfigError(f"duplicate assets: {sorted(dupes)}")
        self.assets = _dependency_order(assets)
        self.clock = clock
        self.history = history
        self.history_days = history_days
        # No single source (or chain batch) may hold a round longer than this; its
        # sources then count as timed out and the other assets still get priced.
        self.source_timeout_s = source_timeout_s
        self.http = HttpClient()
        ctx = SourceContext(batch_callers=dict(batch_callers or {}), http=self.http)
        if env is not None:
            ctx.env = env
        # Built up front: a missing env var or RPC client fails at start, not at
        # the first refresh.
        self._sources: dict[str, list[PriceSource]] = {}
        self._rates: dict[str, ExchangeRateSource] = {}
        for a in self.assets:
            names = [s.name for s in a.sources]
            if len(set(names)) != len(names):
                raise SourceConfigError(f"asset {a.symbol!r}: duplicate source names {names}")
            self._sources[a.symbol] = [build_source(s, ctx) for s in a.sources]
            if a.rate is not None:
                if rate_provider is None:
                    raise SourceConfigError(
                        f"asset {a.symbol!r} prices through an exchange rate but no "
                        "rate provider was given"
                    )
                self._rates[a.symbol] = ExchangeRateSource(
                    a.symbol,
                    a.rate,
                    rate_provider,
                    history,
                    rate_at=getattr(rate_provider, "rate_at", None),
                )
        self._guards = {a.symbol: JumpGuard(a.rules) for a in self.assets}
        self._latest: dict[str, Price] = {}
        self._last_good: dict[str, Price] = {}
        self.estimator = EwmaEstimator(symbols, volatility or VolatilitySettings())
        self._refresh_lock = asyncio.Lock()
        self._started = False

    @classmethod
    def from_config(
        cls,
        assets: Sequence[Any],
        defaults: OracleDefaults,
        *,
        ewma_lambda: float = 0.94,
        ewma_period_s: float = DAY_S,
        **kwargs: Any,
    ) -> OracleService:
        """Build from AssetConfig-shaped objects and the [oracle] defaults."""
        vol = VolatilitySettings(
            ewma_lambda=ewma_lambda,
            lambda_period_s=ewma_period_s,
            prior_daily=defaults.vol_prior_daily,
            min_interval_s=defaults.vol_min_interval_s,
        )
        return cls(
            [build_asset_pricing(a, defaults) for a in assets],
            volatility=vol,
            history_days=defaults.history_days,
            **kwargs,
        )

    async def start(self) -> None:
        """Warm up from history: last accepted prices for the jump guard and as the
        last good price, past rounds for the volatility estimators."""
        if self._started or self.history is None:
            self._started = True
            return
        self._started = True
        for a in self.assets:
            last = await self.history.last_accepted(a.symbol)
            if last is not None:
                self._guards[a.symbol].last_accepted = last.value
                # A restart must not forget the last good price: a first round that
                # waits to confirm a jump would otherwise leave the asset with none.
                self._last_good.setdefault(
                    a.symbol,
                    Price(a.symbol, PriceStatus.OK, last.value, last.at, last.at, None, ()),
                )
        since = self.clock() - self.history_days * 86400.0
        rounds: dict[float, dict[str, float]] = defaultdict(dict)
        for point in await self.history.ok_prices_since(since):
            rounds[point.at][point.asset] = point.value
        for at in sorted(rounds):
            self.estimator.update(at, rounds[at])

    async def close(self) -> None:
        await self.http.close()

    async def __aenter__(self) -> OracleService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- refresh ---------------------------------------------------------------
    def _batches(
        self,
    ) -> tuple[dict[tuple[type[PriceSource], str], list[PriceSource]], list[PriceSource]]:
        """Sources sharing a group key, fetched together by one `fetch_group` call, and
        the others, fetched alone."""
        groups: dict[tuple[type[PriceSource], str], list[PriceSource]] = defaultdict(list)
        singles: list[PriceSource] = []
        for srcs in self._sources.values():
            for s in srcs:
                if s.group_key is None:
                    singles.append(s)
                else:
                    groups[(type(s), s.group_key)].append(s)
        return groups, singles

    async def _fetch_all(self, now: float) -> dict[int, SourceOutcome]:
        groups, singles = self._batches()
        out: dict[int, SourceOutcome] = {}

        async def guarded(members: Sequence[PriceSource], call: Awaitable[Any]) -> None:
            try:
                async with asyncio.timeout(self.source_timeout_s):
                    got = await call
            except TimeoutError:
                for s in members:
                    out[id(s)] = Timeout(
                        s.name,
                        f"{s.kind} {s.name}: no answer within the round's "
                        f"source_timeout_s {self.source_timeout_s:g}",
                    )
                return
            except Exception as exc:
                log.exception("price source(s) %s raised", [s.name for s in members])
                for s in members:
                    out[id(s)] = SourceCrashed(s.name, f"{s.kind} {s.name} raised {exc!r}")
                return
            if not isinstance(got, list):
                got = [got]
            for s, o in zip(members, got, strict=True):
                out[id(s)] = o

        await asyncio.gather(
            *(guarded(m, cls.fetch_group(m, now)) for (cls, _), m in groups.items()),
            *(guarded([s], s.fetch(now)) for s in singles),
            *(guarded([r], r.fetch(now)) for r in self._rates.values()),
        )
        return out

    async def refresh(self) -> dict[str, Price]:
        """One round over every asset; returns asset -> Price."""
        async with self._refresh_lock:
            if not self._started:
                await self.start()
            now = self.clock()
            fetched = await self._fetch_all(now)
            round_prices: dict[str, Price] = {}
            for a in self.assets:
                price = self._price_asset(a, fetched, round_prices, now)
                price = self._guards[a.symbol].apply(price)
                price = self._with_last_good(price)
                round_prices[a.symbol] = price
            self._latest.update(round_prices)
            ok = {s: p.value for s, p in round_prices.items() if p.usable and p.value is not None}
            self.estimator.update(now, ok)
            if self.history is not None:
                try:
                    await self.history.save_prices(list(round_prices.values()))
                except Exception:
                    # History is for volatility and audit; a store hiccup must not
                    # stop prices from being served.
                    log.exception("saving price history failed")
            return round_prices

    def _price_asset(
        self,
        a: AssetPricing,
        fetched: Mapping[int, SourceOutcome],
        round_prices: Mapping[str, Price],
        now: float,
    ) -> Price:
        srcs = self._sources[a.symbol]
        market = None
        if srcs:
            market = aggregate(a.symbol, [(fetched[id(s)], s.kind) for s in srcs], a.rules, now)
        if a.rate is None or a.underlying is None:
            assert market is not None
            return market
        rate_src = self._rates[a.symbol]
        rate_out = fetched[id(rate_src)]
        under = round_prices[a.underlying]
        leg, status, reason = self._rate_leg(a, rate_out, under)
        if rate_src.findings and status is PriceStatus.OK:
            status = PriceStatus.CAPPED
            reason = "; ".join(f"{f.kind}: {f.detail}" for f in rate_src.findings)
        return combine_lst(a.symbol, market, leg, rate_status=status, rate_reason=reason, now=now)

    @staticmethod
    def _rate_leg(
        a: AssetPricing, rate_out: SourceOutcome, under: Price
    ) -> tuple[SourceResult, PriceStatus, str]:
        name = f"rate_x_{a.underlying}"
        if isinstance(rate_out, SourceFailure):
            res = SourceResult(name, "exchange_rate", None, None, rate_out.kind, rate_out.reason)
            return res, PriceStatus.UNAVAILABLE, rate_out.reason
        assert isinstance(rate_out, Observation)
        if under.value is None or under.timestamp is None:
            dep = Dependency(
                name, f"underlying {a.underlying} is {under.status.value}: {under.reason}"
            )
            res = SourceResult(name, "exchange_rate", None, None, dep.kind, dep.reason)
            return res, PriceStatus.UNAVAILABLE, dep.reason
        value = rate_out.value * under.value
        detail = f"{rate_out.detail} × {a.underlying} {under.value:g}"
        res = SourceResult(
            name,
            "exchange_rate",
            value,
            min(rate_out.timestamp, under.timestamp),
            reason=detail,
        )
        if under.status is not PriceStatus.OK:
            return res, under.status, f"underlying {a.underlying} is {under.status.value}"
        return res, PriceStatus.OK, ""

    def cap_findings(self) -> dict[str, list[dict[str, str]]]:
        """Per LST: the findings of its growth cap's guard this round (empty: none)."""
        return {
            sym: [{"kind": f.kind, "detail": f.detail} for f in src.findings]
            for sym, src in self._rates.items()
        }

    def _with_last_good(self, price: Price) -> Price:
        if price.usable:
            self._last_good[price.asset] = price
            return price
        good = self._last_good.get(price.asset)
        if good is None:
            return price
        return replace(price, last_good_value=good.value, last_good_timestamp=good.timestamp)

    # -- reads -----------------------------------------------------------------
    def price(self, asset: str) -> Price | None:
        if asset not in self._guards:
            raise KeyError(f"unknown asset {asset!r}")
        return self._latest.get(asset)

    def prices(self) -> dict[str, Price]:
        return dict(self._latest)

    def volatility(self, asset: str) -> float:
        return self.estimator.volatility(asset)

    def relative_volatility(self, asset: str, ref: str) -> float:
        return self.estimator.relative_volatility(asset, ref)

    def correlation(self, a: str, b: str) -> float:
        return self.estimator.correlation(a, b)
