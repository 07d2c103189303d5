"""One oracle refresh of every configured asset vs the raw eth_call round trip
of one Multicall3 batch on the same node.

    python -m bench.oracle_refresh [--assets 8] [--feeds 3] [--rounds 50]

Both sides read the same feeds (latestRoundData + decimals of every feed) on one
anvil node. The ratio is what the oracle layer costs on top of the unavoidable
RPC round trip: decoding, validation, aggregation, jump guard, volatility update.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import aiohttp
from eth_abi import encode
from eth_utils import function_signature_to_4byte_selector, to_checksum_address

from bench.results import Figure, record
from chains.contracts import MULTICALL3_ADDRESS, install_multicall, load_artifact
from chains.rpc import RpcClient
from devkit.anvil import AnvilNode, rpc_call
from oracles import AggregationRules, AssetPricing, OracleService
from oracles.config import ChainlinkSourceConfig
from oracles.sources.chainlink import DECIMALS, LATEST_ROUND_DATA

DEPLOYER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


def deploy_feed(url: str, answer: int) -> str:
    art = load_artifact("MockV3Aggregator")
    data = bytes.fromhex(art.bytecode.removeprefix("0x")) + encode(["uint8", "int256"], [8, answer])
    h = rpc_call(url, "eth_sendTransaction", [{"from": DEPLOYER, "data": "0x" + data.hex()}])
    for _ in range(500):
        receipt = rpc_call(url, "eth_getTransactionReceipt", [h])
        if isinstance(receipt, dict):
            return to_checksum_address(receipt["contractAddress"])
        time.sleep(0.01)
    raise RuntimeError("deployment receipt never arrived")


async def main(n_assets: int, n_feeds: int, rounds: int) -> None:
    node = AnvilNode(31337).start()
    try:
        install_multicall(node.url)
        assets: list[AssetPricing] = []
        calls: list[tuple[str, bytes]] = []
        for a in range(n_assets):
            srcs = []
            for f in range(n_feeds):
                addr = deploy_feed(node.url, (1000 + a) * 10**8 + f)
                srcs.append(ChainlinkSourceConfig(name=f"f{f}", chain="local", address=addr))
                calls += [(addr, LATEST_ROUND_DATA), (addr, DECIMALS)]
            assets.append(AssetPricing(f"A{a}", tuple(srcs), AggregationRules(min_sources=2)))

        agg3 = function_signature_to_4byte_selector("aggregate3((address,bool,bytes)[])")
        payload = agg3 + encode(["(address,bool,bytes)[]"], [[(t, True, d) for t, d in calls]])
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_call",
            "params": [{"to": MULTICALL3_ADDRESS, "data": "0x" + payload.hex()}, "latest"],
        }

        async with aiohttp.ClientSession() as http:

            async def raw_call() -> None:
                async with http.post(node.url, json=body) as resp:
                    answer = await resp.json()
                    assert "result" in answer, answer

            async with (
                RpcClient("local", 31337, [node.url]) as rpc,
                OracleService(assets, batch_callers={"local": rpc}) as svc,
            ):
                for _ in range(5):  # warm up connections and code paths
                    await raw_call()
                    await rpc.call_batch(calls)
                    await svc.refresh()
                base, client, ours = [], [], []
                for _ in range(rounds):
                    t0 = time.perf_counter()
                    await raw_call()
                    base.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    await rpc.call_batch(calls)
                    client.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    prices = await svc.refresh()
                    ours.append(time.perf_counter() - t0)
                assert all(p.usable for p in prices.values()), prices
    finally:
        node.stop()

    b, c, o = statistics.median(base), statistics.median(client), statistics.median(ours)
    print(
        f"oracle refresh: {n_assets} assets x {n_feeds} chainlink feeds "
        f"({len(calls)} sub-calls), {rounds} rounds"
    )
    print(f"  baseline raw multicall eth_call  median {b * 1e3:8.2f} ms")
    print(f"  chains RpcClient.call_batch      median {c * 1e3:8.2f} ms")
    print(f"  OracleService.refresh()          median {o * 1e3:8.2f} ms")
    print(f"  ratio call_batch / raw eth_call  {c / b:8.2f}x")
    print(f"  ratio refresh / raw eth_call     {o / b:8.2f}x")
    record(
        Figure(
            "oracle_refresh",
            f"one oracle refresh: {n_assets} assets x {n_feeds} Chainlink feeds, median of "
            f"{rounds} rounds ({o * 1e3:.2f} ms)",
            o / b,
            "x",
            f"one raw Multicall3 eth_call of the same sub-calls ({b * 1e3:.2f} ms)",
            "reported",
            None,
            {"raw_ms": b * 1e3, "call_batch_ms": c * 1e3, "refresh_ms": o * 1e3},
        )
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--assets", type=int, default=8)
    ap.add_argument("--feeds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=50)
    args = ap.parse_args()
    asyncio.run(main(args.assets, args.feeds, args.rounds))
