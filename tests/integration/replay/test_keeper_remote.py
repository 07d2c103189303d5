"""The replay's keeper liquidates a cross-chain borrower on the devnet, through the live
daemon: 10 WETH collateral on beta, USDC debt on alpha; a WETH drop makes it
liquidatable and the pusher puts tier >= 2 on alpha's registry; the keeper repays on
alpha with `liquidateRemote` naming beta's WETH, asks the daemon for the voucher until
the claim is final, settles on beta, and records one remote liquidation whose figures
are what the vaults and tokens show (seized checked against the feeds and the bonus)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from eth_abi import encode as abi_encode

from aggregator.config import AppConfig
from aggregator.daemon import Daemon
from chains.registry_codec import HF_INFINITE, unpack_slot
from chains.rpc import selector
from devkit import manager
from devkit.anvil import DEV_KEYS, rpc_call
from devkit.deploy import feed_answer, to_raw
from devkit.replay import keeper
from devkit.testing.daemons import devnet_config, running
from devkit.testing.harness import ACCOUNTS, transact

pytestmark = pytest.mark.timeout(300)

USER = ACCOUNTS[7]  # not used by the devnet seed


def data(sig: str, types: list[str], args: list[Any]) -> str:
    return "0x" + (selector(sig) + abi_encode(types, args)).hex()


def send(url: str, sender: str, to: str, sig: str, types: list[str], args: list[Any]) -> str:  # noqa: PLR0917
    return transact(url, sender, to, sig, types, args, gas=600_000)


def view(url: str, to: str, sig: str, types: list[str], args: list[Any]) -> int:
    return int(str(rpc_call(url, "eth_call", [{"to": to, "data": data(sig, types, args)},
                                              "latest"])), 16)  # fmt: skip


def entry_of(devnet: manager.DevnetState, chain: str) -> tuple[int, int, float]:
    """(credit USD6, tier, HF) of USER's entry on `chain` ((0, 0, inf) when empty)."""
    dep = devnet.deployments[chain]
    slot = view(devnet.url(chain), dep.registry, "entryOf(address)", ["address"], [USER])
    if slot == 0:
        return 0, 0, math.inf
    e = unpack_slot(slot)
    hf = math.inf if e.hf_1e9 == HF_INFINITE else e.hf_1e9 / 1e9
    return e.credit_usd6, e.tier, hf


async def until(check: Any, within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(check):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"not within {within_s:.0f} s: {what}")


@pytest.fixture
async def daemon(
    devnet: manager.DevnetState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Daemon]:
    monkeypatch.setenv("AGG_KEEPER_KEY", DEV_KEYS[1])  # pushes and signs the vouchers

    def edit(base: AppConfig) -> dict[str, Any]:
        return {
            "pusher": base.pusher.model_copy(update={"interval_s": 1.0}),
            "scheduler": base.scheduler.model_copy(update={"oracle_interval_s": 1.0}),
        }

    async with running(devnet_config(devnet, tmp_path, edit)) as d:
        yield d


async def test_the_keeper_liquidates_a_cross_chain_borrower_through_a_voucher(
    devnet: manager.DevnetState, daemon: Daemon
) -> None:
    alpha, beta = devnet.deployments["alpha"], devnet.deployments["beta"]
    a_url, b_url = devnet.url("alpha"), devnet.url("beta")
    deployer, liquidator = devnet.accounts["deployer"], devnet.accounts["liquidator"]
    u2 = ["address", "uint256"]
    weth = to_raw(10, 18)
    for to, sig, args in (
        (beta.tokens["WETH"], "mint(address,uint256)", [USER, weth]),
        (beta.tokens["WETH"], "approve(address,uint256)", [beta.vault, weth]),
        (beta.vault, "deposit(address,uint256)", [beta.tokens["WETH"], weth]),
    ):
        sender = deployer if sig.startswith("mint") else USER
        await asyncio.to_thread(send, b_url, sender, to, sig, u2, args)
    await until(lambda: entry_of(devnet, "alpha")[0] > 0, 60, "credit pushed to alpha")
    # Borrow 90% of alpha's credit: debt on alpha only, collateral on beta only.
    debt = entry_of(devnet, "alpha")[0] * 9 // 10
    await asyncio.to_thread(send, a_url, USER, alpha.vault, "borrow(address,uint256)", u2,
                            [alpha.tokens["USDC"], debt])  # fmt: skip
    await asyncio.to_thread(keeper.prepare, devnet)
    await until(lambda: entry_of(devnet, "alpha")[2] < math.inf, 60, "HF pushed to alpha")
    # WETH down on every feed to where the pushed HF would be about 0.92, still solvent
    # (HF is about linear in the price of a lone collateral): tier >= 2 on alpha.
    price = view(b_url, beta.feeds["WETH"], "latestAnswer()", [], []) / 1e8
    low = [feed_answer(round(price * 0.92 / entry_of(devnet, "alpha")[2], 2))]
    for c in manager.INDEXED_CHAINS:
        feed = devnet.deployments[c].feeds["WETH"]
        await asyncio.to_thread(send, devnet.url(c), deployer, feed, "updateAnswer(int256)",
                                ["int256"], low)  # fmt: skip
    await until(lambda: entry_of(devnet, "alpha")[1] >= 2, 60, "tier >= 2 on alpha")

    liq_weth = ("balanceOf(address)", ["address"], [liquidator])
    held = ("collateralOf(address,address)", u2[:1] * 2, [USER, beta.tokens["WETH"]])
    owed = ("debtOf(address,address)", u2[:1] * 2, [USER, alpha.tokens["USDC"]])
    weth_before = await asyncio.to_thread(view, b_url, beta.tokens["WETH"], *liq_weth)
    held_before = await asyncio.to_thread(view, b_url, beta.vault, *held)
    debt_before = await asyncio.to_thread(view, a_url, alpha.vault, *owed)

    async with aiohttp.ClientSession() as session:
        k = keeper.Keeper(devnet, f"http://127.0.0.1:{daemon.api.port}", session)
        deadline, step = time.monotonic() + 120, 0
        while time.monotonic() < deadline:
            await k.round(step)
            step += 1
            if any(x.account == USER for x in k.stats.liquidations):
                break
            await asyncio.sleep(1.0)
    mine = [x for x in k.stats.liquidations if x.account == USER]
    assert len(mine) == 1, (k.stats.failures, k.stats.claim_waits, k.stats.waits)
    [liq] = mine
    assert (liq.chain, liq.remote_from, liq.debt, liq.collateral) == ("beta", "alpha", "USDC",
                                                                      "WETH")  # fmt: skip
    assert liq.claim_id and liq.claim_tx and liq.settled_step is not None
    assert USER not in k.claims and not [c for c in k.stats.pending_claims if c.account == USER]
    assert not k.stats.account_failures.get(USER), k.stats.account_failures
    # The figures are the chains': debt repaid on alpha, collateral moved on beta.
    assert await asyncio.to_thread(view, a_url, alpha.vault, *owed) == debt_before - liq.repaid_raw
    assert await asyncio.to_thread(view, b_url, beta.vault, *held) == held_before - liq.seized_raw
    got = await asyncio.to_thread(view, b_url, beta.tokens["WETH"], *liq_weth) - weth_before
    assert got == liq.seized_raw > 0
    # Independent reference: the repaid USD at beta's USDC feed, plus WETH's bonus, at
    # beta's WETH feed (HF 0.92, solvent: below the balance, no cap).
    usdc_px = await asyncio.to_thread(view, b_url, beta.feeds["USDC"], "latestAnswer()", [], [])
    weth_px = await asyncio.to_thread(view, b_url, beta.feeds["WETH"], "latestAnswer()", [], [])
    bonus = daemon.cfg.asset("WETH").liquidation_bonus
    expected = liq.repaid_raw / 1e6 * (usdc_px / 1e8) * (1 + bonus) / (weth_px / 1e8) * 1e18
    print(f"\nremote liquidation: repaid {liq.repaid_raw / 1e6:,.2f} USDC, seized "
          f"{liq.seized_raw / 1e18:.4f} WETH in {k.stats.rounds} rounds")  # fmt: skip
    assert expected < held_before
    assert liq.seized_raw == pytest.approx(expected, rel=1e-6)
