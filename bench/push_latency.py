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

from eth_abi import encode as abi_encode

from aggregator.config import ApiConfig, StoreConfig, load_config
from aggregator.daemon import Daemon
from aggregator.devnet import manager
from aggregator.devnet.anvil import DEV_KEYS, rpc_call
from aggregator.devnet.deploy import feed_answer
from bench.results import Figure, record
from chains.registry_codec import unpack_slot
from chains.rpc import selector

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--step", type=float, default=0.04, help="relative WETH drop per round")
    args = ap.parse_args()
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
            "push_latency",
            f"price change -> lower HF mined on all {len(manager.INDEXED_CHAINS)} chains "
            f"(one watched account; median of {len(lat)} rounds, max {max(lat):.2f} s)",
            med / block,
            "x",
            f"the devnet's block interval ({block:.0f} s)",
            "<= 2 blocks",
            med / block <= 2.0,
            {"latencies_s": lat},
        )
    )


if __name__ == "__main__":
    main()
