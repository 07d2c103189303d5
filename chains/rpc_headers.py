"""Block headers read with failover, and the check that they chain.

Invariants:
- A header read at height N only goes to endpoints whose known head is >= N, and an
  answer for another height than asked is an integrity fault (the endpoint lies).
- Consecutive headers must chain (parentHash = the previous hash). When they do not,
  every endpoint is asked for the broken pair twice: one whose own answers do not
  chain, twice in a row, lies about headers and is demoted. A real reorg between two
  reads chains on the re-read, so it demotes nobody and the caller (the indexer's
  tip check) sees it as a reorg in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from chains.rpc_codec import BlockId, block_param, hex_to_int
from chains.rpc_endpoint import Endpoint
from chains.rpc_errors import EndpointFault, NodeError, RpcUnavailable
from chains.rpc_failover import Failover
from chains.types import BlockRef


def _header(r: Any, block: BlockId) -> BlockRef | None:
    if r is None:
        return None
    if not isinstance(r, dict):
        raise EndpointFault(f"malformed block: {str(r)[:80]}", integrity=True)
    ref = BlockRef(
        number=hex_to_int(r.get("number"), "block number"),
        hash=str(r.get("hash")).lower(),
        parent_hash=str(r.get("parentHash")).lower(),
    )
    if isinstance(block, int) and ref.number != block:
        raise EndpointFault(f"asked for block {block}, got {ref.number}", integrity=True)
    return ref


class HeaderReader:
    def __init__(self, failover: Failover) -> None:
        self.failover = failover
        self.pool = failover.pool
        self.chain = failover.chain

    async def get_block(self, block: BlockId) -> BlockRef | None:
        """Header of `block`, or None when the node does not have it (beyond its head)."""
        result: BlockRef | None = await self.failover.request(
            "eth_getBlockByNumber",
            [block_param(block), False],
            min_head=block if isinstance(block, int) else None,
            validate=lambda r: _header(r, block),
        )
        return result

    async def get_blocks(self, numbers: Sequence[int]) -> dict[int, BlockRef]:
        """Headers of `numbers`, checked to chain (see the module docstring)."""
        # The block below the first is read too, so even a single header is checked.
        wanted = sorted({*numbers, *([min(numbers) - 1] if numbers and min(numbers) > 0 else [])})
        out = await self._fetch_blocks(wanted)
        broken = [n for n in wanted if n - 1 in out and out[n].parent_hash != out[n - 1].hash]
        if broken and await self._demote_unchained(broken[0]):
            out = await self._fetch_blocks(wanted)
        return {n: out[n] for n in numbers}

    async def _fetch_blocks(self, numbers: Sequence[int]) -> dict[int, BlockRef]:
        refs = await asyncio.gather(*(self.get_block(n) for n in numbers))
        out: dict[int, BlockRef] = {}
        for n, ref in zip(numbers, refs, strict=True):
            if ref is None:
                raise RpcUnavailable(
                    self.chain, "eth_getBlockByNumber", [f"block {n} not found"], False
                )
            out[n] = ref
        return out

    async def _demote_unchained(self, n: int) -> bool:
        """Ask each usable endpoint for blocks n - 1 and n; demote those whose two headers
        do not chain, twice in a row (a reorg between two reads chains the second time).
        True when one was demoted."""
        demoted = False
        for ep in self.pool.probeable():
            reason = await self._unchained(ep, n)
            if reason:
                self.pool.demote(ep, reason, integrity=True)
                demoted = True
        return demoted

    @staticmethod
    async def _unchained(ep: Endpoint, n: int) -> str:
        """Why `ep`'s headers n - 1 and n do not chain (asked twice), or "" when they do
        or the endpoint could not answer (transport trouble is judged by the normal path)."""
        reason = ""
        for _attempt in range(2):
            try:
                lo, hi = await asyncio.gather(
                    ep.raw("eth_getBlockByNumber", [hex(n - 1), False]),
                    ep.raw("eth_getBlockByNumber", [hex(n), False]),
                )
            except (EndpointFault, NodeError):
                return ""
            if not isinstance(lo, dict) or not isinstance(hi, dict):
                return ""
            parent, prev = str(hi.get("parentHash")).lower(), str(lo.get("hash")).lower()
            if parent == prev:
                return ""
            reason = f"headers do not chain: block {n} parentHash {parent}, block {n - 1} {prev}"
        return reason
