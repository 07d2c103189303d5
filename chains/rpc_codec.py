"""Encoding and checked decoding of JSON-RPC values and Multicall3 aggregate3.

Every decoder raises `EndpointFault(integrity=True)` on a malformed value: an endpoint
that answers garbage is a liar, demoted until it passes the health check, and its
answer never reaches a caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

from chains.rpc_errors import EndpointFault

BlockId = int | str


def selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


SEL_AGGREGATE3 = selector("aggregate3((address,bool,bytes)[])")
SEL_GET_CHAIN_ID = selector("getChainId()")
SEL_GET_BLOCK_NUMBER = selector("getBlockNumber()")
SEL_GET_TIMESTAMP = selector("getCurrentBlockTimestamp()")


def hex_to_int(value: Any, what: str) -> int:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise EndpointFault(f"malformed {what}: {value!r}", integrity=True)
    try:
        return int(value, 16)
    except ValueError as exc:
        raise EndpointFault(f"malformed {what}: {value!r}", integrity=True) from exc


def hex_to_bytes(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise EndpointFault(f"malformed {what}: {value!r}", integrity=True)
    try:
        return bytes.fromhex(value[2:])
    except ValueError as exc:
        raise EndpointFault(f"malformed {what}: {value!r}", integrity=True) from exc


def word(data: bytes | None) -> int:
    if data is None or len(data) < 32:
        raise EndpointFault(f"expected a 32-byte word, got {data!r}", integrity=True)
    return int.from_bytes(data[:32], "big")


def block_param(block: BlockId) -> str:
    if isinstance(block, bool):
        raise TypeError("block must be an int or a tag")
    if isinstance(block, int):
        if block < 0:
            raise ValueError(f"negative block number {block}")
        return hex(block)
    if block not in ("latest", "safe", "finalized", "earliest", "pending"):
        raise ValueError(f"unknown block tag {block!r}")
    return block


def encode_aggregate3(calls: Sequence[tuple[str, bytes]]) -> bytes:
    """aggregate3 with allowFailure on every call (a revert is that call's None)."""
    return SEL_AGGREGATE3 + abi_encode(
        ["(address,bool,bytes)[]"], [[(to_checksum_address(t), True, d) for t, d in calls]]
    )


def decode_aggregate3(raw: bytes, expected: int) -> list[bytes | None]:
    try:
        (results,) = abi_decode(["(bool,bytes)[]"], raw)
    except Exception as exc:
        raise EndpointFault(f"undecodable aggregate3 result: {exc}", integrity=True) from exc
    if len(results) != expected:
        raise EndpointFault(
            f"aggregate3 returned {len(results)} results for {expected} calls", integrity=True
        )
    return [bytes(data) if ok else None for ok, data in results]
