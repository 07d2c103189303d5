"""View calls batched through Multicall3 aggregate3, each batch carrying a lie detector.

Invariants:
- Every chunk carries a Multicall3 `getChainId()` sentinel sub-call: a wrong eth_call
  answer is caught on the very batch it would corrupt, the batch is retried elsewhere
  and the liar never returns a value to the caller.
- Batches larger than `max_batch` are chunked; `"latest"` is first pinned to one block
  number so every chunk reads the same state.
- With `block_hash`, the calls are pinned to exactly that block (EIP-1898,
  requireCanonical): a node that no longer has it on its canonical chain answers an
  error instead of another block's state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from chains.rpc_codec import (
    SEL_GET_CHAIN_ID,
    BlockId,
    block_param,
    decode_aggregate3,
    encode_aggregate3,
    hex_to_bytes,
    word,
)
from chains.rpc_errors import EndpointFault
from chains.rpc_failover import Failover


class Multicall:
    def __init__(
        self,
        failover: Failover,
        *,
        chain_id: int,
        address: str,
        max_batch: int,
        head: Callable[[], Awaitable[int]],
    ) -> None:
        self.failover = failover
        self.chain_id = chain_id
        self.address = address
        self.max_batch = max_batch
        # How "latest" is pinned for a multi-chunk batch (the client's checked head).
        self._head = head

    async def call_batch(
        self,
        calls: Sequence[tuple[str, bytes]],
        block: int | str = "latest",
        *,
        block_hash: str | None = None,
    ) -> list[bytes | None]:
        if not calls:
            return []
        if len(calls) > self.max_batch and not isinstance(block, int):
            block = await self._head()
        out: list[bytes | None] = []
        for start in range(0, len(calls), self.max_batch):
            chunk = calls[start : start + self.max_batch]
            out.extend(await self._call_chunk(chunk, block, block_hash))
        return out

    def _check_sentinel(self, r: Any, n: int) -> list[bytes | None]:
        results = decode_aggregate3(hex_to_bytes(r, "eth_call result"), n)
        sentinel = results[-1]
        if sentinel is None or len(sentinel) < 32 or word(sentinel) != self.chain_id:
            raise EndpointFault(
                f"eth_call answered wrongly: Multicall3 getChainId() sentinel returned "
                f"{sentinel.hex() if sentinel else 'a revert'}, expected {self.chain_id}",
                integrity=True,
            )
        return results[:-1]

    async def _call_chunk(
        self, calls: Sequence[tuple[str, bytes]], block: BlockId, block_hash: str | None = None
    ) -> list[bytes | None]:
        # The sentinel makes a wrong eth_call answer detectable on every batch.
        payload = encode_aggregate3([*calls, (self.address, SEL_GET_CHAIN_ID)])
        n = len(calls) + 1
        at: str | dict[str, Any] = block_param(block)
        if block_hash is not None:
            at = {"blockHash": block_hash, "requireCanonical": True}
        result: list[bytes | None] = await self.failover.request(
            "eth_call",
            [{"to": self.address, "data": "0x" + payload.hex()}, at],
            min_head=block if isinstance(block, int) else None,
            validate=lambda r: self._check_sentinel(r, n),
        )
        return result
