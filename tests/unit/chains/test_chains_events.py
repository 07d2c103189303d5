from __future__ import annotations

import pytest
from eth_abi import encode
from eth_utils import keccak

from chains.events import SIGNATURES, DecodeError, decode_log

ACCT = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
TOKEN = "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0"
DEBT = "0xCf7Ed3AccA5a467e9e704C703E8D87F634fB0Fc9"
LIQ = "0x976EA74026E726554dB657fA54763abd0C3a0aa9"


def topic(addr: str) -> str:
    return "0x" + "00" * 12 + addr[2:].lower()


def entry(kind: str, topics: list[str], data: bytes) -> dict[str, object]:
    return {
        "address": "0x" + "11" * 20,
        "topics": ["0x" + keccak(text=SIGNATURES[kind]).hex(), *topics],  # type: ignore[index]
        "data": "0x" + data.hex(),
        "blockNumber": "0x10",
        "blockHash": "0x" + "AB" * 32,
        "transactionHash": "0x" + "cd" * 32,
        "logIndex": "0x3",
    }


def test_decodes_deposit_with_exact_amount() -> None:
    amount = 2**256 - 1
    ev = decode_log(
        "alpha", entry("deposit", [topic(ACCT), topic(TOKEN)], encode(["uint256"], [amount]))
    )
    assert (ev.kind, ev.account, ev.token, ev.amount) == ("deposit", ACCT, TOKEN, amount)
    assert (ev.block_number, ev.log_index, ev.block_hash) == (16, 3, "0x" + "ab" * 32)
    assert [(e.head_delta, e.pending_delta) for e in ev.effects()] == [(amount, amount)]


def test_decodes_repay_and_liquidation() -> None:
    rep = decode_log(
        "a", entry("repay", [topic(ACCT), topic(DEBT)], encode(["uint256", "address"], [5, LIQ]))
    )
    assert (rep.kind, rep.amount, rep.counterparty) == ("repay", 5, LIQ)
    assert [(e.kind, e.head_delta, e.pending_delta) for e in rep.effects()] == [("debt", -5, 5)]
    liq = decode_log(
        "a",
        entry(
            "liquidation",
            [topic(ACCT), topic(LIQ), topic(TOKEN)],
            encode(["uint256", "address", "uint256"], [7, DEBT, 3]),
        ),
    )
    assert (liq.token, liq.amount, liq.debt_token, liq.debt_amount, liq.counterparty) == (
        TOKEN,
        7,
        DEBT,
        3,
        LIQ,
    )
    # Liquidations count in both views at once: nothing pending.
    assert [(e.kind, e.token, e.head_delta, e.pending_delta) for e in liq.effects()] == [
        ("collateral", TOKEN, -7, 0),
        ("debt", DEBT, -3, 0),
    ]


def test_withdraw_and_borrow_apply_at_once() -> None:
    w = decode_log("a", entry("withdraw", [topic(ACCT), topic(TOKEN)], encode(["uint256"], [9])))
    b = decode_log("a", entry("borrow", [topic(ACCT), topic(DEBT)], encode(["uint256"], [4])))
    assert [(e.head_delta, e.pending_delta) for e in w.effects()] == [(-9, 0)]
    assert [(e.kind, e.head_delta, e.pending_delta) for e in b.effects()] == [("debt", 4, 0)]


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda e: e.update(topics=["0x" + "00" * 32]), "unknown event topic"),
        (lambda e: e.update(topics=e["topics"][:2]), "indexed topics"),
        (lambda e: e.update(data="0x1234"), "log"),
        (
            lambda e: e.update(topics=[e["topics"][0], "0x" + "ff" * 32, e["topics"][2]]),
            "not an address",
        ),
    ],
)
def test_malformed_logs_are_errors_naming_the_log(mutate: object, needle: str) -> None:
    e = entry("deposit", [topic(ACCT), topic(TOKEN)], encode(["uint256"], [1]))
    mutate(e)  # type: ignore[operator]
    with pytest.raises(DecodeError, match=needle) as info:
        decode_log("alpha", e)
    assert "chain 'alpha'" in str(info.value) and "0x" + "cd" * 32 in str(info.value)


def _remote(name: str, data: bytes, n_topics: int = 3) -> dict[str, object]:
    from chains.events import REMOTE_SIGNATURES

    e = entry("deposit", [], data)
    claim = "0x" + "ee" * 32
    topics = [claim, topic(ACCT), topic(LIQ)][:n_topics]
    e["topics"] = ["0x" + keccak(text=REMOTE_SIGNATURES[name]).hex(), *topics]
    return e


def test_a_cross_chain_claim_is_the_liquidator_repaying_debt_on_its_own_chain() -> None:
    data = encode(["address", "uint256", "uint256", "address"], [DEBT, 11, 71_002, TOKEN])
    ev = decode_log("alpha", _remote("claim", data))
    assert (ev.kind, ev.account, ev.token, ev.amount, ev.counterparty) == (
        "repay", ACCT, DEBT, 11, LIQ,
    )  # fmt: skip
    # Risk-lowering: the confirmed view keeps the debt until the claim is final.
    assert [(e.kind, e.token, e.head_delta, e.pending_delta) for e in ev.effects()] == [
        ("debt", DEBT, -11, 11)
    ]


def test_a_cross_chain_settlement_seizes_with_no_debt_leg() -> None:
    data = encode(["address", "uint256", "address", "uint256"], [TOKEN, 13, DEBT, 11])
    ev = decode_log("beta", _remote("settle", data))
    assert (ev.kind, ev.account, ev.token, ev.amount, ev.counterparty) == (
        "liquidation", ACCT, TOKEN, 13, LIQ,
    )  # fmt: skip
    assert (ev.debt_token, ev.debt_amount) == (DEBT, 0)
    # The debt it pays was repaid on the claim's chain: only the seizure moves here.
    assert [(e.kind, e.token, e.head_delta, e.pending_delta) for e in ev.effects()] == [
        ("collateral", TOKEN, -13, 0)
    ]


@pytest.mark.parametrize("name", ["claim", "settle"])
def test_a_malformed_cross_chain_log_names_itself(name: str) -> None:
    with pytest.raises(DecodeError, match="indexed topics"):
        decode_log("alpha", _remote(name, b"\x00" * 128, n_topics=2))
    with pytest.raises(DecodeError, match=r"undecodable|malformed"):
        decode_log("alpha", _remote(name, b"\x00" * 40))
