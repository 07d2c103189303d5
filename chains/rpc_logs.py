"""eth_getLogs with failover, checked so a short or foreign answer is never accepted.

Invariants:
- Only endpoints whose known head is >= the range's last block are asked: a lagging
  node answers an empty list for blocks it has not seen.
- The known head can be stale (the node behind a load-balanced URL falls behind after
  reporting it), so an answer is accepted only if the same endpoint, asked right
  after, returns the range's last block; otherwise it is refused, the endpoint is
  demoted as lagging and another one answers.
- A log outside the queried range or for an address not queried is an integrity fault.
- Anchored reads (`end_hash`, the hash of `to_block` the caller read before the logs):
  the head proof's block must be that block, else `ChainMoved`. A reorg between the
  caller's header reads and the logs cannot then pass: logs of one branch checked
  against the headers of another would lose, unnoticed, a log that only the headers'
  branch has in a block where the other branch had none (the log hashes can only
  show the logs that were returned).
- `get_logs` (plain dicts) and `get_records` are two views of one read (`_request`:
  the request, the head proof, one `_checked`); they differ only in the decoder.
- `get_records` (the indexer's hot path) decodes the answer straight into `RpcLog`
  structs with msgspec, no dict per log and nothing the garbage collector keeps
  tracking (untracked structs, topics as a tuple); a log missing a field or with a field of the
  wrong JSON type is an integrity fault naming the field (`$.result[i].blockHash`), as
  is a block number that is not hex.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, cast

import msgspec

from chains.rpc_codec import hex_to_int
from chains.rpc_endpoint import Endpoint
from chains.rpc_errors import ChainMoved, EndpointFault
from chains.rpc_failover import Failover


class RpcLog(msgspec.Struct, frozen=True, gc=False):
    """One eth_getLogs entry as the node sent it (hex strings, unparsed): the fields
    the indexer reads; any other field is ignored."""

    address: str
    # A tuple, not a list: a tuple of strings leaves the garbage collector's tracking
    # at its first collection, a list never does. A backfill keeps ~10^5 logs alive
    # (read-ahead x chains); as lists they made every full collection walk them all.
    topics: tuple[str, ...]
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


def _dict_fields(entry: Any) -> tuple[Any, str]:
    if not isinstance(entry, dict):
        raise EndpointFault("malformed log entry", integrity=True)
    return entry.get("blockNumber"), str(entry.get("address", ""))


def _record_fields(entry: RpcLog) -> tuple[Any, str]:
    return entry.blockNumber, entry.address


def _records_inside(r: list[RpcLog], addrs: frozenset[str], from_block: int, to_block: int) -> bool:
    """True when every typed log's block number (hex) and address are inside the
    query, each distinct one checked once with set comprehensions (no call per log);
    False sends `_checked` entry by entry, to name the first bad one."""
    for text in {entry.blockNumber for entry in r}:
        if not text.startswith("0x"):
            return False
        try:
            n = int(text, 16)
        except ValueError:
            return False
        if not from_block <= n <= to_block:
            return False
    return all(a.lower() in addrs for a in {entry.address for entry in r})


def _checked(
    r: Any,
    addrs: frozenset[str],
    from_block: int,
    to_block: int,
    fields: Callable[[Any], tuple[Any, str]],
) -> Any:
    """`r` itself when it is a list of logs, each (block number, address) of `fields`
    inside the query; otherwise an integrity fault naming the first bad one."""
    if not isinstance(r, list):
        raise EndpointFault(f"malformed eth_getLogs result: {str(r)[:80]}", integrity=True)
    if fields is _record_fields and _records_inside(r, addrs, from_block, to_block):
        return r
    # A range's logs share few block numbers and addresses: check each distinct one once.
    numbers: dict[str, int] = {}
    seen_addrs: set[str] = set()
    for i, entry in enumerate(r):
        text, address = fields(entry)
        n = numbers.get(text) if isinstance(text, str) else None
        if n is None:
            # Raises for anything but a hex string, so only strings are remembered.
            n = numbers[text] = hex_to_int(text, f"log blockNumber ($.result[{i}].blockNumber)")
            if not from_block <= n <= to_block:
                raise EndpointFault(
                    f"log outside the query (block {n}, address {address})", integrity=True
                )
        if address not in seen_addrs:
            if address.lower() not in addrs:
                raise EndpointFault(
                    f"log outside the query (block {n}, address {address})", integrity=True
                )
            seen_addrs.add(address)
    return r


class _Shape(NamedTuple):
    """How one answer is decoded (None: plain JSON dicts) and read for the checks."""

    decoder: msgspec.json.Decoder[Any] | None
    fields: Callable[[Any], tuple[Any, str]]


_DICTS = _Shape(None, _dict_fields)
_RECORDS = _Shape(LOGS_DECODER, _record_fields)


class LogReader:
    def __init__(self, failover: Failover) -> None:
        self.failover = failover

    async def get_logs(
        self, address: str | Sequence[str], topics: list[Any], from_block: int, to_block: int
    ) -> list[dict[str, Any]]:
        """Logs of one address, or of several (eth_getLogs takes a list) in one query."""
        return cast(
            "list[dict[str, Any]]",
            await self._request(address, topics, from_block, to_block, _DICTS),
        )

    async def get_records(
        self,
        address: str | Sequence[str],
        topics: list[Any],
        from_block: int,
        to_block: int,
        *,
        end_hash: str | None = None,
    ) -> list[RpcLog]:
        """`get_logs` decoded into typed `RpcLog` structs (no dict per log)."""
        return cast(
            "list[RpcLog]",
            await self._request(address, topics, from_block, to_block, _RECORDS, end_hash=end_hash),
        )

    async def _request(
        self,
        address: str | Sequence[str],
        topics: list[Any],
        from_block: int,
        to_block: int,
        shape: _Shape,
        *,
        end_hash: str | None = None,
    ) -> Any:
        """The one getLogs read both views share: request, head proof, checks."""
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

        async def logs_with_head_proof(ep: Endpoint) -> tuple[Any, str]:
            logs = await ep.raw("eth_getLogs", params, decoder=shape.decoder)
            # The head we know for this endpoint may be stale: a node (or the node a
            # load balancer picked) that has not seen `to_block` answers getLogs with a
            # silently short list. Proof that it had the block when it answered: asked
            # after the logs, it must return that block.
            block = await ep.raw("eth_getBlockByNumber", [hex(to_block), False])
            if not isinstance(block, dict):
                ep.head = min(ep.head or 0, to_block - 1)
                raise EndpointFault(f"lagging: no block {to_block} after answering its logs")
            block_hash = block.get("hash")
            if not isinstance(block_hash, str):
                raise EndpointFault(f"block {to_block} without a hash", integrity=True)
            return logs, block_hash.lower()

        logs, proof_hash = await self.failover.request(
            "eth_getLogs",
            params,
            min_head=to_block,
            validate=lambda r: (_checked(r[0], addrs, from_block, to_block, shape.fields), r[1]),
            call=logs_with_head_proof,
        )
        if end_hash is not None and proof_hash != end_hash.lower():
            raise ChainMoved(self.failover.chain, to_block, end_hash.lower(), proof_hash)
        return logs
