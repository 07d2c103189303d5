"""Multicall3 at the canonical address (installed with anvil_setCode)."""

from __future__ import annotations

import pytest
from web3.exceptions import ContractLogicError

from chains.contracts import MULTICALL3_ADDRESS, contract, decode_error, install_multicall
from chains.registry_codec import RegistryEntry, pack_batch
from tests.contract.conftest import System, tx


def test_installed_code_matches_artifact(system: System) -> None:
    from chains.contracts import load_artifact

    code = system.w3.eth.get_code(MULTICALL3_ADDRESS)
    assert "0x" + code.hex().removeprefix("0x") == load_artifact("Multicall3").deployed_bytecode
    # Idempotent: installing again is fine (devnet restarts do it).
    assert install_multicall(system.node.url) == MULTICALL3_ADDRESS


def test_aggregate3_mixes_success_and_allowed_failure(system: System) -> None:
    mc = contract(system.w3, "Multicall3", MULTICALL3_ADDRESS)
    user = system.accounts[2]
    tx(
        system.registry.functions.update(
            pack_batch([(user, RegistryEntry(777, 10**9, system.now(), 1))])
        ),
        system.keeper,
    )
    reg = system.registry
    calls = [
        (reg.address, False, reg.encode_abi("creditOf", [user])),
        # consumeCredit from Multicall3 (not a consumer): reverts with NotConsumer.
        (reg.address, True, reg.encode_abi("consumeCredit", [user, 1])),
        (reg.address, False, reg.encode_abi("healthOf", [user])),
    ]
    results = mc.functions.aggregate3(calls).call()
    assert [ok for ok, _ in results] == [True, False, True]
    assert int.from_bytes(results[0][1], "big") == 777
    assert decode_error(results[1][1]) == f"NotConsumer({MULTICALL3_ADDRESS.lower()})"
    assert system.w3.codec.decode(["uint64", "uint8", "uint40"], results[2][1])[:2] == (10**9, 1)

    strict = [(c[0], False, c[2]) for c in calls]
    with pytest.raises(ContractLogicError, match="Multicall3: call failed"):
        mc.functions.aggregate3(strict).call()


def test_block_and_chain_views(system: System) -> None:
    mc = contract(system.w3, "Multicall3", MULTICALL3_ADDRESS)
    head = system.w3.eth.get_block("latest")
    assert mc.functions.getChainId().call() == 31337
    assert mc.functions.getBlockNumber().call() == head["number"]
    assert mc.functions.getCurrentBlockTimestamp().call() == head["timestamp"]
    assert mc.functions.getBlockHash(head["number"] - 1).call() == head["parentHash"]
    owner = system.owner
    assert mc.functions.getEthBalance(owner).call() == system.w3.eth.get_balance(owner)
