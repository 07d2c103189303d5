"""Vault event signatures and their decoding into VaultEvent (exact ints, checksum addresses)."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import keccak, to_checksum_address

from chains.types import EventKind, VaultEvent

SIGNATURES: dict[EventKind, str] = {
    "deposit": "Deposited(address,address,uint256)",
    "withdraw": "Withdrawn(address,address,uint256)",
    "borrow": "Borrowed(address,address,uint256)",
    "repay": "Repaid(address,address,uint256,address)",
    "liquidation": "Liquidated(address,address,address,uint256,address,uint256)",
}
TOPICS: dict[str, EventKind] = {"0x" + keccak(text=sig).hex(): k for k, sig in SIGNATURES.items()}
TOPIC_FILTER: list[Any] = [sorted(TOPICS)]

# Indexed topics after topic0, and the non-indexed data layout, per event.
_LAYOUT: dict[EventKind, tuple[int, list[str]]] = {
    "deposit": (2, ["uint256"]),
    "withdraw": (2, ["uint256"]),
    "borrow": (2, ["uint256"]),
    "repay": (2, ["uint256", "address"]),
    "liquidation": (3, ["uint256", "address", "uint256"]),
}


class DecodeError(ValueError):
    pass


@lru_cache(maxsize=65536)
def _checksum(hex40: str) -> str:
    # Checksumming is a keccak per call and dominated decoding time; a vault
    # sees few distinct accounts and tokens, so a cache makes it free.
    return to_checksum_address("0x" + hex40)


@lru_cache(maxsize=65536)
def _topic_address(topic: str) -> str:
    # Cached on the whole topic: a vault's logs repeat the same accounts and tokens,
    # and the checks below then run once per distinct topic, not once per log.
    body = topic[2:] if topic.startswith("0x") else topic
    if len(body) != 64 or body[:24].strip("0") or not _is_hex(body):
        raise ValueError(f"topic {topic} is not an address")
    return _checksum(body[24:].lower())


_WORD = 66  # "0x" + 64 hex digits
_HEX_WORD = re.compile(r"0x[0-9a-fA-F]{64}")


def log_coordinates(chain: str, entry: dict[str, Any], kind: str) -> dict[str, Any]:
    """Where a log stands (chain, block, transaction, index) and its kind, as the event
    dataclasses name them."""
    return {
        "chain": chain,
        "block_number": int(entry["blockNumber"], 16),
        "block_hash": str(entry["blockHash"]).lower(),
        "tx_hash": str(entry["transactionHash"]).lower(),
        "log_index": int(entry["logIndex"], 16),
        "kind": kind,
    }


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True


_SIMPLE: dict[str, EventKind] = {
    t: k for t, k in TOPICS.items() if k in ("deposit", "withdraw", "borrow")
}


def _decode_simple(chain: str, entry: dict[str, Any]) -> VaultEvent | None:
    """Deposited/Withdrawn/Borrowed (two address topics, one uint256 word): most of a
    vault's logs, decoded with string slicing. Anything unusual (other events, other
    shapes, upper-case hex) returns None and takes the general path, which names what
    is wrong."""
    topics = entry["topics"]
    data = entry["data"]
    if len(topics) != 3 or not isinstance(data, str) or len(data) != _WORD:
        return None
    kind = _SIMPLE.get(topics[0])
    if kind is None or not _HEX_WORD.fullmatch(data):
        return None
    return VaultEvent(
        chain,
        int(entry["blockNumber"], 16),
        entry["blockHash"].lower(),
        entry["transactionHash"].lower(),
        int(entry["logIndex"], 16),
        kind,
        _topic_address(topics[1].lower()),
        _topic_address(topics[2].lower()),
        int(data[2:], 16),
    )


def decode_log(chain: str, entry: dict[str, Any]) -> VaultEvent:
    """Decode one eth_getLogs entry of the vault; a malformed entry is an error naming it."""
    where = (
        f"chain {chain!r} tx {entry.get('transactionHash')} log {entry.get('logIndex')} "
        f"block {entry.get('blockNumber')}"
    )
    try:
        fast = _decode_simple(chain, entry)
        if fast is not None:
            return fast
        topics = [str(t).lower() for t in entry["topics"]]
        kind = TOPICS.get(topics[0]) if topics else None
        if kind is None:
            raise DecodeError(f"{where}: unknown event topic {topics[:1]}")
        n_indexed, data_types = _LAYOUT[kind]
        if len(topics) != n_indexed + 1:
            raise DecodeError(f"{where}: {kind} log has {len(topics) - 1} indexed topics")
        data = bytes.fromhex(str(entry["data"])[2:])
        if data_types == ["uint256"] and len(data) == 32:
            values: tuple[Any, ...] = (int.from_bytes(data, "big"),)  # fast path, most events
        else:
            values = abi_decode(data_types, data)
        base = log_coordinates(chain, entry, kind)
        base["account"] = _topic_address(topics[1])
        if kind == "liquidation":
            return VaultEvent(
                **base,
                counterparty=_topic_address(topics[2]),
                token=_topic_address(topics[3]),
                amount=int(values[0]),
                debt_token=_checksum(str(values[1]).lower()[2:]),
                debt_amount=int(values[2]),
            )
        return VaultEvent(
            **base,
            token=_topic_address(topics[2]),
            amount=int(values[0]),
            counterparty=_checksum(str(values[1]).lower()[2:]) if kind == "repay" else None,
        )
    except DecodeError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise DecodeError(f"{where}: malformed vault log: {exc}") from exc
    except Exception as exc:  # eth_abi's decoding errors share no useful base class
        raise DecodeError(f"{where}: undecodable vault log data: {exc}") from exc
