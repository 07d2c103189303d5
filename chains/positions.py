"""Derivative position events of the Markets contract (contracts/Markets.sol).

The events carry the account's full new position (absolute, not deltas), so a
position is simply the latest event per (chain, account, market or series). The
indexer fetches them over the same block ranges as the vault's events, checks them
against the same headers, and hands them to a `PositionSink` before it commits the
vault batch and checkpoint; on a reorg it rolls the sink back to the common ancestor
before the vault store. Inserts are keyed by (chain, block, log index), so a step
redone after a crash between the two writes never double-counts (see
docs/portfolio-margin.md and docs/chains.md).

Finality: a view at block B is the latest event at or below B. The head view and the
confirmed view (B = head - confirmations) are both kept; the risk side counts the
worse of the two (higher margin, lower equity).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from eth_abi import decode as abi_decode
from eth_utils import keccak

from chains.events import DecodeError, _topic_address, log_coordinates

DerivativeKind = Literal["perp", "option", "funding"]
FIXED = 10**18  # sizes, prices, strikes and funding indexes have 18 decimals
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"

SIGNATURES: dict[DerivativeKind, str] = {
    "perp": "PerpPositionChanged(address,bytes32,int256,uint256,int256)",
    "option": "OptionPositionChanged(address,bytes32,bytes32,uint256,uint64,bool,int256)",
    "funding": "FundingUpdated(bytes32,int256)",
}
TOPICS: dict[str, DerivativeKind] = {
    "0x" + keccak(text=sig).hex(): k for k, sig in SIGNATURES.items()
}
TOPIC_FILTER: list[Any] = [sorted(TOPICS)]


@dataclass(frozen=True)
class DerivativeEvent:
    """One decoded Markets log. `key` is the perp market name (bytes32 text) or the
    option series id (0x hex); amounts are exact 18-decimal fixed-point ints."""

    chain: str
    block_number: int
    block_hash: str
    tx_hash: str
    log_index: int
    kind: DerivativeKind
    account: str  # the zero address for a funding update
    key: str
    size: int = 0
    price: int = 0  # perp entry price, option strike
    funding: int = 0  # perp entry funding index, or the market's new index
    underlying: str | None = None  # options: the on-chain underlying name
    expiry: int = 0
    is_call: bool = False


class PositionSink(Protocol):
    async def apply_position_events(
        self, chain: str, events: Sequence[DerivativeEvent]
    ) -> set[str]:
        """Store events not stored yet (idempotent); return the accounts touched."""
        ...

    async def rollback_positions(self, chain: str, ancestor_block: int) -> set[str]:
        """Forget every event above `ancestor_block`; return the accounts touched."""
        ...


@dataclass(frozen=True)
class MarketsWatch:
    """Index the Markets contract at `address` into `sink` beside the vault."""

    address: str
    sink: PositionSink


def bytes32_text(raw: bytes) -> str:
    """A right-zero-padded ASCII name (e.g. b"ETH-PERP\\0..."); else its hex."""
    body = raw.rstrip(b"\0")
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        return "0x" + raw.hex()
    return text if text.isprintable() else "0x" + raw.hex()


def text_bytes32(name: str) -> bytes:
    raw = name.encode("ascii")
    if len(raw) > 32:
        raise ValueError(f"{name!r} is longer than 32 bytes")
    return raw.ljust(32, b"\0")


def is_position_log(entry: dict[str, Any]) -> bool:
    return is_position_topics(entry.get("topics") or [])


def is_position_topics(topics: Sequence[Any]) -> bool:
    """Whether a log with these topics is a Markets event (by topic0)."""
    return bool(topics) and str(topics[0]).lower() in TOPICS


def decode_position_log(chain: str, entry: dict[str, Any]) -> DerivativeEvent:
    where = (
        f"chain {chain!r} tx {entry.get('transactionHash')} log {entry.get('logIndex')} "
        f"block {entry.get('blockNumber')}"
    )
    try:
        topics = [str(t).lower() for t in entry["topics"]]
        kind = TOPICS.get(topics[0]) if topics else None
        if kind is None:
            raise DecodeError(f"{where}: unknown Markets event topic {topics[:1]}")
        want = 2 if kind == "funding" else 3
        if len(topics) != want:
            raise DecodeError(f"{where}: {kind} log has {len(topics) - 1} indexed topics")
        data = bytes.fromhex(str(entry["data"])[2:])
        base = log_coordinates(chain, entry, kind)
        if kind == "funding":
            (index,) = abi_decode(["int256"], data)
            market = bytes32_text(bytes.fromhex(topics[1][2:]))
            return DerivativeEvent(**base, account=ZERO_ADDRESS, key=market, funding=int(index))
        account = _topic_address(topics[1])
        if kind == "perp":
            size, price, funding = abi_decode(["int256", "uint256", "int256"], data)
            market = bytes32_text(bytes.fromhex(topics[2][2:]))
            return DerivativeEvent(
                **base, account=account, key=market, size=int(size), price=int(price),
                funding=int(funding),
            )  # fmt: skip
        und, strike, expiry, is_call, size = abi_decode(
            ["bytes32", "uint256", "uint64", "bool", "int256"], data
        )
        return DerivativeEvent(
            **base, account=account, key=topics[2], size=int(size), price=int(strike),
            underlying=bytes32_text(und), expiry=int(expiry), is_call=bool(is_call),
        )  # fmt: skip
    except DecodeError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise DecodeError(f"{where}: malformed Markets log: {exc}") from exc
    except Exception as exc:  # eth_abi's decoding errors share no useful base class
        raise DecodeError(f"{where}: undecodable Markets log data: {exc}") from exc


@dataclass(frozen=True)
class PositionView:
    """A (chain, account, kind, key) position in both finality views (None: flat or
    not yet seen in that view)."""

    chain: str
    account: str
    kind: DerivativeKind
    key: str
    head: DerivativeEvent | None
    confirmed: DerivativeEvent | None


def position_views(
    events: Iterable[DerivativeEvent], confirmed_block: dict[str, int]
) -> list[PositionView]:
    """Latest event per (chain, account, kind, key) at the head and at or below the
    chain's confirmed block. Funding updates are views with the zero account."""
    head: dict[tuple[str, str, str, str], DerivativeEvent] = {}
    conf: dict[tuple[str, str, str, str], DerivativeEvent] = {}
    for ev in sorted(events, key=lambda e: (e.chain, e.block_number, e.log_index)):
        k = (ev.chain, ev.account, ev.kind, ev.key)
        head[k] = ev
        if ev.block_number <= confirmed_block.get(ev.chain, -1):
            conf[k] = ev
    return [
        PositionView(c, a, kind, key, ev, conf.get((c, a, kind, key)))  # type: ignore[arg-type]
        for (c, a, kind, key), ev in head.items()
    ]


__all__ = [
    "FIXED",
    "SIGNATURES",
    "TOPICS",
    "TOPIC_FILTER",
    "DerivativeEvent",
    "MarketsWatch",
    "PositionSink",
    "PositionView",
    "bytes32_text",
    "decode_position_log",
    "is_position_log",
    "is_position_topics",
    "position_views",
    "text_bytes32",
]
