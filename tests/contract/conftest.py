"""Contract tests: one anvil per module with the full devnet system deployed once;
every test runs inside an evm_snapshot / evm_revert pair, so tests stay independent
without paying for a fresh deployment each time."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from web3 import Web3
from web3.exceptions import ContractLogicError
from web3.logs import DISCARD

from chains.contracts import contract, decode_error
from devkit.anvil import AnvilNode
from devkit.deploy import ChainDeployment, deploy_chain, web3_session


@dataclass
class System:
    node: AnvilNode
    w3: Web3
    dep: ChainDeployment

    @property
    def accounts(self) -> list[str]:
        return list(self.w3.eth.accounts)

    @property
    def owner(self) -> str:
        return self.accounts[0]

    @property
    def keeper(self) -> str:
        return self.accounts[1]

    @property
    def registry(self) -> Any:
        return contract(self.w3, "HealthRegistry", self.dep.registry)

    @property
    def vault(self) -> Any:
        return contract(self.w3, "CollateralVault", self.dep.vault)

    def token(self, symbol: str) -> Any:
        name = {"wstETH": "MockWstETH", "rETH": "MockRETH"}.get(symbol, "MockERC20")
        return contract(self.w3, name, self.dep.tokens[symbol])

    def feed(self, symbol: str) -> Any:
        return contract(self.w3, "MockV3Aggregator", self.dep.feeds[symbol])

    def now(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def warp(self, seconds: int) -> None:
        self.w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
        self.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]

    def set_next_timestamp(self, ts: int) -> None:
        self.w3.provider.make_request("evm_setNextBlockTimestamp", [ts])  # type: ignore[arg-type]


def tx(fn: Any, sender: str) -> Any:
    """Transact and require success; returns the receipt."""
    w3 = fn.w3
    receipt = w3.eth.wait_for_transaction_receipt(fn.transact({"from": sender}))
    assert receipt["status"] == 1
    return receipt


def revert_reason(fn: Any, sender: str) -> str:
    """Decoded revert of `fn` sent from `sender` (e.g. 'Stale(0xab..)'); fails if it succeeds."""
    with pytest.raises(ContractLogicError) as info:
        fn.transact({"from": sender})
    data = info.value.data
    if isinstance(data, str) and data.startswith("0x") and len(data) >= 10:
        return decode_error(data)
    return str(info.value.message)


@pytest.fixture(scope="module")
def _deployed() -> Iterator[System]:
    with AnvilNode(chain_id=31337) as node, web3_session(node.url) as w3:
        dep = deploy_chain(w3, "test")
        yield System(node, w3, dep)


@pytest.fixture
def system(_deployed: System) -> Iterator[System]:
    w3 = _deployed.w3
    snap = w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    yield _deployed
    reverted = w3.provider.make_request("evm_revert", [snap])["result"]  # type: ignore[arg-type]
    assert reverted, "evm_revert failed: later tests would see this test's state"


def events(contract_: Any, name: str, receipt: Any) -> list[Any]:
    """Decoded `name` events of `contract_` in `receipt` (other logs ignored)."""
    return [
        e.args for e in getattr(contract_.events, name)().process_receipt(receipt, errors=DISCARD)
    ]


def fund(system: System, user: str, symbol: str, raw: int) -> None:
    """Mint `raw` units to `user` and approve the vault for them."""
    tx(system.token(symbol).functions.mint(user, raw), system.owner)
    tx(system.token(symbol).functions.approve(system.dep.vault, raw), user)


def give_entry(
    system: System, user: str, credit_usd6: int, *, tier: int = 0, hf: int = 2 * 10**9
) -> None:
    """As the keeper, push a fresh entry (as_of = the next block's timestamp)."""
    from chains.registry_codec import RegistryEntry, pack_batch

    as_of = max(system.now(), int(system.registry.functions.healthOf(user).call()[2])) + 1
    system.set_next_timestamp(as_of)
    batch = pack_batch([(user, RegistryEntry(credit_usd6, hf, as_of, tier))])
    tx(system.registry.functions.update(batch), system.keeper)
