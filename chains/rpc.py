"""One JSON-RPC client per chain: JSON-RPC posted over our own aiohttp session to every
configured URL (not web3's providers, see `chains.rpc_endpoint.Endpoint`), with failover.

An endpoint is demoted (and retried later with a jittered backoff) when it
errors, times out, answers HTTP 5xx / malformed JSON, lags behind the others'
head, or answers eth_call wrongly. The last check matters because a proxy or a
broken node can serve a plausible eth_blockNumber while returning garbage for
state reads, so every `call_batch` also carries a Multicall3 getChainId()
sentinel and the periodic health check compares Multicall3
getChainId()/getBlockNumber() with eth_chainId/eth_blockNumber.

Reads fail over automatically. Sends never do: `send_raw_transaction` tries one
endpoint once and surfaces its error, because a blind resend after a timeout can
double-spend a nonce's intent (the pusher owns that decision).

`RpcClient` is the facade its callers use; the parts, each stating its own invariants:

- `chains.rpc_endpoint`: one URL's transport, rate limit and health facts;
- `chains.rpc_pool`: demotion, throttling, recovery, lag detection, endpoint choice;
- `chains.rpc_health`: the chain-id and eth_call cross-check (lying-endpoint detection);
- `chains.rpc_failover`: the read-with-failover loop and the one-shot send;
- `chains.rpc_headers`, `chains.rpc_logs`, `chains.rpc_multicall`: the checked reads;
- `chains.rpc_codec`, `chains.rpc_errors`: value codecs and the exceptions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from eth_utils import to_checksum_address

from chains.rpc_codec import (
    SEL_AGGREGATE3,
    SEL_GET_BLOCK_NUMBER,
    SEL_GET_CHAIN_ID,
    SEL_GET_TIMESTAMP,
    BlockId,
    block_param,
    hex_to_int,
    selector,
)
from chains.rpc_endpoint import EndpointState, EndpointStatus
from chains.rpc_errors import (
    ChainIdMismatch,
    ChainMoved,
    EndpointFault,
    RpcError,
    RpcResponseError,
    RpcUnavailable,
)
from chains.rpc_failover import EndpointCall, Failover
from chains.rpc_headers import HeaderReader
from chains.rpc_health import HealthCheck
from chains.rpc_logs import LogReader, RpcLog
from chains.rpc_multicall import Multicall
from chains.rpc_pool import EndpointPool
from chains.types import MULTICALL3, BlockRef, ChainSettings


class RpcClient:
    """Failover JSON-RPC client for one chain."""

    def __init__(
        self,
        chain: str,
        chain_id: int,
        urls: Sequence[str],
        *,
        multicall: str = MULTICALL3,
        timeout_s: float = 10.0,
        rate_limit_per_s: float = 50.0,
        lag_tolerance: int = 3,
        max_batch: int = 200,
        max_rounds: int = 3,
        backoff_base_s: float = 0.25,
        backoff_max_s: float = 30.0,
        health_interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not urls:
            raise ValueError(f"chain {chain!r}: no rpc_urls")
        if len(set(urls)) != len(urls):
            raise ValueError(f"chain {chain!r}: duplicate rpc_urls {list(urls)}")
        self.chain = chain
        self.chain_id = chain_id
        self.multicall: str = to_checksum_address(multicall)
        self.max_batch = max_batch
        self.clock = clock
        self.pool = EndpointPool(
            chain,
            urls,
            timeout_s=timeout_s,
            rate_limit_per_s=rate_limit_per_s,
            lag_tolerance=lag_tolerance,
            backoff_base_s=backoff_base_s,
            backoff_max_s=backoff_max_s,
            best_seen_ttl=max(30.0, 3 * health_interval_s),
            clock=clock,
        )
        self.health = HealthCheck(self.pool, chain_id, self.multicall, health_interval_s, clock)
        self.failover = Failover(
            self.pool,
            max_rounds=max_rounds,
            backoff_base_s=backoff_base_s,
            backoff_max_s=backoff_max_s,
        )
        self.headers = HeaderReader(self.failover)
        self.logs = LogReader(self.failover)
        self.multicalls = Multicall(
            self.failover,
            chain_id=chain_id,
            address=self.multicall,
            max_batch=max_batch,
            head=self.block_number,
        )

    @classmethod
    def from_settings(cls, s: ChainSettings, **kwargs: Any) -> RpcClient:
        return cls(
            s.name,
            s.chain_id,
            s.rpc_urls,
            multicall=s.multicall,
            timeout_s=s.rpc_timeout_s,
            rate_limit_per_s=s.rpc_rate_limit_per_s,
            lag_tolerance=max(2, s.confirmations),
            **kwargs,
        )

    # ------------------------------------------------------------------ state

    def status(self) -> list[EndpointStatus]:
        return self.pool.status()

    @property
    def head(self) -> int | None:
        return self.pool.head

    @property
    def healthy_count(self) -> int:
        return self.pool.healthy_count

    # --------------------------------------------------------------- requests

    async def request(
        self,
        method: str,
        params: list[Any],
        *,
        min_head: int | None = None,
        validate: Callable[[Any], Any] | None = None,
        call: EndpointCall | None = None,
    ) -> Any:
        """A read with failover (see `chains.rpc_failover.Failover.request`)."""
        return await self.failover.request(
            method, params, min_head=min_head, validate=validate, call=call
        )

    # ------------------------------------------------------------- health

    async def connect(self) -> None:
        """Verify every reachable endpoint serves the configured chain id.

        Raises ChainIdMismatch (fatal: misconfiguration) naming chain, url,
        expected and got; unreachable endpoints are only demoted.
        """
        await self.health.check()

    async def maybe_check_health(self) -> None:
        await self.health.maybe_check()

    async def check_health(self) -> None:
        """Cross-check each endpoint: eth_chainId, eth_blockNumber and the same facts
        read through Multicall3 eth_call; then demote endpoints lagging the best head."""
        await self.health.check()

    # ------------------------------------------------------------- eth reads

    async def block_number(self) -> int:
        """The chain head: the best head among endpoints that pass the checks."""
        await self.health.maybe_check()
        await self.pool.refresh_heads()
        head = self.pool.head
        if head is None:
            # Nothing healthy: fall back to the failover path (probes demoted endpoints).
            number: int = await self.failover.request(
                "eth_blockNumber", [], validate=lambda r: hex_to_int(r, "block number")
            )
            return number
        return head

    async def get_block(self, block: BlockId) -> BlockRef | None:
        """Header of `block`, or None when the node does not have it (beyond its head)."""
        return await self.headers.get_block(block)

    async def get_blocks(self, numbers: Sequence[int]) -> dict[int, BlockRef]:
        """Headers of `numbers`; consecutive ones must chain (parentHash = the previous
        hash). When they do not, every endpoint is asked for the broken pair: one whose own
        answers do not chain lies about headers and is demoted, then the headers are read
        again. A real reorg between two reads chains on a re-read, so it demotes nobody and
        the caller sees it as before."""
        return await self.headers.get_blocks(numbers)

    async def get_logs(
        self, address: str | Sequence[str], topics: list[Any], from_block: int, to_block: int
    ) -> list[dict[str, Any]]:
        """eth_getLogs of one address or several, only from endpoints whose head covers
        `to_block` (a lagging node would answer an empty list for blocks it has not seen)."""
        return await self.logs.get_logs(address, topics, from_block, to_block)

    async def get_log_records(
        self,
        address: str | Sequence[str],
        topics: list[Any],
        from_block: int,
        to_block: int,
        *,
        end_hash: str | None = None,
    ) -> list[RpcLog]:
        """`get_logs` decoded into typed structs in one pass (the indexer's hot path).
        With `end_hash` (the hash of `to_block` read before): raises ChainMoved when the
        block the answering node holds at `to_block` after answering is another one."""
        return await self.logs.get_records(address, topics, from_block, to_block, end_hash=end_hash)

    async def call_batch(
        self,
        calls: Sequence[tuple[str, bytes]],
        block: int | str = "latest",
        *,
        block_hash: str | None = None,
    ) -> list[bytes | None]:
        """View calls (target, calldata) through Multicall3 aggregate3.

        Returns each call's return data, or None where that sub-call reverted.
        Large batches are chunked; "latest" is pinned to one block number first
        so every chunk reads the same state. `block_hash` (of block number `block`)
        pins the calls to exactly that block (EIP-1898): a node that no longer has it
        on its canonical chain answers an error instead of another block's state.
        """
        return await self.multicalls.call_batch(calls, block, block_hash=block_hash)

    # ------------------------------------------------------------- sends

    async def send_raw_transaction(self, raw_tx: bytes) -> str:
        """Broadcast once through the best endpoint; every error is surfaced, never retried."""
        result = await self.failover.send_once("eth_sendRawTransaction", ["0x" + raw_tx.hex()])
        return str(result)

    async def close(self) -> None:
        await self.pool.close()

    async def __aenter__(self) -> RpcClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


__all__ = [
    "SEL_AGGREGATE3",
    "SEL_GET_BLOCK_NUMBER",
    "SEL_GET_CHAIN_ID",
    "SEL_GET_TIMESTAMP",
    "BlockId",
    "ChainIdMismatch",
    "ChainMoved",
    "EndpointFault",
    "EndpointState",
    "EndpointStatus",
    "RpcClient",
    "RpcError",
    "RpcLog",
    "RpcResponseError",
    "RpcUnavailable",
    "block_param",
    "selector",
]
