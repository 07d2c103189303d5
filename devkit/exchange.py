"""A local stand-in for public exchange price APIs, so the devnet exercises the daemon's
`http` price sources with the response shapes of the real venues.

    python -m devkit.exchange --root <root> --port <port>

One aiohttp server, two venues (see VENUES):

    GET /v2/prices/ETH-USD/spot        (coinbase)
        {"data": {"amount": "3000.12", "base": "ETH", "currency": "USD"}}
    GET /0/public/Ticker?pair=ETHUSD   (kraken)
        {"error": [], "result": {"XETHZUSD": {"c": ["3000.12000", "0.01000000"], ...}}}
    GET /health
        200 once every venue has a fresh market snapshot, else 503

Prices follow the devnet's market instead of a model of their own: every `refresh_s` the
server reads `latestRoundData()` and `decimals()` of each venue's reference Chainlink
feeds (coinbase: alpha, kraken: beta; the chains the market simulator moves), one
JSON-RPC batch per chain, with RPC URLs and feed addresses from data/devnet/state.json.
Each quote then gets a small deterministic jitter (a hash of venue, asset and a time
bucket), so the sources disagree a little and the oracle median has something to do.

Failure behaviour mirrors a venue outage. These APIs carry no quote timestamp, so the
daemon takes the fetch time as the price time; the server must therefore never turn an
old input into a fresh-looking quote. A venue answers 503 when its reference chain has
not been read successfully for `max_stale_s`, or when the feed's `updatedAt` is older
than `max_feed_age_s` (default 3600 s, the feeds' max_age_s in config.toml: a stale
devnet market makes the http sources fail together with the feeds). Unknown pairs get
each venue's own error shape (coinbase 404, kraken HTTP 200 with `error` set).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from eth_abi import decode
from eth_utils import function_signature_to_4byte_selector

log = logging.getLogger("devkit.exchange")

MODULE = "devkit.exchange"
LATEST_ROUND_DATA = "0x" + function_signature_to_4byte_selector("latestRoundData()").hex()
DECIMALS = "0x" + function_signature_to_4byte_selector("decimals()").hex()
DEFAULT_REFRESH_S = 1.0
# Ten missed refreshes: long enough to ride out a slow block, short enough that the
# daemon sees an outage (503) well within its own http max_age_s.
DEFAULT_MAX_STALE_S = 10.0
DEFAULT_MAX_FEED_AGE_S = 3600.0
# +-0.1%: well inside the oracle's 2% outlier band, well above float noise.
DEFAULT_JITTER = 0.001
JITTER_PERIOD_S = 5.0
RPC_TIMEOUT_S = 5.0


class ExchangeError(RuntimeError):
    pass


# -- venues ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    symbol: str  # devnet asset, as in config.toml
    pair: str  # what a client asks for: coinbase "ETH-USD", kraken "ETHUSD"
    key: str  # coinbase: base currency; kraken: the key of the `result` object
    decimals: int  # quote precision, as the venue prints it


@dataclass(frozen=True)
class Venue:
    name: str  # also the http source name in config.toml
    chain: str  # the devnet chain whose Chainlink feeds this venue follows
    pairs: tuple[Pair, ...]
    url_template: str  # "{base}" and "{pair}" are substituted

    def pair_for(self, symbol: str) -> Pair | None:
        return next((p for p in self.pairs if p.symbol == symbol), None)

    def by_pair(self, pair: str) -> Pair | None:
        return next((p for p in self.pairs if p.pair == pair), None)

    def url(self, base: str, symbol: str) -> str:
        pair = self.pair_for(symbol)
        if pair is None:
            raise ExchangeError(f"venue {self.name} does not quote {symbol}")
        return self.url_template.format(base=base.rstrip("/"), pair=pair.pair)


VENUES: dict[str, Venue] = {
    "coinbase": Venue(
        "coinbase",
        "alpha",
        (
            Pair("WETH", "ETH-USD", "ETH", 2),
            Pair("WBTC", "BTC-USD", "BTC", 2),
            Pair("USDC", "USDC-USD", "USDC", 6),
        ),
        "{base}/v2/prices/{pair}/spot",
    ),
    "kraken": Venue(
        "kraken",
        "beta",
        (
            Pair("WETH", "ETHUSD", "XETHZUSD", 5),
            Pair("WBTC", "XBTUSD", "XXBTZUSD", 1),
            Pair("USDC", "USDCUSD", "USDCUSD", 6),
        ),
        "{base}/0/public/Ticker?pair={pair}",
    ),
}


def source_urls(base: str) -> dict[str, dict[str, str]]:
    """asset -> {venue (= http source name): url}, for the devnet.toml include."""
    out: dict[str, dict[str, str]] = {}
    for venue in VENUES.values():
        for pair in venue.pairs:
            out.setdefault(pair.symbol, {})[venue.name] = venue.url(base, pair.symbol)
    return out


def jitter(venue: str, symbol: str, bucket: int, max_fraction: float = DEFAULT_JITTER) -> float:
    """A relative offset in [-max_fraction, max_fraction], fixed for (venue, symbol, bucket):
    reproducible from the log's timestamps, different per venue so the median has work."""
    digest = hashlib.sha256(f"{venue}:{symbol}:{bucket}".encode()).digest()
    unit = int.from_bytes(digest[:8], "big") / 2**64
    return (2 * unit - 1) * max_fraction


# -- market: the feeds the venues follow ---------------------------------------------


@dataclass
class ChainSnapshot:
    prices: dict[str, float] = field(default_factory=dict)  # symbol -> USD
    updated_at: dict[str, int] = field(default_factory=dict)  # symbol -> feed updatedAt
    read_at: float | None = None  # monotonic time of the last successful read
    errors: dict[str, str] = field(default_factory=dict)  # symbol or "*" -> reason


class FeedMarket:
    """The latest answer of every reference feed, read in one JSON-RPC batch per chain."""

    def __init__(
        self,
        rpc_urls: Mapping[str, str],
        feeds: Mapping[str, Mapping[str, str]],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        missing = [c for c in feeds if c not in rpc_urls]
        if missing:
            raise ExchangeError(f"no RPC URL for feed chain(s) {', '.join(missing)}")
        self.rpc_urls = dict(rpc_urls)
        self.feeds = {c: dict(f) for c, f in feeds.items()}
        self.clock = clock
        self.wall = wall
        self.snapshots: dict[str, ChainSnapshot] = {c: ChainSnapshot() for c in self.feeds}

    async def refresh(self, session: aiohttp.ClientSession) -> None:
        await asyncio.gather(*(self._refresh_chain(session, c) for c in self.feeds))

    async def _refresh_chain(self, session: aiohttp.ClientSession, chain: str) -> None:
        snap = self.snapshots[chain]
        symbols = list(self.feeds[chain])
        batch = []
        for n, symbol in enumerate(symbols):
            feed = self.feeds[chain][symbol]
            for k, data in enumerate((LATEST_ROUND_DATA, DECIMALS)):
                batch.append(
                    {
                        "jsonrpc": "2.0",
                        "id": 2 * n + k,
                        "method": "eth_call",
                        "params": [{"to": feed, "data": data}, "latest"],
                    }
                )
        try:
            async with session.post(
                self.rpc_urls[chain],
                json=batch,
                timeout=aiohttp.ClientTimeout(total=RPC_TIMEOUT_S),
            ) as resp:
                if resp.status != 200:
                    raise ExchangeError(f"HTTP {resp.status} {resp.reason}")
                answer = await resp.json(content_type=None)
            if not isinstance(answer, list):
                raise ExchangeError(f"batch answer is not a list: {str(answer)[:120]}")
        except (aiohttp.ClientError, TimeoutError, ValueError, ExchangeError) as exc:
            # Keep the previous prices: they age out through max_stale_s, not at once.
            snap.errors = {"*": f"chain {chain} ({self.rpc_urls[chain]}): {exc!r}"}
            return
        by_id = {item.get("id"): item for item in answer if isinstance(item, dict)}
        prices: dict[str, float] = {}
        updated: dict[str, int] = {}
        errors: dict[str, str] = {}
        for n, symbol in enumerate(symbols):
            try:
                prices[symbol], updated[symbol] = _price(by_id.get(2 * n), by_id.get(2 * n + 1))
            except ExchangeError as exc:
                errors[symbol] = f"{symbol} feed {self.feeds[chain][symbol]} on {chain}: {exc}"
        snap.prices, snap.updated_at, snap.errors = prices, updated, errors
        snap.read_at = self.clock()

    def price(
        self,
        chain: str,
        symbol: str,
        max_stale_s: float,
        max_feed_age_s: float = DEFAULT_MAX_FEED_AGE_S,
    ) -> float:
        """The reference price, or ExchangeError saying why there is none."""
        snap = self.snapshots.get(chain)
        if snap is None:
            raise ExchangeError(f"no feeds configured on chain {chain}")
        if snap.read_at is None:
            raise ExchangeError(snap.errors.get("*", f"chain {chain} not read yet"))
        age = self.clock() - snap.read_at
        if age > max_stale_s:
            why = snap.errors.get("*", "")
            raise ExchangeError(f"market data from {chain} is {age:.1f}s old; {why}".rstrip("; "))
        if symbol not in snap.prices:
            raise ExchangeError(snap.errors.get(symbol, f"no feed for {symbol} on {chain}"))
        feed_age = self.wall() - snap.updated_at[symbol]
        if feed_age > max_feed_age_s:
            raise ExchangeError(
                f"{symbol} feed on {chain} was updated {feed_age:.0f}s ago "
                f"(max_feed_age_s {max_feed_age_s:g})"
            )
        return snap.prices[symbol]

    def health(self, max_stale_s: float) -> dict[str, Any]:
        now = self.clock()
        return {
            chain: {
                "age_s": None if s.read_at is None else round(now - s.read_at, 3),
                "fresh": s.read_at is not None and now - s.read_at <= max_stale_s,
                "errors": s.errors,
            }
            for chain, s in self.snapshots.items()
        }


def _result_bytes(item: Any) -> bytes:
    if not isinstance(item, dict):
        raise ExchangeError("no answer in the batch")
    if "error" in item:
        raise ExchangeError(f"eth_call failed: {item['error']}")
    result = item.get("result")
    if not isinstance(result, str) or not result.startswith("0x"):
        raise ExchangeError(f"eth_call returned {result!r}")
    return bytes.fromhex(result[2:])


def _price(round_item: Any, decimals_item: Any) -> tuple[float, int]:
    """(price, updatedAt) from the latestRoundData() and decimals() answers."""
    raw, dec = _result_bytes(round_item), _result_bytes(decimals_item)
    if len(raw) < 160 or len(dec) < 32:
        raise ExchangeError(f"short answer ({len(raw)} / {len(dec)} bytes): not a feed?")
    _, answer, _, updated_at, _ = decode(["uint80", "int256", "uint256", "uint256", "uint80"], raw)
    (decimals,) = decode(["uint8"], dec)
    if answer <= 0:
        raise ExchangeError(f"answer {answer} is not positive")
    if decimals > 36:
        raise ExchangeError(f"decimals {decimals} out of range")
    return float(answer) / 10**decimals, int(updated_at)


# -- HTTP -----------------------------------------------------------------------------

MARKET_KEY = web.AppKey("market", FeedMarket)
SETTINGS_KEY = web.AppKey("settings", dict)


def _quote(app: web.Application, venue: Venue, pair: Pair) -> float:
    market, settings = app[MARKET_KEY], app[SETTINGS_KEY]
    ref = market.price(
        venue.chain, pair.symbol, settings["max_stale_s"], settings["max_feed_age_s"]
    )
    bucket = int(time.time() // JITTER_PERIOD_S)
    return ref * (1 + jitter(venue.name, pair.symbol, bucket, settings["jitter"]))


def _fmt(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}"


async def coinbase_spot(request: web.Request) -> web.Response:
    venue = VENUES["coinbase"]
    pair = venue.by_pair(request.match_info["pair"])
    if pair is None:
        body = {"errors": [{"id": "not_found", "message": "Invalid currency pair"}]}
        return web.json_response(body, status=404)
    try:
        price = _quote(request.app, venue, pair)
    except ExchangeError as exc:
        log.warning("coinbase %s: unavailable: %s", pair.pair, exc)
        body = {"errors": [{"id": "service_unavailable", "message": str(exc)}]}
        return web.json_response(body, status=503)
    amount = _fmt(price, pair.decimals)
    return web.json_response({"data": {"amount": amount, "base": pair.key, "currency": "USD"}})


async def kraken_ticker(request: web.Request) -> web.Response:
    venue = VENUES["kraken"]
    name = request.query.get("pair")
    if not name:
        return web.json_response({"error": ["EGeneral:Invalid arguments"]})
    pair = venue.by_pair(name)
    if pair is None:
        # Kraken reports request errors with HTTP 200 and a non-empty `error` list.
        return web.json_response({"error": ["EQuery:Unknown asset pair"]})
    try:
        price = _quote(request.app, venue, pair)
    except ExchangeError as exc:
        log.warning("kraken %s: unavailable: %s", pair.pair, exc)
        return web.json_response({"error": ["EService:Unavailable"]}, status=503)
    d = pair.decimals
    last, ask, bid = _fmt(price, d), _fmt(price * 1.0001, d), _fmt(price * 0.9999, d)
    ticker = {
        "a": [ask, "1", "1.000"],
        "b": [bid, "1", "1.000"],
        "c": [last, "0.01000000"],
        "v": ["1000.00000000", "25000.00000000"],
        "p": [last, last],
        "t": [1000, 25000],
        "l": [bid, bid],
        "h": [ask, ask],
        "o": last,
    }
    return web.json_response({"error": [], "result": {pair.key: ticker}})


async def health(request: web.Request) -> web.Response:
    market, settings = request.app[MARKET_KEY], request.app[SETTINGS_KEY]
    chains = market.health(settings["max_stale_s"])
    # Healthy = every venue can quote every pair it lists.
    ok = all(c["fresh"] and not c["errors"] for c in chains.values())
    return web.json_response({"ok": ok, "chains": chains}, status=200 if ok else 503)


async def _refresher(app: web.Application) -> AsyncIterator[None]:
    market, settings = app[MARKET_KEY], app[SETTINGS_KEY]

    async def loop(session: aiohttp.ClientSession) -> None:
        reported: dict[str, str | None] = {}  # None: nothing logged yet
        while True:
            try:
                await market.refresh(session)
            except Exception:
                # A bug here must not end the loop silently: the venues would go on
                # answering 503 (stale) with nothing in the log saying why.
                log.exception("market refresh failed")
            for chain, snap in market.snapshots.items():
                # Log changes of a chain's error state only, not one line per second.
                now_err = "; ".join(snap.errors.values())
                if now_err != reported.get(chain):
                    if now_err:
                        log.warning("reading %s feeds: %s", chain, now_err)
                    else:
                        log.info("reading %s feeds: ok %s", chain, snap.prices)
                    reported[chain] = now_err
            await asyncio.sleep(settings["refresh_s"])

    async with aiohttp.ClientSession() as session:
        task = asyncio.create_task(loop(session))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def build_app(
    market: FeedMarket,
    *,
    refresh_s: float = DEFAULT_REFRESH_S,
    max_stale_s: float = DEFAULT_MAX_STALE_S,
    max_feed_age_s: float = DEFAULT_MAX_FEED_AGE_S,
    jitter_fraction: float = DEFAULT_JITTER,
) -> web.Application:
    if min(refresh_s, max_stale_s, max_feed_age_s) <= 0 or not 0 <= jitter_fraction < 0.05:
        raise ExchangeError(
            "need refresh_s, max_stale_s, max_feed_age_s > 0 and 0 <= jitter < 0.05; got "
            f"{refresh_s}, {max_stale_s}, {max_feed_age_s}, {jitter_fraction}"
        )
    app = web.Application()
    app[MARKET_KEY] = market
    app[SETTINGS_KEY] = {
        "refresh_s": refresh_s,
        "max_stale_s": max_stale_s,
        "max_feed_age_s": max_feed_age_s,
        "jitter": jitter_fraction,
    }
    app.router.add_get("/v2/prices/{pair}/spot", coinbase_spot)
    app.router.add_get("/0/public/Ticker", kraken_ticker)
    app.router.add_get("/health", health)
    app.cleanup_ctx.append(_refresher)
    return app


def market_from_state(state: Mapping[str, Any]) -> FeedMarket:
    """The reference feeds of every venue, from state.json's `nodes` and `deployments`.
    Read as plain JSON on purpose: the manager (and web3) need not load in this process."""
    urls: dict[str, str] = {}
    feeds: dict[str, dict[str, str]] = {}
    for venue in VENUES.values():
        chain = venue.chain
        try:
            urls[chain] = f"http://127.0.0.1:{int(state['nodes'][chain]['port'])}"
            chain_feeds = state["deployments"][chain]["feeds"]
            for pair in venue.pairs:
                feeds.setdefault(chain, {})[pair.symbol] = str(chain_feeds[pair.symbol])
        except (KeyError, TypeError, ValueError) as exc:
            raise ExchangeError(
                f"devnet state has no usable {exc!s} for venue {venue.name} (chain {chain})"
            ) from None
    return FeedMarket(urls, feeds)


def command(root: Path, port: int, python: str) -> list[str]:
    """How the manager starts the server; `--port` in the command line is what the
    manager's pid-reuse guard looks for."""
    return [python, "-m", MODULE, "--root", str(root), "--port", str(port)]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog=MODULE, description="devnet exchange price server")
    p.add_argument("--root", type=Path, required=True, help="devnet root (has data/devnet/)")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--refresh-s", type=float, default=DEFAULT_REFRESH_S)
    p.add_argument("--max-stale-s", type=float, default=DEFAULT_MAX_STALE_S)
    p.add_argument("--max-feed-age-s", type=float, default=DEFAULT_MAX_FEED_AGE_S)
    p.add_argument("--jitter", type=float, default=DEFAULT_JITTER)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    state_file = args.root / "data" / "devnet" / "state.json"
    try:
        state = json.loads(state_file.read_text())
        market = market_from_state(state)
    except (OSError, ValueError, ExchangeError) as exc:
        raise SystemExit(f"exchange: cannot start from {state_file}: {exc}") from None
    app = build_app(
        market,
        refresh_s=args.refresh_s,
        max_stale_s=args.max_stale_s,
        max_feed_age_s=args.max_feed_age_s,
        jitter_fraction=args.jitter,
    )
    log.info("exchange on http://%s:%d following %s", args.host, args.port, market.rpc_urls)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
