"""The daemon's portfolio feed (aggregator/portfolio_feed.py): stored Markets
events + the standard engine's book -> both margin figures and greeks; the worse
finality view counts. Real SQLite store; the API routes on a real aiohttp server."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from aggregator.api import Api
from aggregator.api_views import margin_report
from aggregator.config import AppConfig
from aggregator.portfolio_feed import PortfolioFeed
from aggregator.risk import PositionRow, PriceInput, RiskEngine
from aggregator.store import Store
from chains.positions import FIXED, DerivativeEvent

USER = "0x00000000000000000000000000000000000000a1"


def config() -> AppConfig:
    return AppConfig(
        chains=[
            {"name": n, "chain_id": i + 1, "rpc_urls": ["http://127.0.0.1:1"],
             "contracts": {"vault": f"0x{i + 1:040x}", "markets": f"0x{i + 9:040x}"}}
            for i, n in enumerate(["alpha", "beta"])
        ],
        assets=[
            {"symbol": "USDC", "decimals": 6, "ltv": 0.85, "lt": 0.88},
            {"symbol": "WETH", "decimals": 18, "ltv": 0.8, "lt": 0.825},
        ],
        portfolio={"stable_assets": ["USDC"], "implied_vol": {"WETH": 0.6},
                   "perps": [{"name": "ETH-PERP", "underlying": "WETH"}],
                   "options": [{"name": "ETH", "underlying": "WETH"}]},
    )  # type: ignore[arg-type]  # fmt: skip


def ev(block: int, kind: str, key: str, size: float, price: float, **kw: Any) -> DerivativeEvent:
    return DerivativeEvent(
        chain=kw.pop("chain", "beta"), block_number=block, block_hash="0x" + "0" * 64,
        tx_hash="0x" + "1" * 64, log_index=kw.pop("log_index", 0), kind=kind,  # type: ignore[arg-type]
        account=USER, key=key, size=int(size * FIXED), price=int(price * FIXED), **kw,
    )  # fmt: skip


@pytest.fixture
async def store(tmp_path: Any) -> Any:
    s = Store(f"sqlite+aiosqlite:///{tmp_path}/agg.db")
    await s.upgrade()
    yield s
    await s.close()


def std_engine(cfg: AppConfig) -> RiskEngine:
    eng = RiskEngine.from_config(cfg)
    eng.load_positions([PositionRow(USER, "alpha", "WETH", "collateral", 10 * 10**18, 10 * 10**18)])
    eng.set_prices({"USDC": PriceInput(1.0), "WETH": PriceInput(3000.0)})
    eng.set_volatility({"USDC": 0.001, "WETH": 0.03})
    eng.recompute()
    return eng


async def test_hedge_counts_only_once_confirmed(store: Store) -> None:
    cfg = config()
    feed = PortfolioFeed(cfg, store)
    assert feed.watch("alpha") is not None
    eng = std_engine(cfg)
    alone = feed.account_margin(eng, USER, now=0.0)
    assert alone is not None and alone["standard"]["tier"] == "healthy"
    assert alone["portfolio"]["mm_usd"] == pytest.approx(0.4 * 30_000)
    # A delta hedge on beta, not confirmed yet (no checkpoint: confirmed block -1).
    await feed.repo.apply_position_events("beta", [ev(5, "perp", "ETH-PERP", -10, 3000)])
    await feed.accounts_changed({USER})
    pending = feed.account_margin(eng, USER, now=0.0)
    assert pending is not None
    assert pending["portfolio"]["mm_usd"] == pytest.approx(alone["portfolio"]["mm_usd"])
    assert pending["greeks"]["WETH"]["delta"] == pytest.approx(0.0)  # head view
    # Confirmed: the views agree and the hedge releases the margin.
    feed.views[USER.lower()] = [
        type(v)(v.chain, v.account, v.kind, v.key, v.head, v.head) for v in feed.views[USER.lower()]
    ]
    hedged = feed.account_margin(eng, USER, now=0.0)
    assert hedged is not None
    assert hedged["portfolio"]["mm_usd"] == pytest.approx(0.005 * 30_000)
    assert hedged["derivatives"][0]["confirmed_size"] == -10.0


async def test_unknown_market_is_reported_not_guessed(store: Store) -> None:
    cfg = config()
    feed = PortfolioFeed(cfg, store)
    await feed.repo.apply_position_events("beta", [ev(5, "perp", "DOGE-PERP", 1, 1)])
    await feed.load()
    out = feed.account_margin(std_engine(cfg), USER, now=0.0)
    assert out is not None and out["unmapped"] == ["DOGE-PERP"]


@pytest.mark.parametrize("mode", ["standard", "portfolio"])
async def test_portfolio_mode_decides_the_figures_that_are_pushed(store: Store, mode: str) -> None:
    """In portfolio mode the stored HF, BP and tier (what credit allocation and the
    pusher read) are the portfolio figures; the API keeps both side by side. In
    standard mode nothing changes."""
    cfg = config().model_copy(
        update={"portfolio": config().portfolio.model_copy(update={"mode": mode})}
    )
    feed = PortfolioFeed(cfg, store)
    eng = std_engine(cfg)
    # 10 WETH on alpha, 15,000 USDC borrowed on beta, a confirmed ETH perp hedge.
    eng.apply_position(PositionRow(USER, "beta", "USDC", "debt", 15_000 * 10**6, 15_000 * 10**6))
    eng.recompute()
    await feed.repo.apply_position_events("beta", [ev(5, "perp", "ETH-PERP", -5, 3000)])
    await feed.load()
    feed.views[USER.lower()] = [
        type(v)(v.chain, v.account, v.kind, v.key, v.head, v.head) for v in feed.views[USER.lower()]
    ]
    std = eng.standard_health(USER)
    n = feed.override(eng, None, now=0.0)
    eng.allocate_credit(now=0.0)
    view = feed.account_margin(eng, USER, now=0.0)
    assert view is not None
    pf = view["portfolio"]
    assert view["standard"]["hf"] == pytest.approx(std.hf)  # still the standard figure
    credit = sum(eng.credit_of(USER).values())
    if mode == "standard":
        assert n == 0
        assert eng.health(USER).hf == pytest.approx(std.hf)
        assert credit <= std.bp * 1e6
    else:
        assert n == 1
        assert pf["hf"] != pytest.approx(std.hf)
        assert eng.health(USER).hf == pytest.approx(pf["hf"])
        assert eng.health(USER).bp == pytest.approx(pf["borrowing_power_usd"])
        assert eng.health(USER).tier == pf["tier"]
        assert 0 < credit <= pf["borrowing_power_usd"] * 1e6
    # The risk history's requirement of the pushed model: the portfolio MM (with its
    # hedge); none in standard mode, where the standard requirement is the ledger's.
    req = feed.pushed_requirement(eng, np.array([0], np.int64), now=0.0)
    if mode == "standard":
        assert req is None
    else:
        assert req is not None and req[0] == pytest.approx(pf["mm_usd"])


class _Backend:
    def __init__(self, view: dict[str, Any] | None) -> None:
        self.view = view

    def account_margin(self, address: str) -> dict[str, Any] | None:
        return self.view

    async def margin_report(self) -> dict[str, Any]:
        return await margin_report()


async def test_api_margin_routes() -> None:
    api = Api(_Backend({"portfolio": {"mm_usd": 1.0}}))  # type: ignore[arg-type]
    async with TestClient(TestServer(api.app)) as client:
        r = await client.get(f"/v1/accounts/{USER}/margin")
        assert r.status == 200 and (await r.json())["portfolio"]["mm_usd"] == 1.0
        r = await client.get("/v1/accounts/0x12/margin")
        assert r.status == 400 and (await r.json())["error"]["field"] == "address"
        r = await client.get("/v1/margin/report")
        body = await r.json()
        assert r.status == 200 and body["reductions"]["portfolio_vs_isolated"] > 0
    api = Api(_Backend(None))  # type: ignore[arg-type]
    async with TestClient(TestServer(api.app)) as client:
        r = await client.get(f"/v1/accounts/{USER}/margin")
        assert r.status == 404


async def test_chunked_evaluation_equals_one_pass(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PortfolioModel.evaluate goes by chunks of accounts (memory); every figure equals
    one pass over all of them, bit for bit, with spot and perp legs on several chains."""
    import aggregator.risk.portfolio_model as pm

    cfg = config()
    feed = PortfolioFeed(cfg, store)
    eng = std_engine(cfg)
    rng = np.random.default_rng(4)
    accounts = [f"0x{i + 1:040x}" for i in range(11)]
    for i, a in enumerate(accounts):
        weth = int(rng.integers(1, 20)) * 10**18
        eng.apply_position(PositionRow(a, "alpha", "WETH", "collateral", weth, weth // (1 + i % 2)))
        usdc = int(rng.integers(0, 30_000)) * 10**6
        eng.apply_position(PositionRow(a, "beta", "USDC", "debt", usdc, usdc))
        if i % 3:
            await feed.repo.apply_position_events(
                "beta",
                [ev(5, "perp", "ETH-PERP", -float(i), 3000, log_index=i)],
            )
    # The events above are all for USER: confirmed here, and shared with every other
    # account so chunks hold perp legs too.
    await feed.load()
    legs = [type(v)(v.chain, v.account, v.kind, v.key, v.head, v.head) for v in feed.views[USER]]
    feed.views.update({a: legs for a in [USER, *accounts[::2]]})
    eng.recompute()
    model = feed.model
    acc = np.arange(eng.book.n_accounts, dtype=np.int64)
    whole = model.compute(eng.book, eng.market, acc, now=0.0)
    monkeypatch.setattr(pm, "ACCOUNT_CHUNK", 3)
    chunked = model.evaluate(eng.book, eng.market, acc, now=0.0)
    np.testing.assert_array_equal(chunked.accounts, acc)
    np.testing.assert_array_equal(chunked.equity_usd, whole.equity)
    np.testing.assert_array_equal(chunked.requirement_usd, whole.mm)
    np.testing.assert_array_equal(chunked.hf, whole.hf)
    np.testing.assert_array_equal(chunked.bp, whole.bp)
    np.testing.assert_array_equal(chunked.tier, whole.tier)
    for field, part in pm._PARTS.items():
        np.testing.assert_array_equal(chunked.parts[part], getattr(whole, field))
    assert (whole.perp_upnl != 0).any() or (whole.contingency != 0).any()
