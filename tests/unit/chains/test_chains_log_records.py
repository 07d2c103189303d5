"""Typed getLogs decoding (msgspec structs, then columns): the same events as the
per-log dict path, and hostile answers rejected with errors naming the chain and field."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest
from aiohttp import web
from eth_abi import encode
from eth_utils import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from chains.events import SIGNATURES, DecodeError, decode_log, decode_records
from chains.rpc import RpcClient, RpcLog, RpcUnavailable
from chains.rpc_endpoint import Endpoint
from chains.rpc_errors import EndpointFault
from chains.rpc_logs import LOGS_DECODER, _checked, _dict_fields, _record_fields
from chains.types import ChainSettings

VAULT = "0x" + "11" * 20
ACCTS = [
    "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
    "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
]
TOKEN = "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0"
DEBT = "0xCf7Ed3AccA5a467e9e704C703E8D87F634fB0Fc9"
LIQ = "0x976EA74026E726554dB657fA54763abd0C3a0aa9"


def topic(addr: str) -> str:
    return "0x" + "00" * 12 + addr[2:].lower()


def raw_log(kind: str, i: int, amount: int, account: str = ACCTS[0]) -> dict[str, Any]:
    if kind == "repay":
        topics, data = [topic(account), topic(DEBT)], encode(["uint256", "address"], [amount, LIQ])
    elif kind == "liquidation":
        topics = [topic(account), topic(LIQ), topic(TOKEN)]
        data = encode(["uint256", "address", "uint256"], [amount, DEBT, amount // 2])
    else:
        topics, data = [topic(account), topic(TOKEN)], encode(["uint256"], [amount])
    return {
        "address": VAULT,
        "topics": ["0x" + keccak(text=SIGNATURES[kind]).hex(), *topics],  # type: ignore[index]
        "data": "0x" + data.hex(),
        "blockNumber": hex(100 + i // 3),
        "blockHash": "0x" + f"{100 + i // 3:064X}",
        "transactionHash": "0x" + f"{i:064x}",
        "logIndex": hex(i % 3),
        "transactionIndex": "0x0",
        "removed": False,
    }


def records(logs: list[dict[str, Any]]) -> list[RpcLog]:
    return msgspec.convert(logs, list[RpcLog])


KINDS = st.sampled_from(["deposit", "withdraw", "borrow", "repay", "liquidation"])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(KINDS, st.integers(0, 2**256 - 1), st.sampled_from(ACCTS)),
        min_size=0,
        max_size=25,
    )
)
def test_columns_equal_the_per_log_decoder(spec: list[tuple[str, int, str]]) -> None:
    logs = [raw_log(k, i, a, acct) for i, (k, a, acct) in enumerate(spec)]
    cols = decode_records("alpha", records(logs))
    assert cols.events() == [decode_log("alpha", e) for e in logs]
    assert len({len(c) for c in cols.columns()}) <= 1


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["deposit", "withdraw", "borrow"]),
            st.integers(0, 2**256 - 1),
            st.sampled_from(ACCTS),
            st.booleans(),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_a_batch_of_simple_events_decodes_as_the_per_log_decoder(
    spec: list[tuple[str, int, str, bool]],
) -> None:
    # Only simple events: the column-at-a-time path; mixed-case hex as a node may send.
    logs = [raw_log(k, i, a, acct) for i, (k, a, acct, _) in enumerate(spec)]
    for log, (_, _, _, upper) in zip(logs, spec, strict=True):
        if upper:
            log["transactionHash"] = "0x" + log["transactionHash"][2:].upper()
            log["topics"] = [log["topics"][0], *("0x" + t[2:].upper() for t in log["topics"][1:])]
    cols = decode_records("alpha", records(logs))
    assert cols.events() == [decode_log("alpha", e) for e in logs]
    assert {len(c) for c in cols.columns()} == {len(logs)}


def one_bad(field: str, value: Any, at: int = 4) -> list[dict[str, Any]]:
    logs = [raw_log("deposit", i, 10**18 + i) for i in range(8)]
    logs[at][field] = value
    return logs


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("logIndex", "0xzz", "logIndex"),
        ("logIndex", "-0x1", "logIndex"),
        ("blockNumber", "12", "blockNumber"),
        ("data", "0x" + "g" * 64, "data"),
        ("data", "0x" + " " * 63 + "1", "data"),
        ("data", "x0" + "0" * 64, "data"),
    ],
)
def test_malformed_hex_is_a_decode_error_naming_chain_and_field(
    field: str, value: str, named: str
) -> None:
    with pytest.raises(DecodeError, match=rf"chain 'alpha'.*{named}"):
        decode_records("alpha", records(one_bad(field, value)))


def test_a_topic_that_is_not_an_address_names_the_log() -> None:
    logs = one_bad("topics", [*raw_log("deposit", 0, 1)["topics"][:2], "0x" + "ff" * 32])
    with pytest.raises(DecodeError, match=r"chain 'alpha' tx 0x0+4 .*not an address"):
        decode_records("alpha", records(logs))


def envelope(result: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": 1, "result": result}).encode()


@pytest.mark.parametrize(
    ("mutate", "named"),
    [
        (lambda e: e.pop("blockHash"), "blockHash"),
        (lambda e: e.update(blockNumber=16), r"\$.result\[4\].blockNumber"),
        (lambda e: e.update(topics="0xabc"), r"\$.result\[4\].topics"),
        (lambda e: e.update(data=None), r"\$.result\[4\].data"),
    ],
)
def test_wrong_shape_is_rejected_by_the_typed_decoder(
    mutate: Callable[[dict[str, Any]], Any], named: str
) -> None:
    logs = [raw_log("deposit", i, 1) for i in range(8)]
    mutate(logs[4])
    with pytest.raises(msgspec.ValidationError, match=named):
        LOGS_DECODER.decode(envelope(logs))


def test_checked_records_names_a_bad_block_number_and_a_foreign_log() -> None:
    addrs = frozenset([VAULT])
    recs = records([raw_log("deposit", i, 1) for i in range(6)])
    assert _checked(recs, addrs, 100, 101, _record_fields) is recs
    with pytest.raises(EndpointFault, match="outside the query"):
        _checked(recs, addrs, 100, 100, _record_fields)
    with pytest.raises(EndpointFault, match="outside the query"):
        _checked(recs, frozenset(["0x" + "22" * 20]), 100, 101, _record_fields)
    bad = records(one_bad("blockNumber", "0xq1"))
    with pytest.raises(EndpointFault, match=r"blockNumber \(\$.result\[4\].blockNumber\)"):
        _checked(bad, addrs, 0, 10**6, _record_fields)
    with pytest.raises(EndpointFault, match="malformed eth_getLogs result"):
        _checked({"x": 1}, addrs, 0, 1, _record_fields)


def test_the_dict_view_is_checked_by_the_same_rules() -> None:
    """get_logs' plain dicts go through the same `_checked` as the records: the same
    answers pass and fail, plus what only a dict can be (not an object, a number that
    is not a string)."""
    addrs = frozenset([VAULT])
    logs = [raw_log("deposit", i, 1) for i in range(6)]
    assert _checked(logs, addrs, 100, 101, _dict_fields) is logs
    with pytest.raises(EndpointFault, match="outside the query"):
        _checked(logs, addrs, 100, 100, _dict_fields)
    with pytest.raises(EndpointFault, match="outside the query"):
        _checked(logs, frozenset(["0x" + "22" * 20]), 100, 101, _dict_fields)
    with pytest.raises(EndpointFault, match=r"blockNumber \(\$.result\[4\].blockNumber\)"):
        _checked(one_bad("blockNumber", "0xq1"), addrs, 0, 10**6, _dict_fields)
    for odd in (16, None, ["0x64"]):
        with pytest.raises(EndpointFault, match=r"\$.result\[4\].blockNumber") as info:
            _checked(one_bad("blockNumber", odd), addrs, 0, 10**6, _dict_fields)
        assert info.value.integrity
    with pytest.raises(EndpointFault, match="malformed log entry"):
        _checked([*logs, "0x1"], addrs, 0, 10**6, _dict_fields)
    with pytest.raises(EndpointFault, match="malformed eth_getLogs result"):
        _checked({"x": 1}, addrs, 0, 1, _dict_fields)


class HostileNode:
    """A JSON-RPC node whose getLogs answer is whatever the test sets."""

    def __init__(self) -> None:
        self.body: bytes = envelope([])
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        req = await request.json()
        method = req["method"]
        if method == "eth_getLogs":
            return web.Response(body=self.body, content_type="application/json")
        if method == "eth_blockNumber":
            result: Any = "0x200"
        elif method == "eth_chainId":
            result = "0x1"
        else:  # eth_getBlockByNumber
            n = req["params"][0]
            result = {"number": n, "hash": "0x" + "ab" * 32, "parentHash": "0x" + "cd" * 32}
        return web.json_response({"jsonrpc": "2.0", "id": req["id"], "result": result})


@pytest.fixture
async def node() -> AsyncIterator[HostileNode]:
    hostile = HostileNode()
    app = web.Application()
    app.router.add_post("/", hostile.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    hostile.url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
    yield hostile
    await runner.cleanup()


async def test_endpoint_classifies_typed_answers(node: HostileNode) -> None:
    ep = Endpoint(node.url, 2.0, 1000.0, lambda: 0.0)
    try:
        node.body = envelope([raw_log("deposit", 0, 5)])
        (rec,) = await ep.raw("eth_getLogs", [{}], decoder=LOGS_DECODER)
        assert isinstance(rec, RpcLog) and rec.logIndex == "0x0"
        node.body = b"<html>busy</html>"
        with pytest.raises(EndpointFault, match="malformed JSON") as exc:
            await ep.raw("eth_getLogs", [{}], decoder=LOGS_DECODER)
        assert not exc.value.integrity  # a transport-level failure, not a lie
        node.body = b'{"jsonrpc": "2.0", "id": 1}'
        with pytest.raises(EndpointFault, match="malformed JSON-RPC envelope"):
            await ep.raw("eth_getLogs", [{}], decoder=LOGS_DECODER)
    finally:
        await ep.close()


async def test_a_hostile_getlogs_answer_names_the_chain_and_field(node: HostileNode) -> None:
    s = ChainSettings(
        name="hostile", chain_id=1, rpc_urls=(node.url,), vault=VAULT, rpc_timeout_s=2.0
    )
    client = RpcClient.from_settings(s, max_rounds=1)
    try:
        logs = [raw_log("deposit", i, 1) for i in range(3)]
        node.body = envelope(logs)
        assert len(await client.get_log_records(VAULT, [], 100, 101)) == 3
        del logs[1]["transactionHash"]
        node.body = envelope(logs)
        with pytest.raises(RpcUnavailable, match=r"chain 'hostile'.*transactionHash"):
            await client.get_log_records(VAULT, [], 100, 101)
    finally:
        await client.close()
