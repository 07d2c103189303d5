"""POST /v1/whatif over the real aiohttp app, the real WhatIfService and a real risk engine
(docs/whatif.md): the answer's shape and figures, paging, every bad input a 4xx naming its
field, 503 before prices, and the live ledger unchanged by any request."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import jsonschema_rs
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from aggregator.api import Api
from aggregator.config import AppConfig
from aggregator.openapi import OPENAPI
from aggregator.risk import LedgerView, PositionRow, PriceInput, RiskEngine
from aggregator.risk.whatif import DepthLiquidity
from aggregator.whatif import WhatIfService
from chains.units import TIERS
from tests.unit.api.api_fakes import FakeBackend

E18 = 10**18
CHAINS = ["alpha", "beta", "gamma"]


def config() -> AppConfig:
    def feeds(*chains: str) -> list[dict[str, Any]]:
        return [
            {"name": f"cl-{c}", "kind": "chainlink", "chain": c, "address": f"0x{i + 9:040x}"}
            for i, c in enumerate(chains)
        ]

    return AppConfig(
        chains=[
            {"name": n, "chain_id": i + 1, "rpc_urls": ["http://127.0.0.1:1"],
             "contracts": {"vault": f"0x{i + 1:040x}"}}
            for i, n in enumerate(CHAINS)
        ],
        assets=[
            {"symbol": "USDC", "decimals": 6, "ltv": 0.85, "lt": 0.88, "borrowable": True,
             "min_sources": 2, "sources": feeds("alpha", "beta", "gamma")},
            {"symbol": "WETH", "decimals": 18, "ltv": 0.8, "lt": 0.825, "depth_usd": 1e7,
             "liquidation_bonus": 0.05, "min_sources": 2,
             "sources": feeds("alpha", "beta", "gamma")},
            {"symbol": "wstETH", "kind": "lst", "underlying": "WETH", "decimals": 18,
             "ltv": 0.75, "lt": 0.79, "liquidation_bonus": 0.06, "min_sources": 2,
             "rate": {"kind": "wsteth", "chain": "gamma", "address": f"0x{99:040x}"},
             "sources": feeds("alpha", "beta")},
        ],
    )  # type: ignore[arg-type]  # fmt: skip


def account(i: int) -> str:
    return f"0x{i + 1:040x}"


def ledger(cfg: AppConfig, n: int = 30) -> RiskEngine:
    """n accounts: WETH on alpha, wstETH on beta, USDC debt from HF ~1.02 to ~2."""
    eng = RiskEngine.from_config(cfg)
    rows = []
    for i in range(n):
        a = account(i)
        rows.append(PositionRow(a, "alpha", "WETH", "collateral", 10 * E18, 10 * E18))
        rows.append(PositionRow(a, "beta", "wstETH", "collateral", 2 * E18, 2 * E18))
        debt = int(31_000 / (1.02 + i / n) * 10**6)
        rows.append(PositionRow(a, "gamma", "USDC", "debt", debt, debt))
    rows.append(PositionRow(account(n), "alpha", "USDC", "collateral", 10**9, 10**9))
    eng.load_positions(rows)
    eng.set_prices(
        {
            "USDC": PriceInput(1.0, "ok", sources=[{"source": "cl-alpha", "value": 1.0}]),
            "WETH": PriceInput(3000.0),
            "wstETH": PriceInput(3400.0),
        }
    )
    eng.set_volatility({"USDC": 0.001, "WETH": 0.02, "wstETH": 0.022})
    eng.recompute()
    eng.allocate_credit(now=0.0)
    return eng


class Backend(FakeBackend):
    def __init__(self, service: WhatIfService) -> None:
        super().__init__()
        self.service = service

    async def whatif(self, body: Any) -> dict[str, Any]:
        return await self.service.serve(body)


@pytest.fixture
def cfg() -> AppConfig:
    return config()


@pytest.fixture
def eng(cfg: AppConfig) -> RiskEngine:
    return ledger(cfg)


@pytest.fixture
def ready() -> dict[str, bool]:
    return {"prices": True}


@pytest.fixture
async def client(
    cfg: AppConfig, eng: RiskEngine, ready: dict[str, bool]
) -> AsyncIterator[TestClient[Any, Any]]:
    service = WhatIfService(cfg, LedgerView(eng), prices_ready=lambda: ready["prices"])
    async with TestClient(TestServer(Api(Backend(service)).app, host="127.0.0.1")) as c:
        yield c


def schema_problems(body: Any) -> list[str]:
    """What in `body` the documented WhatIf schema rejects (schemathesis's validator)."""
    doc = {"$ref": "#/components/schemas/WhatIf", "components": OPENAPI["components"]}
    return [e.message for e in jsonschema_rs.Draft202012Validator(doc).iter_errors(body)]


async def test_zero_shock_answers_the_current_book(
    client: TestClient[Any, Any], eng: RiskEngine
) -> None:
    resp = await client.post("/v1/whatif")
    assert resp.status == 200
    body = await resp.json()
    assert schema_problems(body) == []
    std = body["models"]["standard"]
    assert std["tiers_before"] == std["tiers_after"] == eng.tier_counts()
    cells = std["transitions"]
    assert list(cells) == list(TIERS)
    for a in TIERS:
        for b in TIERS:
            assert cells[a][b]["accounts"] == (eng.tier_counts()[a] if a == b else 0)
    assert std["liquidations"]["newly_liquidatable"] == 0
    assert std["accounts"] == {"total": 0, "items": [], "next_cursor": None}
    assert body["accounts"] == eng.book.n_accounts
    assert body["prices"]["WETH"]["after_usd"] == 3000.0


async def test_shock_pages_and_names_liquidations(
    client: TestClient[Any, Any], eng: RiskEngine
) -> None:
    shock = {"shocks": {"WETH": -0.3}, "depegs": {"wstETH": -0.05}, "vol": 0.5, "limit": 7}
    body = await (await client.post("/v1/whatif", json=shock)).json()
    assert schema_problems(body) == []
    std = body["models"]["standard"]
    assert body["prices"]["wstETH"]["after_usd"] == pytest.approx(3400 * 0.7 * 0.95)
    total = std["accounts"]["total"]
    assert total > 7 and std["accounts"]["next_cursor"] == "7"
    moved = sum(c["accounts"] for a, row in std["transitions"].items() for b, c in row.items())
    assert moved == eng.book.n_accounts
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = await (
            await client.post("/v1/whatif", json={**shock, "cursor": cursor} if cursor else shock)
        ).json()
        acc = page["models"]["standard"]["accounts"]
        seen += [it["account"] for it in acc["items"]]
        for it in acc["items"]:
            assert it["tier_before"] in ("healthy", "warning")
            assert it["tier_after"] in ("liquidatable", "insolvent")
            assert it["hf_after"] < 1 <= it["hf_before"]
            assert it["seize_usd"] == pytest.approx(sum(it["seize_by_chain"].values()))
            assert set(it["seize_by_chain"]) <= {"alpha", "beta"}
        cursor = acc["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == total
    repays = [it["repay_usd"] for it in std["accounts"]["items"]]
    assert repays == sorted(repays, reverse=True)
    vol = std["liquidations"]["volume"]
    assert sum(v["seize_usd"] for v in vol) == pytest.approx(std["liquidations"]["seize_usd"])
    weth = next(v for v in vol if v["asset"] == "WETH")
    assert weth["depth_usd"] == 1e7 and weth["impact"] == pytest.approx(weth["seize_usd"] / 1e7)
    assert weth["sellable_usd"] == pytest.approx(1e7 * 0.05)


async def test_chain_down_freezes_collateral_and_stales_feeds(client: TestClient[Any, Any]) -> None:
    body = await (await client.post("/v1/whatif", json={"chains_down": ["beta"]})).json()
    # wstETH has feeds on alpha and beta (quorum 2): unavailable, valued as before.
    w = body["prices"]["wstETH"]
    assert (w["status_after"], w["after_usd"]) == ("unavailable", 3400.0)
    assert "stale: chain beta down" in w["reason"]
    assert body["prices"]["WETH"]["status_after"] == "ok"
    std = body["models"]["standard"]
    # Every wstETH holding is on beta: frozen, it no longer counts, so nobody holds the
    # unavailable asset and nobody is degraded; the collateral lost moves tiers down.
    assert std["degraded_after"] == 0
    assert std["tiers_after"]["healthy"] < std["tiers_before"]["healthy"]
    # gamma holds the wstETH rate leg: disputed, every wstETH holder degraded; the USDC
    # debt on gamma still counts.
    g = await (await client.post("/v1/whatif", json={"chains_down": ["gamma"]})).json()
    assert g["prices"]["wstETH"]["status_after"] == "disputed"
    gs = g["models"]["standard"]
    assert gs["degraded_after"] == 30
    assert gs["tiers_after"] == gs["tiers_before"]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"shocks": {"DOGE": -0.1}}, 404, "shocks.DOGE"),
        ({"shocks": {"WETH": -1.01}}, 400, "shocks.WETH"),
        ({"shocks": {"WETH": "a lot"}}, 400, "shocks.WETH"),
        ({"shocks": [1]}, 400, "shocks"),
        ({"depegs": {"WETH": -0.1}}, 404, "depegs.WETH"),
        ({"vol": -1}, 400, "vol"),
        ({"vol": True}, 400, "vol"),
        ({"chains_down": ["delta"]}, 404, "chains_down[0]"),
        ({"chains_down": "beta"}, 400, "chains_down"),
        ({"chains_down": [3]}, 400, "chains_down[0]"),
        ({"models": ["var"]}, 404, "models[0]"),
        ({"limit": 0}, 400, "limit"),
        ({"limit": 1001}, 400, "limit"),
        ({"cursor": "-1"}, 400, "cursor"),
        ({"max_slippage": 0}, 400, "max_slippage"),
        ({"shock": {"WETH": -0.3}}, 400, "shock"),
        ([1, 2], 400, "body"),
        ({"vol": 10**400}, 400, "vol"),
        ({"shocks": {"WETH": -(10**400)}}, 400, "shocks.WETH"),
        ({"limit": 10**400}, 400, "limit"),
    ],
)
async def test_bad_input_names_the_field(
    client: TestClient[Any, Any], body: Any, status: int, field: str
) -> None:
    resp = await client.post("/v1/whatif", json=body)
    assert resp.status == status
    err = (await resp.json())["error"]
    assert err["field"] == field and err["message"]


@pytest.mark.parametrize("raw", [b"{not json", b"null", b"\xff\xfe", b'"WETH=-0.3"'])
async def test_malformed_json_is_a_400_naming_the_body(
    client: TestClient[Any, Any], raw: bytes
) -> None:
    resp = await client.post("/v1/whatif", data=raw, headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert (await resp.json())["error"]["field"] == "body"


async def test_before_the_first_price_refresh_503(
    client: TestClient[Any, Any], ready: dict[str, bool]
) -> None:
    ready["prices"] = False
    resp = await client.post("/v1/whatif", json={})
    assert resp.status == 503 and (await resp.json())["error"]["field"] == "prices"


async def test_live_figures_unchanged_by_requests(
    client: TestClient[Any, Any], eng: RiskEngine
) -> None:
    n = eng.book.n_accounts
    before = [a.copy() for a in (eng.r_hf[:n], eng.r_bp[:n], eng.r_tier[:n], eng.credit[:n])]
    health = [eng.health(a) for a in eng.book.account_address]
    for body in (
        {"shocks": {"WETH": -0.5}, "chains_down": ["alpha", "beta"], "vol": 3},
        {"shocks": {"WETH": -1}, "depegs": {"wstETH": -1}},
    ):
        assert (await client.post("/v1/whatif", json=body)).status == 200
    after = (eng.r_hf[:n], eng.r_bp[:n], eng.r_tier[:n], eng.credit[:n])
    assert all(np.array_equal(x, y) for x, y in zip(before, after, strict=True))
    assert health == [eng.health(a) for a in eng.book.account_address]


class PoolLiquidity:
    """A stand-in for pool-based liquidity: per chain, impact = usd / (pool depth)."""

    source = "pools"

    def __init__(self, slippage: float) -> None:
        self.slippage = slippage
        self.asked: list[tuple[str, str, float]] = []

    def sellable(self, asset: str, chain: str, usd: float) -> tuple[float | None, float | None]:
        self.asked.append((asset, chain, usd))
        depth = {"alpha": 2e6}.get(chain)
        return (None, None) if depth is None else (usd / depth, depth * self.slippage)


async def test_the_liquidity_seam_takes_another_source(cfg: AppConfig, eng: RiskEngine) -> None:
    made: list[PoolLiquidity] = []

    def pools(slippage: float, _market: object, _live: object) -> PoolLiquidity:
        made.append(PoolLiquidity(slippage))
        return made[-1]

    service = WhatIfService(cfg, LedgerView(eng), prices_ready=lambda: True, liquidity=pools)
    body = service.run({"shocks": {"WETH": -0.3}, "max_slippage": 0.02})
    vol = body["models"]["standard"]["liquidations"]["volume"]
    weth = next(v for v in vol if (v["asset"], v["chain"]) == ("WETH", "alpha"))
    assert weth["liquidity_source"] == "pools"
    assert weth["impact"] == pytest.approx(weth["seize_usd"] / 2e6)
    assert weth["sellable_usd"] == pytest.approx(2e6 * 0.02)
    assert made[0].slippage == 0.02 and ("WETH", "alpha", weth["seize_usd"]) in made[0].asked


async def test_a_running_whatif_leaves_the_loop_serving_on_a_frozen_book(
    cfg: AppConfig, eng: RiskEngine
) -> None:
    """The what-if computes in a worker thread: held there (its liquidity seam waits on
    an event, so no timing of this machine matters), /healthz answers, a second what-if
    is a 503 naming `whatif`, and a ledger write meanwhile does not reach its figures."""
    entered, release = threading.Event(), threading.Event()

    def held(slippage: float, _market: object, _live: object) -> DepthLiquidity:
        entered.set()
        release.wait(60.0)
        return DepthLiquidity({"WETH": 1e7}, cfg.risk.impact, slippage)

    service = WhatIfService(cfg, LedgerView(eng), prices_ready=lambda: True, liquidity=held)
    tiers = eng.tier_counts()
    async with TestClient(TestServer(Api(Backend(service)).app, host="127.0.0.1")) as c:
        first = asyncio.create_task(c.post("/v1/whatif", json={}))
        try:
            assert await asyncio.to_thread(entered.wait, 60.0)
            assert service.running == 1
            health = await asyncio.wait_for(c.get("/healthz"), 30.0)
            assert health.status == 200 and (await health.json())["status"] == "alive"
            busy = await asyncio.wait_for(c.post("/v1/whatif", json={}), 30.0)
            assert busy.status == 503
            assert (await busy.json())["error"]["field"] == "whatif"
            # A ledger write while it runs: WETH halves, accounts drop tiers.
            eng.set_prices({"WETH": PriceInput(1500.0)})
            eng.recompute()
            assert eng.tier_counts() != tiers
        finally:
            release.set()
        resp = await asyncio.wait_for(first, 60.0)
        assert resp.status == 200
        std = (await resp.json())["models"]["standard"]
        assert std["tiers_before"] == std["tiers_after"] == tiers  # the book it froze
        assert service.running == 0
        again = await c.post("/v1/whatif", json={})
        assert again.status == 200
        assert (await again.json())["models"]["standard"]["tiers_before"] == eng.tier_counts()


async def test_schemathesis_on_the_route(cfg: AppConfig, eng: RiskEngine) -> None:
    """Generated bodies, valid and invalid by the documented schema, against the real
    service: never a 5xx, every answer matches its documented status codes and schema,
    and both the valid and the invalid bodies reach a computed 200 / a 400 or 404."""
    import requests
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode

    service = WhatIfService(cfg, LedgerView(eng), prices_ready=lambda: True)
    api = Api(Backend(service))
    port = await api.start("127.0.0.1", 0)
    base = f"http://127.0.0.1:{port}"
    n = eng.book.n_accounts
    live = (eng.r_hf[:n].copy(), eng.r_tier[:n].copy())

    seen: set[tuple[str, int]] = set()

    def run_mode(op: Any, mode: Any, http: Any, failures: list[str]) -> None:
        @settings(
            max_examples=60, deadline=None, derandomize=True, database=None,
            suppress_health_check=list(HealthCheck),
        )  # fmt: skip
        @given(case=op.as_strategy(generation_mode=mode))
        def check(case: Any) -> None:
            resp = case.call(base_url=base, session=http, timeout=30)
            seen.add((mode.name, resp.status_code))
            try:
                case.validate_response(resp)
            except Exception as exc:
                failures.append(f"{case.body!r} -> {resp.status_code}: {exc}")
                raise

        try:
            check()
        except Exception:
            if not failures:
                raise

    def fuzz() -> list[str]:
        schema = schemathesis.openapi.from_dict(OPENAPI)
        op = next(r.ok() for r in schema.get_all_operations() if r.ok().path == "/v1/whatif")
        failures: list[str] = []
        with requests.Session() as http:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                run_mode(op, mode, http, failures)
        return failures

    try:
        failures = await asyncio.to_thread(fuzz)
    finally:
        await api.stop()
    assert failures == [], "\n".join(failures[:5])
    assert ("POSITIVE", 200) in seen and ("NEGATIVE", 400) in seen, seen
    assert np.array_equal(live[0], eng.r_hf[:n]) and np.array_equal(live[1], eng.r_tier[:n])
