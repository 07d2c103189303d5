"""CollateralVault: fail-closed borrow/withdraw, credit use, repay, liquidation, value math."""

from __future__ import annotations

import pytest

from tests.contract.conftest import System, events, fund, give_entry, revert_reason, tx

USDC, WBTC, WETH = "USDC", "WBTC", "WETH"
E18 = 10**18


def deposit(system: System, user: str, symbol: str, raw: int) -> None:
    fund(system, user, symbol, raw)
    tx(system.vault.functions.deposit(system.dep.tokens[symbol], raw), user)


def test_deposit_records_collateral_and_emits(system: System) -> None:
    user = system.accounts[2]
    fund(system, user, WETH, 2 * E18)
    receipt = tx(system.vault.functions.deposit(system.dep.tokens[WETH], 2 * E18), user)
    assert system.vault.functions.collateralOf(user, system.dep.tokens[WETH]).call() == 2 * E18
    ev = events(system.vault, "Deposited", receipt)
    assert [(e.account, e.token, e.amount) for e in ev] == [
        (user, system.dep.tokens[WETH], 2 * E18)
    ]


def test_deposit_of_unlisted_token_reverts(system: System) -> None:
    user = system.accounts[2]
    reason = revert_reason(system.vault.functions.deposit(system.dep.feeds[WETH], 1), user)
    assert reason == f"UnknownCollateral({system.dep.feeds[WETH].lower()})"


@pytest.mark.parametrize("action", ["borrow", "withdraw"])
def test_without_registry_entry_is_stale(system: System, action: str) -> None:
    user = system.accounts[2]
    deposit(system, user, WETH, E18)
    fn = getattr(system.vault.functions, action)
    token = system.dep.tokens[USDC if action == "borrow" else WETH]
    assert revert_reason(fn(token, 1), user) == f"Stale({user.lower()})"


@pytest.mark.parametrize("action", ["borrow", "withdraw"])
def test_expired_entry_is_stale_even_with_credit(system: System, action: str) -> None:
    user = system.accounts[2]
    deposit(system, user, WETH, E18)
    give_entry(system, user, 10**12)
    max_age = system.vault.functions.maxAge().call()
    system.warp(max_age + 1)
    fn = getattr(system.vault.functions, action)
    token = system.dep.tokens[USDC if action == "borrow" else WETH]
    assert revert_reason(fn(token, 1), user) == f"Stale({user.lower()})"


def test_borrow_consumes_usd_value_and_transfers(system: System) -> None:
    user = system.accounts[2]
    give_entry(system, user, 2_000 * 10**6)
    usdc = system.dep.tokens[USDC]
    receipt = tx(system.vault.functions.borrow(usdc, 1_000 * 10**6), user)
    assert system.registry.functions.creditOf(user).call() == 1_000 * 10**6
    assert system.vault.functions.debtOf(user, usdc).call() == 1_000 * 10**6
    assert system.token(USDC).functions.balanceOf(user).call() == 1_000 * 10**6
    assert [(e.account, e.amount) for e in events(system.vault, "Borrowed", receipt)] == [
        (user, 1_000 * 10**6)
    ]
    # 0.5 WETH at 3000 USD costs exactly 1500 USD of credit: only 1000 is left.
    reason = revert_reason(system.vault.functions.borrow(system.dep.tokens[WETH], E18 // 2), user)
    assert reason == f"InsufficientCredit({user.lower()}, {1_000 * 10**6}, {1_500 * 10**6})"


def test_borrow_of_non_debt_asset_reverts(system: System) -> None:
    user = system.accounts[2]
    give_entry(system, user, 10**12)
    reason = revert_reason(system.vault.functions.borrow(system.dep.tokens[WBTC], 1), user)
    assert reason.startswith("UnknownDebtAsset(")


def test_borrow_beyond_liquidity_reverts(system: System) -> None:
    user = system.accounts[2]
    give_entry(system, user, 2**127)
    usdc = system.dep.tokens[USDC]
    available = system.token(USDC).functions.balanceOf(system.dep.vault).call()
    reason = revert_reason(system.vault.functions.borrow(usdc, available + 1), user)
    assert reason == f"InsufficientLiquidity({usdc.lower()}, {available}, {available + 1})"


def test_withdraw_consumes_value_times_ltv(system: System) -> None:
    user = system.accounts[2]
    weth = system.dep.tokens[WETH]
    deposit(system, user, WETH, 2 * E18)
    # 1 WETH = 3000 USD; ltv 80% -> 2400 USD of credit.
    give_entry(system, user, 2_400 * 10**6 + 5)
    receipt = tx(system.vault.functions.withdraw(weth, E18), user)
    assert system.registry.functions.creditOf(user).call() == 5
    assert system.vault.functions.collateralOf(user, weth).call() == E18
    assert system.token(WETH).functions.balanceOf(user).call() == E18
    assert [(e.account, e.amount) for e in events(system.vault, "Withdrawn", receipt)] == [
        (user, E18)
    ]
    reason = revert_reason(system.vault.functions.withdraw(weth, E18), user)
    assert reason == f"InsufficientCredit({user.lower()}, 5, {2_400 * 10**6})"


def test_withdraw_more_than_deposited_reverts(system: System) -> None:
    user = system.accounts[2]
    weth = system.dep.tokens[WETH]
    deposit(system, user, WETH, E18)
    give_entry(system, user, 10**15)
    reason = revert_reason(system.vault.functions.withdraw(weth, E18 + 1), user)
    assert reason == f"InsufficientCollateral({user.lower()}, {weth.lower()}, {E18}, {E18 + 1})"


def test_anyone_can_repay(system: System) -> None:
    user, payer = system.accounts[2], system.accounts[6]
    usdc = system.dep.tokens[USDC]
    give_entry(system, user, 10**12)
    tx(system.vault.functions.borrow(usdc, 500 * 10**6), user)
    fund(system, payer, USDC, 200 * 10**6)
    receipt = tx(system.vault.functions.repay(user, usdc, 200 * 10**6), payer)
    assert system.vault.functions.debtOf(user, usdc).call() == 300 * 10**6
    ev = events(system.vault, "Repaid", receipt)
    assert [(e.account, e.token, e.amount, e.payer) for e in ev] == [
        (user, usdc, 200 * 10**6, payer)
    ]
    fund(system, payer, USDC, 301 * 10**6)
    reason = revert_reason(system.vault.functions.repay(user, usdc, 301 * 10**6), payer)
    assert (
        reason == f"RepayExceedsDebt({user.lower()}, {usdc.lower()}, {300 * 10**6}, {301 * 10**6})"
    )


def _borrower_with_debt(system: System) -> tuple[str, str, str]:
    user = system.accounts[2]
    deposit(system, user, WETH, E18)
    give_entry(system, user, 10**12)
    tx(system.vault.functions.borrow(system.dep.tokens[USDC], 2_000 * 10**6), user)
    return user, system.dep.tokens[USDC], system.dep.tokens[WETH]


@pytest.mark.parametrize("tier", [0, 1])
def test_liquidate_needs_liquidatable_tier(system: System, tier: int) -> None:
    user, usdc, weth = _borrower_with_debt(system)
    liquidator = system.accounts[6]
    give_entry(system, user, 0, tier=tier, hf=10**9)
    fund(system, liquidator, USDC, 10**9)
    reason = revert_reason(system.vault.functions.liquidate(user, usdc, 10**9, weth), liquidator)
    assert reason == f"NotLiquidatable({user.lower()}, {tier})"


def test_liquidate_with_stale_entry_reverts(system: System) -> None:
    user, usdc, weth = _borrower_with_debt(system)
    give_entry(system, user, 0, tier=2, hf=9 * 10**8)
    system.warp(system.vault.functions.maxAge().call() + 1)
    liquidator = system.accounts[6]
    fund(system, liquidator, USDC, 10**9)
    reason = revert_reason(system.vault.functions.liquidate(user, usdc, 10**9, weth), liquidator)
    assert reason == f"Stale({user.lower()})"


def test_liquidate_seizes_value_plus_bonus(system: System) -> None:
    user, usdc, weth = _borrower_with_debt(system)
    liquidator = system.accounts[6]
    give_entry(system, user, 0, tier=2, hf=9 * 10**8)
    fund(system, liquidator, USDC, 1_000 * 10**6)
    receipt = tx(system.vault.functions.liquidate(user, usdc, 1_000 * 10**6, weth), liquidator)
    # 1000 USD repaid, WETH bonus 5%: 1050 USD of WETH at 3000 = 0.35 WETH exactly.
    seized = 35 * E18 // 100
    assert system.vault.functions.collateralOf(user, weth).call() == E18 - seized
    assert system.vault.functions.debtOf(user, usdc).call() == 1_000 * 10**6
    assert system.token(WETH).functions.balanceOf(liquidator).call() >= seized
    ev = events(system.vault, "Liquidated", receipt)
    assert [
        (e.account, e.liquidator, e.collateralToken, e.seized, e.debtToken, e.repaid) for e in ev
    ] == [(user, liquidator, weth, seized, usdc, 1_000 * 10**6)]


def test_liquidate_seizure_is_capped_by_balance(system: System) -> None:
    user, usdc, weth = _borrower_with_debt(system)
    liquidator = system.accounts[6]
    tx(system.feed(WETH).functions.updateAnswer(1_000 * 10**8), liquidator)  # ETH crash
    give_entry(system, user, 0, tier=3, hf=5 * 10**8)
    fund(system, liquidator, USDC, 2_000 * 10**6)
    receipt = tx(system.vault.functions.liquidate(user, usdc, 2_000 * 10**6, weth), liquidator)
    assert events(system.vault, "Liquidated", receipt)[0].seized == E18
    assert system.vault.functions.collateralOf(user, weth).call() == 0
    assert system.vault.functions.debtOf(user, usdc).call() == 0


@pytest.mark.parametrize(
    ("symbol", "raw", "usd6"),
    [
        ("USDC", 1_234_567, 1_234_567),  # 6 decimals at 1.00000000
        ("USDC", 1, 1),
        ("WBTC", 1, 600),  # 1 sat at 60000 USD = 0.0006 USD
        ("WBTC", 12_345_678, 7_407_406_800),
        ("WETH", 10**18, 3_000_000_000),
        ("WETH", 333_333_333_333_333_333, 999_999_999),  # floored
        ("WETH", 10**11, 300),
        ("WETH", 10**8, 0),  # 0.3 micro-dollars, floored
    ],
)
def test_value_math_per_decimals(system: System, symbol: str, raw: int, usd6: int) -> None:
    assert system.vault.functions.valueOf(system.dep.tokens[symbol], raw).call() == usd6


def test_consumption_rounds_up(system: System) -> None:
    user = system.accounts[2]
    weth = system.dep.tokens[WETH]
    # 1e8 wei of WETH is worth 0.3 micro-dollars: the borrow still costs 1 unit.
    give_entry(system, user, 1)
    tx(system.vault.functions.borrow(weth, 10**8), user)
    assert system.registry.functions.creditOf(user).call() == 0
    reason = revert_reason(system.vault.functions.borrow(weth, 10**8), user)
    assert reason == f"InsufficientCredit({user.lower()}, 0, 1)"


@pytest.mark.parametrize("answer", [0, -1])
def test_non_positive_price_blocks_borrow(system: System, answer: int) -> None:
    user = system.accounts[2]
    give_entry(system, user, 10**12)
    tx(system.feed(USDC).functions.updateAnswer(answer), user)
    reason = revert_reason(system.vault.functions.borrow(system.dep.tokens[USDC], 1), user)
    assert reason == f"BadPrice({system.dep.feeds[USDC].lower()}, {answer})"


def test_only_owner_configures_vault(system: System) -> None:
    stranger = system.accounts[7]
    fns = [
        system.vault.functions.setMaxAge(1),
        system.vault.functions.setDebtAsset(system.dep.tokens[WBTC], system.dep.feeds[WBTC]),
        system.vault.functions.setCollateral(system.dep.tokens[WBTC], system.dep.feeds[WBTC], 1, 1),
    ]
    for fn in fns:
        assert revert_reason(fn, stranger).startswith("OwnableUnauthorizedAccount(")
    reason = revert_reason(
        system.vault.functions.setCollateral(
            system.dep.tokens[WBTC], system.dep.feeds[WBTC], 10_001, 0
        ),
        system.owner,
    )
    assert reason == "BadBps(10001)"
