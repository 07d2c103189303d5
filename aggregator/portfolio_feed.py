"""Feeds the daemon's positions to the portfolio engine (docs/portfolio-margin.md).

Collateral and debt come from the standard engine's book (counted amounts under
asymmetric finality); perps and options from the Markets events in the store, in
both finality views; the account counts the worse view (`worst_of`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from aggregator.config import AppConfig
from aggregator.risk.book import COLLATERAL
from aggregator.risk.engine import RiskEngine
from aggregator.risk.model import MarginModel, ModelSources
from aggregator.risk.model_plans import plan_accounts, plan_view
from aggregator.risk.portfolio import (
    OptionLeg,
    OptionSeries,
    PerpLeg,
    PortfolioResult,
    SpotLeg,
    worst_of,
)
from aggregator.risk.portfolio_model import PortfolioModel
from aggregator.risk.registry import STANDARD, pushed_model
from aggregator.risk.var_model import CalibrationSource, MissingCalibration, VarModel
from aggregator.store.db import Store
from aggregator.store.derivatives_repo import SqlDerivativeStore
from chains.positions import FIXED, DerivativeEvent, MarketsWatch, PositionView
from chains.units import TIERS


class PortfolioFeed:
    def __init__(
        self, cfg: AppConfig, store: Store, calibration: CalibrationSource | None = None
    ) -> None:
        self.cfg = cfg
        self.repo = SqlDerivativeStore(store)
        self.model = PortfolioModel(cfg, derivatives=self)
        self.engine = self.model.engine
        # The model the pusher carries ([portfolio] mode); the standard one is the
        # ledger's own, so only another model's figures are adopted.
        self.pushed = pushed_model(cfg, ModelSources(derivatives=self, calibration=calibration))
        self.option_names = {o.name: o.underlying for o in cfg.portfolio.options}
        self.views: dict[str, list[PositionView]] = {}
        self.funding: dict[str, float] = {}
        self.enabled = any(c.contracts.markets for c in cfg.chains)

    def watch(self, chain: str) -> MarketsWatch | None:
        addr = self.cfg.chain(chain).contracts.markets
        return MarketsWatch(addr, self.repo) if addr else None

    async def load(self) -> None:
        if not self.enabled:
            return
        by_acc: dict[str, list[PositionView]] = {}
        funding: dict[str, float] = {}
        for v in await self.repo.views():
            if v.kind == "funding":
                if v.head is not None:
                    funding[v.key] = v.head.funding / FIXED
                continue
            by_acc.setdefault(v.account.lower(), []).append(v)
        self.views, self.funding = by_acc, funding

    async def accounts_changed(self, accounts: Iterable[str]) -> None:
        if self.enabled and accounts:
            await self.load()

    def _legs(
        self, account: str, ev: DerivativeEvent | None, chain: str, unmapped: set[str]
    ) -> tuple[list[PerpLeg], list[OptionLeg]]:
        if ev is None or ev.size == 0:
            return [], []
        if ev.kind == "perp":
            if ev.key not in self.engine.market_index:
                unmapped.add(ev.key)
                return [], []
            return [
                PerpLeg(
                    account, chain, ev.key, ev.size / FIXED, ev.price / FIXED, ev.funding / FIXED
                )
            ], []
        und = self.option_names.get(ev.underlying or "")
        if und is None:
            unmapped.add(ev.underlying or ev.key)
            return [], []
        s = OptionSeries(und, ev.price / FIXED, float(ev.expiry), ev.is_call)
        return [], [OptionLeg(account, chain, s, ev.size / FIXED)]

    def legs(self, accounts: Sequence[str], view: str) -> tuple[list[PerpLeg], list[OptionLeg]]:
        """DerivativeSource: the perp and option legs of `accounts` in `view`."""
        perps: list[PerpLeg] = []
        opts: list[OptionLeg] = []
        unmapped: set[str] = set()
        for a in accounts:
            for v in self.views.get(a, []):
                p, o = self._legs(a, getattr(v, view), v.chain, unmapped)
                perps += p
                opts += o
        return perps, opts

    def override(
        self, std: RiskEngine, accounts: Iterable[str] | None = None, now: float | None = None
    ) -> int:
        """Portfolio mode: make the pushed model's figures the ones that count. HF, BP
        and tier of `accounts` (default: every account of the book) in the standard
        engine are replaced by the pushed model's (RiskEngine.adopt), so the credit
        allocation and the pusher carry them. Degraded flags stay the standard engine's;
        liquidation plans follow the pushed model (`pushed_plan`, computed when asked).
        Returns how many accounts were set; 0 in standard mode."""
        if self.cfg.portfolio.mode == STANDARD:
            return 0
        book = std.book
        if accounts is None:
            idx = np.arange(book.n_accounts, dtype=np.int64)
        else:
            found = (book.find_account(a) for a in accounts)
            idx = np.array(sorted({a for a in found if a is not None}), np.int64)
        if idx.size == 0:
            return 0
        res = self.pushed.evaluate(book, std.market, idx, now)
        return std.adopt(res, im_factor=self.cfg.portfolio.im_factor)

    def pushed_requirement(
        self, std: RiskEngine, idx: np.ndarray, now: float | None = None
    ) -> np.ndarray | None:
        """The pushed model's requirement (USD) of accounts `idx` (book indices), for
        the risk history; None in standard mode (the standard requirement is the
        ledger's) or when the model cannot evaluate now (a missing input: logged by
        the recompute that also meets it)."""
        if self.cfg.portfolio.mode == STANDARD or len(idx) == 0:
            return None
        try:
            res = self.pushed.evaluate(std.book, std.market, np.asarray(idx, np.int64), now)
        except (MissingCalibration, KeyError, ValueError, RuntimeError):
            return None
        return np.asarray(res.requirement_usd, np.float64)

    def pushed_plan(
        self, std: RiskEngine, address: str, now: float | None = None
    ) -> tuple[bool, dict[str, Any] | None]:
        """The liquidation plan of `address` under the pushed model (risk/model_plans.py),
        with the account's reputation multiplier: (True, the explanation's `liquidation`
        section: None when the model rates it at or above HF 1); (False, None) in
        standard mode or for an unknown account (the standard plan stands). A model that
        cannot evaluate now gives kind "unavailable" with the reason (never a guess)."""
        mode = self.cfg.portfolio.mode
        a = std.book.find_account(address)
        if mode == STANDARD or a is None:
            return False, None
        idx = np.array([a], np.int64)
        # The plan restores HF, the maintenance side: the maintenance multiplier.
        mult = np.asarray(std.r_mmult[idx], np.float64) if std.r_mmult.size > a else None
        try:
            mp = plan_accounts(
                self.pushed, std.book, std.market, idx, risk=self.cfg.risk, bonus=std.model.bonus,
                mult=mult, im_factor=self.cfg.portfolio.im_factor, now=now,
            )  # fmt: skip
        except (MissingCalibration, KeyError, ValueError, RuntimeError) as exc:
            return True, {"model": mode, "kind": "unavailable", "reason": str(exc)}
        return True, plan_view(
            mp, 0, chains=std.book.chains, symbols=std.book.assets, bonus=std.model.bonus,
            target_hf=self.cfg.risk.target_hf,
        )  # fmt: skip

    def evaluated_models(self) -> dict[str, MarginModel]:
        """The models the daemon evaluates besides the ledger's standard one: the pushed
        model ([portfolio] mode), none in standard mode (the what-if runs them)."""
        if self.cfg.portfolio.mode == STANDARD:
            return {}
        return {self.cfg.portfolio.mode: self.pushed}

    def account_margin(
        self, std: RiskEngine, address: str, now: float | None = None
    ) -> dict[str, Any] | None:
        """Standard and portfolio figures side by side, and the greeks."""
        addr = address.lower()
        a = std.book.find_account(addr)
        views = self.views.get(addr, [])
        if a is None and not views:
            return None
        spot = _spot_legs(std, a, addr)
        unmapped: set[str] = set()
        hp, ho = self._view_legs(addr, views, unmapped, confirmed=False)
        cp, co = self._view_legs(addr, views, unmapped, confirmed=True)
        mkt = self.model.market_state(std.market, now)
        head = self.engine.book(spot, hp, ho, accounts=[addr])
        conf = self.engine.book(spot, cp, co, accounts=[addr])
        pf = self.cfg.portfolio
        res: PortfolioResult = worst_of(
            self.engine.compute(head, mkt), self.engine.compute(conf, mkt), pf.im_factor,
            self.cfg.risk.warn_hf,
        )  # fmt: skip
        g = self.engine.greeks(head, mkt)
        row = res.row(0)
        row["hf"] = row["hf"] if math.isfinite(row["hf"]) else None
        return {
            "account": addr,
            "mode": pf.mode,
            "standard": None if a is None else _standard_column(std, addr),
            "portfolio": row,
            "var": self._var_column(std, a, now),
            "greeks": {
                u: {k: float(np.asarray(g[k])[0, i]) for k in ("delta", "gamma", "vega")}
                for i, u in enumerate(self.engine.underlyings)
            },
            "derivatives": [_derivative_row(v) for v in views],
            "unmapped": sorted(unmapped),
            "tiers": list(TIERS),
        }

    def _view_legs(
        self, addr: str, views: Sequence[PositionView], unmapped: set[str], *, confirmed: bool
    ) -> tuple[list[PerpLeg], list[OptionLeg]]:
        """The account's perp and option legs in one finality view (head or confirmed)."""
        perps: list[PerpLeg] = []
        options: list[OptionLeg] = []
        for v in views:
            p, o = self._legs(addr, v.confirmed if confirmed else v.head, v.chain, unmapped)
            perps += p
            options += o
        return perps, options

    def _var_column(self, std: RiskEngine, a: int | None, now: float | None) -> dict[str, Any]:
        """The VaR model's figures and contributions (var mode: the model is calibrated
        by aggregator/var_feed.py); otherwise why there are none."""
        if not isinstance(self.pushed, VarModel):
            return {"available": False, "reason": "[portfolio] mode is not 'var'"}
        if a is None:
            return {"available": False, "reason": "no collateral or debt in the book"}
        try:
            return {"available": True, **self.pushed.explain(std.book, std.market, a, now)}
        except (MissingCalibration, KeyError, ValueError, RuntimeError) as exc:
            return {"available": False, "reason": str(exc)}


__all__ = ["PortfolioFeed"]


def _spot_legs(std: RiskEngine, a: int | None, addr: str) -> list[SpotLeg]:
    """The account's collateral (long) and debt (short) from the standard book."""
    spot: list[SpotLeg] = []
    if a is None:
        return spot
    book = std.book
    for r in book.rows_of(a).tolist():
        q = float(book.r_amount[r])
        if q == 0:
            continue
        sign = 1.0 if book.r_side[r] == COLLATERAL else -1.0
        spot.append(
            SpotLeg(addr, book.chains[book.r_chain[r]], book.assets[book.r_asset[r]], sign * q)
        )
    return spot


def _standard_column(std: RiskEngine, addr: str) -> dict[str, Any]:
    h = std.standard_health(addr)
    return {
        "hf": h.hf if math.isfinite(h.hf) else None,
        "borrowing_power_usd": h.bp,
        "tier": h.tier,
        "collateral_usd": h.collateral_usd,
        "debt_usd": h.debt_usd,
    }


def _derivative_row(v: PositionView) -> dict[str, Any]:
    return {
        "chain": v.chain,
        "kind": v.kind,
        "key": v.key,
        "head_size": (v.head.size / FIXED) if v.head else 0.0,
        "confirmed_size": (v.confirmed.size / FIXED) if v.confirmed else 0.0,
    }
