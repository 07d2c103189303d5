"""Indexer throughput: python -m bench.indexing [--events N] [--chains C] [--db URL].

Generates N vault Deposited events spread over C fresh anvils (JSON-RPC batches with
automine off), then in the same run measures
  - baseline: raw eth_getLogs over the same block ranges on the same nodes, all
    chains at once (one keep-alive aiohttp session each, JSON parsed, nothing else),
  - the indexers, one per chain, all at once into one store: getLogs + header checks
    + decoding + one store transaction per range (events, positions, checkpoint)
    into a fresh SQLite file (or --db), with `compact_backfill` on (ranges below the
    reorg window stored as position deltas plus an audit record; --full-rows: a row
    per event, as without it),
and prints events/s of both and their ratio (indexer / raw; target >= 0.5).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp

from aggregator.store import Store
from aggregator.store.chain_repo import SqlChainStore
from bench.results import Figure, record
from chains.events import TOPIC_FILTER
from chains.indexer import ChainIndexer
from chains.rpc import RpcClient
from chains.types import ChainSettings
from devkit.anvil import AnvilNode
from devkit.testing.harness import VaultHarness


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
    nodes: list[tuple[str, int, VaultHarness]],
    db: str,
    span: int,
    *,
    pg_schema: str | None = None,
    compact: bool = True,
) -> tuple[int, float]:
    """Index every chain at once into one store, as the daemon does (one indexer task
    per chain); returns (events indexed, seconds)."""
    store = Store(db, pg_schema=pg_schema)
    await store.upgrade()
    repo = SqlChainStore(store)
    clients = []
    try:
        indexers = []
        for i, (url, chain_id, h) in enumerate(nodes):
            settings = ChainSettings(
                name=f"bench{i}",
                chain_id=chain_id,
                rpc_urls=(url,),
                vault=h.vault,
                start_block=h.deploy_block,
                confirmations=3,
                max_log_range=span,
                rpc_rate_limit_per_s=100_000.0,
                compact_backfill=compact,
            )
            client = RpcClient.from_settings(settings)
            clients.append(client)
            await client.connect()
            indexers.append(ChainIndexer(settings, client, repo))
        t0 = time.perf_counter()
        statuses = await asyncio.gather(*(ix.sync_to_head() for ix in indexers))
        elapsed = time.perf_counter() - t0
        return sum(st.events_total for st in statuses), elapsed
    finally:
        for client in clients:
            await client.close()
        await store.close()


async def raw_all(
    nodes: list[tuple[str, int, VaultHarness]], ends: list[int], span: int
) -> tuple[int, float]:
    """The baseline: raw getLogs of the same ranges from the same nodes, every chain at
    once (the same concurrency the indexers get)."""
    t0 = time.perf_counter()
    got = await asyncio.gather(
        *(
            raw_getlogs(url, h.vault, h.deploy_block, end, span)
            for (url, _cid, h), end in zip(nodes, ends, strict=True)
        )
    )
    return sum(n for n, _ in got), time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=20_000, help="events in total, all chains")
    ap.add_argument("--chains", type=int, default=1, help="anvil nodes, indexed at once")
    ap.add_argument("--per-block", type=int, default=400)
    ap.add_argument("--range", type=int, default=10, help="getLogs block span (both sides)")
    ap.add_argument("--db", default=None, help="store URL (default: a fresh SQLite file)")
    ap.add_argument("--pg-schema", default=None, help="PostgreSQL schema (must exist, empty)")
    ap.add_argument(
        "--full-rows", action="store_true", help="a row per event (compact_backfill off)"
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    per_chain = args.events // args.chains

    with contextlib.ExitStack() as stack:
        anvils = [
            stack.enter_context(AnvilNode(71090 + i, extra_args=["--gas-limit", "100000000"]))
            for i in range(args.chains)
        ]
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        harnesses = [VaultHarness.deploy(node.url) for node in anvils]
        t0 = time.perf_counter()
        # Separate nodes: generate on all of them at once.
        with ThreadPoolExecutor(args.chains) as pool:
            list(
                pool.map(lambda h: h.bulk_deposits(per_chain, per_block=args.per_block), harnesses)
            )
        gen = time.perf_counter() - t0
        ends = [h.block_number() for h in harnesses]
        total = per_chain * args.chains
        print(
            f"generated {total:,} events on {args.chains} chain(s) "
            f"({per_chain:,} each, {args.per_block} per block) in {gen:.1f}s"
        )
        nodes = [(n.url, n.chain_id, h) for n, h in zip(anvils, harnesses, strict=True)]
        db = args.db or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        raw_n, raw_s = asyncio.run(raw_all(nodes, ends, args.range))
        ix_n, ix_s = asyncio.run(
            index(nodes, db, args.range, pg_schema=args.pg_schema, compact=not args.full_rows)
        )
        if raw_n != total or ix_n != total:
            raise SystemExit(
                f"event count mismatch: generated {total}, raw {raw_n}, indexed {ix_n}"
            )
        raw_rate, ix_rate = raw_n / raw_s, ix_n / ix_s
        print(
            f"baseline raw eth_getLogs : {raw_n} events in {raw_s:.2f}s = {raw_rate:,.0f} events/s"
        )
        mode = "full rows" if args.full_rows else "compact backfill"
        print(
            f"indexer ({db.split(':')[0]}, {mode}) : {ix_n} events in {ix_s:.2f}s = "
            f"{ix_rate:,.0f} events/s"
        )
        ratio = ix_rate / raw_rate
        print(f"ratio indexer/raw        : {ratio:.3f} (1.0 = as fast as fetching the logs alone)")
        record(
            Figure(
                "indexing",
                f"indexing rate, {total:,} vault events over {args.chains} chain(s) into "
                f"{db.split(':')[0]}, {mode} ({ix_rate:,.0f} events/s)",
                ratio,
                "x",
                f"raw eth_getLogs of the same ranges from the same nodes, all chains at once "
                f"({raw_rate:,.0f} events/s)",
                ">= 0.5 of raw",
                ratio >= 0.5,
                {
                    "raw_s": raw_s,
                    "indexer_s": ix_s,
                    "events": total,
                    "chains": args.chains,
                    "compact_backfill": not args.full_rows,
                },
            )
        )


if __name__ == "__main__":
    main()
