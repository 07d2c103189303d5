"""eth_getLogs with failover, checked so a short or foreign answer is never accepted.

Invariants:
- Only endpoints whose known head is >= the range's last block are asked: a lagging
  node answers an empty list for blocks it has not seen.
- The known head can be stale (the node behind a load-balanced URL falls behind after
  reporting it), so an answer is accepted only if the same endpoint, asked right
  after, returns the range's last block; otherwise it is refused, the endpoint is
  demoted as lagging and another one answers.
- A log outside the queried range or for an address not queried is an integrity fault.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chains.rpc_codec import hex_to_int
from chains.rpc_endpoint import Endpoint
from chains.rpc_errors import EndpointFault
from chains.rpc_failover import Failover


def _checked_logs(
    r: Any, addrs: frozenset[str], from_block: int, to_block: int
) -> list[dict[str, Any]]:
    if not isinstance(r, list):
        raise EndpointFault(f"malformed eth_getLogs result: {str(r)[:80]}", integrity=True)
    for entry in r:
        if not isinstance(entry, dict):
            raise EndpointFault("malformed log entry", integrity=True)
        n = hex_to_int(entry.get("blockNumber"), "log blockNumber")
        if not from_block <= n <= to_block or str(entry.get("address", "")).lower() not in addrs:
            raise EndpointFault(
                f"log outside the query (block {n}, address {entry.get('address')})",
                integrity=True,
            )
    return r


class LogReader:
    def __init__(self, failover: Failover) -> None:
        self.failover = failover

    async def get_logs(
        self, address: str | Sequence[str], topics: list[Any], from_block: int, to_block: int
    ) -> list[dict[str, Any]]:
        """Logs of one address, or of several (eth_getLogs takes a list) in one query."""
        addrs = frozenset(a.lower() for a in ([address] if isinstance(address, str) else address))
        if not addrs:
            raise ValueError("get_logs needs at least one address")
        params = [
            {
                "address": address,
                "topics": topics,
                "fromBlock": hex(from_block),
                "toBlock": hex(to_block),
            }
        ]

        async def logs_with_head_proof(ep: Endpoint) -> Any:
            logs = await ep.raw("eth_getLogs", params)
            # The head we know for this endpoint may be stale: a node (or the node a
            # load balancer picked) that has not seen `to_block` answers getLogs with a
            # silently short list. Proof that it had the block when it answered: asked
            # after the logs, it must return that block.
            block = await ep.raw("eth_getBlockByNumber", [hex(to_block), False])
            if not isinstance(block, dict):
                ep.head = min(ep.head or 0, to_block - 1)
                raise EndpointFault(f"lagging: no block {to_block} after answering its logs")
            return logs

        result: list[dict[str, Any]] = await self.failover.request(
            "eth_getLogs",
            params,
            min_head=to_block,
            validate=lambda r: _checked_logs(r, addrs, from_block, to_block),
            call=logs_with_head_proof,
        )
        return result
