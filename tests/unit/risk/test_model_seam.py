"""The risk-model seam (risk/model.py, risk/registry.py) and the read-only LedgerView.

A new model is one module plus one registry line: here the module is a class in the
test, registered into a copy of MODELS, built through the registry, checked against
the one result shape and adopted by the ledger like the portfolio model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given

from aggregator.config import AppConfig
from aggregator.risk import LedgerView, PositionRow, PriceInput, RiskEngine
from aggregator.risk.book import PositionBook
from aggregator.risk.market import MarketData
from aggregator.risk.model import MarginResult, ModelSources
from aggregator.risk.portfolio_model import PortfolioModel
from aggregator.risk.registry import MODELS, ModelFactory, pushed_model
from aggregator.risk.standard import StandardModel
from chains.units import TIERS

from .helpers import apply_market, engine, market, position_rows
from .test_properties import SETTINGS

E18 = 10**18
USER = "0x00000000000000000000000000000000000000a1"
OTHER = "0x00000000000000000000000000000000000000b2"


class HalfCollateral:
    """A third model: half the collateral's market value must cover the debt."""

    name = "half"

    def __init__(self, cfg: AppConfig, sources: ModelSources) -> None:
        self.warn_hf = cfg.risk.warn_hf

    def evaluate(
        self,
        book: PositionBook,
        market: MarketData,
        accounts: np.ndarray,
        now: float | None = None,
    ) -> MarginResult:
        value = book.coll[accounts] @ market.price
        debt = book.debt[accounts] @ market.price
        with np.errstate(divide="ignore"):
            hf = np.where(debt > 0, 0.5 * value / np.where(debt > 0, debt, 1.0), np.inf)
        tier = (hf < self.warn_hf).astype(np.int8) + (hf < 1.0) + (value < debt)
        return MarginResult.of(
            accounts, equity_usd=value, requirement_usd=debt, hf=hf,
            bp=np.maximum(0.5 * value - debt, 0.0), tier=tier,
            parts={"haircut": np.full(hf.shape, 0.5)},
        )  # fmt: skip


def config() -> AppConfig:
    return AppConfig(
        chains=[
            {"name": n, "chain_id": i + 1, "rpc_urls": ["http://127.0.0.1:1"],
             "contracts": {"vault": f"0x{i + 1:040x}"}}
            for i, n in enumerate(["alpha", "beta"])
        ],
        assets=[
            {"symbol": "USDC", "decimals": 6, "ltv": 0.85, "lt": 0.88, "borrowable": True},
            {"symbol": "WETH", "decimals": 18, "ltv": 0.8, "lt": 0.825},
        ],
    )  # type: ignore[arg-type]  # fmt: skip


def ready(cfg: AppConfig) -> RiskEngine:
    eng = RiskEngine.from_config(cfg)
    eng.load_positions(
        [
            PositionRow(USER, "alpha", "WETH", "collateral", 10 * E18, 10 * E18),
            PositionRow(USER, "beta", "USDC", "debt", 20_000 * 10**6, 20_000 * 10**6),
            PositionRow(OTHER, "beta", "WETH", "collateral", E18, E18),
        ]
    )
    eng.set_prices({"USDC": PriceInput(1.0), "WETH": PriceInput(3000.0)})
    eng.set_volatility({"USDC": 0.001, "WETH": 0.03})
    eng.recompute()
    eng.allocate_credit(now=0.0)
    return eng


def test_registry_names_the_two_models() -> None:
    cfg = config()
    assert isinstance(MODELS["standard"](cfg, ModelSources()), StandardModel)
    assert isinstance(MODELS["portfolio"](cfg, ModelSources()), PortfolioModel)
    assert isinstance(pushed_model(cfg, ModelSources()), StandardModel)


def test_a_third_model_is_one_class_and_one_registry_line() -> None:
    cfg = config()
    models: dict[str, ModelFactory] = {**MODELS, "half": HalfCollateral}
    model = models["half"](cfg, ModelSources())
    eng = ready(cfg)
    acc = np.arange(eng.book.n_accounts, dtype=np.int64)
    res = model.evaluate(eng.book, eng.market, acc)
    res.validate()
    assert res.accounts.tolist() == acc.tolist()
    assert not res.hf.flags.writeable and not res.parts["haircut"].flags.writeable
    a = eng.book.find_account(USER)
    assert res.hf[a] == pytest.approx(0.5 * 30_000 / 20_000)
    assert TIERS[int(res.tier[a])] == "liquidatable" and eng.health(USER).hf > 1
    assert eng.adopt(res) == 2
    view = LedgerView(eng)
    assert view.hf(a) == pytest.approx(0.75) and view.tier(a) == "liquidatable"
    assert MODELS.keys() == {"standard", "portfolio", "var"}  # the copy, not the registry


def test_a_result_of_another_shape_is_refused() -> None:
    one = np.zeros(1)
    with pytest.raises(ValueError, match="shape"):
        MarginResult.of(
            np.arange(2), equity_usd=one, requirement_usd=one, hf=one, bp=one, tier=[0, 0]
        )
    with pytest.raises(ValueError, match="tier codes"):
        MarginResult.of([0], equity_usd=one, requirement_usd=one, hf=one, bp=one, tier=[4])
    with pytest.raises(ValueError, match="NaN"):
        MarginResult.of([0], equity_usd=one, requirement_usd=one, hf=[np.nan], bp=one, tier=[0])


@SETTINGS
@given(rows=position_rows(), m=market())
def test_standard_model_matches_the_ledger_bit_for_bit(rows: list, m: dict[str, Any]) -> None:
    eng = engine(depth=m["depth"])
    apply_market(eng, m)
    eng.load_positions(rows)
    eng.recompute()
    n = eng.book.n_accounts
    res = eng.model.evaluate(eng.book, eng.market, np.arange(n, dtype=np.int64))
    assert np.array_equal(res.hf, eng.r_hf[:n])
    assert np.array_equal(res.bp, eng.r_bp[:n])
    assert np.array_equal(res.tier, eng.r_tier[:n])
    assert np.array_equal(res.parts["degraded"], eng.r_degraded[:n])


def test_ledger_view_reads_match_and_cannot_write() -> None:
    eng = ready(config())
    view = LedgerView(eng)
    n = view.n_accounts
    a = view.find_account(USER)
    assert a is not None and view.address(a) == USER and view.account_index[USER] == a
    assert list(view.addresses) == eng.book.account_address[:n]
    assert view.chains == ("alpha", "beta") and view.has_asset("WETH")
    assert view.credit_usd6(a) == [eng.credit_of(USER)[c] for c in view.chains]
    assert view.head_amount(a, "beta", "USDC", "debt") == 20_000 * 10**6
    assert view.head_amount(a, "alpha", "USDC", "debt") == 0
    arrays = [
        view.hf_array(n), view.bp_array(n), view.tier_array(n), view.degraded_array(n),
        view.credit_array("beta", n), view.unpriced_array(n),
    ]  # fmt: skip
    assert np.array_equal(arrays[0], eng.r_hf[:n])
    assert np.array_equal(arrays[4], eng.credit[:n, 1])
    for arr in arrays:
        with pytest.raises(ValueError, match="read-only"):
            arr[0] = 0
    with pytest.raises(TypeError):
        view.account_index["x"] = 0  # type: ignore[index]
    assert view.tier_counts() == eng.tier_counts()
    assert view.health(USER) == eng.health(USER)
