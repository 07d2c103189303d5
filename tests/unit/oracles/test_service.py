"""OracleService end to end over loopback HTTP sources, an in-memory rate
provider and a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from oracle_http_server import HostileApi

from aggregator.config import AssetConfig, OracleDefaults
from aggregator.store import Store
from aggregator.store.price_repo import PriceRepo
from chains.types import RateSample
from oracles import (
    AggregationRules,
    AssetPricing,
    OracleService,
    PriceStatus,
    RateCap,
    SourceConfigError,
    VolatilitySettings,
    build_asset_pricing,
)
from oracles.config import HttpSourceConfig

E18 = 10**18


def wsteth(rate: int, scale: int, block: int, timestamp: int) -> RateSample:
    return RateSample(
        asset="wstETH", chain="test", block=block, timestamp=timestamp, rate=rate, scale=scale
    )


class Samples:
    def __init__(self) -> None:
        self.by_asset: dict[str, RateSample] = {}

    def latest(self, asset: str) -> RateSample | None:
        return self.by_asset.get(asset)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def http(name: str, url: str, **kw: Any) -> HttpSourceConfig:
    return HttpSourceConfig(name=name, url=url, path="p", **kw)


def eth_sources(api: HostileApi, *values: float) -> tuple[HttpSourceConfig, ...]:
    return tuple(http(f"eth{i}", api.set(f"eth{i}", {"p": str(v)})) for i, v in enumerate(values))


def lst_service(
    api: HostileApi,
    rates: Samples,
    *,
    market: float | None,
    cap: RateCap,
    clock: Clock,
    history: Any = None,
) -> OracleService:
    vol = VolatilitySettings(prior_daily=None, min_interval_s=0)
    eth = AssetPricing("ETH", eth_sources(api, 3000, 3001, 2999), AggregationRules(min_sources=2))
    lst_sources = () if market is None else (http("mkt", api.set("mkt", {"p": market})),)
    lst = AssetPricing("wstETH", lst_sources, AggregationRules(), underlying="ETH", rate=cap)
    # Declared before its underlying on purpose: the service orders by dependency.
    return OracleService(
        [lst, eth], rate_provider=rates, clock=clock, history=history, volatility=vol
    )


async def test_lst_rate_within_cap(api: HostileApi) -> None:
    clock, rates = Clock(), Samples()
    rates.by_asset["wstETH"] = wsteth(1_170_000_000_000_000_000, E18, 9, int(clock.now))
    cap = RateCap(0.10, snapshot_rate=1.16, snapshot_time=clock.now - 86400 * 60)
    async with lst_service(api, rates, market=3600.0, cap=cap, clock=clock) as svc:
        prices = await svc.refresh()
    p = prices["wstETH"]
    assert p.status is PriceStatus.OK, p.reason
    assert p.value == pytest.approx(1.17 * 3000)
    assert p.extra["market"] == 3600.0
    assert "rate leg is the lower" in p.reason
    rate_line = next(s for s in p.sources if s.kind == "exchange_rate")
    assert rate_line.used and "× ETH 3000" in (rate_line.reason or "")


async def test_lst_rate_slightly_above_cap_is_capped(api: HostileApi) -> None:
    clock, rates = Clock(), Samples()
    rates.by_asset["wstETH"] = wsteth(int(1.16 * 1.10 * 1.0005 * E18), E18, 9, int(clock.now))
    cap = RateCap(0.10, snapshot_rate=1.16, snapshot_time=clock.now - 86400 * 365)
    async with lst_service(api, rates, market=None, cap=cap, clock=clock) as svc:
        p = (await svc.refresh())["wstETH"]
    assert p.status is PriceStatus.OK
    assert p.value == pytest.approx(1.16 * 1.10 * 3000, rel=1e-3)
    assert "capped to" in (p.sources[-1].reason or "")


async def test_lst_rate_far_above_cap_without_a_market_leg_is_disputed(
    api: HostileApi,
) -> None:
    """A manipulated rate (3x) fails the cap's guard; with no market feed to hold the
    live rate down the price is disputed: the last valued price stands."""
    clock, rates = Clock(), Samples()
    rates.by_asset["wstETH"] = wsteth(3 * E18, E18, 9, int(clock.now))
    cap = RateCap(0.10, snapshot_rate=1.16, snapshot_time=clock.now - 86400 * 365)
    async with lst_service(api, rates, market=None, cap=cap, clock=clock) as svc:
        p = (await svc.refresh())["wstETH"]
        assert svc.cap_findings()["wstETH"][0]["kind"] == "cap_below_rate"
    assert p.status is PriceStatus.DISPUTED and not p.usable
    assert "no market leg to hold the live rate down" in p.reason


async def test_lst_rate_far_above_cap_is_held_down_by_the_market(api: HostileApi) -> None:
    clock, rates = Clock(), Samples()
    rates.by_asset["wstETH"] = wsteth(3 * E18, E18, 9, int(clock.now))
    cap = RateCap(0.10, snapshot_rate=1.16, snapshot_time=clock.now - 86400 * 365)
    async with lst_service(api, rates, market=3600.0, cap=cap, clock=clock) as svc:
        p = (await svc.refresh())["wstETH"]
    assert p.status is PriceStatus.CAPPED and p.valued and not p.usable
    assert p.value == 3600.0
    assert "cap guard: cap_below_rate" in p.reason


async def test_lst_market_below_rate_wins(api: HostileApi) -> None:
    clock, rates = Clock(), Samples()
    rates.by_asset["wstETH"] = wsteth(1_170_000_000_000_000_000, E18, 9, int(clock.now))
    cap = RateCap(0.10, snapshot_rate=1.1697, snapshot_time=clock.now - 86400)
    # A de-peg: the market pays 5% less than the redemption value.
    async with lst_service(api, rates, market=3335.0, cap=cap, clock=clock) as svc:
        p = (await svc.refresh())["wstETH"]
    assert p.status is PriceStatus.OK
    assert p.value == 3335.0
    assert "market leg is the lower" in p.reason
    assert next(s for s in p.sources if s.source == "mkt").used
    assert not next(s for s in p.sources if s.kind == "exchange_rate").used


async def test_lst_without_rate_is_disputed_then_unavailable(api: HostileApi) -> None:
    clock, rates = Clock(), Samples()
    cap = RateCap(0.10)
    async with lst_service(api, rates, market=3500.0, cap=cap, clock=clock) as svc:
        p = (await svc.refresh())["wstETH"]
        assert p.status is PriceStatus.DISPUTED
        assert p.value == 3500.0
        assert "rate leg unavailable" in p.reason and "no rate sample" in p.reason
    async with lst_service(api, rates, market=None, cap=cap, clock=clock) as svc:
        p = (await svc.refresh())["wstETH"]
        assert p.status is PriceStatus.UNAVAILABLE and p.value is None


async def test_lst_follows_underlying_outage(api: HostileApi) -> None:
    clock, rates = Clock(), Samples()
    rates.by_asset["wstETH"] = wsteth(E18, E18, 9, int(clock.now))
    cap = RateCap(0.10, snapshot_rate=1.0, snapshot_time=clock.now)
    async with lst_service(api, rates, market=None, cap=cap, clock=clock) as svc:
        assert (await svc.refresh())["wstETH"].usable
        for i in range(3):
            api.set(f"eth{i}", {"p": 0})
        prices = await svc.refresh()
    assert prices["ETH"].status is PriceStatus.UNAVAILABLE
    assert prices["ETH"].last_good_value == 3000.0
    p = prices["wstETH"]
    assert p.status is PriceStatus.UNAVAILABLE
    assert "underlying ETH is unavailable" in p.reason
    assert p.last_good_value == pytest.approx(3000.0)


async def test_last_good_is_display_only(api: HostileApi) -> None:
    clock = Clock()
    eth = AssetPricing("ETH", eth_sources(api, 3000, 3002), AggregationRules(min_sources=2))
    async with OracleService([eth], clock=clock) as svc:
        first = (await svc.refresh())["ETH"]
        assert first.usable and first.value == 3001.0
        api.set("eth1", {"p": "n/a"})
        clock.now += 10
        second = (await svc.refresh())["ETH"]
    assert second.status is PriceStatus.UNAVAILABLE
    assert second.value is None and not second.usable
    assert second.last_good_value == 3001.0
    assert second.last_good_timestamp == first.timestamp
    assert svc.price("ETH") == second


async def test_history_persists_and_warms_up(api: HostileApi, store: Store) -> None:
    repo = PriceRepo(store)
    clock, rates = Clock(), Samples()
    clock.now -= 86400 * 10
    rates.by_asset["wstETH"] = wsteth(1_100_000_000_000_000_000, E18, 1, int(clock.now))
    cap = RateCap(0.10)
    async with lst_service(api, rates, market=None, cap=cap, clock=clock, history=repo) as svc:
        for day in range(10):
            price = 3000 * (1.03 if day % 2 else 0.97)
            for i in range(3):
                api.set(f"eth{i}", {"p": price + i})
            rates.by_asset["wstETH"] = wsteth(
                1_100_000_000_000_000_000 + day, E18, day, int(clock.now)
            )
            prices = await svc.refresh()
            assert prices["ETH"].usable, prices["ETH"].reason
            clock.now += 86400
        vol = svc.volatility("ETH")
        rel = svc.relative_volatility("wstETH", "ETH")
    assert vol > 0.04  # +-3% alternating days
    assert rel < 0.01  # the LST moves with ETH
    rows = await repo.history("ETH", limit=3)
    assert [r.status for r in rows] == [PriceStatus.OK] * 3
    assert rows[0].sources[0].source == "eth0"
    assert rows[0].computed_at > rows[1].computed_at
    snap = await repo.load_rate_snapshot("wstETH")
    assert snap is not None and snap.rate == pytest.approx(1.1)

    # A fresh service on the same store picks up volatility, the jump reference
    # and the rate anchor without waiting for new data.
    async with lst_service(api, rates, market=None, cap=cap, clock=clock, history=repo) as again:
        assert again.volatility("ETH") == pytest.approx(vol)
        assert again._guards["ETH"].last_accepted == pytest.approx(prices["ETH"].value)
        for i in range(3):
            api.set(f"eth{i}", {"p": 9000 + i})
        jumped = (await again.refresh())["ETH"]
        assert jumped.status is PriceStatus.DISPUTED and jumped.pending_value is not None
        # The last good price survives the restart, for valuation while it waits.
        assert jumped.last_good_value == pytest.approx(prices["ETH"].value)
        # The anchor was not re-taken at the latest rate.
        rates.by_asset["wstETH"] = wsteth(5 * E18, E18, 99, int(clock.now))
        for i in range(3):
            api.set(f"eth{i}", {"p": 3000 + i})
        lst = (await again.refresh())["wstETH"]
        # Measured against the persisted anchor (1.1), the 5.0 rate fails the guard.
        (finding,) = again.cap_findings()["wstETH"]
        assert finding["kind"] == "cap_below_rate"
        assert finding["detail"].startswith("cap 1.10")
        assert lst.status is PriceStatus.DISPUTED


async def test_save_rate_snapshot_keeps_the_first_anchor(store: Store) -> None:
    from oracles.protocols import RateSnapshot

    repo = PriceRepo(store)
    await repo.save_rate_snapshot(RateSnapshot("rETH", 1.05, 1_700_000_000.0))
    await repo.save_rate_snapshot(RateSnapshot("rETH", 9.99, 1_800_000_000.0))
    got = await repo.load_rate_snapshot("rETH")
    assert got == RateSnapshot("rETH", 1.05, 1_700_000_000.0)


def test_build_from_app_config_asset() -> None:
    defaults = OracleDefaults(min_sources=2, max_deviation=0.03, rate_max_age_s=120)
    asset = AssetConfig.model_validate(
        {
            "symbol": "wstETH",
            "kind": "lst",
            "decimals": 18,
            "ltv": 0.7,
            "lt": 0.8,
            "underlying": "ETH",
            "rate": {
                "kind": "wsteth",
                "chain": "alpha",
                "address": "0x" + "11" * 20,
                "max_yearly_growth": 0.08,
            },
            "sources": [{"kind": "http", "name": "cb", "url": "http://x/", "path": "data.amount"}],
            "jump_threshold": 0.3,
        }
    )
    ap = build_asset_pricing(asset, defaults)
    assert ap.rules == AggregationRules(min_sources=2, max_deviation=0.03, jump_threshold=0.3)
    assert ap.rate == RateCap(max_yearly_growth=0.08, max_age_s=120)
    assert ap.underlying == "ETH" and ap.sources[0].name == "cb"


def test_construction_errors() -> None:
    eth = AssetPricing("ETH", (http("a", "http://x/"),))
    lst = AssetPricing("LST", (), underlying="ETH", rate=RateCap())
    with pytest.raises(SourceConfigError, match="no rate provider"):
        OracleService([eth, lst])
    loop = [
        AssetPricing("A", (), underlying="B", rate=RateCap()),
        AssetPricing("B", (), underlying="A", rate=RateCap()),
    ]
    with pytest.raises(SourceConfigError, match="underlying cycle: A -> B -> A"):
        OracleService(loop, rate_provider=Samples())
    with pytest.raises(SourceConfigError, match="unknown underlying 'ETH'"):
        OracleService([lst], rate_provider=Samples())
    with pytest.raises(SourceConfigError, match="duplicate assets"):
        OracleService([eth, eth])
    with pytest.raises(ValueError, match="no price sources and no exchange rate"):
        AssetPricing("X")
    cl = {"kind": "chainlink", "name": "cl", "chain": "beta", "address": "0x" + "22" * 20}
    asset = AssetConfig.model_validate(
        {"symbol": "ETH", "decimals": 18, "ltv": 0.5, "lt": 0.6, "sources": [cl]}
    )
    with pytest.raises(SourceConfigError, match="no RPC batch caller for chain 'beta'"):
        OracleService.from_config([asset], OracleDefaults())
    secret = {
        "kind": "http",
        "name": "cg",
        "url": "http://x/",
        "path": "p",
        "headers_from_env": {"x-cg-pro-api-key": "ORACLE_TEST_UNSET_VAR"},
    }
    asset = AssetConfig.model_validate(
        {"symbol": "ETH", "decimals": 18, "ltv": 0.5, "lt": 0.6, "sources": [secret]}
    )
    with pytest.raises(SourceConfigError, match="ORACLE_TEST_UNSET_VAR"):
        OracleService.from_config([asset], OracleDefaults(), env={})


class BrokenProvider:
    """A rate provider whose backing store is gone."""

    def latest(self, asset: str) -> RateSample | None:
        raise RuntimeError(f"rate store unreachable while reading {asset}")


async def test_a_crashing_source_is_contained(api: HostileApi) -> None:
    eth = AssetPricing("ETH", eth_sources(api, 3000), AggregationRules())
    lst = AssetPricing("wstETH", (), underlying="ETH", rate=RateCap())
    async with OracleService([eth, lst], rate_provider=BrokenProvider()) as svc:
        prices = await svc.refresh()
    assert prices["ETH"].usable
    p = prices["wstETH"]
    assert p.status is PriceStatus.UNAVAILABLE
    line = p.sources[-1]
    assert line.failure == "error"
    assert "rate store unreachable while reading wstETH" in (line.reason or "")


async def test_slow_source_times_out_without_holding_the_round(api: HostileApi) -> None:
    fast = http("fast", api.set("fast", {"p": 10}))
    slow = http("slow", api.set("slow", {"p": 11}, delay=5.0), timeout_s=30)
    assets = [AssetPricing("A", (fast,)), AssetPricing("B", (slow,))]
    t0 = time.monotonic()
    async with OracleService(assets, source_timeout_s=0.3) as svc:
        prices = await svc.refresh()
    assert time.monotonic() - t0 < 3
    assert prices["A"].usable
    line = prices["B"].sources[0]
    assert line.failure == "timeout" and "source_timeout_s 0.3" in (line.reason or "")


def test_price_as_dict_is_json_ready() -> None:
    import json

    from oracles.aggregate import aggregate
    from oracles.types import Observation

    p = aggregate("ETH", [(Observation("a", 1.5, 10.0), "http")], AggregationRules(), 11.0)
    d = json.loads(json.dumps(p.as_dict()))
    assert d["status"] == "ok" and d["sources"][0]["source"] == "a"


async def test_prune_keeps_recent_rounds(store: Store) -> None:
    from oracles.aggregate import aggregate
    from oracles.types import Observation

    repo = PriceRepo(store)
    old = aggregate("ETH", [(Observation("a", 1.0, 100.0), "http")], AggregationRules(), 100.0)
    new = aggregate("ETH", [(Observation("a", 2.0, 900.0), "http")], AggregationRules(), 900.0)
    await repo.save_prices([old, new])
    assert await repo.prune(500.0) == 1
    left = await repo.ok_prices_since(0)
    assert [(p.value, p.at) for p in left] == [(2.0, 900.0)]
    last = await repo.last_accepted("ETH")
    assert last is not None and last.value == 2.0


async def test_source_with_wrong_decimals_is_an_outlier(api: HostileApi) -> None:
    # One API answers in cents (an integer with implied decimals): it is dropped
    # as an outlier and cannot move the price.
    srcs = (*eth_sources(api, 3000.0, 3001.0), http("cents", api.set("cents", {"p": 300050})))
    async with OracleService([AssetPricing("ETH", srcs, AggregationRules(min_sources=2))]) as svc:
        p = (await svc.refresh())["ETH"]
    # The re-take stays within the middle pair of the first pass (3001 for an odd
    # count): the outlier is excluded without letting the remainder shift the price.
    assert p.status is PriceStatus.OK and p.value == 3001.0
    assert "outliers dropped: cents=300050" in p.reason
    assert not next(s for s in p.sources if s.source == "cents").used


async def test_history_write_failure_does_not_stop_prices(
    api: HostileApi, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    from sqlalchemy import text

    eth = AssetPricing("ETH", eth_sources(api, 3000.0), AggregationRules())
    async with OracleService([eth], history=PriceRepo(store)) as svc:
        # The store breaks after start-up (a warm-up failure is fatal on purpose).
        async with store.engine.begin() as conn:
            await conn.execute(text("DROP TABLE price_history"))
        prices = await svc.refresh()
    assert prices["ETH"].usable
    assert "saving price history failed" in caplog.text
