"""Helpers for pusher tests on real anvil nodes (importable: tests/ is not a package)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from chains.pusher.keys import KeeperKey, key_from_hex
from chains.pusher.sender import ChainSender, SenderHooks
from chains.pusher.store import PushStore
from chains.pusher.types import PushChainSettings
from chains.registry_codec import RegistryEntry, unpack_slot
from chains.rpc import RpcClient
from devkit.anvil import DEV_KEYS, AnvilNode
from devkit.testing.harness import KEEPER, VaultHarness, _call


class Crash(Exception):
    """Stands for the process dying at a hook point."""


def keeper_key() -> KeeperKey:
    return key_from_hex(DEV_KEYS[1], "test keeper key")


@dataclass
class FakeClock:
    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now

    def advance(self, s: float) -> None:
        self.now += s


def settings(node: AnvilNode, h: VaultHarness, **kw: Any) -> PushChainSettings:
    base: dict[str, Any] = {
        "name": "c",
        "chain_id": node.chain_id,
        "registry": h.registry,
        "confirmations": 2,
        "stuck_after_s": 5.0,
    }
    base.update(kw)
    return PushChainSettings(**base)


def client(node_url: str, chain_id: int, name: str = "c", **kw: Any) -> RpcClient:
    opts: dict[str, Any] = {
        "timeout_s": 5.0,
        "rate_limit_per_s": 10_000.0,
        "max_rounds": 1,
        "backoff_base_s": 0.05,
    }
    opts.update(kw)
    return RpcClient(name, chain_id, [node_url], **opts)


def sender(
    node: AnvilNode,
    h: VaultHarness,
    rpc: RpcClient,
    store: PushStore,
    *,
    hooks: SenderHooks | None = None,
    clock: Callable[[], float] = time.time,
    key: KeeperKey | None = None,
    **kw: Any,
) -> ChainSender:
    return ChainSender(
        settings(node, h, **kw), rpc, store, key or keeper_key(), hooks=hooks, clock=clock
    )


def chain_time(h: VaultHarness) -> int:
    return int(h.rpc("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)


def entry_of(h: VaultHarness, account: str) -> RegistryEntry | None:
    raw = h.rpc(
        "eth_call",
        [{"to": h.registry, "data": _call("entryOf(address)", ["address"], [account])}, "latest"],
    )
    slot = int(raw, 16)
    return None if slot == 0 else unpack_slot(slot)


def nonce_of(h: VaultHarness, who: str = KEEPER, tag: str = "latest") -> int:
    return int(h.rpc("eth_getTransactionCount", [who, tag]), 16)


def keeper_txs(h: VaultHarness, from_block: int, who: str = KEEPER) -> list[dict[str, Any]]:
    """Every mined transaction sent by `who` from `from_block` to the head."""
    out = []
    for n in range(from_block, h.block_number() + 1):
        block = h.rpc("eth_getBlockByNumber", [hex(n), True])
        out += [tx for tx in block["transactions"] if tx["from"].lower() == who.lower()]
    return out


async def step_until(
    s: ChainSender, done: Callable[[], bool], *, node: AnvilNode | None = None, tries: int = 40
) -> None:
    for _ in range(tries):
        await s.step()
        if done():
            return
        if node is not None:
            node.mine()
        await asyncio.sleep(0.05)
    raise AssertionError(
        f"condition not reached; records: {[r.summary() for r in s.records.values()]}"
    )


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if await check():
            return time.monotonic() - t0
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
