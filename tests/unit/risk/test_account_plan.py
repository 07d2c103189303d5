"""GET /v1/accounts/{a}'s `liquidation` follows the pushed model (PortfolioFeed
.pushed_plan through AccountViews.account_detail): the portfolio model's plan, named,
with the standard plan beside; standard mode unchanged bit for bit; a VaR model
without its calibration says so instead of guessing."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from aggregator.api_views import AccountViews, LedgerReader
from aggregator.config import AppConfig
from aggregator.portfolio_feed import PortfolioFeed
from aggregator.risk import PositionRow, RiskEngine
from aggregator.store import Store

from .test_portfolio_feed import USER, config, std_engine, store  # noqa: F401

DEBT = 24_000  # USDC on alpha against 10 WETH (30,000) on alpha


def mode(m: str) -> AppConfig:
    cfg = config()
    return cfg.model_copy(update={"portfolio": cfg.portfolio.model_copy(update={"mode": m})})


def engine(cfg: AppConfig, debt: int = DEBT) -> RiskEngine:
    eng = std_engine(cfg)  # 10 WETH collateral on alpha at 3,000
    eng.apply_position(PositionRow(USER, "alpha", "USDC", "debt", debt * 10**6, debt * 10**6))
    eng.recompute()
    return eng


def views(eng: RiskEngine, feed: PortfolioFeed) -> AccountViews:
    return AccountViews(
        LedgerReader(eng), prices_ready=lambda: True, decimals={}, indexers={},
        onchain=lambda _a: None, margin=lambda _a: None,
        pushed_plan=lambda a: feed.pushed_plan(eng, a, now=0.0),
    )  # fmt: skip


async def test_standard_mode_keeps_the_standard_plan_bit_for_bit(store: Store) -> None:  # noqa: F811
    cfg = mode("standard")
    eng = engine(cfg, debt=25_000)  # standard HF 24,750 / 25,000 < 1
    feed = PortfolioFeed(cfg, store)
    assert feed.pushed_plan(eng, USER) == (False, None)
    view = views(eng, feed).account_detail(USER)
    assert view is not None and "standard_liquidation" not in view
    a = np.array([eng.book.find_account(USER)], np.int64)
    p = eng.plans(a, eng.fresh_totals(a))
    plan = view["liquidation"]
    assert plan["model"] == "standard" and plan["kind"] == "partial"
    assert plan["repay_usd"] == float(p.repay[0])  # the closed form, the same float


async def test_portfolio_mode_shows_the_portfolio_plan_and_it_reaches_the_target(
    store: Store,  # noqa: F811
) -> None:
    cfg = mode("portfolio")
    eng = engine(cfg)
    feed = PortfolioFeed(cfg, store)
    a = np.array([eng.book.find_account(USER)], np.int64)
    hf0 = float(feed.pushed.evaluate(eng.book, eng.market, a, 0.0).hf[0])
    assert hf0 < 1.0  # equity 6,000 against a 40% WETH scenario loss of 12,000
    view = views(eng, feed).account_detail(USER)
    assert view is not None
    plan = view["liquidation"]
    assert plan["model"] == "portfolio" and plan["kind"] == "partial"
    assert (plan["chain"], plan["asset"]) == ("alpha", "WETH")
    assert plan["hf_before"] == pytest.approx(hf0) and plan["hf_after"] >= 1.05
    assert view["standard_liquidation"] is None or view["standard_liquidation"]["model"] == (
        "standard"
    )
    # Done on the book (the USDC row repaid, the WETH seized), the model's HF is 1.05.
    repay, seize = plan["repay_usd"], plan["seize_usd"]
    assert seize == pytest.approx(repay * 1.05)
    left_debt = round((DEBT - repay) * 10**6)
    left_weth = round((30_000 - seize) / 3000 * 10**18)
    eng.apply_position(PositionRow(USER, "alpha", "USDC", "debt", left_debt, left_debt))
    eng.apply_position(PositionRow(USER, "alpha", "WETH", "collateral", left_weth, left_weth))
    hf = float(feed.pushed.evaluate(eng.book, eng.market, a, 0.0).hf[0])
    assert hf == pytest.approx(1.05, rel=1e-6)


async def test_a_healthy_account_under_the_model_has_no_plan(store: Store) -> None:  # noqa: F811
    cfg = mode("portfolio")
    eng = engine(cfg, debt=10_000)
    feed = PortfolioFeed(cfg, store)
    assert feed.pushed_plan(eng, USER, now=0.0) == (True, None)
    assert feed.pushed_plan(eng, "0x" + "9" * 40) == (False, None)  # unknown account


async def test_var_mode_without_calibration_is_unavailable_not_a_guess(store: Store) -> None:  # noqa: F811
    cfg = mode("var")
    eng = engine(cfg)
    feed = PortfolioFeed(cfg, store)
    applies, plan = feed.pushed_plan(eng, USER, now=0.0)
    assert applies and plan is not None
    assert plan["model"] == "var" and plan["kind"] == "unavailable"
    assert "calibration" in plan["reason"]
    view: dict[str, Any] | None = views(eng, feed).account_detail(USER)
    assert view is not None and view["liquidation"]["kind"] == "unavailable"
