"""The what-if in portfolio mode through the daemon's own parts: PortfolioFeed names the
pushed model (`evaluated_models`), its perp legs come from a real SQLite store, and
WhatIfService runs it beside the standard model on the shocked book."""

from __future__ import annotations

import pytest

from aggregator.config import AppConfig
from aggregator.portfolio_feed import PortfolioFeed
from aggregator.risk import LedgerView, PositionRow
from aggregator.store import Store
from aggregator.whatif import WhatIfService

from .test_portfolio_feed import USER, config, ev, std_engine, store  # noqa: F401

HEDGED = USER
NAKED = "0x00000000000000000000000000000000000000b2"


def mode(m: str) -> AppConfig:
    cfg = config()
    return cfg.model_copy(update={"portfolio": cfg.portfolio.model_copy(update={"mode": m})})


async def test_standard_mode_evaluates_only_the_standard_model(store: Store) -> None:  # noqa: F811
    feed = PortfolioFeed(mode("standard"), store)
    assert feed.evaluated_models() == {}


async def test_a_perp_hedge_holds_up_under_the_shock_in_portfolio_mode(store: Store) -> None:  # noqa: F811
    cfg = mode("portfolio")
    feed = PortfolioFeed(cfg, store)
    assert feed.evaluated_models() == {"portfolio": feed.pushed}
    eng = std_engine(cfg)  # HEDGED: 10 WETH on alpha
    for who in (HEDGED, NAKED):
        eng.apply_position(PositionRow(who, "alpha", "WETH", "collateral", 10**19, 10**19))
        eng.apply_position(PositionRow(who, "beta", "USDC", "debt", 10_000 * 10**6, 10_000 * 10**6))
    eng.recompute()
    # HEDGED is short 10 ETH-PERP at 3,000, confirmed.
    await feed.repo.apply_position_events("beta", [ev(5, "perp", "ETH-PERP", -10, 3000)])
    await feed.load()
    feed.views[HEDGED.lower()] = [
        type(v)(v.chain, v.account, v.kind, v.key, v.head, v.head)
        for v in feed.views[HEDGED.lower()]
    ]
    service = WhatIfService(
        cfg, LedgerView(eng), prices_ready=lambda: True, models=feed.evaluated_models
    )
    body = service.run({"shocks": {"WETH": -0.6}})
    assert set(body["models"]) == {"standard", "portfolio"}
    assert body["models"]["portfolio"]["pushed"] and not body["models"]["standard"]["pushed"]
    std = {it["account"].lower(): it for it in body["models"]["standard"]["accounts"]["items"]}
    pf = {it["account"].lower(): it for it in body["models"]["portfolio"]["accounts"]["items"]}
    # Standard margin sees the WETH collateral fall for both (it ignores the perp):
    # 10 WETH at 1,200 x lt 0.825 = 9,900 against 10,000 of debt.
    assert std[HEDGED]["tier_after"] == std[NAKED]["tier_after"] == "liquidatable"
    assert std[HEDGED]["hf_after"] == pytest.approx(0.99)
    # Portfolio margin nets the short perp: only the naked account becomes liquidatable.
    assert NAKED in pf and HEDGED not in pf
    assert pf[NAKED]["plan"] in ("partial", "full")
    assert pf[NAKED]["bad_debt_usd"] == 0.0  # equity 12,000 - 10,000 > 0


def test_vol_shift_reaches_implied_vols_and_the_var_calibration() -> None:
    import numpy as np

    from aggregator.marketdata.calibration import VarCalibration
    from aggregator.risk.portfolio_model import PortfolioModel

    cfg = mode("portfolio")  # implied_vol WETH 0.6 in the config
    eng = std_engine(cfg)
    pm = PortfolioModel(cfg)
    u = pm.engine.underlyings.index("WETH")
    shocked = eng.market.scenario(eng.market.price, eng.market.status, 1.5)
    assert pm.market_state(eng.market, 0.0).iv[u] == pytest.approx(0.6)
    assert pm.market_state(shocked, 0.0).iv[u] == pytest.approx(0.9)
    assert eng.market.vol_scale == 1.0 and shocked.vol_scale == 1.5
    cal = VarCalibration(
        ("USDC", "WETH"), "shipped", 0, 3, np.diag([1e-6, 4e-4]), np.array([1e-3, 2e-2]),
        np.array([[0.001, -0.02], [0.0, 0.03]]), np.array([[0.0, -0.2]]), (0, 1), "x",
    )  # fmt: skip
    s = cal.scaled(1.5)
    assert np.allclose(s.cov, cal.cov * 2.25) and np.allclose(s.vol, cal.vol * 1.5)
    assert np.allclose(s.scenarios, cal.scenarios * 1.5)
    assert s.stressed is cal.stressed  # history: not a current volatility
