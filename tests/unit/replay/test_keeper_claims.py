"""The keeper's cross-chain claims against a real aiohttp server on loopback playing
the daemon's API (voucher endpoint included) and two chains: a borrower whose debt is
on alpha and whose collateral is on beta is repaid on alpha with `liquidateRemote`
naming beta; the claim waits while the daemon answers 409, is settled on beta once it
answers 200, and is recorded once, from the settlement's event. A settlement someone
else already made (`AlreadySettled`) is recorded from beta's log, not counted as a
failure; other answers are failures retried up to a bound; a dropped connection to a
node is retried."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web
from eth_abi import decode, encode
from eth_utils import function_signature_to_4byte_selector
from loopback import serving

from aggregator.replay import _drain
from chains.registry_codec import RegistryEntry, pack_slot
from devkit.manager import DevnetState
from devkit.replay import keeper

ACCOUNT = "0x" + "ab" * 20
LIQUIDATOR = "0x" + "66" * 20
NOW = 1_800_000_000
CHAIN_IDS = {"alpha": 71001, "beta": 71002}
CLAIM_ID = "0x" + "c1" * 32
CLAIM_TX, SETTLE_TX = "0x" + "d1" * 32, "0x" + "e1" * 32
REPAID, SEIZED = 500 * 10**6, 26 * 10**16  # 500 USDC; 0.26 WETH (2,000 USD, 4% bonus)


def addr(chain: str, what: str) -> str:
    return "0x" + f"{CHAIN_IDS[chain]:08x}{what}".ljust(40, "0")


@dataclass
class FakeDeployment:
    chain: str
    chain_id: int = 0
    vault: str = ""
    registry: str = ""
    tokens: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.chain_id = CHAIN_IDS[self.chain]
        self.vault, self.registry = addr(self.chain, "1"), addr(self.chain, "2")
        self.tokens = {"USDC": addr(self.chain, "3"), "WETH": addr(self.chain, "4")}


DEPLOYMENTS = {c: FakeDeployment(c) for c in CHAIN_IDS}


@dataclass
class FakeState:
    base: str
    accounts: dict[str, Any] = field(default_factory=lambda: {"liquidator": LIQUIDATOR})
    deployments: dict[str, FakeDeployment] = field(default_factory=lambda: DEPLOYMENTS)

    def url(self, chain: str) -> str:
        return f"{self.base}/rpc/{chain}"


def log(topic: str, topics: list[str], data: bytes, tx: str) -> dict[str, Any]:
    return {"topics": [topic, *topics], "data": "0x" + data.hex(), "transactionHash": tx}


def claimed_log() -> dict[str, Any]:
    data = encode(["address", "uint256", "uint256", "address"],
                  [DEPLOYMENTS["alpha"].tokens["USDC"], REPAID, CHAIN_IDS["beta"],
                   DEPLOYMENTS["beta"].tokens["WETH"]])  # fmt: skip
    return log(keeper.CLAIMED_TOPIC, [CLAIM_ID], data, CLAIM_TX)


def settled_log() -> dict[str, Any]:
    beta = DEPLOYMENTS["beta"]
    data = encode(["address", "uint256", "address", "uint256"],
                  [beta.tokens["WETH"], SEIZED, beta.tokens["USDC"], REPAID])  # fmt: skip
    return log(keeper.SETTLED_TOPIC, [CLAIM_ID], data, SETTLE_TX)


ALREADY_SETTLED = (
    "0x"
    + (
        function_signature_to_4byte_selector("AlreadySettled(bytes32)")
        + bytes.fromhex(CLAIM_ID[2:])
    ).hex()
)


@dataclass
class World:
    """What the fake daemon and chains answer, and what they were sent."""

    # Voucher answers in turn (status, body); the last one repeats.
    vouchers: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    voucher_requests: list[str] = field(default_factory=list)
    settle_reverts: str | None = None  # revert data of the settlement's simulation
    drop_first: int = 0  # RPC requests whose connection is dropped (before answering)
    dropped: int = 0
    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    listed: bool = True
    claim_unmined: bool = False  # the liquidateRemote never mined (dropped from the pool)

    def call(self, chain: str, to: str, data: str) -> Any:
        dep = DEPLOYMENTS[chain]
        if to == dep.vault and data.startswith("0x" + keeper.SEL_MAX_AGE.hex()):
            return "0x" + encode(["uint256"], [900]).hex()
        if to == dep.vault and data.startswith("0x" + keeper.SEL_DEBT_OF.hex()):
            return "0x" + encode(["uint256"], [10**30]).hex()  # more than any repay here
        if to == dep.registry:
            e = RegistryEntry(credit_usd6=0, hf_1e9=900_000_000, as_of=NOW - 5, tier=2)
            return "0x" + pack_slot(e).to_bytes(32, "big").hex()
        if data.startswith("0x" + keeper.SEL_SETTLE.hex()) and self.settle_reverts:
            return {"code": 3, "message": "execution reverted", "data": self.settle_reverts}
        return "0x"

    def answer(self, chain: str, method: str, params: list[Any]) -> dict[str, Any]:
        def ok(result: Any) -> dict[str, Any]:
            return {"jsonrpc": "2.0", "id": 1, "result": result}

        if method == "eth_call":
            got = self.call(chain, params[0]["to"].lower(), params[0]["data"])
            return {"jsonrpc": "2.0", "id": 1, "error": got} if isinstance(got, dict) else ok(got)
        if method == "eth_getBlockByNumber":
            return ok({"timestamp": hex(NOW)})
        if method == "eth_sendTransaction":
            self.sent.append((chain, params[0]))
            return ok(CLAIM_TX if chain == "alpha" else SETTLE_TX)
        if method == "eth_getTransactionReceipt":
            if params[0] == CLAIM_TX and self.claim_unmined:
                return ok(None)
            logs = [claimed_log()] if params[0] == CLAIM_TX else [settled_log()]
            return ok({"status": "0x1", "logs": logs})
        if method == "eth_getLogs":
            return ok([settled_log()] if params[0]["topics"][1] == CLAIM_ID else [])
        raise AssertionError(method)


VIEW = {
    "account": ACCOUNT,
    "liquidation": {"kind": "partial", "chain": "beta", "asset": "WETH", "repay_usd": 500.0},
    "positions": {
        "alpha": [{"side": "debt", "asset": "USDC", "counted": "3900000000", "amount": "3900",
                   "value_usd": 3900.0}],
        "beta": [{"side": "collateral", "asset": "WETH", "counted": "2000000000000000000",
                  "amount": "2", "value_usd": 4000.0}],
    },
}  # fmt: skip


def voucher_body() -> dict[str, Any]:
    beta = DEPLOYMENTS["beta"]
    return {"claims": [{
        "claim_id": CLAIM_ID, "source_chain": "alpha", "target_chain": "beta",
        "block_number": 12, "vault": beta.vault,
        "voucher": {"claimId": CLAIM_ID, "account": ACCOUNT, "liquidator": LIQUIDATOR,
                    "collateralToken": beta.tokens["WETH"], "debtToken": beta.tokens["USDC"],
                    "repaid": str(REPAID)},
        "signature": "0x" + "5a" * 65,
    }]}  # fmt: skip


NOT_FINAL = (409, {"error": "claim not final", "confirmations": 1, "needed": 2})


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, World]]:
    world = World()

    async def accounts(req: web.Request) -> web.Response:
        listed = world.listed and req.query["tier"] == "liquidatable"
        return web.json_response({"accounts": [{"account": ACCOUNT}] if listed else [],
                                  "next_cursor": None})  # fmt: skip

    async def account(_req: web.Request) -> web.Response:
        return web.json_response(VIEW)

    async def claims(req: web.Request) -> web.Response:
        world.voucher_requests.append(f"{req.match_info['chain']}/{req.match_info['tx']}")
        status, body = world.vouchers[0] if len(world.vouchers) == 1 else world.vouchers.pop(0)
        return web.json_response(body, status=status)

    async def rpc(req: web.Request) -> web.StreamResponse:
        body = await req.json()
        if world.dropped < world.drop_first:
            # A connection reset: the node closes the socket without answering.
            world.dropped += 1
            assert req.transport is not None
            req.transport.abort()
            return web.Response()
        return web.json_response(
            world.answer(req.match_info["chain"], body["method"], body["params"])
        )

    app = web.Application()
    app.router.add_get("/v1/accounts", accounts)
    app.router.add_get("/v1/accounts/{a}", account)
    app.router.add_post("/v1/claims/{chain}/{tx}", claims)
    app.router.add_post("/rpc/{chain}", rpc)
    async with serving(app) as url:
        yield url, world


def sent_calls(world: World, selector: bytes) -> list[tuple[str, bytes]]:
    return [(chain, bytes.fromhex(tx["data"][2:])[4:]) for chain, tx in world.sent
            if tx["data"].startswith("0x" + selector.hex())]  # fmt: skip


async def test_a_claim_waits_while_not_final_then_settles_once(
    served: tuple[str, World],
) -> None:
    base, world = served
    world.vouchers = [NOT_FINAL, (200, voucher_body())]
    async with aiohttp.ClientSession() as session:
        k = keeper.Keeper(cast(DevnetState, FakeState(base)), base, session)
        await k.round(3)
        # Repaid on alpha, naming beta's chain id and beta's WETH: a pending claim.
        [(chain, args)] = sent_calls(world, keeper.SEL_LIQUIDATE_REMOTE)
        account, debt, repay, target, coll = decode(
            ["address", "address", "uint256", "uint256", "address"], args
        )
        assert chain == "alpha" and account == ACCOUNT
        assert (debt, repay) == (DEPLOYMENTS["alpha"].tokens["USDC"], 500 * 10**6)
        assert (target, coll) == (CHAIN_IDS["beta"], DEPLOYMENTS["beta"].tokens["WETH"])
        assert set(k.claims) == {ACCOUNT} and k.stats.liquidations == []
        # Not final yet: a wait; the account, still rated liquidatable, gets no second claim.
        await k.round(4)
        assert world.voucher_requests == [f"alpha/{CLAIM_TX}"]
        assert k.stats.claim_waits == {"claim_not_final": 1, "claim_pending": 1}
        assert not k.stats.waits
        assert len(world.sent) == 1 and set(k.claims) == {ACCOUNT}
        # Final: the voucher is submitted on beta and the settlement recorded; the account,
        # still listed (the daemon has not seen the settlement), waits for the next round.
        await k.round(5)
        assert k.stats.claim_waits["claim_pending"] == 2
        [(chain, args)] = sent_calls(world, keeper.SEL_SETTLE)
        v, sig = decode([keeper.VOUCHER_TYPE, "bytes"], args)
        assert chain == "beta" and sig == b"\x5a" * 65
        assert v == (bytes.fromhex(CLAIM_ID[2:]), ACCOUNT, LIQUIDATOR,
                     DEPLOYMENTS["beta"].tokens["WETH"], DEPLOYMENTS["beta"].tokens["USDC"],
                     REPAID)  # fmt: skip
        [liq] = k.stats.liquidations
        assert (liq.step, liq.settled_step, liq.chain, liq.remote_from) == (3, 5, "beta", "alpha")
        assert (liq.debt, liq.collateral, liq.repaid_raw, liq.seized_raw) == (
            "USDC", "WETH", REPAID, SEIZED)  # fmt: skip
        assert (liq.claim_id, liq.claim_tx, liq.tx) == (CLAIM_ID, CLAIM_TX, SETTLE_TX)
        assert liq.repaid_usd == pytest.approx(500.0)
        assert k.claims == {} and k.stats.pending_claims == []
        assert not k.stats.failures
        # Nothing is asked for or sent again.
        world.listed = False
        await k.round(6)
        assert len(world.voucher_requests) == 2 and len(world.sent) == 2


async def test_a_claim_settled_by_someone_else_is_recorded_from_the_log_once(
    served: tuple[str, World],
) -> None:
    base, world = served
    world.vouchers = [(200, voucher_body())]
    world.settle_reverts = ALREADY_SETTLED
    async with aiohttp.ClientSession() as session:
        k = keeper.Keeper(cast(DevnetState, FakeState(base)), base, session)
        await k.round(0)
        world.listed = False
        await k.round(1)
        assert sent_calls(world, keeper.SEL_SETTLE) == []
        [liq] = k.stats.liquidations
        assert (liq.tx, liq.seized_raw, liq.remote_from) == (SETTLE_TX, SEIZED, "alpha")
        assert k.stats.claims_already_settled == 1 and not k.stats.failures
        await k.round(2)
        assert len(k.stats.liquidations) == 1 and k.claims == {}


async def test_other_answers_are_failures_retried_up_to_a_bound(
    served: tuple[str, World], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, world = served
    world.vouchers = [(503, {"error": "signer unavailable"})]
    monkeypatch.setattr(keeper, "CLAIM_RETRIES", 3)
    async with aiohttp.ClientSession() as session:
        k = keeper.Keeper(cast(DevnetState, FakeState(base)), base, session)
        await k.round(0)
        world.listed = False
        for step in (1, 2):
            await k.round(step)
        assert k.stats.failures["claim: HTTP 503"] == 2 and set(k.claims) == {ACCOUNT}
        await k.round(3)
        # Abandoned: no longer asked for, and still unsettled (its debt was repaid).
        assert k.stats.failures["claim_abandoned"] == 1 and k.claims == {}
        await k.round(4)
        assert len(world.voucher_requests) == 3
        assert [c.claim_id for c in k.stats.pending_claims] == [CLAIM_ID]
        assert k.stats.liquidations == []


async def test_a_dropped_node_connection_is_retried(served: tuple[str, World]) -> None:
    base, world = served
    world.vouchers = [(200, voucher_body())]
    world.drop_first = 2
    async with aiohttp.ClientSession() as session:
        k = keeper.Keeper(cast(DevnetState, FakeState(base)), base, session)
        await k.round(0)
        assert world.dropped == 2
        assert not k.stats.failures and set(k.claims) == {ACCOUNT}


async def test_connection_resets_beyond_the_retries_fail_the_call_not_the_round(
    served: tuple[str, World],
) -> None:
    base, world = served
    world.drop_first = keeper.RPC_RETRIES  # the registry read's first call, every try
    async with aiohttp.ClientSession() as session:
        k = keeper.Keeper(cast(DevnetState, FakeState(base)), base, session)
        await k.round(0)
        assert k.stats.failures == {"registry_read": 1} and world.sent == []
        await k.round(1)
        assert set(k.claims) == {ACCOUNT}


async def test_the_drain_rounds_until_the_claim_settles(served: tuple[str, World]) -> None:
    """After the last step the replay keeps rounding while a claim is pending."""
    base, world = served
    world.vouchers = [NOT_FINAL, NOT_FINAL, (200, voucher_body())]
    async with aiohttp.ClientSession() as session:
        k = keeper.Keeper(cast(DevnetState, FakeState(base)), base, session)
        await k.round(9)
        world.listed = False
        assert k.waiting == set() and set(k.claims) == {ACCOUNT}
        await asyncio.wait_for(_drain(k, 10, asyncio.Event()), 30)
        assert k.claims == {} and len(world.voucher_requests) == 3
        [liq] = k.stats.liquidations
        assert (liq.step, liq.settled_step, liq.remote_from) == (9, 10, "alpha")


async def test_a_claim_never_mined_is_dropped_after_a_bound(
    served: tuple[str, World], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, world = served
    world.claim_unmined = True
    monkeypatch.setattr(keeper, "CLAIM_UNMINED_ROUNDS", 3)
    async with aiohttp.ClientSession() as session:
        k = keeper.Keeper(cast(DevnetState, FakeState(base)), base, session)
        await k.round(0)
        world.listed = False
        await k.round(1)
        await k.round(2)
        assert k.stats.claim_waits["claim_unmined"] == 2 and set(k.claims) == {ACCOUNT}
        await k.round(3)
        # Nothing was repaid: no longer pending anywhere, a failure; no voucher asked for.
        assert k.claims == {} and k.stats.claims == [] and k.stats.pending_claims == []
        assert k.stats.failures == {"claim_unmined": 1} and world.voucher_requests == []
