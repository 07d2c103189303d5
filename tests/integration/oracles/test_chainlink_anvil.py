"""Chainlink sources against MockV3Aggregator (@chainlink/contracts) on anvil."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

import pytest
from oracle_chain import CountingCaller, chain_now, deploy_feed, update_answer, update_round

from chains.contracts import install_multicall
from chains.rpc import RpcClient
from devkit.anvil import AnvilNode, free_port
from oracles import AggregationRules, AssetPricing, OracleService, PriceStatus
from oracles.config import ChainlinkSourceConfig
from oracles.sources.chainlink import ChainlinkSource
from oracles.types import (
    BadPayload,
    ChainError,
    NonPositive,
    Observation,
    OutOfBounds,
    SequencerDown,
    Stale,
)


def cl(name: str, chain: str, address: str, **kw: object) -> ChainlinkSourceConfig:
    return ChainlinkSourceConfig(name=name, chain=chain, address=address, **kw)


async def test_feeds_on_one_chain_in_one_batch(anvil: AnvilNode) -> None:
    install_multicall(anvil.url)
    eth8 = deploy_feed(anvil, 8, 3000 * 10**8)
    eth18 = deploy_feed(anvil, 18, 3001 * 10**18)  # decimals are read, not assumed
    btc = deploy_feed(anvil, 8, 60_000 * 10**8)
    zero = deploy_feed(anvil, 8, 0)
    negative = deploy_feed(anvil, 8, -5)
    stale = deploy_feed(anvil, 8, 2990 * 10**8)
    now = chain_now(anvil)
    update_round(
        anvil, stale, round_id=7, answer=2990 * 10**8, updated_at=now - 7200, started_at=now - 7200
    )
    # An 18-decimals feed misconfigured as if it had 8: bounds catch the nonsense.
    wrong = deploy_feed(anvil, 18, 3000 * 10**8)
    nocode = "0x" + "42" * 20

    async with RpcClient("local", 31337, [anvil.url]) as rpc:
        counting = CountingCaller(rpc)
        assets = [
            AssetPricing(
                "ETH",
                (
                    cl("eth8", "local", eth8),
                    cl("eth18", "local", eth18),
                    cl("stale", "local", stale, max_age_s=3600),
                    cl("wrong", "local", wrong, min_answer=100, max_answer=100_000),
                ),
                AggregationRules(min_sources=2),
            ),
            AssetPricing("BTC", (cl("btc", "local", btc), cl("nocode", "local", nocode))),
            AssetPricing("BAD", (cl("zero", "local", zero), cl("neg", "local", negative))),
        ]
        async with OracleService(assets, batch_callers={"local": counting}) as svc:
            prices = await svc.refresh()

    assert len(counting.batches) == 1  # every feed of the chain in one round trip
    assert counting.batches[0] == 16  # 8 feeds x (latestRoundData, decimals)
    eth = prices["ETH"]
    assert eth.status is PriceStatus.OK
    assert eth.value == pytest.approx(3000.5)
    by = {s.source: s for s in eth.sources}
    assert by["eth18"].value == pytest.approx(3001.0)
    assert by["stale"].failure == Stale.kind
    assert re.search(r"is 72\d\ds old \(max_age_s 3600\)", by["stale"].reason or "")
    assert by["wrong"].failure == OutOfBounds.kind
    assert "below min_answer 100" in (by["wrong"].reason or "")
    btc_p = prices["BTC"]
    assert btc_p.value == pytest.approx(60_000.0)
    nc = next(s for s in btc_p.sources if s.source == "nocode")
    assert nc.failure == BadPayload.kind and "returned 0 bytes" in (nc.reason or "")
    bad = prices["BAD"]
    assert bad.status is PriceStatus.UNAVAILABLE
    reasons = {s.source: s.reason or "" for s in bad.sources}
    assert all(s.failure == NonPositive.kind for s in bad.sources)
    assert "answer 0 is not positive" in reasons["zero"]
    assert "answer -5 is not positive" in reasons["neg"]
    assert zero.lower() in reasons["zero"].lower()  # the reason names the feed address


async def test_sequencer_down_and_grace_period(anvil: AnvilNode) -> None:
    install_multicall(anvil.url)
    feed = deploy_feed(anvil, 8, 3000 * 10**8)
    seq = deploy_feed(anvil, 0, 0)
    cfg = cl("l2", "l2", feed, sequencer_feed=seq, sequencer_grace_s=3600)
    async with RpcClient("l2", 31337, [anvil.url]) as rpc:
        src = ChainlinkSource(cfg, rpc)

        # Up, but only since the deployment block: inside the grace period.
        got = await src.fetch(time.time())
        assert isinstance(got, SequencerDown)
        assert "grace period 3600s not over" in got.reason

        now = chain_now(anvil)
        update_round(
            anvil, seq, round_id=2, answer=0, updated_at=now, started_at=now - 7200
        )  # up for two hours
        assert isinstance(await src.fetch(time.time()), Observation)

        update_answer(anvil, seq, 1)
        got = await src.fetch(time.time())
        assert isinstance(got, SequencerDown) and "reports down (answer 1)" in got.reason

        now = chain_now(anvil)
        update_round(
            anvil, seq, round_id=4, answer=0, updated_at=now, started_at=now - 60
        )  # just came back
        got = await src.fetch(time.time())
        assert isinstance(got, SequencerDown) and "only 6" in got.reason

        update_round(anvil, seq, round_id=5, answer=7, updated_at=now, started_at=now - 9000)
        got = await src.fetch(time.time())
        assert isinstance(got, SequencerDown) and "neither 0 nor 1" in got.reason


async def test_forked_chain_feed(anvil_factory: Callable[..., AnvilNode]) -> None:
    origin = anvil_factory(71000)
    install_multicall(origin.url)
    feed = deploy_feed(origin, 8, 3000 * 10**8)
    alpha = anvil_factory(71001, fork_url=origin.url)
    update_answer(alpha, feed, 3100 * 10**8)  # only on the fork
    cfgs = (cl("origin", "origin", feed), cl("alpha", "alpha", feed))
    async with (
        RpcClient("origin", 71000, [origin.url]) as r0,
        RpcClient("alpha", 71001, [alpha.url]) as r1,
    ):
        assets = [AssetPricing("ETH", cfgs, AggregationRules(min_sources=2, max_deviation=0.05))]
        async with OracleService(assets, batch_callers={"origin": r0, "alpha": r1}) as svc:
            p = (await svc.refresh())["ETH"]
    by = {s.source: s.value for s in p.sources}
    assert by == {"origin": pytest.approx(3000.0), "alpha": pytest.approx(3100.0)}
    assert p.status is PriceStatus.OK and p.value == pytest.approx(3050.0)


async def test_dead_rpc_fails_every_feed_of_that_chain() -> None:
    feed = "0x" + "11" * 20
    dead = f"http://127.0.0.1:{free_port()}"
    async with RpcClient("down", 1, [dead], max_rounds=1, timeout_s=1) as rpc:
        srcs = [ChainlinkSource(cl(f"f{i}", "down", feed), rpc) for i in range(2)]
        got = await ChainlinkSource.fetch_group(srcs, time.time())
    assert all(isinstance(g, ChainError) for g in got)
    assert isinstance(got[0], ChainError)
    assert "batch call on chain down failed" in got[0].reason


async def test_hanging_rpc_does_not_hold_other_prices(anvil: AnvilNode) -> None:
    from aiohttp import web

    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(10)
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/", hang)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    slow_url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
    install_multicall(anvil.url)
    feed = deploy_feed(anvil, 8, 2 * 10**8)
    try:
        async with (
            RpcClient("fast", 31337, [anvil.url]) as fast,
            RpcClient("slow", 31337, [slow_url], timeout_s=30, max_rounds=1) as slow,
        ):
            assets = [
                AssetPricing("OK", (cl("fast", "fast", feed),)),
                AssetPricing("SLOW", (cl("slow", "slow", feed),)),
            ]
            callers = {"fast": fast, "slow": slow}
            t0 = time.monotonic()
            async with OracleService(assets, batch_callers=callers, source_timeout_s=0.5) as svc:
                prices = await svc.refresh()
            assert time.monotonic() - t0 < 5
    finally:
        await runner.cleanup()
    assert prices["OK"].usable and prices["OK"].value == pytest.approx(2.0)
    assert prices["SLOW"].status is PriceStatus.UNAVAILABLE
    assert prices["SLOW"].sources[0].failure == "timeout"
