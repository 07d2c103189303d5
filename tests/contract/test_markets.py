"""Markets: keeper-only position records, absolute-state events that the indexer's
decoder (chains/positions.py) reads back exactly, roles and input checks."""

from __future__ import annotations

from typing import Any

import pytest
from eth_abi import encode as abi_encode
from eth_utils import keccak

from chains.contracts import contract, deploy
from chains.positions import FIXED, decode_position_log, text_bytes32
from tests.contract.conftest import System, events, revert_reason, tx

ETH = text_bytes32("ETH-PERP")
UND = text_bytes32("ETH")


@pytest.fixture
def markets(system: System) -> Any:
    addr = deploy(system.w3, "Markets", system.owner, sender=system.owner)
    m = contract(system.w3, "Markets", addr)
    tx(m.functions.setKeeper(system.keeper, True), system.owner)
    tx(m.functions.listPerp(ETH), system.owner)
    return m


def _logs(system: System, receipt: Any) -> list[dict[str, Any]]:
    """Receipt logs in eth_getLogs' JSON shape, for the indexer's decoder."""
    out = []
    for lg in receipt["logs"]:
        out.append(
            {
                "topics": ["0x" + bytes(t).hex() for t in lg["topics"]],
                "data": "0x" + bytes(lg["data"]).hex(),
                "blockNumber": hex(lg["blockNumber"]),
                "blockHash": "0x" + bytes(lg["blockHash"]).hex(),
                "transactionHash": "0x" + bytes(lg["transactionHash"]).hex(),
                "logIndex": hex(lg["logIndex"]),
            }
        )
    return out


def test_only_keeper_records_positions(system: System, markets: Any) -> None:
    user, stranger = system.accounts[2], system.accounts[7]
    fn = markets.functions.setPerpPosition(user, ETH, FIXED, 3000 * FIXED)
    assert revert_reason(fn, stranger) == f"NotKeeper({stranger.lower()})"
    assert revert_reason(fn, system.owner).startswith("NotKeeper(")
    assert revert_reason(markets.functions.setKeeper(stranger, True), stranger).startswith(
        "OwnableUnauthorizedAccount("
    )
    tx(fn, system.keeper)
    assert markets.functions.perpOf(user, ETH).call() == [FIXED, 3000 * FIXED, 0]


def test_perp_event_carries_the_new_state_and_decodes(system: System, markets: Any) -> None:
    user = system.accounts[3]
    tx(markets.functions.updateFunding(ETH, -5 * FIXED), system.keeper)
    r = tx(markets.functions.setPerpPosition(user, ETH, -2 * FIXED, 3100 * FIXED), system.keeper)
    (ev,) = events(markets, "PerpPositionChanged", r)
    assert (ev.account, ev.size, ev.entryPrice, ev.fundingIndex) == (
        user, -2 * FIXED, 3100 * FIXED, -5 * FIXED,
    )  # fmt: skip
    (d,) = [decode_position_log("c", x) for x in _logs(system, r)]
    assert (d.kind, d.account, d.key, d.size, d.price, d.funding) == (
        "perp", user, "ETH-PERP", -2 * FIXED, 3100 * FIXED, -5 * FIXED,
    )  # fmt: skip
    # Closing: size 0 clears the entry price.
    r = tx(markets.functions.setPerpPosition(user, ETH, 0, 3200 * FIXED), system.keeper)
    assert events(markets, "PerpPositionChanged", r)[0].entryPrice == 0


def test_option_event_and_series_id(system: System, markets: Any) -> None:
    user = system.accounts[4]
    args = (UND, 3300 * FIXED, 1_900_000_000, False)
    r = tx(markets.functions.setOptionPosition(user, *args, -7 * FIXED), system.keeper)
    sid = keccak(abi_encode(["bytes32", "uint256", "uint64", "bool"], list(args)))
    assert markets.functions.seriesId(*args).call() == sid
    assert markets.functions.optionOf(user, sid).call() == -7 * FIXED
    (d,) = [decode_position_log("c", x) for x in _logs(system, r)]
    assert (d.kind, d.key, d.underlying, d.price, d.expiry, d.is_call, d.size) == (
        "option", "0x" + sid.hex(), "ETH", 3300 * FIXED, 1_900_000_000, False, -7 * FIXED,
    )  # fmt: skip


def test_input_checks(system: System, markets: Any) -> None:
    k, user = system.keeper, system.accounts[2]
    btc = text_bytes32("BTC-PERP")
    assert revert_reason(markets.functions.setPerpPosition(user, btc, 1, 1), k).startswith(
        "UnknownMarket("
    )
    assert revert_reason(markets.functions.updateFunding(btc, 1), k).startswith("UnknownMarket(")
    assert revert_reason(markets.functions.setPerpPosition(user, ETH, 1, 0), k) == "BadPrice(0)"
    bad = markets.functions.setOptionPosition(user, UND, 0, 1, True, 1)
    assert revert_reason(bad, k).startswith("BadSeries(")
