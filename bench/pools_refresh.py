"""Refreshing Uniswap v3 pools every block through the pool reader vs the raw Multicall3
eth_call of the same reads.

    python -m bench.pools_refresh [--pools 20] [--chains 3] [--blocks 20]

Setup: `--chains` fresh anvils, each with the devnet's contracts and Uniswap v3
(devkit/pools.py) with `--pools` pools (the devnet's five, then more pairs and fee
tiers), each with the devnet's real-shaped book. Then, `--blocks` times: one swap in
every pool of every chain (so every pool changed), all mined in one block per chain
(automine off while they are sent), and

- ours: `PoolWatcher.step()` on every chain at once (confirmations 0): the head, the
  headers, the Swap/Mint/Burn logs of the range, then the pinned reads of the changed
  pools (slot0 + liquidity, the band's tickBitmap words, the band's ticks), decoded,
  checked and turned into PoolSnapshots;
- baseline: one raw aggregate3 eth_call per chain (at once) carrying exactly the same
  sub-calls, pinned to the same block hash, undecoded: what the reads cost if one
  already knew which pools changed, which words to read and which ticks are set.

The ratio is what finding the changes (head, headers, logs), discovering the band and
checking every answer costs on top of the unavoidable reads; the JSON-RPC requests per
block and chain are printed too (the RpcClient chunks batches at 200 sub-calls).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import statistics
import time
from typing import Any

import aiohttp
from eth_abi import encode

from bench.results import Figure, record
from chains.contracts import MULTICALL3_ADDRESS, install_multicall
from chains.pool_reader import (
    FEE_TICK_SPACING,
    SEL_LIQUIDITY,
    SEL_SLOT0,
    SEL_TICK_BITMAP,
    SEL_TICKS,
    PoolReader,
    PoolSpec,
    PoolWatcher,
    word_positions,
)
from chains.pool_state import PoolSnapshot
from chains.rpc import RpcClient
from devkit.anvil import AnvilNode, rpc_call
from devkit.deploy import deploy_chain, web3_session
from devkit.pool_market import arbitrage_limit, swap_tx
from devkit.pools import POOL_PLANS, PoolPlan, UniswapDeployment, deploy_uniswap

CHAIN_NAMES = ("alpha", "beta", "gamma")
ETH_LIKE = {"WETH", "wstETH", "rETH", "cbETH"}
SEL_AGGREGATE3 = bytes.fromhex("82ad56cb")


def bench_plans(n: int) -> tuple[PoolPlan, ...]:
    """The devnet's pools, then the other pairs and fee tiers of the same tokens."""
    plans = list(POOL_PLANS)
    taken = {(p.base, p.quote, p.fee) for p in plans}
    tokens = ("WETH", "WBTC", "wstETH", "rETH", "cbETH", "USDC")
    for fee, (base, quote) in itertools.product(
        (3000, 500, 10000, 100), itertools.combinations(tokens, 2)
    ):
        if len(plans) >= n:
            break
        if (base, quote, fee) in taken:
            continue
        width = 0.3 if {base, quote} <= ETH_LIKE else 1.0
        plans.append(PoolPlan(f"{base}/{quote} {fee}", base, quote, fee, 5_000_000, width))
    if len(plans) < n:
        raise SystemExit(f"at most {len(plans)} pools available")
    return tuple(plans[:n])


def setup_chain(
    name: str, chain_id: int, plans: tuple[PoolPlan, ...]
) -> tuple[AnvilNode, UniswapDeployment]:
    node = AnvilNode(chain_id).start()
    install_multicall(node.url)
    with web3_session(node.url) as w3:
        dep = deploy_chain(w3, name)
        uni = deploy_uniswap(w3, dep, plans=plans)
    return node, uni


def raw_calls(snaps: dict[str, PoolSnapshot]) -> list[tuple[str, bytes]]:
    """The sub-calls the reader made for these snapshots, in the same order."""
    calls: list[tuple[str, bytes]] = []
    for s in snaps.values():
        calls += [(s.address, SEL_SLOT0), (s.address, SEL_LIQUIDITY)]
    for s in snaps.values():
        words = word_positions(s.band_lower, s.band_upper, s.tick_spacing)
        calls += [(s.address, SEL_TICK_BITMAP + encode(["int16"], [w])) for w in words]
    for s in snaps.values():
        calls += [(s.address, SEL_TICKS + encode(["int24"], [t.index])) for t in s.ticks]
    return calls


async def raw_read(
    http: aiohttp.ClientSession, url: str, calls: list[tuple[str, bytes]], block_hash: str
) -> None:
    payload = SEL_AGGREGATE3 + encode(
        ["(address,bool,bytes)[]"], [[(t, True, d) for t, d in calls]]
    )
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "eth_call",
        "params": [
            {"to": MULTICALL3_ADDRESS, "data": "0x" + payload.hex()},
            {"blockHash": block_hash, "requireCanonical": True},
        ],
    }
    async with http.post(url, json=body) as resp:
        answer = await resp.json()
        assert "result" in answer, answer


def swap_every_pool(
    url: str, uni: UniswapDeployment, snaps: dict[str, PoolSnapshot], up: bool
) -> None:
    """One 0.2% move in every pool, mined in one block (automine off while sending)."""
    rpc_call(url, "evm_setAutomine", [False])
    for rec in uni.pools.values():
        sqrt_price = snaps[rec.address.lower()].sqrt_price_x96
        limit = arbitrage_limit(sqrt_price, sqrt_price * math.sqrt(1.002 if up else 0.998), 0)
        assert limit is not None
        rpc_call(url, "eth_sendTransaction", [swap_tx(uni, rec, *limit)])
    rpc_call(url, "evm_mine")
    rpc_call(url, "evm_setAutomine", [True])


async def main(n_pools: int, n_chains: int, blocks: int) -> None:
    plans = bench_plans(n_pools)
    setups = await asyncio.gather(
        *(asyncio.to_thread(setup_chain, CHAIN_NAMES[i], 72001 + i, plans) for i in range(n_chains))
    )
    nodes = [n for n, _ in setups]
    try:
        ours, raw, changed, per_block = await measure(setups, blocks)
    finally:
        for n in nodes:
            n.stop()
    o, b = statistics.median(ours), statistics.median(raw)
    print(f"pool refresh per block: {n_pools} pools x {n_chains} chains, {blocks} blocks")
    print(f"  baseline raw multicall of the same reads  median {b * 1e3:8.2f} ms")
    print(f"  PoolWatcher.step() on every chain         median {o * 1e3:8.2f} ms")
    print(f"  pools changed per block                   {changed}")
    print(f"  JSON-RPC requests per block and chain     {per_block:8.2f} (baseline: 1)")
    print(f"  ratio                                     {o / b:8.2f}x")
    record(
        Figure(
            "pools_refresh",
            f"pool refresh per block, {n_pools} pools x {n_chains} chains, every pool swapped "
            f"(PoolWatcher.step: logs, headers, band discovery, checks; {o * 1e3:.1f} ms)",
            o / b,
            "x",
            f"one raw Multicall3 eth_call per chain of the same reads ({b * 1e3:.1f} ms)",
            "reported",
            None,
            {
                "raw_ms": b * 1e3,
                "watcher_ms": o * 1e3,
                "pools_changed": changed,
                "requests_per_block_per_chain": per_block,
            },
        )
    )


async def measure(
    setups: list[tuple[AnvilNode, UniswapDeployment]], blocks: int
) -> tuple[list[float], list[float], int, float]:
    clients = [RpcClient(CHAIN_NAMES[i], n.chain_id, [n.url]) for i, (n, _) in enumerate(setups)]
    watchers: list[PoolWatcher] = []
    for (_node, uni), client in zip(setups, clients, strict=True):
        reader = PoolReader(client)
        specs = [
            PoolSpec(client.chain, p.address, (p.token0, p.token1), p.fee, uni.factory, p.label)
            for p in uni.pools.values()
        ]
        assert all(FEE_TICK_SPACING[p.fee] == p.tick_spacing for p in uni.pools.values())
        metas = await reader.validate(specs)
        watchers.append(PoolWatcher(reader, metas.values(), confirmations=0, max_gap=10**6))
    ours: list[float] = []
    raw: list[float] = []
    changed = 0
    requests = 0
    try:
        async with aiohttp.ClientSession() as http:
            await asyncio.gather(*(w.step() for w in watchers))
            for k in range(blocks + 3):  # the first 3 warm up connections and code paths
                for (node, uni), w in zip(setups, watchers, strict=True):
                    await asyncio.to_thread(swap_every_pool, node.url, uni, w.snapshots, k % 2 == 0)
                sent = sum(e.requests for c in clients for e in c.status())
                t0 = time.perf_counter()
                updates = await asyncio.gather(*(w.step() for w in watchers))
                t1 = time.perf_counter()
                if k >= 3:
                    requests += sum(e.requests for c in clients for e in c.status()) - sent
                jobs: list[Any] = []
                for (node, _), w in zip(setups, watchers, strict=True):
                    assert w.cursor is not None
                    jobs.append(raw_read(http, node.url, raw_calls(w.snapshots), w.cursor.hash))
                t2 = time.perf_counter()
                await asyncio.gather(*jobs)
                t3 = time.perf_counter()
                changed = sum(len(u.changed) for u in updates)
                assert changed == sum(len(w.metas) for w in watchers), updates
                if k >= 3:
                    ours.append(t1 - t0)
                    raw.append(t3 - t2)
    finally:
        for c in clients:
            await c.close()
    return ours, raw, changed, requests / (len(ours) * len(clients))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pools", type=int, default=20)
    ap.add_argument("--chains", type=int, default=3)
    ap.add_argument("--blocks", type=int, default=20)
    args = ap.parse_args()
    asyncio.run(main(args.pools, args.chains, args.blocks))
