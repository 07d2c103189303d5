"""Indexer throughput: python -m bench.indexing [--events N] [--range R] [--db URL].

Generates N vault Deposited events on a fresh anvil (JSON-RPC batches with
automine off), then in the same run measures
  - baseline: raw eth_getLogs over the same block ranges on the same node
    (one keep-alive aiohttp session, JSON parsed, nothing else), and
  - the indexer: getLogs + header checks + decoding + one store transaction
    per range (events, positions, checkpoint) into a fresh SQLite file (or --db),
and prints events/s of both and their ratio (indexer / raw).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from pathlib import Path

import aiohttp

from aggregator.devnet.anvil import AnvilNode
from aggregator.store import Store
from aggregator.store.chain_repo import SqlChainStore
from chains.events import TOPIC_FILTER
from chains.indexer import ChainIndexer
from chains.rpc import RpcClient
from chains.testing.harness import VaultHarness
from chains.types import ChainSettings


async def raw_getlogs(url: str, vault: str, start: int, end: int, span: int) -> tuple[int, float]:
    count = 0
    t0 = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        for lo in range(start, end + 1, span):
            hi = min(end, lo + span - 1)
            body = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "eth_getLogs",
                "params": [
                    {
                        "address": vault,
                        "topics": TOPIC_FILTER,
                        "fromBlock": hex(lo),
                        "toBlock": hex(hi),
                    }
                ],
            }
            async with session.post(url, json=body) as resp:
                count += len((await resp.json())["result"])
    return count, time.perf_counter() - t0


async def index(
    url: str, chain_id: int, h: VaultHarness, db: str, span: int, *, pg_schema: str | None = None
) -> tuple[int, float]:
    store = Store(db, pg_schema=pg_schema)
    await store.upgrade()
    settings = ChainSettings(
        name="bench",
        chain_id=chain_id,
        rpc_urls=(url,),
        vault=h.vault,
        start_block=h.deploy_block,
        confirmations=3,
        max_log_range=span,
        rpc_rate_limit_per_s=100_000.0,
    )
    try:
        async with RpcClient.from_settings(settings) as client:
            await client.connect()
            ix = ChainIndexer(settings, client, SqlChainStore(store))
            t0 = time.perf_counter()
            status = await ix.sync_to_head()
            elapsed = time.perf_counter() - t0
        return status.events_total, elapsed
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--per-block", type=int, default=400)
    ap.add_argument("--range", type=int, default=10, help="getLogs block span (both sides)")
    ap.add_argument("--db", default=None, help="store URL (default: a fresh SQLite file)")
    ap.add_argument("--pg-schema", default=None, help="PostgreSQL schema (must exist, empty)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    with (
        AnvilNode(71090, extra_args=["--gas-limit", "100000000"]) as node,
        tempfile.TemporaryDirectory() as tmp,
    ):
        h = VaultHarness.deploy(node.url)
        t0 = time.perf_counter()
        h.bulk_deposits(args.events, per_block=args.per_block)
        gen = time.perf_counter() - t0
        end = h.block_number()
        print(f"generated {args.events} events in {end - h.deploy_block} blocks in {gen:.1f}s")
        db = args.db or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        raw_n, raw_s = asyncio.run(raw_getlogs(node.url, h.vault, h.deploy_block, end, args.range))
        ix_n, ix_s = asyncio.run(
            index(node.url, node.chain_id, h, db, args.range, pg_schema=args.pg_schema)
        )
        if raw_n != args.events or ix_n != args.events:
            raise SystemExit(
                f"event count mismatch: generated {args.events}, raw {raw_n}, indexed {ix_n}"
            )
        raw_rate, ix_rate = raw_n / raw_s, ix_n / ix_s
        print(
            f"baseline raw eth_getLogs : {raw_n} events in {raw_s:.2f}s = {raw_rate:,.0f} events/s"
        )
        print(
            f"indexer ({db.split(':')[0]}) : {ix_n} events in {ix_s:.2f}s = {ix_rate:,.0f} events/s"
        )
        print(
            f"ratio indexer/raw        : {ix_rate / raw_rate:.3f} "
            "(1.0 = as fast as fetching the logs alone)"
        )


if __name__ == "__main__":
    main()
