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
# Accounts per scenario pass in `evaluate`: 2 views x 40 scenarios x 8 B x 2**17 = 84 MB
# of P&L table at a time, whatever the book size.
ACCOUNT_CHUNK = 1 << 17
# PortfolioResult field -> the MarginResult part it is published as.
_PARTS = {
    "collateral_usd": "collateral_usd", "debt_usd": "debt_usd", "perp_upnl": "perp_upnl_usd",
    "option_value": "option_value_usd", "worst_loss": "worst_loss_usd",
    "contingency": "contingency_usd", "im": "im_usd",
}  # fmt: skip


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
        """The worse of the two views' scenario figures for `accounts` (all at once:
        the what-if and explanations; `evaluate` goes by chunks)."""
        return self._worse_view(book, self.market_state(market, now), accounts)

    def _worse_view(
        self, book: PositionBook, mkt: MarketState, accounts: NDArray[np.int64]
    ) -> PortfolioResult:
        head, conf = self.books(book, accounts)
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
        """Accounts are independent (each one's scenario P&L is its own row of the
        exposure x scenario product), so they go through in chunks of ACCOUNT_CHUNK:
        the dense accounts x scenarios table of two views of a whole 1M book was ~1.1 GB
        of temporaries (docs/performance.md "Where the memory goes"). The figures are
        the same, bit for bit, as one pass over all of them."""
        mkt = self.market_state(market, now)
        fields = ("equity", "mm", "hf", "bp", "tier", *_PARTS)
        cols: dict[str, list[NDArray[np.float64]]] = {f: [] for f in fields}
        for lo in range(0, max(accounts.size, 1), ACCOUNT_CHUNK):
            res = self._worse_view(book, mkt, accounts[lo : lo + ACCOUNT_CHUNK])
            for f in fields:
                cols[f].append(getattr(res, f))
        out = {f: np.concatenate(v) for f, v in cols.items()}
        return MarginResult.of(
            accounts, equity_usd=out["equity"], requirement_usd=out["mm"], hf=out["hf"],
            bp=out["bp"], tier=out["tier"], parts={_PARTS[f]: out[f] for f in _PARTS},
        )  # fmt: skip


__all__ = ["DerivativeSource", "PortfolioModel"]
