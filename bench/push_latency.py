"""Price change -> registry updates mined on every devnet chain: python -m bench.push_latency.

Starts the devnet (4 anvils, 1 s blocks) and the daemon with the keeper key (anvil
account 1), waits until every seeded account is on chain, then `--rounds` times moves
the WETH feed on every chain down by `--step` and measures, from the moment the new
answer is mined on all feeds, until every chain's registry holds a lower HF for the
watched account (a seeded user with WETH collateral). Baseline from the same run: the
devnet's block interval (an update cannot be mined faster than the next block).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from eth_abi import encode as abi_encode

from aggregator.config import ApiConfig, StoreConfig, load_config
from aggregator.daemon import Daemon
from aggregator.startup import freeze_startup_heap
from bench.results import Figure, record
from chains.registry_codec import unpack_slot
from chains.rpc import selector
from devkit import manager
from devkit.anvil import DEV_KEYS, rpc_call
from devkit.deploy import feed_answer

REPO = Path(__file__).resolve().parents[1]


def hf_on(state: manager.DevnetState, chain: str, account: str) -> int | None:
    data = "0x" + (selector("entryOf(address)") + abi_encode(["address"], [account])).hex()
    raw = rpc_call(
        state.nodes[chain].url,
        "eth_call",
        [{"to": state.deployments[chain].registry, "data": data}, "latest"],
    )
    slot = int(str(raw), 16)
    return None if slot == 0 else unpack_slot(slot).hf_1e9


def set_weth(state: manager.DevnetState, price: float) -> None:
    data = (
        "0x"
        + (selector("updateAnswer(int256)") + abi_encode(["int256"], [feed_answer(price)])).hex()
    )
    hashes = {
        c: rpc_call(
            state.nodes[c].url,
            "eth_sendTransaction",
            [
                {
                    "from": state.accounts["deployer"],
                    "to": state.deployments[c].feeds["WETH"],
                    "data": data,
                }
            ],
        )
        for c in manager.INDEXED_CHAINS
    }
    for c, h in hashes.items():
        while rpc_call(state.nodes[c].url, "eth_getTransactionReceipt", [h]) is None:
            time.sleep(0.02)


async def measure(rounds: int, step: float) -> list[float]:
    root = Path(tempfile.mkdtemp(prefix="push-latency-"))
    shutil.copy(REPO / "config.toml", root / "config.toml")
    state = manager.up(root)
    os.environ["AGG_KEEPER_KEY"] = DEV_KEYS[1]
    try:
        cfg = load_config(root / "config.toml")
        cfg = cfg.model_copy(
            update={
                "store": StoreConfig(url=f"sqlite+aiosqlite:///{root}/agg.db"),
                "api": ApiConfig(port=0),
                "pusher": cfg.pusher.model_copy(update={"interval_s": 1.0}),
                "scheduler": cfg.scheduler.model_copy(update={"oracle_interval_s": 1.0}),
            }
        )
        d = Daemon(cfg)
        await d.start()
        freeze_startup_heap()  # as `aggregator run` does at the end of the start-up
        try:
            watched = state.accounts["users"][0]  # WETH collateral on origin/alpha
            deadline = time.monotonic() + 90
            while True:
                hfs = [
                    await asyncio.to_thread(hf_on, state, c, watched)
                    for c in manager.INDEXED_CHAINS
                ]
                if all(h is not None for h in hfs):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("initial pushes did not arrive")
                await asyncio.sleep(0.5)
            await asyncio.sleep(3)
            price = 3000.0
            out = []
            for _ in range(rounds):
                before = {
                    c: await asyncio.to_thread(hf_on, state, c, watched)
                    for c in manager.INDEXED_CHAINS
                }
                price *= 1 - step
                await asyncio.to_thread(set_weth, state, price)
                t0 = time.monotonic()
                while True:
                    now = {
                        c: await asyncio.to_thread(hf_on, state, c, watched)
                        for c in manager.INDEXED_CHAINS
                    }
                    if all(now[c] is not None and now[c] < before[c] for c in now):  # type: ignore[operator]
                        break
                    if time.monotonic() - t0 > 60:
                        raise RuntimeError("update did not arrive within 60 s")
                    await asyncio.sleep(0.05)
                out.append(time.monotonic() - t0)
                await asyncio.sleep(2)
            return out
        finally:
            await d.stop()
    finally:
        manager.down(root)
        shutil.rmtree(root, ignore_errors=True)


def main_devnet(args: argparse.Namespace) -> None:
    lat = asyncio.run(measure(args.rounds, args.step))
    block = float(manager.DEFAULT_BLOCK_TIME_S)
    med = statistics.median(lat)
    print(
        f"price change -> lower HF mined on all {len(manager.INDEXED_CHAINS)} chains: "
        f"median {med:.2f}s, max {max(lat):.2f}s over {len(lat)} rounds "
        f"({', '.join(f'{x:.2f}' for x in lat)}); block interval {block:.0f}s: "
        f"ratio {med / block:.2f}"
    )
    record(
        Figure(
            "push_latency_devnet",
            f"price change -> lower HF mined on all {len(manager.INDEXED_CHAINS)} chains "
            f"(full daemon on the devnet, one watched account; median of {len(lat)} rounds, "
            f"max {max(lat):.2f} s)",
            med / block,
            "x",
            f"the devnet's block interval ({block:.0f} s)",
            "<= 2 blocks",
            med / block <= 2.0,
            {"latencies_s": lat},
        )
    )


# --------------------------------------------------------------------------- bulk mode
# N affected accounts on every chain: each chain an anvil with 1 s interval mining and a
# block gas limit of --gas-limit, a HealthRegistry seeded (anvil_setStorageAt) with
# exactly what the ledger wants, and the daemon's PushService loops running with the
# keeper key. A round drops the collateral price in the ledger (recompute, credit,
# wake: what the daemon does after an oracle refresh) and measures, from before the
# recompute, until on every chain a block holding a successful update with the new
# (lower-HF) entry of each of the N accounts has been seen; also in blocks: the number
# of that block after the head at the price change. The oracle's poll of the feed
# (scheduler.oracle_interval_s) comes before this and is not in it (--mode devnet).


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _bulk_round(
    svc: Any, eng: Any, watch: dict[str, Any], price: float, n: int
) -> dict[str, tuple[float, int]]:
    """One price move: per chain, (seconds, blocks) from the price change in the ledger
    to the block that holds a successful update of the last of the `n` accounts. The
    clock starts before the recompute (the daemon's oracle job recomputes, then wakes
    the pusher); blocks are counted from the head at that moment. `watch`: an RPC
    client per chain of its own (keep-alive: the poll every 20 ms is ~0.3 ms of CPU,
    where a new connection per call from a thread took a few, on the box measured)."""
    from bench.rpc_per_block import tick

    heads = {c: int(str(await w.request("eth_blockNumber", [])), 16) for c, w in watch.items()}
    start = dict(heads)
    covered: dict[str, set[str]] = {c: set() for c in watch}
    done_at: dict[str, tuple[float, int]] = {}
    t0 = time.monotonic()
    tick(eng, price)
    svc.wake()
    while len(done_at) < len(watch):
        if time.monotonic() - t0 > 120:
            raise RuntimeError(f"not every account updated within 120 s: {covered}")
        for c, w in watch.items():
            if c in done_at:
                continue
            head = int(str(await w.request("eth_blockNumber", [])), 16)
            sender = svc.chains[c].sender
            for b in range(heads[c] + 1, head + 1):
                blk = await w.request("eth_getBlockByNumber", [hex(b), False])
                for tx in blk["transactions"]:
                    payload = sender.payload_of(tx)
                    if payload is None:
                        continue
                    receipt = await w.request("eth_getTransactionReceipt", [tx])
                    if int(str(receipt["status"]), 16) != 1:
                        continue  # a failed batch updated nothing
                    covered[c].update(payload[i : i + 20].hex() for i in range(0, len(payload), 52))
                if len(covered[c]) >= n:
                    done_at[c] = (time.monotonic() - t0, b - start[c])
                    break
            heads[c] = head
        await asyncio.sleep(0.02)
    return done_at


def main_bulk(args: argparse.Namespace) -> None:
    asyncio.run(_main_bulk(args))


async def _main_bulk(args: argparse.Namespace) -> None:
    from aggregator.push.service import PushService
    from aggregator.store import Store
    from aggregator.store.push_repo import SqlPushStore
    from bench.rpc_per_block import book, config_for, seed_registry
    from chains.pusher.keys import key_from_hex
    from chains.rpc import RpcClient
    from devkit.anvil import AnvilNode
    from devkit.testing.harness import VaultHarness

    names = [f"c{i}" for i in range(args.chains)]
    nodes = {
        c: AnvilNode(chain_id=71960 + i, extra_args=["--gas-limit", str(args.gas_limit)]).start()
        for i, c in enumerate(names)
    }
    tmp = tempfile.TemporaryDirectory()
    store = Store(f"sqlite+aiosqlite:///{Path(tmp.name) / 'b.db'}")
    clients = {
        c: RpcClient(c, n.chain_id, [n.url], timeout_s=60, rate_limit_per_s=100_000)
        for c, n in nodes.items()
    }
    watch = {
        c: RpcClient(f"watch-{c}", n.chain_id, [n.url], timeout_s=60, rate_limit_per_s=100_000)
        for c, n in nodes.items()
    }
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        chains = {c: VaultHarness.deploy(n.url) for c, n in nodes.items()}
        await store.upgrade()
        cfg = config_for(nodes, chains, batch_gas_budget=args.gas_limit // 4, max_in_flight=8)
        eng = book(cfg, args.accounts, chains=names)
        for c, h in chains.items():
            seed_registry(h, eng, chain=c)
            h.rpc("evm_setIntervalMining", [1])
        svc = PushService(
            cfg, eng, SqlPushStore(store), clients, metrics=None,
            key=key_from_hex(DEV_KEYS[1], "bench keeper"),
        )  # fmt: skip
        await svc.load()
        for c in names:  # the listener's first full read, before the clock runs
            await svc.cycle(c)
        tasks = [asyncio.create_task(svc.run_chain(c, stop)) for c in names]
        await asyncio.sleep(2)
        freeze_startup_heap()  # as `aggregator run` does at the end of the start-up
        lat: list[float] = []
        blocks: list[int] = []
        # CPU of one price move (load-independent): this process (pusher, ledger, the
        # watcher) and the anvils, from the price change to the last chain's block.
        cpu: list[tuple[float, float]] = []
        anvil_pids = [n.process.pid for n in nodes.values() if n.process is not None]
        per_chain: list[dict[str, tuple[float, int]]] = []
        loads: list[float] = []
        price = 2000.0
        for _ in range(args.rounds):
            price *= 1 - args.step
            loads.append(os.getloadavg()[0])
            own, anvils = time.process_time(), sum(_cpu_s(p) for p in anvil_pids)
            got = await _bulk_round(svc, eng, watch, price, args.accounts)
            cpu.append((time.process_time() - own, sum(_cpu_s(p) for p in anvil_pids) - anvils))
            per_chain.append(got)
            lat.append(max(t for t, _ in got.values()))
            blocks.append(max(b for _, b in got.values()))
            await asyncio.sleep(3)
    finally:
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for cl in (*clients.values(), *watch.values()):
            await cl.close()
        await store.close()
        for n in nodes.values():
            n.stop()
        tmp.cleanup()
    block = 1.0
    med = statistics.median(lat)
    gas_per_chain = args.accounts * 5_900
    # Blocks the updates need by gas alone (~5.9k per existing slot, bench/push_gas.py),
    # mined from the first block after the price change at the earliest.
    by_gas = -(-gas_per_chain // args.gas_limit)
    if by_gas > 2:
        print(
            f"note: {args.accounts:,} updates need {by_gas} full blocks of "
            f"{args.gas_limit:,} gas: 2 blocks from the price change cannot hold them"
        )
    print(
        f"{args.accounts:,} affected accounts x {args.chains} chains (block gas limit "
        f"{args.gas_limit:,}; ~{gas_per_chain:,} gas of updates per chain, {by_gas} "
        f"block(s) by gas): all lower HF mined on every chain after median {med:.2f}s, "
        f"max {max(lat):.2f}s over {len(lat)} rounds ({', '.join(f'{x:.2f}' for x in lat)}); "
        f"in blocks after the price change: {', '.join(str(b) for b in blocks)}; "
        f"block interval {block:.0f}s: ratio {med / block:.2f}; load average at each "
        f"round {', '.join(f'{x:.1f}' for x in loads)}; CPU s per round, this process / "
        f"the anvils: {', '.join(f'{a:.2f}/{b:.2f}' for a, b in cpu)}"
    )
    record(
        Figure(
            "push_latency",
            f"price change in the ledger -> lower HF of {args.accounts:,} accounts mined on all "
            f"{args.chains} chains (block gas limit {args.gas_limit / 1e6:.0f}M; median of "
            f"{len(lat)} rounds, max {max(lat):.2f} s)",
            med / block,
            "x",
            f"the chains' block interval ({block:.0f} s)",
            "<= 2 blocks",
            med / block <= 2.0,
            {
                "latencies_s": lat,
                "blocks": blocks,
                "per_chain": per_chain,
                "load_average": loads,
                "cpu_s_process_anvils": cpu,
                "blocks_by_gas": by_gas,
            },
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["bulk", "devnet"], default="bulk")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--step", type=float, default=0.04, help="relative price drop per round")
    ap.add_argument("--accounts", type=int, default=10_000, help="bulk mode: affected accounts")
    ap.add_argument("--chains", type=int, default=3, help="bulk mode: anvil chains")
    ap.add_argument("--gas-limit", type=int, default=100_000_000, help="bulk mode: block gas")
    args = ap.parse_args()
    if args.mode == "devnet":
        main_devnet(args)
    else:
        main_bulk(args)


if __name__ == "__main__":
    main()
