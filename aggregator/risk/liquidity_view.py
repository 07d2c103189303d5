"""The system view of pool liquidity (`GET /v1/liquidity`, `aggregator liquidity`) and the
what-if's question "can this liquidation volume be sold": pure functions of this round's
pools, the oracle prices and the book.

Per asset and chain: how much could be sold within 1/2/5% price impact through that
chain's pools (and through every chain's pools with the optimal split), against the
collateral of that asset the tiers put at risk (held by liquidatable or insolvent
accounts, and by warning accounts).

Invariants: every figure comes from the same sale curves as the haircut
(risk/impact.py) at the oracle prices, without the haircut's depth continuation past
the bands (what the pools themselves take); an asset without a usable pool reports
`source = "depth_usd"` (or "none") with the fallback reason and no sellable amounts;
nothing here changes the ledger.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from aggregator.risk.book import COLLATERAL, PositionBook
from aggregator.risk.impact import ImpactCurve, SaleLeg, build_curve
from aggregator.risk.liquidity import LiquidityInput
from aggregator.risk.market import MarketData
from chains.units import TIERS

SLIPPAGES = (0.01, 0.02, 0.05)
ALL = "all"  # the chain key of the all-chains (optimally split) curve


@dataclass(frozen=True)
class Curves:
    """Sale curves per (asset, chain) and per (asset, ALL), with the fallback reason of
    assets that have none."""

    by_key: Mapping[tuple[str, str], ImpactCurve]
    fallback: Mapping[str, str]


def chain_curves(market: MarketData, decimals: Sequence[int]) -> Curves:
    """The sale curve of every asset through each chain's pools and through all of them
    (quote tokens at the oracle; an unpriced quote leaves its pool out)."""
    liq: LiquidityInput = market.liquidity
    out: dict[tuple[str, str], ImpactCurve] = {}
    fallback: dict[str, str] = {}
    for t, symbol in enumerate(market.symbols):
        ap = liq.pools.get(t)
        if ap is None or not ap.used or not market.has_price[t]:
            fallback[symbol] = (
                "no pool configured" if ap is None
                else "the asset has no oracle price" if ap.used
                else ap.fallback or "no pool passed the guards"
            )  # fmt: skip
            continue
        legs: dict[str, list[SaleLeg]] = {}
        for s in ap.used:
            q = market.asset_index[s.quote]
            if market.has_price[q]:
                legs.setdefault(s.pool.chain, []).append(
                    SaleLeg(s.pool, s.sells_token0, float(market.price[q]))
                )
        if not legs:
            fallback[symbol] = "no pool's quote asset has an oracle price"
            continue
        price = float(market.price[t])
        for chain, ls in legs.items():
            out[(symbol, chain)] = build_curve(ls, price, decimals[t])
        out[(symbol, ALL)] = build_curve([x for ls in legs.values() for x in ls], price,
                                         decimals[t])  # fmt: skip
    return Curves(out, fallback)


def collateral_at_risk(book: PositionBook, tier: NDArray[np.int8], n: int) -> dict[str, Any]:
    """Units of collateral per (asset, chain) held by accounts (of the first n) in the
    liquidatable-or-insolvent tiers and in the warning tier."""
    rows = np.arange(book.n)
    acc = book.r_account[: book.n]
    ok = (book.r_side[: book.n] == COLLATERAL) & (acc < n)
    rows, acc = rows[ok], acc[ok]
    t_of = tier[acc]
    shape = (book.n_assets, book.n_chains)
    out = {}
    for name, sel in (
        ("liquidatable", t_of >= TIERS.index("liquidatable")),
        ("warning", t_of == TIERS.index("warning")),
    ):
        m = np.zeros(shape)
        r = rows[sel]
        np.add.at(m, (book.r_asset[r], book.r_chain[r]), book.r_amount[r])
        out[name] = m
    return out


def _sale(curve: ImpactCurve, amount: float, slippages: Sequence[float]) -> dict[str, Any]:
    return {
        "depth_within_band": curve.capacity,
        "sellable": {f"{s:g}": curve.sellable_within(s) for s in slippages},
        "amount": amount,
        "impact": float(curve.impact(amount)[0]),
        "beyond_band": max(amount - curve.capacity, 0.0),
    }


def sale_impact(
    curves: Curves,
    sells: Mapping[tuple[str, str], float],
    slippages: Sequence[float] = SLIPPAGES,
) -> dict[str, dict[str, Any]]:
    """For the what-if: selling `sells[(asset, chain)]` units on each chain. Per asset and
    chain the impact of that chain's sale through its own pools and how much those pools
    take within each slippage; per asset under `ALL` the impact of selling the asset's
    total through every chain's pools with the optimal split. An asset without pools
    gets `fallback` and no figures."""
    out: dict[str, dict[str, Any]] = {}
    totals: dict[str, float] = {}
    for (asset, chain), amount in sells.items():
        if not (np.isfinite(amount) and amount >= 0):
            raise ValueError(f"sells[{asset}][{chain}]: must be finite and >= 0, got {amount}")
        entry = out.setdefault(asset, {})
        totals[asset] = totals.get(asset, 0.0) + amount
        curve = curves.by_key.get((asset, chain))
        if curve is None:
            entry[chain] = {
                "amount": amount,
                "fallback": curves.fallback.get(asset, "no pool on this chain"),
            }
        else:
            entry[chain] = _sale(curve, amount, slippages)
    for asset, total in totals.items():
        curve = curves.by_key.get((asset, ALL))
        out[asset][ALL] = (
            _sale(curve, total, slippages) if curve is not None
            else {"amount": total, "fallback": curves.fallback.get(asset, "no pool")}
        )  # fmt: skip
    return out


def liquidity_report(
    curves: Curves,
    at_risk: Mapping[str, NDArray[np.float64]],
    symbols: Sequence[str],
    chains: Sequence[str],
    price: NDArray[np.float64],
    *,
    slippages: Sequence[float] = SLIPPAGES,
) -> dict[str, Any]:
    """Per asset and chain (and ALL): sellable within each slippage vs the collateral
    the tiers put at risk, in units and USD."""
    assets: dict[str, Any] = {}
    for t, symbol in enumerate(symbols):
        per: dict[str, Any] = {}
        for c, chain in [*enumerate(chains), (-1, ALL)]:
            liq_units = float(
                at_risk["liquidatable"][t].sum() if c < 0 else at_risk["liquidatable"][t, c]
            )
            warn_units = float(at_risk["warning"][t].sum() if c < 0 else at_risk["warning"][t, c])
            curve = curves.by_key.get((symbol, chain))
            if curve is None and liq_units == 0 and warn_units == 0:
                continue
            row: dict[str, Any] = {
                "at_risk": {
                    "liquidatable": liq_units, "liquidatable_usd": liq_units * float(price[t]),
                    "warning": warn_units, "warning_usd": warn_units * float(price[t]),
                },
            }  # fmt: skip
            if curve is None:
                row["source"] = "fallback"
            else:
                sale = _sale(curve, liq_units, slippages)
                row |= {
                    "source": "pools",
                    "depth_within_band": sale["depth_within_band"],
                    "sellable": sale["sellable"],
                    "sellable_usd": {k: v * float(price[t]) for k, v in sale["sellable"].items()},
                    "liquidatable_impact": sale["impact"],
                    "covered": {k: v >= liq_units for k, v in sale["sellable"].items()},
                }
            per[chain] = row
        if per or symbol in curves.fallback:
            assets[symbol] = {"chains": per, "fallback": curves.fallback.get(symbol)}
    return {"slippages": list(slippages), "assets": assets}


__all__ = [
    "ALL",
    "SLIPPAGES",
    "Curves",
    "chain_curves",
    "collateral_at_risk",
    "liquidity_report",
    "sale_impact",
]


class PoolLiquidity:
    """The what-if's liquidity (risk/whatif.py `Liquidity`) from the pools: selling `usd`
    (at the scenario's prices) of an asset on a chain through that chain's pools.

    The pools are as read now, at the live prices they trade at. A shock moves the
    oracle, not these snapshots; valuing them at the shocked oracle would make a pool
    still at the old price look deeper than it is. So the sale is measured in units
    against the live curves (the slippage through today's tick liquidity, as if
    arbitrage had moved the pool with the market and its depth in units had stayed),
    and converted at the scenario's price. An asset or chain with no curve answers from
    `fallback` (the `depth_usd` rule)."""

    source = "pools (depth_usd where none)"

    def __init__(
        self,
        live: MarketData,
        scenario: MarketData,
        decimals: Sequence[int],
        fallback: Any,
        max_slippage: float,
    ) -> None:
        self.curves = chain_curves(live, decimals)
        self.price = dict(zip(scenario.symbols, scenario.price.tolist(), strict=True))
        self.fallback = fallback
        self.max_slippage = max_slippage

    def sellable(self, asset: str, chain: str, usd: float) -> tuple[float | None, float | None]:
        curve = self.curves.by_key.get((asset, chain))
        price = self.price.get(asset, 0.0)
        if curve is None or not price > 0:
            result: tuple[float | None, float | None] = self.fallback.sellable(asset, chain, usd)
            return result
        impact = float(curve.impact(usd / price)[0])
        return impact, curve.sellable_within(self.max_slippage) * price
