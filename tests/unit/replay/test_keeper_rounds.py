"""The keeper's waiting and drain paths against a fake daemon API and chain: an
account the daemon rates liquidatable waits while the registry entry the vault would
check is not yet tier >= 2 (nothing is sent), and is liquidated by a drain round once
the pusher's entry lands."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web
from eth_abi import encode
from eth_utils import function_signature_to_4byte_selector
from loopback import serving

from aggregator.replay import _drain
from chains.registry_codec import RegistryEntry, pack_slot
from devkit.manager import DevnetState
from devkit.replay import keeper

ACCOUNT = "0x" + "ab" * 20
VAULT, REGISTRY, USDC, WETH = ("0x" + c * 40 for c in "1234")
NOW = 1_800_000_000


@dataclass
class Chain:
    """Fake alpha: the registry entry's tier, what was sent."""

    tier: int = 1
    flip_after: int | None = None  # entryOf reads before the tier becomes 2
    reads: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)
    debt_held: int = 10**30  # the vault's debtOf (USDC units): the view's 3,900 by default
    # A mined liquidation's status, and the revert data its trace gives when it is 0.
    mined_status: int = 1
    revert_data: str | None = None
    # Reads whose connection is dropped on every try: "debt" (debtOf), "simulate".
    dropped: set[str] = field(default_factory=set)

    def drops(self, method: str, params: list[Any]) -> bool:
        if method != "eth_call":
            return False
        to, data = params[0]["to"].lower(), params[0]["data"]
        if to != VAULT:
            return False
        if data.startswith("0x" + keeper.SEL_DEBT_OF.hex()):
            return "debt" in self.dropped
        if data.startswith("0x" + keeper.SEL_MAX_AGE.hex()):
            return False
        return "simulate" in self.dropped

    def call(self, to: str, data: str) -> str:
        if to == VAULT and data.startswith("0x" + keeper.SEL_MAX_AGE.hex()):
            return "0x" + encode(["uint256"], [900]).hex()
        if to == VAULT and data.startswith("0x" + keeper.SEL_DEBT_OF.hex()):
            return "0x" + encode(["uint256"], [self.debt_held]).hex()
        if to == REGISTRY:
            self.reads += 1
            if self.flip_after is not None and self.reads > self.flip_after:
                self.tier = 2
            e = RegistryEntry(credit_usd6=0, hf_1e9=900_000_000, as_of=NOW - 5, tier=self.tier)
            return "0x" + pack_slot(e).to_bytes(32, "big").hex()
        return "0x"  # the liquidate simulation: no revert

    def answer(self, method: str, params: list[Any]) -> Any:
        if method == "eth_call":
            return self.call(params[0]["to"].lower(), params[0]["data"])
        if method == "eth_getBlockByNumber":
            return {"timestamp": hex(NOW)}
        if method == "eth_sendTransaction":
            self.sent.append(params[0])
            return "0x" + "cd" * 32
        if method == "eth_getTransactionReceipt":
            data = encode(["uint256", "address", "uint256"], [10**18, USDC, 500 * 10**6])
            log = {"topics": [keeper.LIQUIDATED_TOPIC], "data": "0x" + data.hex()}
            return {"status": hex(self.mined_status), "logs": [log] * self.mined_status}
        if method == "debug_traceTransaction":
            if self.revert_data == "oog":
                return {"type": "CALL", "error": "out of gas"}
            return {"type": "CALL", "output": self.revert_data} if self.revert_data else None
        raise AssertionError(method)


VIEW = {
    "account": ACCOUNT,
    "liquidation": {"kind": "partial", "chain": "alpha", "asset": "WETH", "repay_usd": 500.0},
    "positions": {
        "alpha": [
            {"side": "collateral", "asset": "WETH", "counted": "2000000000000000000",
             "amount": "2", "value_usd": 4000.0},
            {"side": "debt", "asset": "USDC", "counted": "3900000000", "amount": "3900",
             "value_usd": 3900.0},
        ]
    },
}  # fmt: skip


@dataclass
class FakeDeployment:
    vault: str = VAULT
    registry: str = REGISTRY
    tokens: dict[str, str] = field(default_factory=lambda: {"USDC": USDC, "WETH": WETH})


@dataclass
class FakeState:
    base: str
    accounts: dict[str, Any] = field(default_factory=lambda: {"liquidator": "0x" + "66" * 20})
    deployments: dict[str, FakeDeployment] = field(
        default_factory=lambda: {"alpha": FakeDeployment()}
    )

    def url(self, chain: str) -> str:
        return f"{self.base}/rpc/{chain}"


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, Chain]]:
    chain = Chain()

    async def accounts(req: web.Request) -> web.Response:
        tier = req.query["tier"]
        rows = [{"account": ACCOUNT}] if tier == "liquidatable" else []
        return web.json_response({"accounts": rows, "next_cursor": None})

    async def account(_req: web.Request) -> web.Response:
        return web.json_response(VIEW)

    async def rpc(req: web.Request) -> web.Response:
        body = await req.json()
        if chain.drops(body["method"], body["params"]) and req.transport is not None:
            req.transport.close()  # the client sees a dropped connection
        return web.json_response(
            {"jsonrpc": "2.0", "id": 1, "result": chain.answer(body["method"], body["params"])}
        )

    app = web.Application()
    app.router.add_get("/v1/accounts", accounts)
    app.router.add_get("/v1/accounts/{a}", account)
    app.router.add_post("/rpc/{chain}", rpc)
    async with serving(app) as url:
        yield url, chain


async def test_waits_for_the_registry_then_liquidates(served: tuple[str, Chain]) -> None:
    base, chain = served
    state = cast(DevnetState, FakeState(base))
    async with aiohttp.ClientSession() as session:
        k = keeper.Keeper(state, base, session)
        await k.round(0)
        assert k.waiting == {ACCOUNT}
        assert k.stats.waits == {"registry_tier": 1}
        assert chain.sent == [] and k.stats.liquidations == []
        # The pusher's entry lands after two more reads: the drain keeps rounding
        # (feeds held) until the account is liquidated, then stops.
        chain.flip_after = chain.reads + 2
        await asyncio.wait_for(_drain(k, 7, asyncio.Event()), 30)
        assert k.waiting == set()
        assert len(chain.sent) == 1 and chain.sent[0]["to"] == VAULT
        [liq] = k.stats.liquidations
        assert (liq.step, liq.account, liq.debt, liq.collateral) == (7, ACCOUNT, "USDC", "WETH")
        assert liq.repaid_raw == 500 * 10**6 and liq.repaid_usd == pytest.approx(500.0)
        assert k.stats.waits["registry_tier"] >= 2
        assert not k.stats.failures


def _repay_of(tx: dict[str, Any]) -> int:
    """The repay argument of a liquidate(account, debtToken, repay, collateral) call."""
    return int(tx["data"][2 + 8 + 2 * 64 : 2 + 8 + 3 * 64], 16)


async def test_the_repay_is_capped_at_the_vaults_debt_when_the_view_trails_it(
    served: tuple[str, Chain],
) -> None:
    base, chain = served
    chain.tier = 2
    chain.debt_held = 300 * 10**6  # a liquidation mined a block ago left 300 USDC
    async with aiohttp.ClientSession() as session:
        k = keeper.Keeper(cast(DevnetState, FakeState(base)), base, session)
        await k.round(1)
    [tx] = chain.sent
    assert _repay_of(tx) == 300 * 10**6  # the plan's 500 USD, cut to what the vault holds
    assert k.stats.capped_to_vault_debt == 1 and not k.stats.failures


async def test_nothing_is_sent_when_the_vault_holds_no_debt_any_more(
    served: tuple[str, Chain],
) -> None:
    base, chain = served
    chain.tier, chain.debt_held = 2, 0
    async with aiohttp.ClientSession() as session:
        k = keeper.Keeper(cast(DevnetState, FakeState(base)), base, session)
        await k.round(1)
    assert chain.sent == [] and k.stats.failures == {"debt_repaid": 1}


async def test_a_mined_revert_is_counted_by_its_traced_error(served: tuple[str, Chain]) -> None:
    base, chain = served
    chain.tier, chain.mined_status = 2, 0
    # NotLiquidatable(address,uint8): the pusher's entry mined first in the same block.
    chain.revert_data = (
        "0x"
        + (
            function_signature_to_4byte_selector("NotLiquidatable(address,uint8)")
            + encode(["address", "uint8"], [ACCOUNT, 1])
        ).hex()
    )
    async with aiohttp.ClientSession() as session:
        k = keeper.Keeper(cast(DevnetState, FakeState(base)), base, session)
        await k.round(1)
        assert k.stats.failures == {"reverted: NotLiquidatable": 1}
        chain.revert_data = "oog"  # no revert data: the trace's own error
        await k.round(2)
        assert k.stats.failures["reverted: out of gas"] == 1
        chain.revert_data = None  # a node without traces: plain "reverted"
        await k.round(3)
    assert k.stats.failures["reverted"] == 1 and not k.stats.liquidations


@pytest.mark.parametrize(
    ("dropped", "counted"), [("debt", "debt_read"), ("simulate", "simulate_read")]
)
async def test_a_failed_read_before_the_send_is_counted_as_that_read_not_as_a_send(
    served: tuple[str, Chain], dropped: str, counted: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, chain = served
    chain.tier = 2
    chain.dropped = {dropped}
    monkeypatch.setattr(keeper, "RPC_BACKOFF_S", 0.001)
    async with aiohttp.ClientSession() as session:
        k = keeper.Keeper(cast(DevnetState, FakeState(base)), base, session)
        await k.round(1)
        assert chain.sent == [] and k.stats.failures == {counted: 1}
        chain.dropped = set()  # the node is back: the next round liquidates
        await k.round(2)
    assert len(chain.sent) == 1 and len(k.stats.liquidations) == 1


async def test_an_account_with_nothing_to_seize_is_one_failure_and_idle_rounds(
    served: tuple[str, Chain], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Debt left and no collateral anywhere (bad debt): rated liquidatable every round,
    counted once as a failure and every round as idle; nothing is sent."""
    base, chain = served
    chain.tier = 2
    # The portfolio model's view: no plan (the keeper's close-factor fallback sizes it).
    bare = {"account": ACCOUNT, "positions": {"alpha": [VIEW["positions"]["alpha"][1]]}}
    monkeypatch.setitem(globals(), "VIEW", bare)
    async with aiohttp.ClientSession() as session:
        k = keeper.Keeper(cast(DevnetState, FakeState(base)), base, session, 0.5)
        for step in range(3):
            await k.round(step)
    assert chain.sent == []
    assert k.stats.failures == {"no_collateral": 1}
    assert k.stats.idle_rounds == {"no_collateral": 3}
    assert k.stats.account_failures[ACCOUNT] == {"no_collateral": 3}
