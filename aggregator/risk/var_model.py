"""VaR / Expected Shortfall margin as a MarginModel (docs/var.md "The pushed mode").

Per account over all its chains: collateral (long) and debt (short) from the shared
position book, perps and options from the `DerivativeSource` (both finality views, the
worse counts), exactly the legs the portfolio model margins (risk/portfolio_model.py).

Requirement = ES at [var] confidence (default 97.5%, FRTB) over each asset's
liquidation horizon h_i (returns scaled by sqrt(h_i); options one horizon older),
floored by the ES of the same book over the stressed window of the calibration:
- FHS (default): the calibration's filtered historical scenarios, linear positions
  revalued in price, options fully revalued with Black-76 through risk/var.py's
  `Revalue` hook;
- parametric (delta-normal): sqrt(x' D S D x) with options at their Black-76 delta.
Both are computed; [var] method picks the pushed one. HF, BP and tier come from equity
(collateral - debt + perp PnL + option marks) and the requirement by the one rule of
risk/model.py `health` (IM = [portfolio] im_factor x requirement).

Invariants: pure (the calibration and the derivative legs are handed in through
`ModelSources`); a missing or stale-shaped calibration is `MissingCalibration`, never a
zero margin; a zero-position account has zero requirement (HF +inf, healthy); the
explanation's Euler contributions per asset and per chain sum to the requirement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from aggregator.config import AppConfig, VarConfig
from aggregator.marketdata.calibration import VarCalibration
from aggregator.risk.book import PositionBook
from aggregator.risk.market import MarketData
from aggregator.risk.model import MarginResult, ModelSources, health
from aggregator.risk.portfolio import (
    SECONDS_PER_YEAR,
    MarketState,
    PortfolioBook,
    PortfolioEngine,
    black76,
    black76_greeks,
)
from aggregator.risk.portfolio_model import DerivativeSource, PortfolioModel
from aggregator.risk.var import Revalue, es_multiplier, historical, parametric, tail_count
from chains.units import TIERS

F64 = NDArray[np.float64]
DAYS_PER_YEAR = 365.0
# Accounts per pass of compute(): bounds the two views' exposure tables (~100 MB here).
ACCOUNT_CHUNK = 1 << 17


class MissingCalibration(RuntimeError):
    """The VaR model has no calibration (yet), or one for other assets."""


class CalibrationSource(Protocol):
    @property
    def calibration(self) -> VarCalibration | None: ...


@dataclass(frozen=True)
class Instruments:
    """One view's book as the VaR model sees it: USD exposure per asset (linear legs:
    spot units x price, perps x spot on their underlying's asset), USD delta per asset
    (the same plus option deltas), option contracts per series and the series'
    underlying asset column, strike, expiry (years), implied vol, type and value now."""

    x_usd: F64  # accounts x assets
    x_delta: F64  # accounts x assets
    opt_size: Any  # accounts x series (sparse)
    o_asset: NDArray[np.int64]
    o_strike: F64
    o_t: F64
    o_iv: F64
    o_call: NDArray[np.bool_]
    o_v0: F64
    equity: F64


@dataclass(frozen=True)
class Legs:
    """One account's legs in order spot, perps, options (explanations)."""

    asset: NDArray[np.int64]
    chain: NDArray[np.int64]
    usd: F64  # linear legs only (spot, perps)
    delta_usd: F64  # every leg
    o_series: NDArray[np.int64]
    o_size: F64
    ins: Instruments


@dataclass(frozen=True)
class VarFigures:
    equity: F64
    es_fhs: F64
    es_parametric: F64
    stressed_es: F64
    requirement: F64


def _columns(f: VarFigures) -> tuple[F64, F64, F64, F64, F64]:
    """The figures in field order (the order `_worse_view` returns them)."""
    return f.equity, f.es_fhs, f.es_parametric, f.stressed_es, f.requirement


class VarPricer:
    """The VaR/ES arithmetic over a portfolio engine's books and market state (the
    model's, or the capital report's reference book)."""

    def __init__(self, engine: PortfolioEngine, var: VarConfig) -> None:
        self.engine = engine
        self.var = var
        self.horizon = np.array([var.horizon(s) for s in engine.symbols])
        self.sqrt_h = np.sqrt(self.horizon)

    # -- the book as exposures -------------------------------------------------------------
    def instruments(self, book: PortfolioBook, mkt: MarketState) -> Instruments:
        eng = self.engine
        T, U = len(eng.symbols), len(eng.underlyings)
        X = eng.exposure(book)
        u_asset = np.array([eng.asset_index[u] for u in eng.underlyings], np.int64)
        lin = np.zeros((T + U, T))
        lin[np.arange(T), np.arange(T)] = mkt.price
        lin[T + np.arange(U), u_asset] = mkt.spot
        x_usd = np.asarray(X[:, : T + U] @ lin, np.float64).reshape(book.n_accounts, T)
        xo = X[:, T + U :]
        su = np.array([eng.u_index[s.underlying] for s in book.series], np.int64)
        strike = np.array([s.strike for s in book.series], np.float64)
        t = np.array([(s.expiry - mkt.now) / SECONDS_PER_YEAR for s in book.series], np.float64)
        call = np.array([s.is_call for s in book.series], bool)
        iv = np.nan_to_num(mkt.iv[su]) if su.size else np.zeros(0)
        v0 = eng.option_values(book, mkt) if su.size else np.zeros(0)
        x_delta = x_usd.copy()
        if su.size:
            d, _g, _v = black76_greeks(mkt.spot[su], strike, t, iv, call)
            dmap = np.zeros((su.size, T))
            dmap[np.arange(su.size), u_asset[su]] = d * mkt.spot[su]
            x_delta += np.asarray(xo @ dmap, np.float64).reshape(x_usd.shape)
        coll, debt, upnl, optv = eng.marks(book, mkt, v0)
        return Instruments(
            x_usd, x_delta, xo, u_asset[su], strike, t, iv, call, v0, coll - debt + upnl + optv
        )

    def option_pnl(self, ins: Instruments, mkt: MarketState, scen_h: F64) -> F64:
        """series x scenarios P&L per contract at horizon-scaled asset log returns:
        Black-76 at the scenario spot, each option one (its underlying's) horizon older."""
        if ins.o_asset.size == 0:
            return np.zeros((0, scen_h.shape[0]))
        spot = mkt.price[ins.o_asset]
        fwd = spot[:, None] * np.exp(scen_h[:, ins.o_asset].T)
        age = self.horizon[ins.o_asset] / DAYS_PER_YEAR
        v = black76(fwd, ins.o_strike[:, None], (ins.o_t - age)[:, None], ins.o_iv[:, None],
                    ins.o_call[:, None])  # fmt: skip
        return np.asarray(v - ins.o_v0[:, None], np.float64)

    def _hook(self, ins: Instruments, mkt: MarketState, scen_h: F64) -> Revalue | None:
        if ins.o_asset.size == 0:
            return None
        per_contract = self.option_pnl(ins, mkt, scen_h)

        def revalue(_r: F64, rows: slice) -> F64:
            return np.asarray(ins.opt_size[rows] @ per_contract, np.float64)

        return revalue

    def _es(self, ins: Instruments, mkt: MarketState, returns: F64) -> F64:
        scen_h = returns * self.sqrt_h[None, :]
        lvl = self.var.confidence
        res = historical(ins.x_usd, scen_h, var_level=lvl, es_level=lvl,
                         revalue=self._hook(ins, mkt, scen_h))  # fmt: skip
        return res.es

    def figures(self, book: PortfolioBook, mkt: MarketState, cal: VarCalibration) -> VarFigures:
        ins = self.instruments(book, mkt)
        n = book.n_accounts
        lvl = self.var.confidence
        cov_h = cal.cov * np.outer(self.sqrt_h, self.sqrt_h)
        es_par = parametric(ins.x_delta, cov_h, var_level=lvl, es_level=lvl).es
        es_fhs = self._es(ins, mkt, cal.scenarios) if n else np.zeros(0)
        stressed = np.zeros(n)
        if cal.stressed is not None and self.var.stressed_floor and n:
            stressed = self._es(ins, mkt, cal.stressed)
        pushed = es_fhs if self.var.method == "fhs" else es_par
        req = np.maximum(np.maximum(pushed, stressed), 0.0)
        return VarFigures(ins.equity, es_fhs, es_par, stressed, req)

    def binding(self, f: VarFigures) -> str:
        pushed = f.es_fhs[0] if self.var.method == "fhs" else f.es_parametric[0]
        if self.var.stressed_floor and f.stressed_es[0] > pushed:
            return "stressed"
        return self.var.method

    def contributions(
        self, pb: PortfolioBook, mkt: MarketState, cal: VarCalibration, binding: str
    ) -> tuple[dict[str, float], dict[str, float]]:
        """Euler contributions of one account's legs (per asset, per chain) to the
        binding figure: the parametric marginal x_l (D S D x)_a / sigma * ES/sigma, or
        minus the mean of each leg's P&L over the account's ES tail scenarios."""
        legs = self.leg_table(pb, mkt)
        if binding == "parametric":
            c = self._parametric_contrib(legs, cal)
        else:
            returns = cal.scenarios if binding == "fhs" else cal.stressed
            assert returns is not None
            c = self._tail_contrib(legs, mkt, returns * self.sqrt_h[None, :])
        by_asset: dict[str, float] = {}
        by_chain: dict[str, float] = {}
        for v, a, ch in zip(c.tolist(), legs.asset.tolist(), legs.chain.tolist(), strict=True):
            sym, chain = self.engine.symbols[a], pb.chains[ch]
            by_asset[sym] = by_asset.get(sym, 0.0) + v
            by_chain[chain] = by_chain.get(chain, 0.0) + v
        return by_asset, by_chain

    def leg_table(self, pb: PortfolioBook, mkt: MarketState) -> Legs:
        """Every leg of a one-account book with its asset column (an option's or a
        perp's: its underlying's), its chain, its USD exposure (linear legs) and its USD
        delta (options: Black-76 delta x spot x contracts)."""
        eng = self.engine
        u_asset = np.array([eng.asset_index[u] for u in eng.underlyings], np.int64)
        p_asset = u_asset[eng.market_u[pb.p_market]]
        ins = self.instruments(pb, mkt)
        o_asset = ins.o_asset[pb.o_series]
        usd = np.concatenate(
            [pb.s_units * mkt.price[pb.s_asset], pb.p_size * mkt.spot[eng.market_u[pb.p_market]]]
        )
        o_delta = np.zeros(0)
        if pb.o_series.size:
            d, _g, _v = black76_greeks(
                mkt.price[ins.o_asset], ins.o_strike, ins.o_t, ins.o_iv, ins.o_call
            )
            o_delta = pb.o_size * (d * mkt.price[ins.o_asset])[pb.o_series]
        return Legs(
            np.concatenate([pb.s_asset, p_asset, o_asset]).astype(np.int64),
            np.concatenate([pb.s_chain, pb.p_chain, pb.o_chain]).astype(np.int64),
            usd, np.concatenate([usd, o_delta]), pb.o_series, pb.o_size, ins,
        )  # fmt: skip

    def _tail_contrib(self, legs: Legs, mkt: MarketState, scen_h: F64) -> F64:
        n_lin = legs.usd.size
        pnl = np.empty((legs.asset.size, scen_h.shape[0]))
        pnl[:n_lin] = legs.usd[:, None] * np.expm1(scen_h[:, legs.asset[:n_lin]].T)
        per_contract = self.option_pnl(legs.ins, mkt, scen_h)
        pnl[n_lin:] = legs.o_size[:, None] * per_contract[legs.o_series]
        loss = -pnl.sum(axis=0)
        ke = tail_count(self.var.confidence, loss.size)
        tail = np.argsort(-loss, kind="stable")[:ke]
        return np.asarray(-pnl[:, tail].mean(axis=1), np.float64)

    def _parametric_contrib(self, legs: Legs, cal: VarCalibration) -> F64:
        x = np.bincount(legs.asset, legs.delta_usd, minlength=len(self.engine.symbols))
        cov_h = cal.cov * np.outer(self.sqrt_h, self.sqrt_h)
        sigma = math.sqrt(max(float(x @ cov_h @ x), 0.0))
        if sigma == 0.0:
            return np.zeros(legs.asset.size)
        k = es_multiplier(self.var.confidence)
        return np.asarray(legs.delta_usd * (cov_h @ x)[legs.asset] / sigma * k, np.float64)


class VarModel:
    name = "var"

    def __init__(
        self,
        cfg: AppConfig,
        derivatives: DerivativeSource | None = None,
        calibration: CalibrationSource | None = None,
    ) -> None:
        self.cfg = cfg
        self.pm = PortfolioModel(cfg, derivatives)
        self.engine = self.pm.engine
        self.source = calibration
        self.pricer = VarPricer(self.engine, cfg.var)

    @classmethod
    def from_config(cls, cfg: AppConfig, sources: ModelSources | None = None) -> VarModel:
        if sources is None:
            return cls(cfg)
        return cls(cfg, sources.derivatives, sources.calibration)

    def calibration(self) -> VarCalibration:
        cal = self.source.calibration if self.source is not None else None
        if cal is None:
            raise MissingCalibration("var model: no calibration loaded yet")
        if cal.assets != tuple(self.engine.symbols):
            raise MissingCalibration(
                f"var model: calibration for {cal.assets}, the book has {self.engine.symbols}"
            )
        return cal

    def compute(
        self,
        book: PositionBook,
        market: MarketData,
        accounts: NDArray[np.int64],
        now: float | None = None,
    ) -> VarFigures:
        """The worse of the two finality views: lower equity, higher requirement.
        Accounts are independent, so they go through in chunks of ACCOUNT_CHUNK: the two
        views' exposure tables of a whole 1M book would not fit the memory budget."""
        cal = self.calibration()
        if market.vol_scale != 1.0:
            cal = cal.scaled(market.vol_scale)
        mkt = self.pm.market_state(market, now)
        # Each chunk's figures go straight into the output (not a list of chunks then
        # concatenated: that held the figures twice at the end, ~40 MB at 1M accounts).
        out = VarFigures(*(np.empty(accounts.size) for _ in range(5)))
        for lo in range(0, max(accounts.size, 1), ACCOUNT_CHUNK):
            part = self._worse_view(book, mkt, cal, accounts[lo : lo + ACCOUNT_CHUNK])
            for dst, src in zip(_columns(out), part, strict=True):
                dst[lo : lo + src.size] = src
            del part
        return out

    def _worse_view(
        self, book: PositionBook, mkt: MarketState, cal: VarCalibration, acc: NDArray[np.int64]
    ) -> tuple[F64, F64, F64, F64, F64]:
        head, conf = (self.pricer.figures(b, mkt, cal) for b in self.pm.books(book, acc))
        take = conf.requirement > head.requirement
        return (
            np.minimum(head.equity, conf.equity),
            np.where(take, conf.es_fhs, head.es_fhs),
            np.where(take, conf.es_parametric, head.es_parametric),
            np.where(take, conf.stressed_es, head.stressed_es),
            np.maximum(head.requirement, conf.requirement),
        )

    def evaluate(
        self,
        book: PositionBook,
        market: MarketData,
        accounts: NDArray[np.int64],
        now: float | None = None,
    ) -> MarginResult:
        f = self.compute(book, market, accounts, now)
        im = self.cfg.portfolio.im_factor
        hf, bp, tier = health(f.equity, f.requirement, im, self.cfg.risk.warn_hf)
        parts = {
            "es_fhs_usd": f.es_fhs, "es_parametric_usd": f.es_parametric,
            "stressed_es_usd": f.stressed_es, "im_usd": im * f.requirement,
        }  # fmt: skip
        # Fresh arrays of this call alone: read-only, the result takes them as they are
        # (model.py `_frozen`) instead of a second copy of every figure (~70 MB at 1M
        # accounts, on the what-if's memory peak).
        fresh: tuple[NDArray[Any], ...] = (f.equity, f.requirement, hf, bp, tier, *parts.values())
        for a in fresh:
            a.setflags(write=False)
        return MarginResult.of(
            accounts, equity_usd=f.equity, requirement_usd=f.requirement, hf=hf, bp=bp,
            tier=tier, parts=parts,
        )  # fmt: skip

    # -- explanation -----------------------------------------------------------------------
    def explain(
        self, book: PositionBook, market: MarketData, account: int, now: float | None = None
    ) -> dict[str, Any]:
        """One account's figures, which figure binds, and the Euler contributions of the
        binding figure per asset and per chain (they sum to the requirement)."""
        cal = self.calibration()
        mkt = self.pm.market_state(market, now)
        acc = np.array([account], np.int64)
        views = self.pm.books(book, acc)
        figs = [self.pricer.figures(b, mkt, cal) for b in views]
        worse = int(figs[1].requirement[0] > figs[0].requirement[0])
        f, pb = figs[worse], views[worse]
        binding = self.pricer.binding(f)
        by_asset, by_chain = self.pricer.contributions(pb, mkt, cal, binding)
        equity = float(min(g.equity[0] for g in figs))
        req = float(f.requirement[0])
        im = self.cfg.portfolio.im_factor
        hf, bp, tier = health(np.array([equity]), np.array([req]), im, self.cfg.risk.warn_hf)
        return {
            "equity_usd": equity,
            "es_fhs_usd": float(f.es_fhs[0]),
            "es_parametric_usd": float(f.es_parametric[0]),
            "stressed_es_usd": float(f.stressed_es[0]),
            "requirement_usd": req,
            "im_usd": im * req,
            "hf": float(hf[0]) if math.isfinite(hf[0]) else None,
            "borrowing_power_usd": float(bp[0]),
            "tier": TIERS[int(tier[0])],
            "method": self.cfg.var.method,
            "binding": binding,
            "confidence": self.cfg.var.confidence,
            "horizon_days": dict(
                zip(self.engine.symbols, self.pricer.horizon.tolist(), strict=True)
            ),
            "view": ("head", "confirmed")[worse],
            "contributions": {"by_asset": by_asset, "by_chain": by_chain},
            "calibration": cal.describe(),
        }


__all__ = ["CalibrationSource", "MissingCalibration", "VarFigures", "VarModel", "VarPricer"]
