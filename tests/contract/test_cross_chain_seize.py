"""CollateralVault's cross-chain seize: `liquidateRemote` (the debt chain's claim) and
`settleRemoteSeize` (the collateral chain's seizure against a keeper-signed voucher).

One anvil serves both sides: the settling vault does not check where a claim was made
(only the voucher's signature and its claim id), so a voucher for a claim id of another
chain is settled here exactly as it would be on the collateral chain."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from eth_utils import keccak

from devkit.anvil import DEV_KEYS
from tests.contract.conftest import System, events, fund, give_entry, revert_reason, tx

USDC, WETH = "USDC", "WETH"
E18 = 10**18
KEEPER_KEY = DEV_KEYS[1]  # the registry's keeper (conftest: accounts[1])
OTHER_CHAIN = 71_002


def deposit(system: System, user: str, symbol: str, raw: int) -> None:
    fund(system, user, symbol, raw)
    tx(system.vault.functions.deposit(system.dep.tokens[symbol], raw), user)


def _borrower(system: System) -> str:
    """An account with 2,000 USDC of debt here against 1 WETH (the collateral the
    remote claim names lives on another chain; here it only carries the borrow)."""
    user = system.accounts[2]
    deposit(system, user, WETH, E18)
    give_entry(system, user, 10**12)
    tx(system.vault.functions.borrow(system.dep.tokens[USDC], 2_000 * 10**6), user)
    return user


def _claim(system: System, user: str, repay: int) -> Any:
    liquidator = system.accounts[6]
    fund(system, liquidator, USDC, repay)
    fn = system.vault.functions.liquidateRemote(
        user, system.dep.tokens[USDC], repay, OTHER_CHAIN, system.dep.tokens[WETH]
    )
    return tx(fn, liquidator)


def test_claim_repays_here_and_names_the_other_chain(system: System) -> None:
    user = _borrower(system)
    give_entry(system, user, 0, tier=2, hf=9 * 10**8)
    receipt = _claim(system, user, 500 * 10**6)
    usdc = system.dep.tokens[USDC]
    assert system.vault.functions.debtOf(user, usdc).call() == 1_500 * 10**6
    # Nothing is seized here: the collateral named is the other chain's.
    assert system.vault.functions.collateralOf(user, system.dep.tokens[WETH]).call() == E18
    (ev,) = events(system.vault, "RemoteSeizeClaimed", receipt)
    chain_id = system.w3.eth.chain_id
    expected_id = keccak(
        chain_id.to_bytes(32, "big") + bytes(12) + bytes.fromhex(system.dep.vault[2:])
        + (1).to_bytes(32, "big")
    )  # fmt: skip
    assert bytes(ev.claimId) == expected_id
    assert (ev.account, ev.liquidator, ev.debtToken, ev.repaid, ev.targetChainId) == (
        user, system.accounts[6], usdc, 500 * 10**6, OTHER_CHAIN,
    )  # fmt: skip
    assert ev.collateralToken == system.dep.tokens[WETH]
    # A second claim gets a new id.
    (ev2,) = events(system.vault, "RemoteSeizeClaimed", _claim(system, user, 10**6))
    assert bytes(ev2.claimId) != expected_id
    assert system.vault.functions.claimCount().call() == 2


@pytest.mark.parametrize("tier", [0, 1])
def test_claim_needs_a_liquidatable_tier(system: System, tier: int) -> None:
    user = _borrower(system)
    give_entry(system, user, 0, tier=tier, hf=10**9)
    liquidator = system.accounts[6]
    fund(system, liquidator, USDC, 10**9)
    fn = system.vault.functions.liquidateRemote(
        user, system.dep.tokens[USDC], 10**6, OTHER_CHAIN, system.dep.tokens[WETH]
    )
    assert revert_reason(fn, liquidator) == f"NotLiquidatable({user.lower()}, {tier})"


def test_claim_refuses_its_own_chain_stale_entries_and_over_repayment(system: System) -> None:
    user = _borrower(system)
    give_entry(system, user, 0, tier=2, hf=9 * 10**8)
    liquidator = system.accounts[6]
    fund(system, liquidator, USDC, 10**10)
    usdc, weth = system.dep.tokens[USDC], system.dep.tokens[WETH]
    own = system.w3.eth.chain_id
    f = system.vault.functions
    assert revert_reason(f.liquidateRemote(user, usdc, 10**6, own, weth), liquidator) == (
        f"SameChain({own})"
    )
    too_much = f.liquidateRemote(user, usdc, 2_001 * 10**6, OTHER_CHAIN, weth)
    assert revert_reason(too_much, liquidator).startswith("RepayExceedsDebt(")
    system.warp(f.maxAge().call() + 1)
    stale = f.liquidateRemote(user, usdc, 10**6, OTHER_CHAIN, weth)
    assert revert_reason(stale, liquidator) == f"Stale({user.lower()})"


def _voucher(system: System, user: str, repaid: int, claim: bytes = b"\x01" * 32) -> tuple:
    return (
        claim,
        user,
        system.accounts[6],
        system.dep.tokens[WETH],
        system.dep.tokens[USDC],
        repaid,
    )


def _sign(system: System, voucher: tuple, key: str = KEEPER_KEY) -> bytes:
    digest = system.vault.functions.voucherDigest(voucher).call()
    return bytes(Account.unsafe_sign_hash(digest, key).signature)


def test_settlement_seizes_value_plus_bonus_once(system: System) -> None:
    user = system.accounts[3]
    deposit(system, user, WETH, E18)
    liquidator = system.accounts[6]
    weth = system.token(WETH)
    before = weth.functions.balanceOf(liquidator).call()
    v = _voucher(system, user, 1_000 * 10**6)
    # Anyone may submit; the collateral goes to the claim's liquidator.
    receipt = tx(system.vault.functions.settleRemoteSeize(v, _sign(system, v)), system.accounts[5])
    seized = 35 * E18 // 100  # 1,000 USD + 5% bonus = 1,050 USD of WETH at 3,000
    assert system.vault.functions.collateralOf(user, system.dep.tokens[WETH]).call() == E18 - seized
    assert weth.functions.balanceOf(liquidator).call() - before == seized
    (ev,) = events(system.vault, "RemoteSeizeSettled", receipt)
    assert (ev.account, ev.liquidator, ev.seized, ev.repaid) == (user, liquidator, seized, 10**9)
    assert system.vault.functions.settled(v[0]).call()
    again = system.vault.functions.settleRemoteSeize(v, _sign(system, v))
    assert revert_reason(again, system.accounts[5]) == f"AlreadySettled(0x{'01' * 32})"


def test_settlement_is_capped_by_the_balance(system: System) -> None:
    user = system.accounts[3]
    deposit(system, user, WETH, E18 // 10)  # 300 USD
    v = _voucher(system, user, 1_000 * 10**6)
    receipt = tx(system.vault.functions.settleRemoteSeize(v, _sign(system, v)), system.accounts[6])
    assert events(system.vault, "RemoteSeizeSettled", receipt)[0].seized == E18 // 10
    assert system.vault.functions.collateralOf(user, system.dep.tokens[WETH]).call() == 0


def test_settlement_needs_a_keeper_signature_of_this_exact_voucher(system: System) -> None:
    user = system.accounts[3]
    deposit(system, user, WETH, E18)
    v = _voucher(system, user, 1_000 * 10**6)
    stranger = Account.from_key(DEV_KEYS[7])
    forged = system.vault.functions.settleRemoteSeize(v, _sign(system, v, DEV_KEYS[7]))
    assert (
        revert_reason(forged, system.accounts[6]) == f"NotKeeperSigned({stranger.address.lower()})"
    )
    # A signature of one voucher does not settle another (more repaid, another liquidator).
    sig = _sign(system, v)
    bigger = (*v[:5], 2_000 * 10**6)
    assert revert_reason(
        system.vault.functions.settleRemoteSeize(bigger, sig), system.accounts[6]
    ).startswith("NotKeeperSigned(")
    thief = (v[0], v[1], system.accounts[5], *v[3:])
    assert revert_reason(
        system.vault.functions.settleRemoteSeize(thief, sig), system.accounts[6]
    ).startswith("NotKeeperSigned(")
    # A keeper the owner removed no longer signs.
    tx(system.registry.functions.setKeeper(system.keeper, False), system.owner)
    assert revert_reason(
        system.vault.functions.settleRemoteSeize(v, sig), system.accounts[6]
    ).startswith("NotKeeperSigned(")
    assert system.vault.functions.collateralOf(user, system.dep.tokens[WETH]).call() == E18


def test_settlement_of_unlisted_tokens_reverts(system: System) -> None:
    user = system.accounts[3]
    deposit(system, user, WETH, E18)
    v = _voucher(system, user, 10**6)
    not_debt = (*v[:4], system.accounts[8], v[5])
    assert (
        revert_reason(
            system.vault.functions.settleRemoteSeize(not_debt, _sign(system, not_debt)),
            system.accounts[6],
        )
        == f"UnknownDebtAsset({system.accounts[8].lower()})"
    )
    not_coll = (*v[:3], system.accounts[8], *v[4:])
    assert (
        revert_reason(
            system.vault.functions.settleRemoteSeize(not_coll, _sign(system, not_coll)),
            system.accounts[6],
        )
        == f"UnknownCollateral({system.accounts[8].lower()})"
    )
