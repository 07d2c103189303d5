"""Cross-chain seize end to end on the devnet, through the daemon's API: collateral on
beta, debt on alpha; the account is liquidatable on alpha (the registry entry driven by
the keeper account, as the contract tests do: the daemon's pusher runs dry so it does
not race the test's entries); a liquidator repays on alpha with liquidateRemote; the
voucher is refused (409) until the claim is alpha's `confirmations` deep, then signed
(200); settleRemoteSeize on beta moves the collateral to the liquidator, once; a voucher
signed by another key is refused by the vault. Meanwhile the ledger holds the claim
(docs/risk.md "the pending-claim hold"): from the claim's indexing to the settlement's,
the account's alpha USDC debt counts X + bR, and after it X - R with the seized WETH
gone from beta."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from eth_abi import encode as abi_encode

from aggregator.claim_holds import bonus_bps, hold_amount
from aggregator.config import AppConfig
from aggregator.daemon import Daemon
from chains.claims import SeizeVoucher, voucher_typed_data
from chains.contracts import decode_error
from chains.pusher.keys import key_from_hex
from chains.registry_codec import RegistryEntry, pack_batch
from chains.rpc import selector
from chains.units import decimal_text
from devkit import manager
from devkit.anvil import DEV_KEYS, rpc_call
from devkit.deploy import to_raw
from devkit.testing.daemons import devnet_config, running
from devkit.testing.harness import ACCOUNTS, transact

pytestmark = pytest.mark.timeout(240)

USER, LIQUIDATOR = ACCOUNTS[7], ACCOUNTS[8]  # not used by the devnet seed
CONFIRMATIONS = 20  # alpha's, raised so the 409 cannot race the 1 s block time
VOUCHER = "(bytes32,address,address,address,address,uint256)"


def data(sig: str, types: list[str], args: list[Any]) -> str:
    return "0x" + (selector(sig) + abi_encode(types, args)).hex()


def send(url: str, sender: str, to: str, sig: str, types: list[str], args: list[Any]) -> str:  # noqa: PLR0917
    return transact(url, sender, to, sig, types, args)


def revert_of(url: str, sender: str, to: str, sig: str, types: list[str], args: list[Any]) -> str:  # noqa: PLR0917
    """The decoded custom error of an eth_call that must revert."""
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_call",
            "params": [{"from": sender, "to": to, "data": data(sig, types, args)}, "latest"],
        }
    ).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        answer = json.loads(resp.read())
    assert "error" in answer, f"{sig} did not revert"
    return decode_error(answer["error"].get("data") or "0x")


def view(url: str, to: str, sig: str, types: list[str], args: list[Any]) -> int:
    return int(
        str(rpc_call(url, "eth_call", [{"to": to, "data": data(sig, types, args)}, "latest"])), 16
    )


def post(d: Daemon, path: str) -> tuple[int, Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{d.api.port}{path}", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            body, status = resp.read(), resp.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    return status, json.loads(body)


def get(d: Daemon, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{d.api.port}{path}", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def counted(view: dict[str, Any], chain: str, asset: str, side: str) -> int:
    rows = view["positions"].get(chain, [])
    return sum(int(r["counted"]) for r in rows if r["asset"] == asset and r["side"] == side)


async def account_when(d: Daemon, ok: Any, what: str, timeout: float = 60) -> dict[str, Any]:
    """GET /v1/accounts/USER until `ok(view)`; fails naming `what` and the last view."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        status, last = await asyncio.to_thread(get, d, f"/v1/accounts/{USER}")
        if status == 200 and ok(last):
            return dict(last)
        await asyncio.sleep(0.3)
    raise AssertionError(f"no account view with {what}: {last}")


@pytest.fixture
async def daemon(
    devnet: manager.DevnetState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Daemon]:
    monkeypatch.setenv("AGG_KEEPER_KEY", DEV_KEYS[1])

    def edit(base: AppConfig) -> dict[str, Any]:
        return {
            "chains": [
                c.model_copy(update={"confirmations": CONFIRMATIONS}) if c.name == "alpha" else c
                for c in base.chains
            ],
            # The key is loaded and signs vouchers; no registry update is sent.
            "pusher": base.pusher.model_copy(update={"dry_run": True}),
        }

    async with running(devnet_config(devnet, tmp_path, edit)) as d:
        yield d


def push_entry(url: str, registry: str, keeper: str, tier: int, as_of: int) -> None:
    batch = pack_batch([(USER, RegistryEntry(10**12, 9 * 10**8, as_of, tier))])
    send(url, keeper, registry, "update(bytes)", ["bytes"], [batch])


def chain_time(url: str) -> int:
    return int(rpc_call(url, "eth_getBlockByNumber", ["latest", False])["timestamp"], 16)


def setup_liquidatable(devnet: manager.DevnetState) -> None:
    """10 WETH collateral on beta; 3000 USDC debt on alpha; tier 2 on alpha's registry."""
    alpha, beta = devnet.deployments["alpha"], devnet.deployments["beta"]
    a_url, b_url = devnet.nodes["alpha"].url, devnet.nodes["beta"].url
    deployer, keeper = devnet.accounts["deployer"], devnet.accounts["keeper"]
    weth = to_raw(10, 18)
    u2 = ["address", "uint256"]
    send(b_url, deployer, beta.tokens["WETH"], "mint(address,uint256)", u2, [USER, weth])
    send(b_url, USER, beta.tokens["WETH"], "approve(address,uint256)", u2, [beta.vault, weth])
    send(b_url, USER, beta.vault, "deposit(address,uint256)", u2, [beta.tokens["WETH"], weth])
    t = chain_time(a_url)
    push_entry(a_url, alpha.registry, keeper, 0, t - 30)
    usdc = alpha.tokens["USDC"]
    send(a_url, USER, alpha.vault, "borrow(address,uint256)", u2, [usdc, to_raw(3000, 6)])
    push_entry(a_url, alpha.registry, keeper, 2, t - 20)


async def test_voucher_after_finality_settles_once_on_the_collateral_chain(
    devnet: manager.DevnetState, daemon: Daemon
) -> None:
    alpha, beta = devnet.deployments["alpha"], devnet.deployments["beta"]
    a_url, b_url = devnet.nodes["alpha"].url, devnet.nodes["beta"].url
    deployer = devnet.accounts["deployer"]
    await asyncio.to_thread(setup_liquidatable, devnet)
    usdc_a, weth_b = alpha.tokens["USDC"], beta.tokens["WETH"]
    repay = to_raw(1500, 6)
    u2 = ["address", "uint256"]
    await asyncio.to_thread(
        send, a_url, deployer, usdc_a, "mint(address,uint256)", u2, [LIQUIDATOR, repay]
    )
    await asyncio.to_thread(
        send, a_url, LIQUIDATOR, usdc_a, "approve(address,uint256)", u2, [alpha.vault, repay]
    )
    tx_hash = await asyncio.to_thread(
        send,
        a_url,
        LIQUIDATOR,
        alpha.vault,
        "liquidateRemote(address,address,uint256,uint256,address)",
        ["address", "address", "uint256", "uint256", "address"],
        [USER, usdc_a, repay, beta.chain_id, weth_b],
    )
    path = f"/v1/claims/alpha/{tx_hash}"
    debt_x = to_raw(3000, 6)
    bps = bonus_bps(a.liquidation_bonus for a in daemon.cfg.assets)
    held = await account_when(daemon, lambda v: v["pending_claims"], "the claim held")
    (pending,) = held["pending_claims"]
    assert (pending["chain"], pending["asset"], pending["repaid"]) == ("alpha", "USDC", "1500")
    assert pending["held"] == decimal_text(hold_amount(repay, bps), 6)
    # X + bR: the repaid debt is replaced by what the account owes the liquidator.
    assert counted(held, "alpha", "USDC", "debt") == debt_x - repay + hold_amount(repay, bps)
    assert daemon.metrics.registry.get_sample_value("agg_seize_claims_pending") == 1

    status, body = await asyncio.to_thread(post, daemon, path)
    assert status == 409, body
    assert body["error"] == "claim not final" and body["needed"] == CONFIRMATIONS
    assert 0 <= body["confirmations"] < CONFIRMATIONS and body["reorged"] is False

    await asyncio.to_thread(rpc_call, a_url, "anvil_mine", [hex(CONFIRMATIONS)])
    status, body = await asyncio.to_thread(post, daemon, path)
    assert status == 200, body
    (claim,) = body["claims"]
    assert (claim["source_chain"], claim["target_chain"]) == ("alpha", "beta")
    assert claim["vault"] == beta.vault
    v = claim["voucher"]
    assert v["account"] == USER and v["liquidator"] == LIQUIDATOR
    assert v["collateralToken"] == weth_b and v["debtToken"] == beta.tokens["USDC"]
    assert v["repaid"] == str(repay)
    struct = (
        bytes.fromhex(v["claimId"][2:]), v["account"], v["liquidator"], v["collateralToken"],
        v["debtToken"], int(v["repaid"]),
    )  # fmt: skip
    settle = ("settleRemoteSeize(" + VOUCHER + ",bytes)", [VOUCHER, "bytes"])
    signature = bytes.fromhex(claim["signature"][2:])

    # A voucher signed by a key that is not beta's keeper: refused.
    voucher = SeizeVoucher(
        v["claimId"], v["account"], v["liquidator"], v["collateralToken"], v["debtToken"],
        int(v["repaid"]),
    )  # fmt: skip
    forged = key_from_hex(DEV_KEYS[5], "not a keeper").sign_typed_data(
        voucher_typed_data(voucher, beta.chain_id, beta.vault)
    )
    reason = await asyncio.to_thread(
        revert_of, b_url, LIQUIDATOR, beta.vault, *settle, [struct, bytes.fromhex(forged[2:])]
    )
    assert reason.startswith("NotKeeperSigned"), reason

    balance = ("balanceOf(address)", ["address"], [LIQUIDATOR])
    before = await asyncio.to_thread(view, b_url, weth_b, *balance)
    held = ("collateralOf(address,address)", ["address", "address"], [USER, weth_b])
    held_before = await asyncio.to_thread(view, b_url, beta.vault, *held)
    # Anyone may submit; the collateral goes to the claim's liquidator.
    await asyncio.to_thread(send, b_url, deployer, beta.vault, *settle, [struct, signature])
    seized = await asyncio.to_thread(view, b_url, weth_b, *balance) - before
    # Independent reference: repaid USD (USDC feed) * (1 + WETH bonus) / WETH price.
    usdc_px = await asyncio.to_thread(view, b_url, beta.feeds["USDC"], "latestAnswer()", [], [])
    weth_px = await asyncio.to_thread(view, b_url, beta.feeds["WETH"], "latestAnswer()", [], [])
    bonus = daemon.cfg.asset("WETH").liquidation_bonus
    expected = repay / 10**6 * (usdc_px / 1e8) * (1 + bonus) / (weth_px / 1e8) * 1e18
    assert seized == pytest.approx(expected, rel=1e-6) and seized > 0
    assert await asyncio.to_thread(view, b_url, beta.vault, *held) == held_before - seized

    again = await asyncio.to_thread(
        revert_of, b_url, LIQUIDATOR, beta.vault, *settle, [struct, signature]
    )
    assert again.startswith("AlreadySettled"), again
    # The settlement indexed on beta releases the hold: X - R, and the WETH is gone.
    done = await account_when(daemon, lambda v: not v["pending_claims"], "the hold released")
    assert counted(done, "alpha", "USDC", "debt") == debt_x - repay
    assert daemon.metrics.registry.get_sample_value("agg_seize_claims_pending") == 0
    signed = daemon.metrics.registry.get_sample_value(
        "agg_seize_vouchers_total", {"outcome": "signed"}
    )
    assert signed == 1
    beta_weth = await account_when(
        daemon,
        lambda v: counted(v, "beta", "WETH", "collateral") == held_before - seized,
        "beta's WETH less the seizure",
    )
    assert not beta_weth["pending_claims"]
