"""Feeds the daemon's positions to the portfolio engine (docs/portfolio-margin.md).

Collateral and debt come from the standard engine's book (counted amounts under
asymmetric finality); perps and options from the Markets events in the store, in
both finality views; the account counts the worse view (`worst_of`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import numpy as np

from aggregator.config import AppConfig
from aggregator.risk.book import COLLATERAL
from aggregator.risk.engine import RiskEngine
from aggregator.risk.portfolio import (
    TIERS,
    OptionLeg,
    OptionSeries,
    PerpLeg,
    PortfolioEngine,
    PortfolioResult,
    SpotLeg,
    worst_of,
)
from aggregator.store.db import Store
from aggregator.store.derivatives_repo import SqlDerivativeStore
from chains.positions import FIXED, DerivativeEvent, MarketsWatch, PositionView


class PortfolioFeed:
    def __init__(self, cfg: AppConfig, store: Store) -> None:
        self.cfg = cfg
        self.repo = SqlDerivativeStore(store)
        self.engine = PortfolioEngine.from_config(cfg)
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

    def _market(self, std: RiskEngine, now: float | None) -> Any:
        prices = {
            s: float(p)
            for s, p, ok in zip(std.symbols, std.price, std.has_price, strict=True)
            if ok
        }
        sigma = {
            s: float(x) for s, x in zip(std.symbols, std.sigma, strict=True) if not math.isnan(x)
        }
        return self.engine.market(
            prices, None, self.funding, time.time() if now is None else now, daily_sigma=sigma
        )

    def override(
        self, std: RiskEngine, accounts: Iterable[str] | None = None, now: float | None = None
    ) -> int:
        """Portfolio mode: make the portfolio figures the ones that count. HF, BP and
        tier of `accounts` (default: every account of the book) in the standard engine
        are replaced by the portfolio engine's (worse of the head and confirmed views),
        so the credit allocation and the pusher carry them on chain. Degraded flags and
        liquidation plans stay the standard engine's. Returns how many accounts were
        set; 0 in standard mode."""
        if self.cfg.portfolio.mode != "portfolio":
            return 0
        book = std.book
        if accounts is None:
            idx = np.arange(book.n_accounts, dtype=np.int64)
        else:
            found = (book.find_account(a) for a in accounts)
            idx = np.array(sorted({a for a in found if a is not None}), np.int64)
        if idx.size == 0:
            return 0
        addrs = [book.account_address[int(i)] for i in idx]
        # Spot legs straight from the book's rows (counted amounts: asymmetric
        # finality already applied), as arrays: no leg object per position.
        rows, lengths = book.rows_with_lengths(idx)
        s_acc = np.repeat(np.arange(idx.size, dtype=np.int64), lengths)
        units = book.r_amount[rows] * np.where(book.r_side[rows] == COLLATERAL, 1.0, -1.0)
        keep = units != 0
        to_pf = np.array([self.engine.asset_index[sym] for sym in std.symbols], np.int64)
        unmapped: set[str] = set()
        legs = []
        for view in ("head", "confirmed"):
            perps: list[PerpLeg] = []
            opts: list[OptionLeg] = []
            for a in addrs:
                for v in self.views.get(a, []):
                    p, o = self._legs(a, getattr(v, view), v.chain, unmapped)
                    perps += p
                    opts += o
            b = self.engine.book((), perps, opts, accounts=addrs, chains=std.chains)
            legs.append(
                replace(
                    b,
                    s_acc=s_acc[keep],
                    s_chain=book.r_chain[rows][keep].astype(np.int64),
                    s_asset=to_pf[book.r_asset[rows][keep].astype(np.int64)],
                    s_units=units[keep],
                )
            )
        mkt = self._market(std, now)
        res = worst_of(
            self.engine.compute(legs[0], mkt), self.engine.compute(legs[1], mkt),
            self.cfg.portfolio.im_factor, self.cfg.risk.warn_hf,
        )  # fmt: skip
        std.r_hf[idx] = res.hf
        std.r_bp[idx] = res.bp
        std.r_tier[idx] = res.tier
        return int(idx.size)

    def account_margin(
        self, std: RiskEngine, address: str, now: float | None = None
    ) -> dict[str, Any] | None:
        """Standard and portfolio figures side by side, and the greeks."""
        addr = address.lower()
        a = std.book.find_account(addr)
        views = self.views.get(addr, [])
        if a is None and not views:
            return None
        spot: list[SpotLeg] = []
        if a is not None:
            book = std.book
            for r in book.rows_of(a).tolist():
                q = float(book.r_amount[r])
                if q == 0:
                    continue
                sign = 1.0 if book.r_side[r] == COLLATERAL else -1.0
                spot.append(
                    SpotLeg(
                        addr, book.chains[book.r_chain[r]], book.assets[book.r_asset[r]], sign * q
                    )
                )
        unmapped: set[str] = set()
        hp: list[PerpLeg] = []
        ho: list[OptionLeg] = []
        cp: list[PerpLeg] = []
        co: list[OptionLeg] = []
        for v in views:
            p, o = self._legs(addr, v.head, v.chain, unmapped)
            hp += p
            ho += o
            p, o = self._legs(addr, v.confirmed, v.chain, unmapped)
            cp += p
            co += o
        mkt = self._market(std, now)
        head = self.engine.book(spot, hp, ho, accounts=[addr])
        conf = self.engine.book(spot, cp, co, accounts=[addr])
        pf = self.cfg.portfolio
        res: PortfolioResult = worst_of(
            self.engine.compute(head, mkt), self.engine.compute(conf, mkt), pf.im_factor,
            self.cfg.risk.warn_hf,
        )  # fmt: skip
        g = self.engine.greeks(head, mkt)
        standard: dict[str, Any] | None = None
        if a is not None:
            h = std.standard_health(addr)
            standard = {
                "hf": h.hf if math.isfinite(h.hf) else None,
                "borrowing_power_usd": h.bp,
                "tier": h.tier,
                "collateral_usd": h.collateral_usd,
                "debt_usd": h.debt_usd,
            }
        row = res.row(0)
        row["hf"] = row["hf"] if math.isfinite(row["hf"]) else None
        return {
            "account": addr,
            "mode": pf.mode,
            "standard": standard,
            "portfolio": row,
            "greeks": {
                u: {k: float(np.asarray(g[k])[0, i]) for k in ("delta", "gamma", "vega")}
                for i, u in enumerate(self.engine.underlyings)
            },
            "derivatives": [
                {
                    "chain": v.chain,
                    "kind": v.kind,
                    "key": v.key,
                    "head_size": (v.head.size / FIXED) if v.head else 0.0,
                    "confirmed_size": (v.confirmed.size / FIXED) if v.confirmed else 0.0,
                }
                for v in views
            ],
            "unmapped": sorted(unmapped),
            "tiers": list(TIERS),
        }


__all__ = ["PortfolioFeed"]
