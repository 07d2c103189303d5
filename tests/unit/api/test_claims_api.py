"""POST /v1/claims/{chain}/{tx_hash} over aggregator/claims.py with an in-test node:
every answer (200, 400, 404, 409 incl. reorged, 422 naming what, 503) and the signed
voucher recovering to the keeper key over the digest of the target chain's vault."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import jsonschema_rs
import pytest
from aiohttp.test_utils import TestClient, TestServer
from eth_account import Account

from aggregator.api import Api
from aggregator.claims import KEEPER_CHECK_TTL_S, SEL_IS_KEEPER, ClaimService
from aggregator.config import AppConfig
from aggregator.openapi import OPENAPI
from chains.claims import SeizeVoucher, voucher_digest
from chains.pusher.keys import KeeperKey, key_from_hex
from chains.rpc import RpcClient
from chains.rpc_errors import RpcUnavailable
from chains.types import BlockRef
from devkit.anvil import DEV_KEYS
from tests.unit.api.api_fakes import FakeBackend
from tests.unit.chains.test_claims import (
    ACCOUNT,
    BLOCK_HASH,
    LIQUIDATOR,
    TX,
    claim_log,
    receipt,
)

VAULTS = {"alpha": "0x" + "5a" * 20, "beta": "0x" + "5b" * 20}
USDC = {"alpha": "0x" + "33" * 20, "beta": "0x" + "3b" * 20}
WETH = {"alpha": "0x" + "4a" * 20, "beta": "0x" + "44" * 20}
WBTC = {"alpha": "0x" + "7a" * 20}


def config(*, usdc_borrowable: bool = True) -> AppConfig:
    src = [{"name": "x", "kind": "chainlink", "chain": "alpha", "address": f"0x{9:040x}"}]
    return AppConfig(
        chains=[
            {"name": "alpha", "chain_id": 71001, "rpc_urls": ["http://127.0.0.1:1"],
             "confirmations": 2, "contracts": {"vault": VAULTS["alpha"]}},
            {"name": "beta", "chain_id": 71002, "rpc_urls": ["http://127.0.0.1:1"],
             "contracts": {"vault": VAULTS["beta"], "registry": REGISTRY}},
            {"name": "gamma", "chain_id": 71003, "rpc_urls": ["http://127.0.0.1:1"]},
        ],
        assets=[
            {"symbol": "USDC", "decimals": 6, "ltv": 0.85, "lt": 0.88,
             "borrowable": usdc_borrowable, "tokens": USDC, "sources": src},
            {"symbol": "WETH", "decimals": 18, "ltv": 0.8, "lt": 0.825, "tokens": WETH,
             "sources": src},
            {"symbol": "WBTC", "decimals": 8, "ltv": 0.7, "lt": 0.75, "borrowable": True,
             "tokens": WBTC, "sources": src},
        ],
    )  # type: ignore[arg-type]  # fmt: skip


REGISTRY = f"0x{8:040x}"


class Node:
    """eth_getTransactionReceipt, the head and the canonical block, and the registry's
    isKeeper (`keepers`, lower-case; `is_keeper_answer` overrides the answer), as an
    RpcClient."""

    def __init__(self) -> None:
        self.receipt: dict[str, Any] | None = None
        self.head = 100
        self.canonical: str | None = BLOCK_HASH
        self.down = False
        self.keepers: set[str] = set()
        self.is_keeper_calls = 0
        self.is_keeper_answer: Any = None

    async def request(self, method: str, params: list[Any]) -> Any:
        self._check(method)
        if method == "eth_call":
            call = params[0]
            assert call["to"] == REGISTRY and call["data"][:10] == "0x" + SEL_IS_KEEPER.hex()
            self.is_keeper_calls += 1
            if self.is_keeper_answer is not None:
                return self.is_keeper_answer
            listed = "0x" + call["data"][-40:] in self.keepers
            return "0x" + f"{int(listed):064x}"
        assert method == "eth_getTransactionReceipt" and params == [TX]
        return self.receipt

    async def block_number(self) -> int:
        self._check("eth_blockNumber")
        return self.head

    async def get_block(self, number: int) -> BlockRef | None:
        self._check("eth_getBlockByNumber")
        if self.canonical is None or number > self.head:
            return None
        return BlockRef(number, self.canonical, "0x" + "00" * 32)

    def _check(self, method: str) -> None:
        if self.down:
            raise RpcUnavailable("alpha", method, ["connection refused"], timed_out=False)


KEY = key_from_hex(DEV_KEYS[1], "test key")


class Setup:
    def __init__(self, cfg: AppConfig) -> None:
        self.node = Node()
        self.node.keepers.add(KEY.address.lower())
        self.keys: dict[str, KeeperKey | None] = {"beta": KEY}
        clients = cast(dict[str, RpcClient], {"alpha": self.node, "beta": self.node})
        self.now = 0.0
        self.outcomes: list[str] = []
        self.service = ClaimService(
            cfg,
            clients,
            keeper=self.keys.get,
            lookups_per_s=2.0,
            burst=3.0,
            max_wait_s=1.0,
            clock=self.clock,
            on_outcome=self.outcomes.append,
        )

    def clock(self) -> float:
        return self.now


@pytest.fixture
def setup() -> Setup:
    return Setup(config())


@pytest.fixture
async def http(setup: Setup) -> AsyncIterator[TestClient[Any, Any]]:
    api = Api(FakeBackend(), claims=setup.service)
    async with TestClient(TestServer(api.app, host="127.0.0.1")) as c:
        yield c


def claim_with(debt: str = USDC["alpha"], collateral: str = WETH["beta"], **kw: Any) -> Any:
    """A RemoteSeizeClaimed log of alpha's vault with these tokens (target beta unless
    `target` says otherwise)."""
    kw.setdefault("target", 71002)
    entry = claim_log(address=VAULTS["alpha"], **kw)
    data = bytes.fromhex(entry["data"][2:])
    debt_word = bytes(12) + bytes.fromhex(debt[2:])
    collateral_word = bytes(12) + bytes.fromhex(collateral[2:])
    return {**entry, "data": "0x" + (debt_word + data[32:96] + collateral_word).hex()}


def documented(status: int, body: Any) -> None:
    """`body` matches the schema /openapi.json gives for this route and status."""
    responses = OPENAPI["paths"]["/v1/claims/{chain}/{tx_hash}"]["post"]["responses"]
    ref = responses[str(status)]
    if "$ref" in ref:
        ref = OPENAPI["components"]["responses"][ref["$ref"].rsplit("/", 1)[1]]
    schema = {**ref["content"]["application/json"]["schema"], "components": OPENAPI["components"]}
    jsonschema_rs.Draft202012Validator(schema).validate(body)


async def post(http: TestClient[Any, Any], chain: str = "alpha", tx: str = TX) -> Any:
    resp = await http.post(f"/v1/claims/{chain}/{tx}")
    body = await resp.json()
    documented(resp.status, body)
    return resp.status, body


async def test_final_claims_get_signed_vouchers_for_the_target_vault(
    setup: Setup, http: TestClient[Any, Any]
) -> None:
    setup.node.receipt = receipt(
        claim_with(claim_id="0x" + "01" * 32, index=0),
        claim_with(claim_id="0x" + "02" * 32, index=4, repaid=9),
    )
    setup.node.head = 102  # block 100, confirmations 2
    status, body = await post(http, tx=TX.upper().replace("0X", "0x"))
    assert status == 200, body
    assert [c["claim_id"] for c in body["claims"]] == ["0x" + "01" * 32, "0x" + "02" * 32]
    first = body["claims"][0]
    assert first["source_chain"] == "alpha" and first["target_chain"] == "beta"
    assert first["block_number"] == 100 and first["vault"].lower() == VAULTS["beta"]
    v = first["voucher"]
    # The debt token is the same asset's token on the target chain; repaid unchanged.
    assert v["debtToken"].lower() == USDC["beta"]
    assert v["collateralToken"].lower() == WETH["beta"]
    assert v["account"].lower() == ACCOUNT and v["liquidator"].lower() == LIQUIDATOR
    assert v["repaid"] == str(1500 * 10**6) and body["claims"][1]["voucher"]["repaid"] == "9"
    voucher = SeizeVoucher(
        v["claimId"], v["account"], v["liquidator"], v["collateralToken"], v["debtToken"],
        int(v["repaid"]),
    )  # fmt: skip
    digest = voucher_digest(voucher, 71002, VAULTS["beta"])
    signer = Account._recover_hash(digest, signature=bytes.fromhex(first["signature"][2:]))
    assert signer == KEY.address
    # Deterministic: asking again gives the same signature.
    assert (await post(http))[1] == body


async def test_not_final_is_a_409_with_the_counts(setup: Setup, http: TestClient[Any, Any]) -> None:
    setup.node.receipt = receipt(claim_with())
    setup.node.head = 101
    status, body = await post(http)
    assert status == 409
    assert (body["error"], body["confirmations"], body["needed"]) == ("claim not final", 1, 2)
    assert body["reorged"] is False


async def test_a_reorged_block_is_a_409_saying_so(setup: Setup, http: TestClient[Any, Any]) -> None:
    setup.node.receipt = receipt(claim_with())
    setup.node.head = 150
    setup.node.canonical = "0x" + "ee" * 32
    status, body = await post(http)
    assert status == 409 and body["reorged"] is True and body["confirmations"] == 0
    assert "reorged" in body["message"]


@pytest.mark.parametrize(
    ("chain", "tx", "field"),
    [
        ("Alpha", TX, "chain"),
        ("1alpha", TX, "chain"),
        ("alpha", "0x12", "tx_hash"),
        ("alpha", TX[:-1] + "g", "tx_hash"),
    ],
)
async def test_malformed_chain_or_hash_is_a_400(
    http: TestClient[Any, Any], chain: str, tx: str, field: str
) -> None:
    status, body = await post(http, chain, tx)
    assert status == 400 and body["error"]["field"] == field, body


@pytest.mark.parametrize(
    ("chain", "needle"),
    [("delta", "unknown chain 'delta'"), ("gamma", "no vault configured")],
)
async def test_a_chain_without_claims_here_is_a_404(
    http: TestClient[Any, Any], chain: str, needle: str
) -> None:
    status, body = await post(http, chain)
    assert status == 404 and body["error"]["field"] == "chain", body
    assert needle in body["error"]["message"]


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: None, "no mined transaction"),
        (lambda: receipt(claim_with(), status="0x0"), "reverted"),
        (lambda: receipt({**claim_with(), "address": "0x" + "99" * 20}), "no RemoteSeizeClaimed"),
    ],
)
async def test_no_claim_is_a_404(
    setup: Setup, http: TestClient[Any, Any], make: Any, needle: str
) -> None:
    setup.node.receipt = make()
    setup.node.head = 200
    status, body = await post(http)
    assert status == 404 and body["error"]["field"] == "tx_hash"
    assert needle in body["error"]["message"]


@pytest.mark.parametrize(
    ("entry", "field", "needle"),
    [
        (lambda: claim_with(target=5), "target_chain", "target chain id 5"),
        (lambda: claim_with(target=71001), "target_chain", "target chain id 71001"),
        (lambda: claim_with(target=71003), "target_chain", "gamma has no vault"),
        (lambda: claim_with(collateral=WETH["alpha"]), "collateral_token", "on beta"),
        (lambda: claim_with(debt=USDC["beta"]), "debt_token", "on alpha"),
        (lambda: claim_with(debt=WETH["alpha"]), "debt_token", "WETH not borrowable"),
        (lambda: claim_with(debt=WBTC["alpha"]), "debt_token", "WBTC has no token on beta"),
    ],
)
async def test_unmapped_claims_are_a_422_naming_what(
    setup: Setup, http: TestClient[Any, Any], entry: Any, field: str, needle: str
) -> None:
    # One good claim beside the bad one: none is signed.
    setup.node.receipt = receipt(claim_with(index=0), entry())
    setup.node.head = 200
    status, body = await post(http)
    assert status == 422 and body["error"]["field"] == field, body
    assert needle in body["error"]["message"]


async def test_rpc_failure_is_a_503(setup: Setup, http: TestClient[Any, Any]) -> None:
    setup.node.down = True
    status, body = await post(http)
    assert status == 503 and body["error"]["field"] == "rpc"
    assert "connection refused" in body["error"]["message"]


async def test_a_malformed_receipt_from_the_node_is_a_503(
    setup: Setup, http: TestClient[Any, Any]
) -> None:
    setup.node.receipt = {**receipt(claim_with()), "blockHash": "0x1"}
    status, body = await post(http)
    assert status == 503 and "unreadable receipt" in body["error"]["message"]


async def test_the_receipt_of_another_transaction_is_a_503(
    setup: Setup, http: TestClient[Any, Any]
) -> None:
    setup.node.receipt = {**receipt(claim_with()), "transactionHash": "0x" + "ef" * 32}
    setup.node.head = 200
    status, body = await post(http)
    assert status == 503 and "answered the receipt of 0x" + "ef" * 32 in body["error"]["message"]


async def test_no_keeper_key_for_the_target_is_a_503(
    setup: Setup, http: TestClient[Any, Any]
) -> None:
    setup.keys["beta"] = None
    setup.node.receipt = receipt(claim_with())
    setup.node.head = 200
    status, body = await post(http)
    assert status == 503 and body["error"]["field"] == "keeper"
    assert "beta" in body["error"]["message"]


async def test_a_key_the_target_registry_does_not_list_is_a_503(
    setup: Setup, http: TestClient[Any, Any]
) -> None:
    """Its voucher would revert NotKeeperSigned on the target: nothing is signed."""
    setup.node.keepers.clear()
    setup.node.receipt = receipt(claim_with())
    setup.node.head = 200
    status, body = await post(http)
    assert status == 503 and body["error"]["field"] == "keeper"
    assert KEY.address in body["error"]["message"] and REGISTRY in body["error"]["message"]
    assert "NotKeeperSigned" in body["error"]["message"]
    # A grant shows at the next request: a refusal is not remembered.
    setup.node.keepers.add(KEY.address.lower())
    assert (await post(http))[0] == 200


async def test_the_keeper_check_is_kept_for_its_ttl_then_read_again(
    setup: Setup, http: TestClient[Any, Any]
) -> None:
    setup.node.receipt = receipt(claim_with())
    setup.node.head = 200
    for _ in range(2):
        assert (await post(http))[0] == 200
    assert setup.node.is_keeper_calls == 1
    # Revoked: trusted until the TTL runs out, then refused.
    setup.node.keepers.clear()
    setup.now += KEEPER_CHECK_TTL_S + 1
    status, body = await post(http)
    assert status == 503 and body["error"]["field"] == "keeper"
    assert setup.node.is_keeper_calls == 2


@pytest.mark.parametrize("answer", ["0x", "0x01", 7, None])
async def test_an_unreadable_is_keeper_answer_is_a_503(
    setup: Setup, http: TestClient[Any, Any], answer: Any
) -> None:
    setup.node.receipt = receipt(claim_with())
    setup.node.head = 200
    setup.node.is_keeper_answer = answer if answer is not None else {"x": 1}
    status, body = await post(http)
    assert status == 503 and body["error"]["field"] == "rpc"
    assert "isKeeper" in body["error"]["message"]


async def test_lookups_beyond_the_rate_wait_their_turn_then_are_a_429(
    setup: Setup, http: TestClient[Any, Any]
) -> None:
    # 2 a second, burst 3, at most 1 s of waiting (Setup): the fake clock never moves by
    # itself, so each reserved wait stays promised.
    setup.node.receipt = receipt(claim_with())
    setup.node.head = 200
    for _ in range(3):  # the burst: answered at once
        assert (await post(http))[0] == 200
    bucket = setup.service.bucket
    assert bucket.reserve(1.0) == pytest.approx(0.5)  # the next waits half a second
    assert bucket.reserve(1.0) == pytest.approx(1.0)  # the one after, a second
    setup.node.down = True  # a lookup that reached the node would be a 503
    status, body = await post(http)  # it would wait 1.5 s
    assert status == 429 and body["error"]["field"] == "claims"
    assert "retry later" in body["error"]["message"]
    setup.node.down = False
    setup.now += 10.0  # refilled to the burst
    # Malformed or unknown input takes no token.
    for _ in range(5):
        assert (await post(http, "delta"))[0] == 404
    for _ in range(3):
        assert (await post(http))[0] == 200


async def test_a_lookup_beyond_the_rate_is_paced_not_refused() -> None:
    s = Setup(config())
    service = ClaimService(
        s.service.cfg, s.service.clients, keeper=s.keys.get, lookups_per_s=20.0, burst=1.0
    )
    s.node.receipt = receipt(claim_with())
    s.node.head = 200
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for _ in range(3):
        assert (await service.vouchers("alpha", TX))["claims"]
    # Burst 1 at 20 a second: the 2nd and 3rd waited ~50 ms each.
    assert loop.time() - t0 >= 0.09


async def test_without_a_claim_service_the_route_is_a_503() -> None:
    api = Api(FakeBackend())
    async with TestClient(TestServer(api.app, host="127.0.0.1")) as c:
        status, body = await post(c)
    assert status == 503 and body["error"]["field"] == "claims"


async def test_each_answer_is_counted_by_outcome(setup: Setup, http: TestClient[Any, Any]) -> None:
    """agg_seize_vouchers_total's outcomes: 409 not_final, 200 signed, any error refused
    (a 400 is the route's own, before the service: not counted)."""
    setup.node.receipt = receipt(claim_with())
    setup.node.head = 101
    assert (await post(http))[0] == 409
    setup.node.head = 102
    assert (await post(http))[0] == 200
    assert (await post(http, chain="nowhere"))[0] == 404
    assert (await post(http, chain="NOT A NAME"))[0] == 400
    assert setup.outcomes == ["not_final", "signed", "refused"]
