"""`aggregator replay --episode NAME` (and `aggregator demo --replay NAME`): a real crash
through the devnet and the unmodified daemon, then the report (docs/replay.md).

Order: the episode path, the model and the time scale first (a missing file, a gap,
an unknown model or a compression the EWMA cannot express fails before any process
starts); then the devnet (the running one, or `up`) and the config (it includes the
devnet's addresses), rewritten for the model and the replay's market time
(`replay_config`: devkit/replay/models.py, timescale.py); every feed and LST rate
moved to the episode's first hour, the generated book seeded at those prices, the
liquidator funded, the days before the episode written to the daemon's price store
(warmup.py), the daemon started in-process; the accounts the model rates below HF 1
repay down (topup.py); then one step per block: the feeds of every indexed chain sent
at the step's prices (the exchange server follows them itself), a sample of the
daemon's ratings, a keeper round, the responders' cures of warned accounts
(responders.py), all mined in the next block or two. Ctrl-C (or SIGTERM)
stops at the next step; the daemon stops and a devnet this run started goes down,
whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from aggregator import var_feed
from aggregator.config import (
    AppConfig,
    ConfigError,
    Problem,
    load_config,
)
from aggregator.daemon import Daemon, StartupError
from aggregator.vol_forecast import pair_key
from devkit import manager
from devkit.anvil import DEV_KEYS
from devkit.deploy import ASSETS, FEED_DECIMALS, KEEPER
from devkit.pool_market import PoolMarket, recentre_due
from devkit.replay import (
    blocks,
    chainread,
    episodes,
    keeper,
    models,
    population,
    report,
    responders,
    timescale,
    topup,
    warmup,
)
from devkit.simulator import SET_RATE, TX_GAS, UPDATE_ANSWER, MarketModel, _rpc, _update_chain

log = logging.getLogger("aggregator.replay")
WARMUP_S = 90.0
# Generous next to a push's latency (a pusher cycle, `pusher.interval_s`, plus a block).
DRAIN_S = 60.0
# A recompute after a price refresh (debounce 0.25 s) and its ratings: well inside this.
SETTLE_S = 2.0
# Re-rated after a repayment, an account can still be below 1 where the model's HF is
# not 1 / debt (portfolio, VaR): a second pass repays from the new rating.
TOPUP_PASSES = 2
# A step's feed updates and pool trades are mined in the next block: a fault guard.
FEED_MINED_S = 15.0
# The re-centring's mints fill two blocks or more per chain (45 x 0.9 M gas).
RECENTRE_MINED_S = 90.0
# A dropped feed update is sent again this many times before the guard gives up.
RESENDS = 3


@dataclass(frozen=True)
class ReplayOptions:
    episode: str
    hours_per_block: int | None = None  # None: the episode's default (timescale.py)
    # Wall seconds per step (one block; below anvil's whole-second interval mining the
    # replay mines itself: devkit/replay/blocks.py). 0.5: 745 hourly steps in ~7 min.
    block_interval_s: float = 0.5
    accounts: int = 2000
    seed: int = 7
    out_dir: Path = Path("docs/replay")
    start_hour: int = 0
    hours: int | None = None  # None: the whole episode
    false_window_h: int = 168
    mode: str | None = None  # models.MODELS; None: the config's [portfolio] mode
    api_port: int | None = None  # None: the config's [api] port; 0: a free one
    reputation: bool = False  # [reputation] on over the mode (models.label)
    # Borrowers who cure a warning (devkit/replay/responders.py): their share of the
    # book's borrowers (0: nobody reacts) and the longest reaction delay, market hours.
    responders: float = 0.5
    response_max_delay_h: int = 12

    def scale(self) -> timescale.TimeScale:
        h = self.hours_per_block
        if h is None:
            h = timescale.default_hours_per_step(episodes.spec_for(self.episode).hours())
        return timescale.TimeScale(h, self.block_interval_s)


def shipped_returns(cfg: AppConfig, end: float) -> dict[str, int]:
    """Daily returns of each asset's shipped [var] history up to `end` (unix s); an
    asset [var] history does not map, or whose series is missing, is left to the
    calibration's own error."""
    ended = cfg.model_copy(
        update={"var": cfg.var.model_copy(update={"history_end": datetime.fromtimestamp(end, UTC)})}
    )
    out = {}
    for a in cfg.asset_symbols:
        if a not in cfg.var.history:
            continue
        try:
            s = var_feed.shipped(ended, a)
        except KeyError:
            continue
        out[a] = int(np.isfinite(np.diff(np.log(s.close))).sum())
    return out


def replay_config(
    cfg: AppConfig,
    model: str,
    scale: timescale.TimeScale,
    implied_vol: dict[str, float] | None = None,
    *,
    start: float | None = None,
    reputation: bool = False,
) -> AppConfig:
    """The config the replayed daemon runs with: `model`'s settings (models.py) and
    market durations rescaled to the replay's compression (timescale.py); validated
    like the file would be. `implied_vol` (market units, warmup.implied_vol) replaces
    `[portfolio] implied_vol`: the option legs' volatility, which would otherwise come
    from the EWMA in the compressed unit. `start`: the episode's first hour (unix s);
    the VaR model then calibrates on the shipped history up to it (models.var_window);
    `reputation`: [reputation] on (models.configure)."""
    try:
        data = models.configure(
            cfg.model_dump(), model, warmup.FORECAST_DAYS, reputation=reputation
        )
        if model == "var" and start is not None:
            end = datetime.fromtimestamp(start, UTC).isoformat()
            data = models.var_window(data, end, shipped_returns(cfg, start))
        data = timescale.overrides(data, scale)
        if implied_vol is not None:
            data["portfolio"] = {**data["portfolio"], "implied_vol": dict(implied_vol)}
    except (models.ModelError, timescale.TimeScaleError) as exc:
        raise ConfigError([Problem("replay", str(exc))]) from exc
    try:
        return type(cfg).model_validate(data)
    except ValueError as exc:
        raise ConfigError([Problem("replay", f"generated config for {model!r}: {exc}")]) from exc


def _path(opts: ReplayOptions) -> episodes.EpisodePath:
    rates = {a.symbol: float(a.rate) for a in ASSETS if a.rate is not None}
    path = episodes.build(opts.episode, rates)
    if opts.start_hour or opts.hours is not None:
        path = path.slice(opts.start_hour, opts.hours)
    try:
        return path.every(opts.scale().hours_per_step)
    except timescale.TimeScaleError as exc:
        raise episodes.EpisodeError(str(exc)) from exc


def _calls(state: manager.DevnetState, chain: str, prices: dict[str, float],
           rates: dict[str, float] | None) -> list[tuple[str, bytes]]:  # fmt: skip
    from eth_abi import encode

    dep = state.deployments[chain]
    calls = [
        (dep.feeds[s], UPDATE_ANSWER + encode(["int256"], [round(p * 10**FEED_DECIMALS)]))
        for s, p in prices.items()
        if s in dep.feeds
    ]
    for s, r in (rates or {}).items():
        calls.append((dep.tokens[s], SET_RATE + encode(["uint256"], [round(r * 10**18)])))
    return calls


async def drive(
    session: aiohttp.ClientSession,
    state: manager.DevnetState,
    prices: dict[str, float],
    rates: dict[str, float] | None = None,
) -> None:
    """Every indexed chain's feeds (and, when given, LST rates) to `prices`; mined."""
    await asyncio.gather(
        *(
            _update_chain(session, state, c, _calls(state, c, prices, rates))
            for c in manager.INDEXED_CHAINS
        )
    )


@dataclass
class StepTimes:
    """Where a step's wall time went: `busy` per step (feeds, keeper round, cures, the
    wait for the step's feed updates to be mined; the rest of `block_interval_s` is
    sleep), and the replay miner's blocks and late ticks (blocks.py; 0 when anvil's
    own interval mining ran)."""

    busy: list[float] = field(default_factory=list)
    blocks: int = 0
    late_ticks: int = 0

    def figures(self) -> dict[str, Any]:
        busy = np.asarray(self.busy, np.float64)
        return {
            "busy_step_s": round(float(busy.mean()), 3) if busy.size else None,
            "busy_step_p95_s": round(float(np.percentile(busy, 95)), 3) if busy.size else None,
            "miner_blocks": self.blocks,
            "miner_late_ticks": self.late_ticks,
        }


@dataclass(frozen=True)
class SentTx:
    """A sent transaction and what it was sent as, so a dropped one can be sent again."""

    url: str
    hash: str
    tx: dict[str, Any]


async def _send_feeds(
    session: aiohttp.ClientSession,
    state: manager.DevnetState,
    prices: dict[str, float],
    pools: PoolMarket | None = None,
) -> tuple[list[SentTx], list[tuple[str, str]]]:
    """Send every indexed chain's feed updates and, with `pools`, the Uniswap trades
    that move each pool to the step's prices (and the LP's liquidity moves, as the
    demo's simulator does); (the feed updates, (url, hash) of the pool trades), not
    awaited."""
    model = MarketModel(random.Random(0), prices=dict(prices))

    async def one(chain: str) -> tuple[list[SentTx], list[tuple[str, str]]]:
        url = state.url(chain)
        sender = state.deployments[chain].deployer or state.accounts["deployer"]
        feeds, trades = [], []
        for to, data in _calls(state, chain, prices, None):
            tx = {"from": sender, "to": to, "data": "0x" + data.hex(), "gas": hex(TX_GAS)}
            h = str(await _rpc(session, url, "eth_sendTransaction", [tx]))
            feeds.append(SentTx(url, h, tx))
        if pools is not None:
            rpc = functools.partial(_rpc, session, url)
            for tx in await pools.transactions(rpc, chain, model):
                trades.append((url, str(await _rpc(session, url, "eth_sendTransaction", [tx]))))
        return feeds, trades

    sent = await asyncio.gather(*(one(c) for c in manager.INDEXED_CHAINS))
    return [x for f, _ in sent for x in f], [x for _, t in sent for x in t]


async def _pool_reverts(
    session: aiohttp.ClientSession, sent: list[tuple[str, str]], within_s: float = FEED_MINED_S
) -> int:
    """How many of a step's pool trades reverted (a pool that cannot follow a gap of
    the path within its liquidity); they are counted, not fatal: the daemon judges a
    pool that strays from the oracle on its own (its guards)."""
    reverted = 0
    deadline = time.monotonic() + within_s
    for url, h in sent:
        r = None
        while r is None and time.monotonic() < deadline:
            r = await _rpc(session, url, "eth_getTransactionReceipt", [h])
            if r is None:
                await asyncio.sleep(0.05)
        reverted += r is None or int(r["status"], 16) != 1
    return reverted


async def _mined(
    session: aiohttp.ClientSession,
    sent: Sequence[SentTx | tuple[str, str]],
    what: str = "feed update",
    within_s: float = FEED_MINED_S,
    stall_note: Callable[[], str] | None = None,
) -> int:
    """Until every sent transaction (`what`) has a successful receipt; the number of
    transactions sent again.

    A `SentTx` the node no longer knows (accepted, then dropped from its pool: seen
    under load, where a burst of the same sender's transactions preceded it) can never
    be mined, so it is sent again, at most `RESENDS` times, with a log line. A feed
    update sets an absolute answer, so the second copy of a dropped one cannot apply
    anything twice. A (url, hash) pair is only awaited. `stall_note`: what the block
    producer says when the wait runs out (Miner.stall_note)."""
    deadline = time.monotonic() + within_s
    resent = 0
    for item in sent:
        url, h = (item.url, item.hash) if isinstance(item, SentTx) else item
        tries = 0
        while True:
            r = await _rpc(session, url, "eth_getTransactionReceipt", [h])
            if r is not None:
                if int(r["status"], 16) != 1:
                    raise RuntimeError(f"{what} {h} reverted")
                break
            if isinstance(item, SentTx) and tries < RESENDS and await _dropped(session, url, h):
                tries += 1
                resent += 1
                h = str(await _rpc(session, url, "eth_sendTransaction", [item.tx]))
                log.warning("%s %s was dropped by %s; sent again as %s", what, item.hash, url, h)
                continue
            if time.monotonic() > deadline:
                why = await _why_unmined(session, url, h)
                note = stall_note() if stall_note else ""
                if note:
                    why = f"{why}; {note}"
                raise RuntimeError(f"{what} {h} not mined within {within_s} s ({why})")
            await asyncio.sleep(0.05)
    return resent


async def _dropped(session: aiohttp.ClientSession, url: str, h: str) -> bool:
    """The node knows neither a receipt (checked first) nor the transaction itself."""
    return await _rpc(session, url, "eth_getTransactionByHash", [h]) is None


async def _why_unmined(session: aiohttp.ClientSession, url: str, h: str) -> str:
    """What the node says of a transaction that did not mine: its sender's nonce against
    the sender's mined and pending counts (a gap holds it back), its price against the
    base fee, and the pool's size. Best effort: a failing read is named, not raised."""
    try:
        tx = await _rpc(session, url, "eth_getTransactionByHash", [h])
        head = await _rpc(session, url, "eth_getBlockByNumber", ["latest", False])
        pool = await _rpc(session, url, "txpool_status", [])
        if not isinstance(tx, dict):
            return f"unknown to the node; pool {pool}"
        sender = tx["from"]
        mined = int(await _rpc(session, url, "eth_getTransactionCount", [sender, "latest"]), 16)
        pending = int(await _rpc(session, url, "eth_getTransactionCount", [sender, "pending"]), 16)
        return (
            f"from {sender} nonce {int(tx['nonce'], 16)}, sender mined {mined} pending "
            f"{pending}; max fee {int(tx.get('maxFeePerGas') or tx['gasPrice'], 16)} wei, base "
            f"fee {int(head.get('baseFeePerGas') or '0x0', 16)} wei; pool {pool}"
        )
    except (RuntimeError, aiohttp.ClientError, TimeoutError, KeyError, ValueError) as exc:
        return f"diagnosis failed: {exc}"


def _rated_prices(daemon: Daemon) -> dict[str, float]:
    """The prices of the daemon's last refresh: its recompute runs synchronously after
    it, in this event loop, so they are the ones the current ratings came from."""
    out = {}
    for a in daemon.cfg.assets:
        p = daemon.oracle.price(a.symbol)
        if p is not None and p.value is not None:
            out[a.symbol] = float(p.value)
    return out


def _ratings(daemon: Daemon) -> dict[str, dict[str, Any]]:
    if not daemon.ledger.prices_ready:
        return {}
    items = daemon.views.list_accounts(None, 10**7, None)[0]
    return {h["account"]: h for h in items}


def _thresholds(cfg: AppConfig) -> tuple[dict[str, float], list[tuple[frozenset[str], float]]]:
    lt = {a.symbol: float(a.lt) for a in cfg.assets}
    groups = [(frozenset(g.assets), float(g.lt)) for g in cfg.correlation_groups]
    return lt, groups


async def _chains(api_url: str) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(api_url + "/v1/chains", timeout=aiohttp.ClientTimeout(10)) as r,
    ):
        body: dict[str, Any] = await r.json()
        return list(body["chains"])


async def _warm_up(
    daemon: Daemon, book: list[population.Account], api_url: str, stop: asyncio.Event
) -> None:
    """Until the daemon rates every book account and every chain's pusher has run a
    cycle. A fatal chain fails at once: its pusher never pushes, so the vaults would
    refuse every liquidation while the API still rates accounts from the stored book
    (e.g. a store left by another devnet: its blocks look like a deep reorg)."""
    want = {a.address for a in book}
    deadline = time.monotonic() + WARMUP_S
    while not stop.is_set() and time.monotonic() < deadline:
        chains = await _chains(api_url)
        fatal = [f"{c['chain']}: {c['fatal_reason']}" for c in chains if c.get("fatal")]
        if fatal:
            raise RuntimeError("daemon stopped indexing: " + "; ".join(fatal))
        pushing = all(c["pusher"] is None or c["pusher"]["cycles"] > 0 for c in chains)
        if pushing and want <= set(_ratings(daemon)):
            return
        await asyncio.sleep(1.0)
    if not stop.is_set():
        raise RuntimeError(f"daemon did not rate the {len(want)} book accounts in {WARMUP_S}s")


async def _steps(
    *,
    opts: ReplayOptions,
    path: episodes.EpisodePath,
    state: manager.DevnetState,
    daemon: Daemon,
    api_url: str,
    rec: report.Recorder,
    profiles: dict[str, responders.Profile],
    stop: asyncio.Event,
    times: StepTimes,
) -> tuple[keeper.KeeperStats, responders.CureStats]:
    urls = {c: state.url(c) for c in manager.INDEXED_CHAINS}
    async with (
        aiohttp.ClientSession() as session,
        blocks.Miner(
            functools.partial(_rpc, session), urls, opts.block_interval_s, state.block_time_s
        ) as miner,
    ):
        # The daemon's plans follow the pushed model; the close factor is the keeper's
        # fallback when an account has no usable plan (keeper.choose).
        cfg = daemon.cfg
        fallback = None if cfg.portfolio.mode == "standard" else cfg.risk.close_factor
        k = keeper.Keeper(state, api_url, session, fallback,
                          frozenset(a.address for a in rec.book if a.has_derivatives))  # fmt: skip
        cure_target = cfg.risk.warn_hf + responders.CURE_MARGIN
        resp = responders.Responders(state, api_url, session, profiles, cure_target)
        # The devnet's Uniswap pools follow the episode too (docs/replay.md).
        pools = PoolMarket.for_state(state, manager.INDEXED_CHAINS, seed=opts.seed)
        pool_reverts = feeds_resent = 0
        centre, recentred = dict(path.at(0)), 0
        for i in range(len(path)):
            if stop.is_set():
                break
            miner.check()
            t0 = time.monotonic()
            # Pipelined: the step's feed updates and the keeper's liquidations (decided
            # on the daemon's ratings so far) go into the same next block, so a step
            # costs one block, not two.
            sent, trades = await _send_feeds(session, state, path.at(i), pools)
            ratings = _ratings(daemon)
            rec.sample(path.at(i), ratings, _rated_prices(daemon),
                       daemon.engine.liquidity_queue())  # fmt: skip
            await k.round(i)
            rec.apply(k.stats)
            # After the keeper: an account it liquidated or claimed on this step is not
            # cured on the same rating (the cure would be sized on the debt before).
            taken = {x.account for x in k.stats.liquidations if x.step == i} | set(k.claims)
            rec.apply_cures(await resp.step(i, ratings, taken))
            feeds_resent += await _mined(session, sent, stall_note=miner.stall_note)
            pool_reverts += await _pool_reverts(session, trades)
            if pools is not None and recentre_due(centre, path.at(i)):
                # The pools are at this step's prices (arbitraged in its block): the LP
                # mints a fresh base book there (devkit/pool_market.py).
                pool_reverts += await _recentre_pools(session, state, path.at(i), strict=False)
                centre, recentred = dict(path.at(i)), recentred + 1
            if i % 24 == 0:
                print(
                    f"replay {path.name}: step {i}/{len(path)}  WETH {path.at(i)['WETH']:,.2f}  "
                    f"liquidations {len(k.stats.liquidations)}",
                    flush=True,
                )
            busy = time.monotonic() - t0
            times.busy.append(busy)
            rest = opts.block_interval_s - busy
            if rest > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), rest)
        await _drain(k, len(path), stop)
        # The last step's cures are mined by now (the drain's rounds, or the last block).
        rec.apply_cures(await resp.step(len(path), {}, set()))
        if k.stats.claims:
            remote = sum(x.remote_from is not None for x in k.stats.liquidations)
            print(f"replay {path.name}: cross-chain liquidations {remote}, "
                  f"claims unsettled {len(k.stats.pending_claims)}", flush=True)  # fmt: skip
        if feeds_resent:
            print(f"replay {path.name}: feed updates dropped and sent again: {feeds_resent}")
        if pools is not None:
            print(
                f"replay {path.name}: pool trades reverted: {pool_reverts}, "
                f"base book re-centred {recentred} times",
                flush=True,
            )
    times.blocks, times.late_ticks = miner.blocks, miner.late_ticks
    return k.stats, resp.stats


async def _drain(k: keeper.Keeper, step: int, stop: asyncio.Event) -> None:
    """After the last step, keeper rounds (feeds held) while an account the daemon rates
    liquidatable waits for its registry entry, or a cross-chain claim is not settled
    (keeper.py: final after the chain's confirmations, then its voucher is submitted):
    a crash at the slice's end is liquidated once the pusher's update is mined, not
    dropped. Bounded by `DRAIN_S`; claims still pending then are in the report."""
    deadline = time.monotonic() + DRAIN_S
    while (k.waiting or k.claims) and not stop.is_set() and time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
        await k.round(step)


async def _recentre_pools(
    session: aiohttp.ClientSession,
    state: manager.DevnetState,
    prices: dict[str, float],
    *,
    strict: bool = True,
) -> int:
    """The devnet's pools to `prices`, then a fresh base book around them (devkit/
    pool_market.py `recentre_txs`): the daemon's liquidity haircut then sees the
    devnet's designed depth at the episode's prices, not the remnants of a book minted
    at other prices. An arbitrage swap that reverts (a pool that cannot follow) is
    counted, as in the steps; with `strict` (the first re-centring) a failed mint is an
    error, otherwise counted too. Returns the reverted transactions."""
    pools = PoolMarket.for_state(state, manager.INDEXED_CHAINS, seed=0)
    if pools is None:
        return 0
    model = MarketModel(random.Random(0), prices=dict(prices))

    async def one(chain: str) -> int:
        url = state.url(chain)
        rpc = functools.partial(_rpc, session, url)
        minter = state.deployments[chain].deployer or state.accounts["deployer"]

        async def send(txs: list[dict[str, Any]], must: bool) -> int:
            # A fixed high price (as the seeding's): these fill blocks, and a transaction
            # priced at the base fee of its send time waits forever once it has risen.
            priced = [{**tx, "gasPrice": hex(population.SEED_GAS_PRICE_WEI)} for tx in txs]
            sent = [(url, str(await rpc("eth_sendTransaction", [tx]))) for tx in priced]
            if must:
                await _mined(session, sent, what="pool re-centring", within_s=RECENTRE_MINED_S)
                return 0
            return await _pool_reverts(session, sent, within_s=RECENTRE_MINED_S)

        reverted = await send(await pools.arbitrage_txs(rpc, chain, model), False)
        funds, mints = await pools.recentre_txs(rpc, chain, model, minter)
        reverted += await send(funds, strict)
        return reverted + await send(mints, strict)

    return sum(await asyncio.gather(*(one(c) for c in manager.INDEXED_CHAINS)))


async def _prepare(
    opts: ReplayOptions, path: episodes.EpisodePath, state: manager.DevnetState
) -> tuple[list[population.Account], population.SeedStats]:
    dep_feeds = {s for c in manager.INDEXED_CHAINS for s in state.deployments[c].feeds}
    episodes.require_drivable(path, dep_feeds, path.rates)
    async with aiohttp.ClientSession() as session:
        await drive(session, state, path.at(0), path.rates)
        await _recentre_pools(session, state, path.at(0))
    book = population.generate(opts.accounts, opts.seed, path.at(0))
    seeded = await asyncio.to_thread(population.seed_population, state, book, path.at(0))
    print(
        f"seeded {seeded.accounts} accounts: {seeded.transactions} transactions, "
        f"{seeded.blocks} blocks, {seeded.seconds} s",
        flush=True,
    )
    await asyncio.to_thread(keeper.prepare, state)
    return book, seeded


async def _backfill(
    cfg: AppConfig, path: episodes.EpisodePath, scale: timescale.TimeScale, model: str
) -> dict[str, int]:
    """The daemon's price history before the episode (warmup.py), written to its store
    before it starts; returns the rows per part."""
    from aggregator.store.db import Store
    from aggregator.store.price_repo import PriceRepo
    from oracles.types import Price, PriceStatus

    now = time.time()
    rows = warmup.tail(path, scale.factor, now)
    parts = {"ewma_tail": len(rows)}
    if model == "predictive":
        extra = warmup.forecast_history(path, scale.factor, (now // 86400) * 86400)
        if not warmup.usable(extra):
            raise RuntimeError("forecast history overflows at this compression")
        rows = extra + rows
        parts["forecast_days"] = len(extra) // max(1, len(warmup.by_asset(extra)))
    store = Store(cfg.store.url)
    try:
        await store.upgrade()
        await PriceRepo(store).save_prices(
            [Price(r.asset, PriceStatus.OK, r.value, r.at, r.at, 0.0, ()) for r in rows]
        )
    finally:
        await store.close()
    return parts


NETTING_SHAPES = ("hedged_perp", "covered_call", "eth_stable", "btc_stable")


async def _netting(api_url: str, book: list[population.Account]) -> dict[str, Any]:
    """Per shape (the derivative ones and, for contrast, the spot stablecoin borrowers):
    the medians over its accounts of the portfolio model's maintenance margin and the
    standard model's requirement (collateral - HF x debt: the equity at which its HF
    reaches 1 with the same haircut), from the daemon's own /v1/accounts/{a}/margin at
    the first step. How much the scenario model nets a hedge, whatever model is run."""
    rows: dict[str, list[tuple[float, float, float]]] = {}
    async with aiohttp.ClientSession() as session:
        for a in book:
            if a.shape not in NETTING_SHAPES:
                continue
            url = f"{api_url}/v1/accounts/{a.address}/margin"
            async with session.get(url, timeout=aiohttp.ClientTimeout(10)) as r:
                if r.status != 200:
                    continue
                body = await r.json()
            std, pf = body.get("standard"), body["portfolio"]
            if std is None or std["hf"] is None:
                continue
            req = float(std["collateral_usd"]) - float(std["hf"]) * float(std["debt_usd"])
            rows.setdefault(a.shape, []).append(
                (float(pf["mm_usd"]), req, float(std["collateral_usd"]))
            )
    out: dict[str, Any] = {}
    for shape, v in sorted(rows.items()):
        arr = np.array(v)
        out[shape] = {
            "accounts": len(v),
            "portfolio_mm_usd_median": round(float(np.median(arr[:, 0])), 2),
            "standard_requirement_usd_median": round(float(np.median(arr[:, 1])), 2),
            "portfolio_mm_over_collateral_median": round(
                float(np.median(arr[:, 0] / arr[:, 2])), 4
            ),
            "standard_requirement_over_collateral_median": round(
                float(np.median(arr[:, 1] / arr[:, 2])), 4
            ),
        }
    return out


def _vol(daemon: Daemon) -> dict[str, Any]:
    """Per asset: which volatility the haircut used and why (the daemon's own view)."""
    out = {}
    for a in daemon.cfg.assets:
        v = daemon.volatility.view(a.symbol)
        if v is not None:
            out[a.symbol] = _vol_fields(v)
            for ref, rel in v.get("relative", {}).items():
                out[pair_key(a.symbol, ref)] = _vol_fields(rel)
    return out


def _vol_fields(v: dict[str, Any]) -> dict[str, Any]:
    keep = ("source", "fallback_reason", "model", "n_returns", "stress", "ewma", "forecast")
    return {k: v.get(k) for k in (*keep, "used")}


async def _wait_fitted(daemon: Daemon, stop: asyncio.Event) -> None:
    """The predictive model: until the vol_forecast job has fitted every asset (its
    first run is at start, in a worker thread)."""
    deadline = time.monotonic() + WARMUP_S
    vol = daemon.volatility
    want = {a.symbol for a in daemon.cfg.assets} | set(vol.pairs)
    while not stop.is_set() and time.monotonic() < deadline:
        # Fitted, and a price refresh has applied the fit (the ratings then follow).
        if want <= set(vol.fits) and all(
            a in vol.decisions and vol.decisions[a].forecast == vol.fits[a].forecast.sigma
            for a in want
        ):
            await asyncio.sleep(SETTLE_S)
            return
        await asyncio.sleep(0.5)
    raise RuntimeError("the volatility forecast was not fitted within the warm-up")


async def _top_up(
    daemon: Daemon,
    book: list[population.Account],
    state: manager.DevnetState,
    stop: asyncio.Event,
) -> tuple[list[population.Account], int, int]:
    """Accounts the model rates below HF 1 before the first step repay down to
    warn_hf + 0.02 (topup.py); then until the daemon no longer rates them below 1.
    Returns (book, accounts topped up, accounts still below 1)."""
    target = daemon.cfg.risk.warn_hf + 0.02
    touched: set[str] = set()
    low: set[str] = set()
    for _ in range(TOPUP_PASSES):
        book, repays = topup.plan(book, _ratings(daemon), target)
        if not repays:
            break
        touched |= {a.address for a, _, _ in repays}
        await asyncio.to_thread(topup.repay, state, repays)
        deadline = time.monotonic() + WARMUP_S
        while not stop.is_set() and time.monotonic() < deadline:
            r = _ratings(daemon)
            low = {a for a in touched if float(r.get(a, {}).get("hf") or 0.0) < 1.0}
            if not low:
                break
            await asyncio.sleep(1.0)
    return book, len(touched), len(low)


def _precheck(opts: ReplayOptions) -> None:
    """What can be refused before any process starts: an unknown model, responder
    options out of range (the time scale is checked by `_path`)."""
    responders.check(opts.responders, opts.response_max_delay_h)
    if opts.mode is not None and opts.mode not in models.MODELS:
        raise models.ModelError(f"unknown model {opts.mode!r}; one of {', '.join(models.MODELS)}")


async def run(root: Path, config_path: str | None, opts: ReplayOptions) -> int:
    try:
        path = _path(opts)
        _precheck(opts)
        ivol = warmup.implied_vol(path)
    except (episodes.EpisodeError, models.ModelError, ValueError) as exc:
        print(f"replay: {exc}")
        return 2
    started = not manager.status(root).get("running")
    state = await asyncio.to_thread(manager.up, root) if started else manager.load_state(root)
    assert state is not None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    holder: list[Daemon] = []
    try:
        try:
            # After `up`: config.toml includes the devnet's generated addresses.
            base = load_config(config_path or root / "config.toml")
            model = opts.mode or base.portfolio.mode
            cfg = replay_config(
                base, model, opts.scale(), ivol, start=float(path.times[0]),
                reputation=opts.reputation,
            )  # fmt: skip
            if opts.api_port is not None:
                cfg = cfg.model_copy(
                    update={"api": cfg.api.model_copy(update={"port": opts.api_port})}
                )
        except ConfigError as exc:
            print(f"replay: {exc}")
            return 2
        return await _replay(
            opts, cfg=cfg, model=model, path=path, state=state, stop=stop, holder=holder
        )
    finally:
        for daemon in holder:
            await daemon.stop()
        if started:
            await asyncio.to_thread(manager.down, root)
            print("replay stopped; devnet down")


async def _replay(
    opts: ReplayOptions,
    *,
    cfg: AppConfig,
    model: str,
    path: episodes.EpisodePath,
    state: manager.DevnetState,
    stop: asyncio.Event,
    holder: list[Daemon],
) -> int:
    """Seed, start the daemon (appended to `holder`, which the caller stops), warm up,
    replay, report."""
    t_start = time.monotonic()
    scale = opts.scale()
    book, seeded = await _prepare(opts, path, state)
    backfill = await _backfill(cfg, path, scale, model)
    if not os.environ.get("AGG_KEEPER_KEY") and cfg.pusher.keystore_path is None:
        os.environ["AGG_KEEPER_KEY"] = DEV_KEYS[KEEPER]
    daemon = Daemon(cfg)
    holder.append(daemon)
    try:
        port = await daemon.start()
    except StartupError as exc:
        print(f"daemon refused to start: {exc}")
        return 1
    api_url = f"http://{cfg.api.host}:{port}"
    await _warm_up(daemon, book, api_url, stop)
    if model == "predictive":
        await _wait_fitted(daemon, stop)
    book, topped, still_low = await _top_up(daemon, book, state, stop)
    print(f"{topped} accounts below HF 1 under {model} repaid down ({still_low} still below)")
    since = await asyncio.to_thread(chainread.heads, state)
    profiles = responders.profiles(
        book, path.at(0), share=opts.responders, max_delay_h=opts.response_max_delay_h,
        hours_per_step=scale.hours_per_step, seed=opts.seed,
    )  # fmt: skip
    if profiles:
        await asyncio.to_thread(responders.fund, state)
    lt, groups = _thresholds(cfg)
    rec = report.Recorder(
        book, lt, groups, opts.false_window_h // scale.hours_per_step,
        steps_per_day=24 / scale.hours_per_step, implied_vol=dict(cfg.portfolio.implied_vol),
    )  # fmt: skip
    vol_start = _vol(daemon)
    netting = await _netting(api_url, book)
    t_steps = time.monotonic()
    times = StepTimes()
    stats, cures = await _steps(
        opts=opts, path=path, state=state, daemon=daemon, api_url=api_url, rec=rec,
        profiles=profiles, stop=stop, times=times,
    )  # fmt: skip
    steps_s = time.monotonic() - t_steps
    rep = await _report(
        opts=opts, cfg=cfg, path=path, state=state, book=book, rec=rec, stats=stats,
        cures=cures, since=since, seeded=seeded,
    )  # fmt: skip
    rep.update(
        mode=models.label(model, opts.reputation),
        wall_s=round(time.monotonic() - t_start, 1),
        steps_s=round(steps_s, 1),
        time={
            "hours_per_step": scale.hours_per_step,
            "step_s": scale.step_s,
            "compression": scale.factor,
            "measured_step_s": round(steps_s / max(1, len(rec.prices)), 3),
            **times.figures(),
        },
        warmup={"backfill_rows": backfill, "topped_up": topped, "still_below_1": still_low},
        implied_vol=dict(cfg.portfolio.implied_vol),
        netting_at_start=netting,
        volatility={"start": vol_start, "end": _vol(daemon)},
    )
    if daemon.reputation.enabled:
        scored = [daemon.reputation.reputation(a.address) for a in book]
        rep["reputation"] = report.multiplier_range(
            [r.multiplier for r in scored], [r.maintenance_multiplier for r in scored]
        )
    print(report.render(rep))
    jpath, ppath = report.write(rep, rec, path.times, opts.out_dir)
    print(f"report: {jpath}  chart: {ppath}")
    return 130 if stop.is_set() else 0


async def _report(
    *,
    opts: ReplayOptions,
    cfg: AppConfig,
    path: episodes.EpisodePath,
    state: manager.DevnetState,
    book: list[population.Account],
    rec: report.Recorder,
    stats: keeper.KeeperStats,
    cures: responders.CureStats,
    since: dict[str, int],
    seeded: population.SeedStats,
) -> dict[str, Any]:
    held = await asyncio.to_thread(chainread.positions_usd, state, [a.address for a in book])
    bad = sum(max(0.0, d - c) for c, d in held.values())
    negative = sum(1 for c, d in held.values() if d > c)
    chains = await asyncio.to_thread(chainread.pushes, state, since)
    return report.build_report(
        episode=path.name,
        mode=cfg.portfolio.mode,
        rec=rec,
        keeper=stats,
        bad_debt_usd=bad,
        negative_accounts=negative,
        chains=chains,
        vault_end=held,
        cures=cures,
        meta={
            "steps": len(rec.prices),
            "hours_per_block": opts.scale().hours_per_step,
            "block_interval_s": opts.block_interval_s,
            "seed": opts.seed,
            "responders": {
                "share": opts.responders,
                "max_delay_h": opts.response_max_delay_h,
                "budget_share": responders.BUDGET_SHARE,
                "cure_hf": round(cfg.risk.warn_hf + responders.CURE_MARGIN, 4),
            },
            "seeding": {"transactions": seeded.transactions, "seconds": seeded.seconds},
            "sources": path.sources,
        },
    )


def run_replay(root: Path, config_path: str | None, opts: ReplayOptions) -> int:
    return asyncio.run(run(root, config_path, opts))
