"""Vault event signatures and their decoding into VaultEvent (exact ints, checksum addresses).

`decode_records` is the indexer's hot path: typed getLogs entries (`RpcLog`) into
`EventColumns`, no object per event; the uint256 amounts of the common events are
checked and parsed in bulk (one `bytes.fromhex` for the whole batch). Any entry it
does not recognise takes `decode_log`, the general path, which names what is wrong
(chain, transaction, log index, block and the field).
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Sequence
from functools import lru_cache
from operator import attrgetter, itemgetter
from typing import Any

import msgspec
from eth_abi import decode as abi_decode
from eth_utils import keccak, to_checksum_address

from chains.rpc_logs import RpcLog
from chains.types import EventColumns, EventKind, VaultEvent

SIGNATURES: dict[EventKind, str] = {
    "deposit": "Deposited(address,address,uint256)",
    "withdraw": "Withdrawn(address,address,uint256)",
    "borrow": "Borrowed(address,address,uint256)",
    "repay": "Repaid(address,address,uint256,address)",
    "liquidation": "Liquidated(address,address,address,uint256,address,uint256)",
}
# The cross-chain seize (docs/contracts.md): a claim on the debt chain repays debt there
# and is stored as a `repay` by the liquidator (risk-lowering: counted once confirmed);
# its settlement on the collateral chain seizes there and is stored as a `liquidation`
# with no debt leg (the debt it pays was repaid on the other chain). Each moves only its
# own chain's positions, so a reorg of either chain rolls back only its own half.
REMOTE_SIGNATURES: dict[str, str] = {
    "claim": "RemoteSeizeClaimed(bytes32,address,address,address,uint256,uint256,address)",
    "settle": "RemoteSeizeSettled(bytes32,address,address,address,uint256,address,uint256)",
}
_REMOTE_TOPICS: dict[str, str] = {
    "0x" + keccak(text=sig).hex(): k for k, sig in REMOTE_SIGNATURES.items()
}
CLAIM_TOPIC = "0x" + keccak(text=REMOTE_SIGNATURES["claim"]).hex()
# RemoteSeizeClaimed's data (claim id, account and liquidator are its indexed topics).
CLAIM_DATA_TYPES = ["address", "uint256", "uint256", "address"]
SETTLE_TOPIC = "0x" + keccak(text=REMOTE_SIGNATURES["settle"]).hex()
_REMOTE_KIND: dict[str, EventKind] = {"claim": "repay", "settle": "liquidation"}
TOPICS: dict[str, EventKind] = {"0x" + keccak(text=sig).hex(): k for k, sig in SIGNATURES.items()}
TOPICS.update({t: _REMOTE_KIND[k] for t, k in _REMOTE_TOPICS.items()})
TOPIC_FILTER: list[Any] = [sorted(TOPICS)]

# Indexed topics after topic0, and the non-indexed data layout, per event.
_LAYOUT: dict[str, tuple[int, list[str]]] = {
    # (claim id, account, liquidator) indexed in both
    "claim": (3, CLAIM_DATA_TYPES),
    "settle": (3, ["address", "uint256", "address", "uint256"]),
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
# JSON-RPC's hex forms (use with fullmatch): a 32-byte word, a quantity, an address.
HEX_WORD = re.compile(r"0x[0-9a-fA-F]{64}")
HEX_QUANTITY = re.compile(r"0x[0-9a-fA-F]{1,64}")
HEX_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


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
    if kind is None or not HEX_WORD.fullmatch(data):
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
        remote = _REMOTE_TOPICS.get(topics[0])
        n_indexed, data_types = _LAYOUT[remote or kind]
        if len(topics) != n_indexed + 1:
            raise DecodeError(f"{where}: {kind} log has {len(topics) - 1} indexed topics")
        data = bytes.fromhex(str(entry["data"])[2:])
        if data_types == ["uint256"] and len(data) == 32:
            values: tuple[Any, ...] = (int.from_bytes(data, "big"),)  # fast path, most events
        else:
            values = abi_decode(data_types, data)
        base = log_coordinates(chain, entry, kind)
        if remote is not None:
            return _remote_event(base, remote, topics, values)
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


def _parsed(cache: dict[str, int], text: str, what: str, chain: str, rec: RpcLog) -> int:
    """A hex quantity of a log (cached: a range's logs repeat block numbers and log
    indexes); a malformed one is a DecodeError naming the log and the field."""
    value = cache.get(text)
    if value is None:
        if not HEX_QUANTITY.fullmatch(text):
            raise DecodeError(
                f"chain {chain!r} tx {rec.transactionHash} log {rec.logIndex} "
                f"block {rec.blockNumber}: malformed {what} {text!r}"
            )
        value = cache[text] = int(text, 16)
    return value


def _words(datas: list[str]) -> list[int] | None:
    """The uint256 of each of `datas` ("0x" + 64 hex digits each), parsed in one pass;
    None when any of them is malformed (the caller then decodes one by one)."""
    n = len(datas)
    joined = "".join(datas)
    # Every entry starts with "0x" (checked by stride, so no "0x" can straddle two
    # entries); then a stray "x" or a non-hex digit anywhere changes the length or
    # fails fromhex, which also rejects the whitespace and signs int() would take.
    if len(joined) != 66 * n or joined[::66] != "0" * n or joined[1::66] != "x" * n:
        return None
    body = joined.replace("0x", "")
    if len(body) != 64 * n:
        return None
    try:
        raw = bytes.fromhex(body)
    except ValueError:
        return None
    if len(raw) != 32 * n:
        return None
    # Validated above (each "0x" + 64 hex digits): int() of the text, mapped in C, is
    # the word's value without slicing the bytes.
    return list(map(int, datas, itertools.repeat(16)))


@lru_cache(maxsize=65536)
def _raw_topic_address(topic: str) -> str:
    # Keyed on the topic as sent, so a cached topic costs no .lower() per log.
    return _topic_address(topic.lower())


def _hex_map(texts: list[str]) -> dict[str, int] | None:
    """Each distinct hex quantity of `texts` parsed once; None if any is malformed."""
    parsed: dict[str, int] = {}
    match = HEX_QUANTITY.fullmatch
    for text in set(texts):
        if not match(text):
            return None
        parsed[text] = int(text, 16)
    return parsed


# Field and item readers for the column-by-column decoding (mapped in C).
_TOPICS_OF = attrgetter("topics")
_DATA_OF = attrgetter("data")
_NUMBER_OF = attrgetter("blockNumber")
_INDEX_OF = attrgetter("logIndex")
_HASH_OF = attrgetter("blockHash")
_TX_OF = attrgetter("transactionHash")
_FIRST, _SECOND, _THIRD = itemgetter(0), itemgetter(1), itemgetter(2)


def _decode_simple_batch(chain: str, logs: Sequence[RpcLog]) -> EventColumns | None:
    """A batch made only of well-formed simple events (the whole of a deposit-heavy
    backfill) decoded column by column: C-level maps and comprehensions, each distinct
    block number, log index, block hash and topic parsed once. None when any entry is
    not simple or is malformed: `decode_records` then goes entry by entry, decodes
    the others and names what is wrong, so both paths decode the same."""
    topics = list(map(_TOPICS_OF, logs))
    datas = list(map(_DATA_OF, logs))
    if set(map(len, topics)) - {3} or set(map(len, datas)) - {_WORD}:
        return None
    kinds = list(map(_SIMPLE.get, map(_FIRST, topics)))
    if None in kinds:
        return None
    numbers = list(map(_NUMBER_OF, logs))
    indexes = list(map(_INDEX_OF, logs))
    number_of, index_of = _hex_map(numbers), _hex_map(indexes)
    if number_of is None or index_of is None:
        return None
    try:
        accounts = list(map(_raw_topic_address, map(_SECOND, topics)))
        tokens = list(map(_raw_topic_address, map(_THIRD, topics)))
    except ValueError:
        return None
    amounts = _words(datas)
    if amounts is None:
        return None
    block_hashes = list(map(_HASH_OF, logs))
    lower_hash = {h: h.lower() for h in set(block_hashes)}
    n = len(logs)
    return EventColumns(
        chain,
        block_number=list(map(number_of.__getitem__, numbers)),
        block_hash=list(map(lower_hash.__getitem__, block_hashes)),
        tx_hash=list(map(str.lower, map(_TX_OF, logs))),
        log_index=list(map(index_of.__getitem__, indexes)),
        kind=kinds,  # type: ignore[arg-type]  # no None: checked above
        account=accounts,
        token=tokens,
        amount=amounts,
        counterparty=[None] * n,
        debt_token=[None] * n,
        debt_amount=[0] * n,
        adjust_kind=[None] * n,
        negative=[False] * n,
        ref=[None] * n,
    )


def _claim_id(topic: str) -> str:
    if not HEX_WORD.fullmatch(topic):
        raise DecodeError(f"claim id {topic!r} is not a 32-byte hex word")
    return topic.lower()


def _remote_event(
    base: dict[str, Any], remote: str, topics: list[str], values: tuple[Any, ...]
) -> VaultEvent:
    """A cross-chain seize log as the position change it makes on its own chain: the
    claim a repayment of `repaid` debt token by the liquidator, the settlement a seizure
    of `seized` collateral with no debt leg (`debt_token` kept for the record)."""
    base["account"] = _topic_address(topics[2])
    base["ref"] = _claim_id(topics[1])
    liquidator = _topic_address(topics[3])
    if remote == "claim":
        debt_token, repaid, _target_chain, _collateral = values
        return VaultEvent(
            **base,
            token=_checksum(str(debt_token).lower()[2:]),
            amount=int(repaid),
            counterparty=liquidator,
        )
    collateral, seized, debt_token, _repaid = values
    return VaultEvent(
        **base,
        token=_checksum(str(collateral).lower()[2:]),
        amount=int(seized),
        counterparty=liquidator,
        debt_token=_checksum(str(debt_token).lower()[2:]),
        debt_amount=0,
    )


def decode_records(chain: str, logs: Sequence[RpcLog]) -> EventColumns:
    """Decode typed getLogs entries of the vault into columns, in the order given."""
    fast = _decode_simple_batch(chain, logs)
    if fast is not None:
        return fast
    cols = EventColumns(chain)
    numbers: dict[str, int] = {}
    indexes: dict[str, int] = {}
    hashes: dict[str, str] = {}
    datas: list[str] = []
    general: list[int] = []  # rows decoded by decode_log (their amount is final)
    bn_add, bh_add = cols.block_number.append, cols.block_hash.append
    tx_add, li_add, kind_add = cols.tx_hash.append, cols.log_index.append, cols.kind.append
    acct_add, tok_add, data_add = cols.account.append, cols.token.append, datas.append
    simple = _SIMPLE
    for rec in logs:
        topics = rec.topics
        data = rec.data
        kind = simple.get(topics[0]) if len(topics) == 3 and len(data) == _WORD else None
        if kind is None:
            general.append(len(cols))
            cols.append(decode_log(chain, msgspec.structs.asdict(rec)))
            continue
        try:
            account = _topic_address(topics[1].lower())
            token = _topic_address(topics[2].lower())
        except ValueError as exc:
            raise DecodeError(
                f"chain {chain!r} tx {rec.transactionHash} log {rec.logIndex} "
                f"block {rec.blockNumber}: malformed vault log: {exc}"
            ) from exc
        bn_add(_parsed(numbers, rec.blockNumber, "blockNumber", chain, rec))
        bh = hashes.get(rec.blockHash)
        if bh is None:
            bh = hashes[rec.blockHash] = rec.blockHash.lower()
        bh_add(bh)
        tx_add(rec.transactionHash.lower())
        li_add(_parsed(indexes, rec.logIndex, "logIndex", chain, rec))
        kind_add(kind)
        acct_add(account)
        tok_add(token)
        data_add(data)
    _fill_simple(chain, cols, logs, datas, general)
    return cols


def _fill_simple(
    chain: str, cols: EventColumns, logs: Sequence[RpcLog], datas: list[str], general: list[int]
) -> None:
    """The amount and the constant columns of the simple rows (all rows but `general`)."""
    n_simple = len(datas)
    amounts = _words(datas)
    if amounts is None:
        # Some entry is malformed: find it one by one, for an error that names it.
        skip = set(general)
        simple_recs = [r for i, r in enumerate(logs) if i not in skip]
        amounts = []
        for rec, data in zip(simple_recs, datas, strict=True):
            word = _words([data])
            if word is None:
                raise DecodeError(
                    f"chain {chain!r} tx {rec.transactionHash} log {rec.logIndex} "
                    f"block {rec.blockNumber}: malformed vault log data {data!r}"
                )
            amounts += word
    if not general:
        cols.amount = amounts
        cols.counterparty = [None] * n_simple
        cols.debt_token = [None] * n_simple
        cols.debt_amount = [0] * n_simple
        cols.adjust_kind = [None] * n_simple
        cols.negative = [False] * n_simple
        cols.ref = [None] * n_simple
        return
    # Mixed: the general rows already filled their own fields; splice the simple ones in.
    n = len(cols)
    is_general = set(general)
    it = iter(amounts)
    old = (cols.amount, cols.counterparty, cols.debt_token, cols.debt_amount)
    pos = iter(range(len(general)))
    g_rows = {row: next(pos) for row in general}
    cols.amount = [old[0][g_rows[i]] if i in is_general else next(it) for i in range(n)]
    cols.counterparty = [old[1][g_rows[i]] if i in is_general else None for i in range(n)]
    cols.debt_token = [old[2][g_rows[i]] if i in is_general else None for i in range(n)]
    cols.debt_amount = [old[3][g_rows[i]] if i in is_general else 0 for i in range(n)]
    adj, neg, ref = cols.adjust_kind, cols.negative, cols.ref
    cols.adjust_kind = [adj[g_rows[i]] if i in is_general else None for i in range(n)]
    cols.negative = [neg[g_rows[i]] if i in is_general else False for i in range(n)]
    cols.ref = [ref[g_rows[i]] if i in is_general else None for i in range(n)]


def range_digest(events: EventColumns) -> str:
    """The audit digest of a compacted range (aggregator chain_event_range.digest):
    sha256, hex, of one line per event in the order given (chain order:
    block, log index), `block:log_index:tx_hash:kind:account:token:amount:
    counterparty:debt_token:debt_amount`, as decoded here (checksummed addresses,
    lower-case hashes, decimal amounts, an absent address empty). An auditor decodes
    the range's getLogs answer with `decode_records` and compares."""
    # Column by column: one format call per row, mapped in C ("{}" of an int is its
    # str()), the same text as one f-string per event without a Python step per event.
    columns: tuple[list[Any], ...] = (
        events.block_number, events.log_index, events.tx_hash, events.kind,
        events.account, events.token, events.amount, _texts(events.counterparty),
        _texts(events.debt_token), events.debt_amount,
    )  # fmt: skip
    if len(set(map(len, columns))) > 1:
        raise ValueError("range_digest: columns of different lengths")
    _check_ints(events.block_number, events.log_index, events.amount, events.debt_amount)
    text = "".join(map(_DIGEST_LINE.format, *columns))
    return hashlib.sha256(text.encode()).hexdigest()


_DIGEST_LINE = "{}:{}:{}:{}:{}:{}:{}:{}:{}:{}\n"


def _check_ints(*columns: list[int]) -> None:
    # format() of an int subclass (bool) differs from its str(); the columns are
    # plain ints by construction, checked per distinct type.
    for column in columns:
        if not set(map(type, column)) <= {int}:
            raise TypeError("range_digest: a numeric column holds a non-int")


def _texts(column: list[str | None]) -> list[str]:
    """An optional address column as the digest writes it (absent: empty)."""
    if not any(column):
        return [""] * len(column)
    return [value or "" for value in column]
