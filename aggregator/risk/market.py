"""Market data every margin model reads: prices and volatilities, validated once.

Invariants: `price[t]` is the last valued (`ok` or `capped`) price of asset t (or the
oracle's `last_good` when this process has seen none yet), 0 until one is known, and
`has_price[t]` says whether it is; a status other than `ok` marks the asset `bad` (its
holders are degraded: credit may go down, never up). A `capped` price (an LST whose
growth cap failed its guard, oracles/cap_guard.py) values positions and is bad at once.
`sigma_tab[0]` is the USD volatility per asset, row g+1 the one that counts inside
correlation group g (relative to the group reference where given). `liquidity` holds
the pools that sell each asset (risk/liquidity.py: the pools that passed this round's
guards, and those set aside) and the amount of each asset the book is liquidating; the
standard model turns them into sale curves at the current prices. Later inputs
(covariances) belong here too, beside what they refine.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from aggregator.config import CorrelationGroup
from aggregator.risk.liquidity import AssetPools, LiquidityInput
from oracles.types import PriceStatus

PRICE_STATUSES: tuple[str, ...] = tuple(s.value for s in PriceStatus)
# Statuses whose value prices positions (the others keep the last valued price).
VALUED_STATUSES: tuple[str, ...] = (PriceStatus.OK.value, PriceStatus.CAPPED.value)


class MissingInput(RuntimeError):
    """An input the formulas need (e.g. a volatility) has not been provided."""


@dataclass(frozen=True)
class PriceInput:
    """One asset's price from the oracle layer. `value` may be None when never known."""

    value: float | None
    status: PriceStatus = PriceStatus.OK
    timestamp: float | None = None
    sources: Any = None
    # The oracle's last ok price (kept across restarts in its history).
    last_good: float | None = None
    # The oracle's account of the value (which leg applied, and why).
    reason: str | None = None


def group_tables(
    groups: Sequence[CorrelationGroup], asset_index: Mapping[str, int]
) -> tuple[NDArray[np.bool_], NDArray[np.int64]]:
    """(member[g, t], reference asset of g) of the correlation groups, validated."""
    member = np.zeros((len(groups), len(asset_index)), bool)
    ref = np.zeros(len(groups), np.int64)
    for g, grp in enumerate(groups):
        for s in grp.assets:
            if s not in asset_index:
                raise ValueError(f"correlation_groups[{g}].assets: unknown asset {s!r}")
            member[g, asset_index[s]] = True
        if grp.reference not in asset_index:
            raise ValueError(f"correlation_groups[{g}].reference: unknown asset {grp.reference!r}")
        ref[g] = asset_index[grp.reference]
    return member, ref


def _check_price(symbol: str, p: PriceInput) -> None:
    if p.status not in PRICE_STATUSES:
        raise ValueError(f"prices.{symbol}.status: {p.status!r} not in {PRICE_STATUSES}")
    if p.status in VALUED_STATUSES:
        if p.value is None or not math.isfinite(p.value) or p.value <= 0:
            raise ValueError(
                f"prices.{symbol}.value: an {p.status} price must be > 0, got {p.value}"
            )
    elif p.value is not None and (not math.isfinite(p.value) or p.value < 0):
        raise ValueError(f"prices.{symbol}.value: must be finite and >= 0, got {p.value}")


def _check_sigma(what: str, s: float) -> None:
    if not math.isfinite(s) or s < 0:
        raise ValueError(f"{what}: must be finite and >= 0, got {s}")


class MarketData:
    """Prices and volatilities per asset of one deployment (config order)."""

    def __init__(
        self,
        symbols: Sequence[str],
        groups: Sequence[CorrelationGroup],
        asset_index: Mapping[str, int],
    ) -> None:
        T, G = len(symbols), len(groups)
        self.symbols = list(symbols)
        self.groups = list(groups)
        self.asset_index = asset_index
        self.member, self.group_ref = group_tables(groups, asset_index)
        self.price = np.zeros(T)  # last good (ok) price; 0 until one is seen
        self.has_price = np.zeros(T, bool)
        self.status: list[PriceStatus] = [PriceStatus.UNAVAILABLE] * T
        self.price_input: list[PriceInput | None] = [None] * T
        self.bad = np.ones(T, bool)
        self.sigma = np.full(T, np.nan)
        self.rel_sigma = np.full((G, T), np.nan)
        self.sigma_tab = np.full((G + 1, T), np.nan)
        # Models that derive volatilities of their own (option implied vol, the VaR
        # calibration) scale them by this: 1 except in a what-if scenario (`scenario`).
        self.vol_scale = 1.0
        self.liquidity = LiquidityInput(liquidating=np.zeros(T))

    def asset(self, symbol: str, what: str) -> int:
        t = self.asset_index.get(symbol)
        if t is None:
            raise KeyError(f"{what}: unknown asset {symbol!r}")
        return t

    def set_prices(self, prices: Mapping[str, PriceInput]) -> None:
        """Record prices (see the module docstring for what is valued at which)."""
        for symbol, p in prices.items():
            t = self.asset(symbol, "prices")
            _check_price(symbol, p)
            if p.status in VALUED_STATUSES:
                assert p.value is not None
                self.price[t] = p.value
                self.has_price[t] = True
            elif (
                not self.has_price[t]
                and p.last_good is not None
                and math.isfinite(p.last_good)
                and p.last_good > 0
            ):
                # A fresh process whose first round is not ok (a jump to confirm): the
                # last ok price is the one the previous process valued at, not zero.
                self.price[t] = p.last_good
                self.has_price[t] = True
            self.status[t] = p.status
            self.price_input[t] = p
            self.bad[t] = p.status != "ok"

    def set_volatility(
        self,
        sigma: Mapping[str, float],
        relative: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        """Daily volatilities (EWMA of log returns, from the oracle layer).

        `relative[group][asset]` is the volatility of p(asset)/p(group reference); the
        reference itself is 0 by definition. A group member without one falls back to
        its USD volatility (keeps the group caps, loses the de-peg-only benefit).
        """
        for symbol, s in sigma.items():
            t = self.asset(symbol, "volatility")
            _check_sigma(f"volatility.{symbol}", s)
            self.sigma[t] = s
        names = {g.name: i for i, g in enumerate(self.groups)}
        for gname, per_asset in (relative or {}).items():
            if gname not in names:
                raise KeyError(f"relative volatility: unknown correlation group {gname!r}")
            g = names[gname]
            for symbol, s in per_asset.items():
                t = self.asset(symbol, f"relative volatility.{gname}")
                if not self.member[g, t]:
                    raise ValueError(f"relative volatility.{gname}.{symbol}: not in the group")
                _check_sigma(f"relative volatility.{gname}.{symbol}", s)
                self.rel_sigma[g, t] = s
        self._derive_sigma_tab()

    def set_pools(self, pools: Mapping[str, AssetPools]) -> None:
        """This round's pools per asset symbol (replaces the last round's; an asset left
        out has no pool and keeps its depth_usd term)."""
        out: dict[int, AssetPools] = {}
        for symbol, ap in pools.items():
            t = self.asset(symbol, "pools")
            for i, sale in enumerate(ap.used):
                self.asset(sale.quote, f"pools.{symbol}.used[{i}].quote")
            out[t] = ap
        self.liquidity.pools = out
        self.liquidity.version += 1

    def set_liquidating(self, amounts: NDArray[np.float64]) -> None:
        """Units of each asset (config order) the book is liquidating: sold ahead of an
        account's own sale when its impact is measured."""
        a = np.asarray(amounts, np.float64)
        if a.shape != (len(self.symbols),) or not (np.isfinite(a).all() and (a >= 0).all()):
            raise ValueError("liquidating: one finite amount >= 0 per asset is required")
        self.liquidity.liquidating = a.copy()

    def _derive_sigma_tab(self) -> None:
        self.sigma_tab[0] = self.sigma
        for g in range(len(self.groups)):
            row = self.sigma.copy()
            rel = self.rel_sigma[g].copy()
            ref = self.group_ref[g]
            if np.isnan(rel[ref]):
                rel[ref] = 0.0
            use = self.member[g] & ~np.isnan(rel)
            row[use] = rel[use]
            self.sigma_tab[g + 1] = row

    def scenario(
        self,
        price: NDArray[np.float64],
        status: Sequence[PriceStatus],
        vol_scale: float = 1.0,
    ) -> MarketData:
        """A copy valued at `price` with `status` per asset (not ok: holders degraded)
        and every volatility, USD and relative, times `vol_scale` (a what-if,
        risk/whatif.py). This market data is left unchanged."""
        if not vol_scale >= 0.0 or not math.isfinite(vol_scale):
            raise ValueError(f"vol_scale: must be finite and >= 0, got {vol_scale}")
        out = MarketData(self.symbols, self.groups, self.asset_index)
        out.price = np.array(price, np.float64)
        out.has_price = self.has_price.copy()
        out.status = [PriceStatus(s) for s in status]
        out.price_input = list(self.price_input)
        out.bad = np.array([s != PriceStatus.OK for s in out.status], bool)
        out.sigma = self.sigma * vol_scale
        out.rel_sigma = self.rel_sigma * vol_scale
        out._derive_sigma_tab()
        out.vol_scale = self.vol_scale * vol_scale
        # The same pools; the standard model prices their curves at the scenario's prices.
        out.liquidity = self.liquidity
        return out

    @property
    def has_volatility(self) -> bool:
        return not bool(np.isnan(self.sigma).any())

    def require_inputs(self) -> None:
        missing = [s for s, v in zip(self.symbols, self.sigma, strict=True) if np.isnan(v)]
        if missing:
            raise MissingInput(
                f"no volatility for asset(s) {', '.join(missing)}: call set_volatility first"
            )

    def ok_prices(self) -> dict[str, float]:
        """The known prices by symbol (assets never priced left out)."""
        return {
            s: float(p)
            for s, p, ok in zip(self.symbols, self.price, self.has_price, strict=True)
            if ok
        }

    def known_sigma(self) -> dict[str, float]:
        """The USD volatilities given so far, by symbol."""
        return {
            s: float(x) for s, x in zip(self.symbols, self.sigma, strict=True) if not math.isnan(x)
        }


__all__ = ["PRICE_STATUSES", "MarketData", "MissingInput", "PriceInput", "group_tables"]
