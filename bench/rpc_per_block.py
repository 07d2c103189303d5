"""RPC calls per new block in steady state vs the number of accounts:
python -m bench.rpc_per_block [--small 1000] [--large 100000] [--blocks 20].

For each book size, on a fresh anvil with a HealthRegistry: a RiskEngine holding N
synthetic accounts (collateral and debt on the chain), the registry seeded with
exactly the entries the ledger wants (anvil_setStorageAt, so nothing needs pushing),
and the daemon's PushService for that chain with the keeper key. After one warm-up
cycle (the listener's first full read), `--blocks` times: a new block is mined, a
price tick recomputes the ledger with unchanged prices, and the push cycle runs
(listener, sender, keeper balance, trigger rules). Calls are counted by the chain's
RpcClient (client.status() request counters). Reported: calls per block for both
sizes and the ratio large/small (target ~1: constant in the number of accounts).
The endpoint health check's probes (3 calls per `health_interval_s`, 5 s) are counted
apart and left out of calls per block: they come per second, not per block, so the
large book's longer cycles (0.7-0.9 s against 10 ms) caught more of them and the
ratio measured the run's duration (5.60 against 5.00 calls, 0.60 of them probes).

Not in the loop: the chain indexer and the oracle refresh. Their RPC work per block
is set by block ranges and feeds, not by accounts (one eth_getLogs per range and
the headers it needs; one read per feed), so they would add the same constant to
both sizes.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from eth_abi import encode as abi_encode
from eth_utils import keccak

from aggregator.config import AppConfig
from aggregator.push.controller import hf_fixed_array
from aggregator.push.service import PushService
from aggregator.risk.book import PositionRow
from aggregator.risk.engine import PriceInput, RiskEngine
from aggregator.store import Store
from aggregator.store.push_repo import SqlPushStore
from bench.results import Figure, record
from chains.pusher.keys import key_from_hex
from chains.registry_codec import RegistryEntry, pack_slot
from chains.rpc import RpcClient
from devkit.anvil import DEV_KEYS, AnvilNode
from devkit.testing.harness import VaultHarness

ENTRIES_SLOT = 1  # HealthRegistry: Ownable._owner is slot 0, then _entries


def config_for(
    nodes: dict[str, AnvilNode], harness: dict[str, VaultHarness], **pusher: Any
) -> AppConfig:
    src = [{"name": "h", "kind": "http", "url": "http://127.0.0.1:9/x", "path": "p"}]
    return AppConfig(
        chains=[
            {
                "name": c,
                "chain_id": node.chain_id,
                "rpc_urls": [node.url],
                "confirmations": 1,
                "contracts": {"registry": harness[c].registry},
            }
            for c, node in nodes.items()
        ],
        assets=[
            {"symbol": "COL", "decimals": 18, "ltv": 0.8, "lt": 0.85, "sources": src},
            {
                "symbol": "USD",
                "decimals": 6,
                "ltv": 0.9,
                "lt": 0.95,
                "borrowable": True,
                "sources": src,
            },
        ],
        credit={"policy": "static"},
        pusher={"interval_s": 1.0, "heartbeat_s": 600, "vault_max_age_s": 900, **pusher},
    )


def book(cfg: AppConfig, n: int, chains: list[str], seed: int = 5) -> RiskEngine:
    """N accounts, each with collateral on every chain and debt on the first."""
    rng = np.random.default_rng(seed)
    col = rng.uniform(1, 20, n)
    debt = col * len(chains) * 2000 * rng.uniform(0.1, 0.7, n)
    eng = RiskEngine.from_config(cfg)

    def rows() -> Any:
        for i in range(n):
            a = f"0x{i + 1:040x}"
            amount = int(col[i] * 1e18)
            for c in chains:
                yield PositionRow(a, c, "COL", "collateral", amount, amount)
            d = int(debt[i] * 1e6)
            yield PositionRow(a, chains[0], "USD", "debt", d, d)

    eng.load_positions(rows())
    tick(eng)
    return eng


def tick(eng: RiskEngine, price: float = 2000.0) -> None:
    now = time.time()
    eng.set_prices({"COL": PriceInput(price, "ok", now, []), "USD": PriceInput(1.0, "ok", now, [])})
    eng.set_volatility({"COL": 0.01, "USD": 0.0005}, {})
    eng.recompute()
    eng.allocate_credit()


def seed_registry(h: VaultHarness, eng: RiskEngine, chain: str) -> None:
    """Write every account's wanted entry on `chain` straight into the registry's storage
    (seconds for 100k accounts, where pushing them would take hundreds of blocks)."""
    n = eng.book.n_accounts
    c = eng.chains.index(chain)
    ts = int(h.rpc("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)
    hf = hf_fixed_array(eng.r_hf[:n])
    calls: list[tuple[str, list[Any]]] = []
    for i, addr in enumerate(eng.book.account_address):
        e = RegistryEntry(int(eng.credit[i, c]), int(hf[i]), ts, int(eng.r_tier[i]))
        key = keccak(abi_encode(["address", "uint256"], [addr, ENTRIES_SLOT]))
        calls.append(
            ("anvil_setStorageAt", [h.registry, "0x" + key.hex(), f"0x{pack_slot(e):064x}"])
        )
        if len(calls) == 2000:
            h.batch(calls)
            calls = []
    if calls:
        h.batch(calls)


def requests(client: RpcClient) -> int:
    return sum(s.requests for s in client.status())


def count_probes(client: RpcClient) -> list[int]:
    """Tally, from now on, the requests the client's periodic health check makes (one
    cell, updated in place)."""
    tally = [0]
    check = client.health.maybe_check

    async def counted() -> None:
        before = requests(client)
        try:
            await check()
        finally:
            tally[0] += requests(client) - before

    client.health.maybe_check = counted  # type: ignore[method-assign]
    return tally


async def run(n: int, blocks: int) -> dict[str, Any]:
    node = AnvilNode(chain_id=71950).start()
    tmp = tempfile.TemporaryDirectory()
    store = Store(f"sqlite+aiosqlite:///{Path(tmp.name) / 'b.db'}")
    client = RpcClient("a", node.chain_id, [node.url], timeout_s=60, rate_limit_per_s=100_000)
    try:
        h = VaultHarness.deploy(node.url)
        await store.upgrade()
        cfg = config_for({"a": node}, {"a": h})
        eng = book(cfg, n, ["a"])
        seed_registry(h, eng, "a")
        svc = PushService(
            cfg, eng, SqlPushStore(store), {"a": client}, metrics=None,
            key=key_from_hex(DEV_KEYS[1], "bench keeper"),
        )  # fmt: skip
        await svc.load()
        probes = count_probes(client)
        t0 = time.perf_counter()
        await svc.cycle("a")  # warm-up: the listener's first (full) read
        warm_s = time.perf_counter() - t0
        warm_calls = requests(client)
        per_block: list[int] = []
        cycle_s: list[float] = []
        pushed = 0
        for _ in range(blocks):
            h.mine()
            tick(eng)  # a price refresh with unchanged prices
            before, probed = requests(client), probes[0]
            t0 = time.perf_counter()
            pushed += len(await svc.cycle("a"))
            cycle_s.append(time.perf_counter() - t0)
            per_block.append(requests(client) - before - (probes[0] - probed))
        return {
            "accounts": n,
            "calls_per_block": statistics.mean(per_block),
            "calls_per_block_max": max(per_block),
            "health_probe_calls": probes[0],
            "warmup_calls": warm_calls,
            "warmup_s": warm_s,
            "cycle_ms_median": statistics.median(cycle_s) * 1e3,
            "entries_pushed": pushed,
        }
    finally:
        await client.close()
        await store.close()
        node.stop()
        tmp.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=1_000)
    ap.add_argument("--large", type=int, default=100_000)
    ap.add_argument("--blocks", type=int, default=20)
    args = ap.parse_args()
    small = asyncio.run(run(args.small, args.blocks))
    large = asyncio.run(run(args.large, args.blocks))
    for r in (small, large):
        print(
            f"{r['accounts']:>8,} accounts: {r['calls_per_block']:.2f} RPC calls per block "
            f"(max {r['calls_per_block_max']}), cycle {r['cycle_ms_median']:.1f} ms median; "
            f"first full read {r['warmup_calls']} calls in {r['warmup_s']:.2f}s; "
            f"entries pushed in steady state: {r['entries_pushed']}; "
            f"health-check probes (per time, not counted): {r['health_probe_calls']} calls"
        )
    ratio = large["calls_per_block"] / small["calls_per_block"]
    record(
        Figure(
            "rpc_per_block",
            f"RPC calls per new block per chain in steady state (pusher cycle), "
            f"{args.large:,} accounts: {large['calls_per_block']:.2f} calls/block",
            ratio,
            "x",
            f"the same with {args.small:,} accounts ({small['calls_per_block']:.2f} calls/block)",
            "~1x (constant in accounts; <= 1.1x)",
            ratio <= 1.1,
            {"small": small, "large": large},
        )
    )


if __name__ == "__main__":
    main()
