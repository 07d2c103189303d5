"""Indexer process for the kill -9 test.

python crash_worker.py RPC_URL DB_URL VAULT START_BLOCK CHAIN_ID
"""

from __future__ import annotations

import asyncio
import sys

from aggregator.store import Store
from aggregator.store.chain_repo import SqlChainStore
from chains.indexer import ChainIndexer
from chains.rpc import RpcClient
from chains.types import ChainSettings


async def main(url: str, db: str, vault: str, start: int, chain_id: int) -> None:
    store = Store(db)
    await store.upgrade()
    settings = ChainSettings(
        name="c",
        chain_id=chain_id,
        rpc_urls=(url,),
        vault=vault,
        start_block=start,
        confirmations=2,
        max_log_range=2,
        block_time=0.01,
        rpc_rate_limit_per_s=10_000.0,
    )
    async with RpcClient.from_settings(settings) as client:
        ix = ChainIndexer(settings, client, SqlChainStore(store))
        cp = await ix.load()
        print(f"indexing from {cp.indexed_block}", flush=True)
        await ix.sync_to_head()
        print(f"done at {ix.status.indexed_block}", flush=True)
    await store.close()


if __name__ == "__main__":
    u, d, v, s, c = sys.argv[1:6]
    asyncio.run(main(u, d, v, int(s), int(c)))
