"""The daemon's seize voucher (chains/claims.py) against the real CollateralVault: the
Python EIP-712 digest equals the contract's `voucherDigest`, and a voucher signed by
KeeperKey settles once, paying the liquidator; a second settlement and another key's
signature revert."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chains.claims import SeizeVoucher, voucher_digest, voucher_typed_data
from chains.pusher.keys import key_from_hex
from devkit.anvil import DEV_KEYS
from tests.contract.conftest import System, events, fund, revert_reason, tx

E18 = 10**18
WETH, USDC = "WETH", "USDC"


def as_struct(v: SeizeVoucher) -> tuple[bytes, str, str, str, str, int]:
    m = v.message()
    return (
        bytes.fromhex(v.claim_id[2:]),
        m["account"],
        m["liquidator"],
        m["collateralToken"],
        m["debtToken"],
        v.repaid,
    )


@settings(max_examples=15)
@given(
    claim=st.binary(min_size=32, max_size=32),
    account=st.binary(min_size=20, max_size=20),
    repaid=st.integers(1, 2**256 - 1),
)
def test_digest_equals_the_contracts_voucher_digest(
    _deployed: System, claim: bytes, account: bytes, repaid: int
) -> None:
    s = _deployed
    v = SeizeVoucher(
        "0x" + claim.hex(),
        "0x" + account.hex(),
        s.accounts[6],
        s.dep.tokens[WETH],
        s.dep.tokens[USDC],
        repaid,
    )
    onchain = bytes(s.vault.functions.voucherDigest(as_struct(v)).call())
    assert onchain == voucher_digest(v, s.w3.eth.chain_id, s.dep.vault)


def test_keeper_signed_voucher_settles_once_and_a_forged_one_reverts(system: System) -> None:
    s = system
    user, liquidator = s.accounts[7], s.accounts[8]
    fund(s, user, WETH, 10 * E18)
    tx(s.vault.functions.deposit(s.dep.tokens[WETH], 10 * E18), user)
    v = SeizeVoucher(
        "0x" + "c1" * 32, user, liquidator, s.dep.tokens[WETH], s.dep.tokens[USDC], 3000 * 10**6
    )
    keeper = key_from_hex(DEV_KEYS[1], "keeper")
    assert keeper.address == s.keeper
    typed = voucher_typed_data(v, s.w3.eth.chain_id, s.dep.vault)

    forged = key_from_hex(DEV_KEYS[5], "not a keeper").sign_typed_data(typed)
    reason = revert_reason(s.vault.functions.settleRemoteSeize(as_struct(v), forged), liquidator)
    assert reason.startswith("NotKeeperSigned") and DEV_KEYS[5] not in reason

    signature = bytes.fromhex(keeper.sign_typed_data(typed)[2:])
    weth = s.token(WETH)
    before = weth.functions.balanceOf(liquidator).call()
    receipt = tx(s.vault.functions.settleRemoteSeize(as_struct(v), signature), liquidator)
    seized = weth.functions.balanceOf(liquidator).call() - before
    # 3000 USDC at $1 plus the 5% bonus, in WETH at $3000: 1.05 WETH (the devnet prices).
    assert seized == pytest.approx(1.05 * E18, rel=1e-9)
    assert s.vault.functions.collateralOf(user, s.dep.tokens[WETH]).call() == 10 * E18 - seized
    assert s.vault.functions.settled(bytes.fromhex(v.claim_id[2:])).call()
    (settled,) = events(s.vault, "RemoteSeizeSettled", receipt)
    assert settled["liquidator"] == liquidator
    again = revert_reason(s.vault.functions.settleRemoteSeize(as_struct(v), signature), user)
    assert again.startswith("AlreadySettled")
