"""`aggregator replay --episode NAME` (and `aggregator demo --replay NAME`): a real crash
through the devnet and the unmodified daemon, then the report (docs/replay.md).

Order: the episode path first (a missing file or a gap fails before any process
starts); then the devnet (the running one, or `up`) and the config (it includes the
devnet's addresses); every
feed and LST rate moved to the episode's first hour, the generated book seeded at those
prices, the liquidator funded, the daemon started in-process; then one step per
block: the feeds of every indexed chain set to the step's prices (the exchange server
follows them itself), a sample of the daemon's ratings, a keeper round. Ctrl-C (or
SIGTERM) stops at the next step; the daemon stops and a devnet this run started goes
down, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from aggregator.config import AppConfig, ConfigError, Problem, load_config
from aggregator.daemon import Daemon, StartupError
from devkit import manager
from devkit.anvil import DEV_KEYS
from devkit.deploy import ASSETS, FEED_DECIMALS, KEEPER
from devkit.replay import chainread, episodes, keeper, population, report
from devkit.simulator import SET_RATE, UPDATE_ANSWER, _update_chain

log = logging.getLogger("aggregator.replay")
WARMUP_S = 90.0
# Generous next to a push's latency (a pusher cycle, `pusher.interval_s`, plus a block).
DRAIN_S = 60.0


@dataclass(frozen=True)
class ReplayOptions:
    episode: str
    hours_per_block: int = 1
    block_interval_s: float = 1.0
    accounts: int = 2000
    seed: int = 7
    out_dir: Path = Path("docs/replay")
    start_hour: int = 0
    hours: int | None = None  # None: the whole episode
    false_window_h: int = 168
    mode: str | None = None  # margin model ([portfolio] mode); None: the config's


def _with_mode(cfg: AppConfig, mode: str | None) -> AppConfig:
    """The config with `[portfolio] mode` set, validated like the file would be."""
    if mode is None:
        return cfg
    data = cfg.model_dump()
    data["portfolio"]["mode"] = mode
    try:
        return type(cfg).model_validate(data)
    except ValueError as exc:
        raise ConfigError([Problem("portfolio.mode", f"--mode {mode!r}: {exc}")]) from exc


def _path(opts: ReplayOptions) -> episodes.EpisodePath:
    rates = {a.symbol: float(a.rate) for a in ASSETS if a.rate is not None}
    path = episodes.build(opts.episode, rates)
    if opts.start_hour or opts.hours is not None:
        path = path.slice(opts.start_hour, opts.hours)
    if opts.hours_per_block < 1:
        raise episodes.EpisodeError(f"hours per block must be >= 1, got {opts.hours_per_block}")
    return path.every(opts.hours_per_block)


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
    stop: asyncio.Event,
) -> keeper.KeeperStats:
    async with aiohttp.ClientSession() as session:
        k = keeper.Keeper(state, api_url, session)
        for i in range(len(path)):
            if stop.is_set():
                break
            t0 = time.monotonic()
            await drive(session, state, path.at(i))
            rec.sample(path.at(i), _ratings(daemon))
            await k.round(i)
            rec.apply(k.stats)
            if i % 24 == 0:
                print(
                    f"replay {path.name}: step {i}/{len(path)}  WETH {path.at(i)['WETH']:,.2f}  "
                    f"liquidations {len(k.stats.liquidations)}",
                    flush=True,
                )
            rest = opts.block_interval_s - (time.monotonic() - t0)
            if rest > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), rest)
        await _drain(k, len(path), stop)
        return k.stats


async def _drain(k: keeper.Keeper, step: int, stop: asyncio.Event) -> None:
    """After the last step, keeper rounds (feeds held) while an account the daemon rates
    liquidatable waits for its registry entry: a crash at the slice's end is liquidated
    once the pusher's update is mined, not dropped. Bounded by `DRAIN_S`."""
    deadline = time.monotonic() + DRAIN_S
    while k.waiting and not stop.is_set() and time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
        await k.round(step)


async def _prepare(
    opts: ReplayOptions, path: episodes.EpisodePath, state: manager.DevnetState
) -> tuple[list[population.Account], population.SeedStats]:
    dep_feeds = {s for c in manager.INDEXED_CHAINS for s in state.deployments[c].feeds}
    episodes.require_drivable(path, dep_feeds, path.rates)
    async with aiohttp.ClientSession() as session:
        await drive(session, state, path.at(0), path.rates)
    book = population.generate(opts.accounts, opts.seed, path.at(0))
    seeded = await asyncio.to_thread(population.seed_population, state, book, path.at(0))
    print(
        f"seeded {seeded.accounts} accounts: {seeded.transactions} transactions, "
        f"{seeded.blocks} blocks, {seeded.seconds} s",
        flush=True,
    )
    await asyncio.to_thread(keeper.prepare, state)
    return book, seeded


async def run(root: Path, config_path: str | None, opts: ReplayOptions) -> int:
    try:
        path = _path(opts)
    except episodes.EpisodeError as exc:
        print(f"replay: {exc}")
        return 2
    started = not manager.status(root).get("running")
    state = await asyncio.to_thread(manager.up, root) if started else manager.load_state(root)
    assert state is not None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    daemon: Daemon | None = None
    t_start = time.monotonic()
    try:
        try:
            # After `up`: config.toml includes the devnet's generated addresses.
            cfg = _with_mode(load_config(config_path or root / "config.toml"), opts.mode)
        except ConfigError as exc:
            print(f"replay: {exc}")
            return 2
        book, seeded = await _prepare(opts, path, state)
        if not os.environ.get("AGG_KEEPER_KEY") and cfg.pusher.keystore_path is None:
            os.environ["AGG_KEEPER_KEY"] = DEV_KEYS[KEEPER]
        daemon = Daemon(cfg)
        try:
            port = await daemon.start()
        except StartupError as exc:
            print(f"daemon refused to start: {exc}")
            return 1
        api_url = f"http://{cfg.api.host}:{port}"
        await _warm_up(daemon, book, api_url, stop)
        since = await asyncio.to_thread(chainread.heads, state)
        lt, groups = _thresholds(cfg)
        rec = report.Recorder(book, lt, groups, opts.false_window_h // opts.hours_per_block)
        t_steps = time.monotonic()
        stats = await _steps(
            opts=opts, path=path, state=state, daemon=daemon, api_url=api_url, rec=rec, stop=stop
        )
        rep = await _report(
            opts=opts, cfg=cfg, path=path, state=state, book=book, rec=rec, stats=stats,
            since=since, seeded=seeded,
        )  # fmt: skip
        rep["wall_s"] = round(time.monotonic() - t_start, 1)
        rep["steps_s"] = round(time.monotonic() - t_steps, 1)
        print(report.render(rep))
        jpath, ppath = report.write(rep, rec, path.times, opts.out_dir)
        print(f"report: {jpath}  chart: {ppath}")
        return 130 if stop.is_set() else 0
    finally:
        if daemon is not None:
            await daemon.stop()
        if started:
            await asyncio.to_thread(manager.down, root)
            print("replay stopped; devnet down")


async def _report(
    *,
    opts: ReplayOptions,
    cfg: AppConfig,
    path: episodes.EpisodePath,
    state: manager.DevnetState,
    book: list[population.Account],
    rec: report.Recorder,
    stats: keeper.KeeperStats,
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
        meta={
            "steps": len(rec.prices),
            "hours_per_block": opts.hours_per_block,
            "block_interval_s": opts.block_interval_s,
            "seed": opts.seed,
            "seeding": {"transactions": seeded.transactions, "seconds": seeded.seconds},
            "sources": path.sources,
        },
    )


def run_replay(root: Path, config_path: str | None, opts: ReplayOptions) -> int:
    return asyncio.run(run(root, config_path, opts))
