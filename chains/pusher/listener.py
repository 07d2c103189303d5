"""What each registry holds now, per (account, chain): read back from chain state.

The slots are read with Multicall3 (entryOf per account, pinned to one block, with the
block's timestamp in the same call). Reading state rather than following EntryUpdated
events also sees what events of ours cannot: credit the vault consumed on a borrow or
withdrawal (CreditConsumed), and a reorg that undid an update (the slot simply reads
the older value again).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from eth_abi import encode as abi_encode
from eth_utils import to_checksum_address

from chains.pusher.store import PushStore
from chains.pusher.types import OnchainEntry
from chains.registry_codec import RegistryEntry, unpack_slot
from chains.rpc import SEL_GET_TIMESTAMP, RpcClient, selector

log = logging.getLogger(__name__)

SEL_ENTRY_OF = selector("entryOf(address)")


@dataclass(frozen=True)
class Snapshot:
    chain: str
    block: int
    timestamp: int
    entries: dict[str, RegistryEntry | None]  # lower-case account -> entry


class RegistryListener:
    def __init__(
        self, chain: str, client: RpcClient, registry: str, store: PushStore | None = None
    ) -> None:
        self.chain = chain
        self.client = client
        self.registry = to_checksum_address(registry)
        self.store = store
        self.onchain: dict[str, OnchainEntry] = {}
        self.block = -1
        self.timestamp = 0

    async def load(self) -> None:
        """Last readings from the store, so the API has them before the first read."""
        if self.store is not None:
            self.onchain = await self.store.load_onchain(self.chain)

    def entry(self, account: str) -> RegistryEntry | None:
        got = self.onchain.get(account.lower())
        return None if got is None else got.entry

    async def read(self, accounts: Iterable[str]) -> Snapshot:
        addrs = sorted({a.lower() for a in accounts})
        block = await self.client.block_number()
        calls: list[tuple[str, bytes]] = [
            (self.registry, SEL_ENTRY_OF + abi_encode(["address"], [to_checksum_address(a)]))
            for a in addrs
        ]
        calls.append((self.client.multicall, SEL_GET_TIMESTAMP))
        results = await self.client.call_batch(calls, block)
        ts_raw = results[-1]
        if ts_raw is None or len(ts_raw) < 32:
            raise ValueError(f"chain {self.chain}: no block timestamp from Multicall3")
        timestamp = int.from_bytes(ts_raw[:32], "big")
        entries: dict[str, RegistryEntry | None] = {}
        for addr, raw in zip(addrs, results[:-1], strict=True):
            if raw is None or len(raw) < 32:
                raise ValueError(
                    f"chain {self.chain}: entryOf({addr}) reverted on registry {self.registry}"
                )
            slot = int.from_bytes(raw[:32], "big")
            entries[addr] = None if slot == 0 else unpack_slot(slot)
        now = time.time()
        changed = []
        for addr, entry in entries.items():
            prev = self.onchain.get(addr)
            reading = OnchainEntry(self.chain, addr, entry, block, now)
            if prev is None or prev.entry != entry:
                changed.append(reading)
            self.onchain[addr] = reading
        if changed and self.store is not None:
            await self.store.save_onchain(changed)
        self.block, self.timestamp = block, timestamp
        return Snapshot(self.chain, block, timestamp, entries)
