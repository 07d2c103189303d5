"""Token, LST-rate and ERC-4626 mocks behave like the interfaces the oracles read."""

from __future__ import annotations

import pytest

from chains.contracts import deploy
from tests.contract.conftest import System, revert_reason, tx


@pytest.mark.parametrize(
    ("symbol", "getter", "start"),
    [("wstETH", "stEthPerToken", 118 * 10**16), ("rETH", "getExchangeRate", 110 * 10**16)],
)
def test_lst_rate_getters_and_owner_only_setrate(
    system: System, symbol: str, getter: str, start: int
) -> None:
    token = system.token(symbol)
    assert getattr(token.functions, getter)().call() == start
    assert token.functions.decimals().call() == 18
    tx(token.functions.setRate(start + 1), system.owner)
    assert getattr(token.functions, getter)().call() == start + 1
    stranger = system.accounts[7]
    assert revert_reason(token.functions.setRate(1), stranger).startswith(
        "OwnableUnauthorizedAccount("
    )


def test_cbeth_mock(system: System) -> None:
    from chains.contracts import contract

    addr = deploy(system.w3, "MockCbETH", sender=system.owner)
    cb = contract(system.w3, "MockCbETH", addr)
    assert cb.functions.exchangeRate().call() == 10**18
    tx(cb.functions.setRate(107 * 10**16), system.owner)
    assert cb.functions.exchangeRate().call() == 107 * 10**16
    assert cb.functions.symbol().call() == "cbETH"


@pytest.mark.parametrize(("symbol", "decimals"), [("USDC", 6), ("WBTC", 8), ("WETH", 18)])
def test_erc20_decimals_and_owner_mint(system: System, symbol: str, decimals: int) -> None:
    token = system.token(symbol)
    assert token.functions.decimals().call() == decimals
    assert revert_reason(
        token.functions.mint(system.accounts[7], 1), system.accounts[7]
    ).startswith("OwnableUnauthorizedAccount(")


def test_erc4626_rate_moves_when_underlying_is_donated(system: System) -> None:
    from chains.contracts import contract

    weth = system.token("WETH")
    addr = deploy(
        system.w3, "MockERC4626Vault", weth.address, "Vault WETH", "vWETH", sender=system.owner
    )
    vault = contract(system.w3, "MockERC4626Vault", addr)
    one = 10 ** vault.functions.decimals().call()
    user = system.accounts[2]
    tx(weth.functions.mint(user, 10 * 10**18), system.owner)
    tx(weth.functions.approve(addr, 10 * 10**18), user)
    tx(vault.functions.deposit(10 * 10**18, user), user)
    before = vault.functions.convertToAssets(one).call()
    tx(weth.functions.mint(addr, 10**18), system.owner)  # yield accrues to the vault
    after = vault.functions.convertToAssets(one).call()
    assert after > before
    assert after == pytest.approx(before * 11 // 10, rel=1e-6)


def test_mock_feed_round_data(system: System) -> None:
    feed = system.feed("WETH")
    assert feed.functions.decimals().call() == 8
    round_id, answer, _started, updated, _ = feed.functions.latestRoundData().call()
    assert answer == 3_000 * 10**8
    tx(feed.functions.updateRoundData(round_id + 5, 1, 1_000, 999), system.owner)
    _, answer, started, updated, _ = feed.functions.latestRoundData().call()
    assert (answer, started, updated) == (1, 999, 1_000)
