"""The devnet exchange price server in process, against a scripted JSON-RPC endpoint
(no anvil): response shapes, jitter, and every way its market data can go bad."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from eth_abi import encode

from devkit import exchange
from oracles.jsonpath import parse_path, resolve

FEEDS = {
    "alpha": {"WETH": "0x" + "a1" * 20, "WBTC": "0x" + "a2" * 20, "USDC": "0x" + "a3" * 20},
    "beta": {"WETH": "0x" + "b1" * 20, "WBTC": "0x" + "b2" * 20, "USDC": "0x" + "b3" * 20},
}
START = {"WETH": 3000.0, "WBTC": 60000.0, "USDC": 1.0}
PATHS = {"coinbase": "data.amount", "kraken": "result.*.c[0]"}  # as in config.toml


@dataclass
class FakeChains:
    """JSON-RPC batch endpoint per chain at /<chain>; feeds answer latestRoundData/decimals."""

    # address -> (answer, decimals, updatedAt); a str instead is returned as an RPC error
    feeds: dict[str, tuple[int, int, int] | str] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    calls: int = 0

    def set(self, chain: str, symbol: str, price: float, age_s: float = 0, dec: int = 8) -> None:
        self.feeds[FEEDS[chain][symbol]] = (
            round(price * 10**dec),
            dec,
            int(time.time() - age_s),
        )

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        if request.match_info["chain"] in self.down:
            return web.Response(status=502, text="bad gateway")
        out = []
        for item in await request.json():
            call = item["params"][0]
            feed = self.feeds.get(call["to"])
            if isinstance(feed, str):
                out.append({"jsonrpc": "2.0", "id": item["id"], "error": {"message": feed}})
                continue
            if feed is None:
                data = b""  # no code at the address: empty return data
            elif call["data"] == exchange.DECIMALS:
                data = encode(["uint8"], [feed[1]])
            else:
                data = encode(
                    ["uint80", "int256", "uint256", "uint256", "uint80"],
                    [1, feed[0], feed[2], feed[2], 1],
                )
            out.append({"jsonrpc": "2.0", "id": item["id"], "result": "0x" + data.hex()})
        return web.json_response(out)


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


@dataclass
class Rig:
    chains: FakeChains
    base: str
    session: aiohttp.ClientSession

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.session.get(self.base + path) as resp:
            return resp.status, await resp.json()

    async def quote(self, venue: str, symbol: str) -> float:
        url = exchange.VENUES[venue].url(self.base, symbol)
        async with self.session.get(url) as resp:
            assert resp.status == 200, await resp.text()
            doc = await resp.json()
        return float(resolve(doc, parse_path(PATHS[venue]), PATHS[venue]))

    async def wait_status(
        self, path: str, status: int, timeout: float = 30.0, says: str | None = None
    ) -> Any:
        """The first answer with `status` (and, when given, `says` in its body): on a
        loaded machine a slow read can answer 503 for staleness before the reason asked."""
        deadline = time.monotonic() + timeout
        while True:
            got, body = await self.get(path)
            if got == status and (says is None or says in json.dumps(body)):
                return body
            assert time.monotonic() < deadline, f"{path}: still {got} {body}"
            await asyncio.sleep(0.05)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    chains = FakeChains()
    for chain in FEEDS:
        for symbol, price in START.items():
            chains.set(chain, symbol, price)
    rpc_app = web.Application()
    rpc_app.router.add_post("/{chain}", chains.handle)
    rpc_runner, rpc_base = await _serve(rpc_app)
    market = exchange.FeedMarket({c: f"{rpc_base}/{c}" for c in FEEDS}, FEEDS)
    app = exchange.build_app(market, refresh_s=0.05, max_stale_s=0.5)
    runner, base = await _serve(app)
    try:
        async with aiohttp.ClientSession() as session:
            r = Rig(chains, base, session)
            await r.wait_status("/health", 200)
            yield r
    finally:
        await runner.cleanup()
        await rpc_runner.cleanup()


async def test_venues_serve_real_shapes_close_to_their_feed(rig: Rig) -> None:
    status, doc = await rig.get("/v2/prices/ETH-USD/spot")
    assert status == 200 and set(doc["data"]) == {"amount", "base", "currency"}
    assert doc["data"]["base"] == "ETH" and doc["data"]["currency"] == "USD"
    assert isinstance(doc["data"]["amount"], str)  # Coinbase sends strings
    status, doc = await rig.get("/0/public/Ticker?pair=XBTUSD")
    assert status == 200 and doc["error"] == [] and list(doc["result"]) == ["XXBTZUSD"]
    assert {"a", "b", "c", "v", "p", "t", "l", "h", "o"} <= set(doc["result"]["XXBTZUSD"])
    quotes = []
    for venue in exchange.VENUES:
        for symbol, price in START.items():
            q = await rig.quote(venue, symbol)
            # jitter (0.1%) plus the venue's print precision
            assert q == pytest.approx(price, rel=exchange.DEFAULT_JITTER + 1e-5), (venue, symbol)
            quotes.append(q / price)
    assert len(set(quotes)) > 1  # jittered: the sources do not all agree exactly


async def test_quotes_follow_the_feed_of_the_venue_chain(rig: Rig) -> None:
    rig.chains.set("alpha", "WETH", 2400.0)  # only coinbase's reference chain moves
    deadline = time.monotonic() + 30
    while await rig.quote("coinbase", "WETH") > 2500:
        assert time.monotonic() < deadline, "coinbase never followed the alpha feed"
        await asyncio.sleep(0.05)
    assert await rig.quote("coinbase", "WETH") == pytest.approx(2400.0, rel=0.0011)
    assert await rig.quote("kraken", "WETH") == pytest.approx(3000.0, rel=0.0011)


async def test_feed_decimals_are_read_not_assumed(rig: Rig) -> None:
    rig.chains.set("beta", "WBTC", 61000.0, dec=18)
    deadline = time.monotonic() + 30
    while abs(await rig.quote("kraken", "WBTC") / 61000.0 - 1) > 0.0011:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def test_unreachable_chain_fails_its_venue_only_and_recovers(rig: Rig) -> None:
    rig.chains.down.add("alpha")
    body = await rig.wait_status("/v2/prices/ETH-USD/spot", 503)
    assert body["errors"][0]["id"] == "service_unavailable"
    assert "alpha" in body["errors"][0]["message"]
    status, health = await rig.get("/health")
    assert status == 503 and health["chains"]["alpha"]["fresh"] is False
    assert "502" in json.dumps(health["chains"]["alpha"]["errors"])
    assert await rig.quote("kraken", "WETH") == pytest.approx(3000.0, rel=0.0011)
    rig.chains.down.clear()
    await rig.wait_status("/v2/prices/ETH-USD/spot", 200)
    await rig.wait_status("/health", 200)


async def test_a_stale_feed_is_not_laundered_into_a_fresh_quote(rig: Rig) -> None:
    # The venues' APIs carry no timestamp, so a quote of an old answer would look fresh.
    rig.chains.set("beta", "WBTC", 60000.0, age_s=7200)
    status, body = await rig.get("/0/public/Ticker?pair=XBTUSD")
    deadline = time.monotonic() + 30
    while status != 503:
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.05)
        status, body = await rig.get("/0/public/Ticker?pair=XBTUSD")
    assert body == {"error": ["EService:Unavailable"]}
    assert await rig.quote("kraken", "WETH") > 0  # other pairs of the venue still quote


@pytest.mark.parametrize(
    ("bad", "reason"),
    [((0, 8, 0), "not positive"), ("execution reverted", "execution reverted"), (None, "short")],
)
async def test_bad_feed_answers_fail_that_pair_with_the_reason(
    rig: Rig, bad: tuple[int, int, int] | str | None, reason: str
) -> None:
    feed = FEEDS["alpha"]["USDC"]
    if bad is None:
        del rig.chains.feeds[feed]  # not a contract: empty return data
    else:
        now = int(time.time())
        rig.chains.feeds[feed] = (bad[0], bad[1], now) if isinstance(bad, tuple) else bad
    body = await rig.wait_status("/v2/prices/USDC-USD/spot", 503, says=reason)
    assert reason in body["errors"][0]["message"] and feed in body["errors"][0]["message"]
    _, health = await rig.get("/health")
    assert reason in health["chains"]["alpha"]["errors"]["USDC"]
    assert await rig.quote("coinbase", "WETH") > 0


async def test_unknown_pairs_get_each_venues_error_shape(rig: Rig) -> None:
    status, body = await rig.get("/v2/prices/DOGE-USD/spot")
    assert status == 404 and body["errors"][0]["id"] == "not_found"
    assert await rig.get("/0/public/Ticker?pair=DOGEUSD") == (
        200,
        {"error": ["EQuery:Unknown asset pair"]},
    )
    assert await rig.get("/0/public/Ticker") == (200, {"error": ["EGeneral:Invalid arguments"]})


def test_jitter_is_deterministic_bounded_and_differs_per_venue() -> None:
    values = [exchange.jitter("kraken", "WETH", b) for b in range(2000)]
    assert values == [exchange.jitter("kraken", "WETH", b) for b in range(2000)]
    assert max(abs(v) for v in values) <= exchange.DEFAULT_JITTER
    assert max(values) > 0.8 * exchange.DEFAULT_JITTER
    assert min(values) < -0.8 * exchange.DEFAULT_JITTER
    assert abs(sum(values) / len(values)) < 0.1 * exchange.DEFAULT_JITTER
    assert exchange.jitter("coinbase", "WETH", 7) != exchange.jitter("kraken", "WETH", 7)
    assert exchange.jitter("kraken", "WETH", 7, 0.0) == 0.0


def test_source_urls_cover_both_venues_for_every_quoted_asset() -> None:
    urls = exchange.source_urls("http://127.0.0.1:5/")
    assert urls["WETH"] == {
        "coinbase": "http://127.0.0.1:5/v2/prices/ETH-USD/spot",
        "kraken": "http://127.0.0.1:5/0/public/Ticker?pair=ETHUSD",
    }
    assert set(urls) == {"WETH", "WBTC", "USDC"}
    with pytest.raises(exchange.ExchangeError, match="coinbase does not quote rETH"):
        exchange.VENUES["coinbase"].url("http://x", "rETH")


def test_state_without_a_venue_chain_is_a_clear_error(tmp_path: Path) -> None:
    state = {"nodes": {"alpha": {"port": 1}}, "deployments": {"alpha": {"feeds": {}}}}
    with pytest.raises(exchange.ExchangeError, match=r"WETH.*coinbase.*alpha"):
        exchange.market_from_state(state)
    with pytest.raises(SystemExit, match=r"state\.json"):
        exchange.main(["--root", str(tmp_path), "--port", "1"])


def test_settings_are_validated() -> None:
    market = exchange.FeedMarket({"alpha": "http://127.0.0.1:1"}, {"alpha": {}})
    with pytest.raises(exchange.ExchangeError, match="refresh_s"):
        exchange.build_app(market, refresh_s=0)
    with pytest.raises(exchange.ExchangeError, match="jitter"):
        exchange.build_app(market, jitter_fraction=0.5)
    with pytest.raises(exchange.ExchangeError, match=r"no RPC URL.*beta"):
        exchange.FeedMarket({}, {"beta": {}})
