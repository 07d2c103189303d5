"""Portfolio margin as a MarginModel (docs/portfolio-margin.md).

Spot legs come straight from the shared position book (counted amounts: asymmetric
finality already applied), perps and options from a `DerivativeSource` (the I/O
layer's Markets events, in both finality views); the scenario engine of
risk/portfolio.py values both views and the account counts the worse (`worst_of`).

Invariants: pure (no I/O: derivative legs and funding are handed in); one result per
account asked about, in order; equity and maintenance margin are the result's
equity and requirement.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from aggregator.config import AppConfig
from aggregator.risk.book import COLLATERAL, PositionBook
from aggregator.risk.market import MarketData
from aggregator.risk.model import MarginResult, ModelSources
from aggregator.risk.portfolio import (
    MarketState,
    OptionLeg,
    PerpLeg,
    PortfolioBook,
    PortfolioEngine,
    PortfolioResult,
    worst_of,
)

VIEWS = ("head", "confirmed")


class DerivativeSource(Protocol):
    """Perp and option legs of accounts in one finality view, and funding indices."""

    @property
    def funding(self) -> Mapping[str, float]: ...

    def legs(self, accounts: Sequence[str], view: str) -> tuple[list[PerpLeg], list[OptionLeg]]: ...


class PortfolioModel:
    name = "portfolio"

    def __init__(self, cfg: AppConfig, derivatives: DerivativeSource | None = None) -> None:
        self.cfg = cfg
        self.engine = PortfolioEngine.from_config(cfg)
        self.derivatives = derivatives

    @classmethod
    def from_config(cls, cfg: AppConfig, sources: ModelSources | None = None) -> PortfolioModel:
        return cls(cfg, sources.derivatives if sources else None)

    def market_state(self, market: MarketData, now: float | None = None) -> MarketState:
        funding = self.derivatives.funding if self.derivatives else {}
        # A what-if's volatility shift (MarketData.vol_scale) reaches the configured
        # implied vols here; those derived from the daily sigma are already scaled.
        scale = market.vol_scale
        given = (
            {u: v * scale for u, v in self.engine.cfg.implied_vol.items()} if scale != 1.0 else None
        )
        return self.engine.market(
            market.ok_prices(), given, funding, time.time() if now is None else now,
            daily_sigma=market.known_sigma(),
        )  # fmt: skip

    def books(self, book: PositionBook, accounts: NDArray[np.int64]) -> list[PortfolioBook]:
        """One scenario book per finality view, spot legs as arrays from the rows."""
        addrs = [book.account_address[int(i)] for i in accounts]
        rows, lengths = book.rows_with_lengths(accounts)
        s_acc = np.repeat(np.arange(accounts.size, dtype=np.int64), lengths)
        units = book.r_amount[rows] * np.where(book.r_side[rows] == COLLATERAL, 1.0, -1.0)
        keep = units != 0
        to_pf = np.array([self.engine.asset_index[sym] for sym in book.assets], np.int64)
        out = []
        for view in VIEWS:
            perps, opts = self.derivatives.legs(addrs, view) if self.derivatives else ([], [])
            b = self.engine.book((), perps, opts, accounts=addrs, chains=list(book.chains))
            out.append(
                replace(
                    b,
                    s_acc=s_acc[keep],
                    s_chain=book.r_chain[rows][keep].astype(np.int64),
                    s_asset=to_pf[book.r_asset[rows][keep].astype(np.int64)],
                    s_units=units[keep],
                )
            )
        return out

    def compute(
        self,
        book: PositionBook,
        market: MarketData,
        accounts: NDArray[np.int64],
        now: float | None = None,
    ) -> PortfolioResult:
        """The worse of the two views' scenario figures for `accounts`."""
        head, conf = self.books(book, accounts)
        mkt = self.market_state(market, now)
        pf = self.cfg.portfolio
        return worst_of(
            self.engine.compute(head, mkt), self.engine.compute(conf, mkt), pf.im_factor,
            self.cfg.risk.warn_hf,
        )  # fmt: skip

    def evaluate(
        self,
        book: PositionBook,
        market: MarketData,
        accounts: NDArray[np.int64],
        now: float | None = None,
    ) -> MarginResult:
        res = self.compute(book, market, accounts, now)
        parts = {
            "collateral_usd": res.collateral_usd, "debt_usd": res.debt_usd,
            "perp_upnl_usd": res.perp_upnl, "option_value_usd": res.option_value,
            "worst_loss_usd": res.worst_loss, "contingency_usd": res.contingency,
            "im_usd": res.im,
        }  # fmt: skip
        return MarginResult.of(
            accounts, equity_usd=res.equity, requirement_usd=res.mm, hf=res.hf, bp=res.bp,
            tier=res.tier, parts=parts,
        )  # fmt: skip


__all__ = ["DerivativeSource", "PortfolioModel"]
