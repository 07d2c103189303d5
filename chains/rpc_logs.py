"""eth_getLogs with failover, checked so a short or foreign answer is never accepted.

Invariants:
- Only endpoints whose known head is >= the range's last block are asked: a lagging
  node answers an empty list for blocks it has not seen.
- The known head can be stale (the node behind a load-balanced URL falls behind after
  reporting it), so an answer is accepted only if the same endpoint, asked right
  after, returns the range's last block; otherwise it is refused, the endpoint is
  demoted as lagging and another one answers.
- A log outside the queried range or for an address not queried is an integrity fault.
- `get_records` (the indexer's hot path) decodes the answer straight into `RpcLog`
  structs with msgspec, no dict per log; a log missing a field or with a field of the
  wrong JSON type is an integrity fault naming the field (`$.result[i].blockHash`), as
  is a block number that is not hex.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec

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


class RpcLog(msgspec.Struct, frozen=True, gc=False):
    """One eth_getLogs entry as the node sent it (hex strings, unparsed): the fields
    the indexer reads; any other field is ignored."""

    address: str
    topics: list[str]
    data: str
    blockNumber: str
    blockHash: str
    transactionHash: str
    logIndex: str
    removed: bool = False


class _LogsEnvelope(msgspec.Struct, gc=False):
    result: list[RpcLog] | msgspec.UnsetType | None = msgspec.UNSET
    error: Any = msgspec.UNSET


LOGS_DECODER = msgspec.json.Decoder(_LogsEnvelope)


def _checked_records(r: Any, addrs: frozenset[str], from_block: int, to_block: int) -> list[RpcLog]:
    if not isinstance(r, list):
        raise EndpointFault(f"malformed eth_getLogs result: {str(r)[:80]}", integrity=True)
    # A range's logs share few block numbers and addresses: check each distinct one once.
    numbers: dict[str, int] = {}
    seen_addrs: set[str] = set()
    for i, entry in enumerate(r):
        text = entry.blockNumber
        n = numbers.get(text)
        if n is None:
            n = numbers[text] = hex_to_int(text, f"log blockNumber ($.result[{i}].blockNumber)")
            if not from_block <= n <= to_block:
                raise EndpointFault(
                    f"log outside the query (block {n}, address {entry.address})",
                    integrity=True,
                )
        if entry.address not in seen_addrs:
            if entry.address.lower() not in addrs:
                raise EndpointFault(
                    f"log outside the query (block {n}, address {entry.address})",
                    integrity=True,
                )
            seen_addrs.add(entry.address)
    return r


class LogReader:
    def __init__(self, failover: Failover) -> None:
        self.failover = failover

    async def get_logs(
        self, address: str | Sequence[str], topics: list[Any], from_block: int, to_block: int
    ) -> list[dict[str, Any]]:
        """Logs of one address, or of several (eth_getLogs takes a list) in one query."""
        result: list[dict[str, Any]] = await self._request(
            address,
            topics,
            from_block,
            to_block,
            check=lambda r, addrs: _checked_logs(r, addrs, from_block, to_block),
            decoder=None,
        )
        return result

    async def get_records(
        self, address: str | Sequence[str], topics: list[Any], from_block: int, to_block: int
    ) -> list[RpcLog]:
        """`get_logs` decoded into typed `RpcLog` structs (no dict per log)."""
        result: list[RpcLog] = await self._request(
            address,
            topics,
            from_block,
            to_block,
            check=lambda r, addrs: _checked_records(r, addrs, from_block, to_block),
            decoder=LOGS_DECODER,
        )
        return result

    async def _request(
        self,
        address: str | Sequence[str],
        topics: list[Any],
        from_block: int,
        to_block: int,
        *,
        check: Callable[[Any, frozenset[str]], Any],
        decoder: msgspec.json.Decoder[Any] | None,
    ) -> Any:
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
            logs = await ep.raw("eth_getLogs", params, decoder=decoder)
            # The head we know for this endpoint may be stale: a node (or the node a
            # load balancer picked) that has not seen `to_block` answers getLogs with a
            # silently short list. Proof that it had the block when it answered: asked
            # after the logs, it must return that block.
            block = await ep.raw("eth_getBlockByNumber", [hex(to_block), False])
            if not isinstance(block, dict):
                ep.head = min(ep.head or 0, to_block - 1)
                raise EndpointFault(f"lagging: no block {to_block} after answering its logs")
            return logs

        return await self.failover.request(
            "eth_getLogs",
            params,
            min_head=to_block,
            validate=lambda r: check(r, addrs),
            call=logs_with_head_proof,
        )
