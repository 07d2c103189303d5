"""The explanation of one account: every number, as a JSON-able dict (no NaN/inf).

Figures are recomputed from the current inputs by the same kernels as the tick and
the credit allocation, so an explanation matches what was (or will be) pushed for
the same inputs. Sections: positions per chain (head, confirmed, counted amounts),
per-asset prices and haircuts, totals and tier, the liquidation plan, the credit
split per chain and the parameters. docs/risk.md shows a worked example.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from aggregator.config import AssetConfig, CorrelationGroup, CreditConfig, RiskConfig
from aggregator.risk.book import COLLATERAL, SIDES, PositionBook
from aggregator.risk.credit import CreditAllocator, Split
from aggregator.risk.liquidation import PLAN_FULL, PLAN_PARTIAL, Plans
from aggregator.risk.market import MarketData
from aggregator.risk.reputation import Params, Reputation
from aggregator.risk.standard import Detail, StandardModel, Totals
from chains.units import TIERS, decimal_text, usd6_text


class Explained(Protocol):
    """What an explanation reads of the ledger (RiskEngine implements it). A protocol,
    not the engine class, so the engine can call this module without an import cycle."""

    @property
    def risk_cfg(self) -> RiskConfig: ...
    @property
    def credit_cfg(self) -> CreditConfig: ...
    @property
    def chains(self) -> Sequence[str]: ...
    @property
    def symbols(self) -> Sequence[str]: ...
    @property
    def asset_cfgs(self) -> Sequence[AssetConfig]: ...
    @property
    def groups(self) -> Sequence[CorrelationGroup]: ...
    @property
    def book(self) -> PositionBook: ...
    @property
    def credits(self) -> CreditAllocator: ...
    @property
    def model(self) -> StandardModel: ...
    @property
    def market(self) -> MarketData: ...
    def index_of(self, address: str, create: bool = False) -> int: ...
    def fresh_totals(self, acc: NDArray[np.int64]) -> Totals: ...
    def plans(self, acc: NDArray[np.int64], r: Totals) -> Plans: ...
    def reputation_of(self, address: str) -> Reputation | None: ...
    @property
    def reputation_params(self) -> Params | None: ...


def positions(eng: Explained, a: int) -> dict[str, list[dict[str, Any]]]:
    """Account `a`'s rows per chain, in (chain, asset, side) order, exact amounts."""
    book = eng.book
    out: dict[str, list[dict[str, Any]]] = {c: [] for c in eng.chains}
    rows = book.rows_of(a).tolist()
    for row in sorted(rows, key=lambda x: (book.r_chain[x], book.r_asset[x], book.r_side[x])):
        t, ci, s = int(book.r_asset[row]), int(book.r_chain[row]), int(book.r_side[row])
        head, conf = book.exact(row)
        counted = min(head, conf) if s == COLLATERAL else max(head, conf)
        amount = float(book.r_amount[row])
        out[eng.chains[ci]].append(
            {
                "asset": eng.symbols[t],
                "side": SIDES[s],
                "head": str(head),
                "confirmed": str(conf),
                "counted": str(counted),
                "counted_rule": "min(head, confirmed)"
                if s == COLLATERAL
                else "max(head, confirmed)",
                "amount": decimal_text(counted, book.decimals[t]),
                "value_usd": amount * float(eng.market.price[t]),
            }
        )
    return out


def _price(eng: Explained, t: int) -> dict[str, Any]:
    mkt = eng.market
    pin = mkt.price_input[t]
    return {
        "used_usd": float(mkt.price[t]) if mkt.has_price[t] else None,
        "status": mkt.status[t],
        "reported_usd": None if pin is None else pin.value,
        "timestamp": None if pin is None else pin.timestamp,
        "sources": None if pin is None else pin.sources,
        "valued_at": _valued_at(str(mkt.status[t])),
        "reason": None if pin is None else pin.reason,
    }


def _valued_at(status: str) -> str:
    if status == "ok":
        return "current"
    if status == "capped":
        return (
            "current: lower of market median and live LST rate (cap failed its guard); "
            "credit may not rise"
        )
    return "last ok price"


def _liquidity(eng: Explained, t: int, amount: float) -> dict[str, Any]:
    """Where asset t's concentration term came from: the pools used (and the price
    impact of selling `amount` after the book's liquidations) or the depth fallback
    and why; pools the guards set aside, with their reason."""
    ac = eng.model.curves(eng.market)[t]
    ap = eng.market.liquidity.pools.get(t)
    ignored = (
        [{"chain": i.chain, "pool": i.pool, "reason": i.reason} for i in ap.ignored] if ap else []
    )
    if ac.curve is None:
        depth = eng.asset_cfgs[t].depth_usd
        return {
            "source": "depth_usd" if depth else "none",
            "fallback_reason": ac.fallback,
            "depth_usd": depth,
            "ignored": ignored,
        }
    after = float(eng.market.liquidity.liquidating[t])
    cap = ac.curve.capacity
    return {
        "source": "pools",
        "pools": [
            {
                "chain": s.pool.chain, "pool": s.pool.address, "fee": s.pool.fee,
                "quote": s.quote, "sells": "token0" if s.sells_token0 else "token1",
                "block_number": s.pool.block_number, "tick": s.pool.tick,
                "band": [s.pool.band_lower, s.pool.band_upper],
            }
            for s in ac.used
        ],
        "depth_within_band": ac.curve.capacity,
        "book_liquidating": after,
        "impact": float(ac.curve.impact(amount, after)[0]),
        "beyond_band": max(amount + after - cap, 0.0) - max(after - cap, 0.0),
        "edge_rate": ac.curve.edge_rate,
        "continuation_units": ac.curve.continuation,
        "ignored": ignored,
    }  # fmt: skip


def _collateral(eng: Explained, d: Detail, g: int, t: int, amount: float) -> dict[str, Any]:
    """The haircut of collateral asset t in mode g (-1: standard)."""
    model, mkt = eng.model, eng.market
    in_group = g >= 0 and bool(model.member[g, t])
    relative = in_group and (t == model.group_ref[g] or not np.isnan(mkt.rel_sigma[g, t]))
    return {
        "value_usd": float(d.value[0, t]),
        "sigma": float(d.sigma[0, t]),
        "sigma_kind": f"relative to {eng.groups[g].reference}" if relative else "usd",
        "haircut": {
            "vol_term": float(d.vol[0, t]),
            "concentration_term": float(d.conc[0, t]),
            "depth_usd": eng.asset_cfgs[t].depth_usd,
            "total": float(d.vol[0, t] + d.conc[0, t]),
            "liquidity": _liquidity(eng, t, amount),
        },
        "caps": {
            "source": f"group:{eng.groups[g].name}" if in_group else "asset",
            "lt": float(d.lt_cap[0, t]),
            "ltv": float(d.ltv_cap[0, t]),
        },
        "lt_eff": float(d.lt_eff[0, t]),
        "ltv_eff": float(d.ltv_eff[0, t]),
        "c_liq_usd": float(d.value[0, t] * d.lt_eff[0, t]),
        "c_borrow_usd": float(d.value[0, t] * d.ltv_eff[0, t]),
    }


def assets(
    eng: Explained, coll: NDArray[np.float64], debt: NDArray[np.float64], g: int
) -> dict[str, Any]:
    """Price and haircut of every asset the account holds or owes."""
    d = eng.model.detail(eng.market, coll, np.array([g], np.int16))
    out: dict[str, Any] = {}
    for t, symbol in enumerate(eng.symbols):
        if coll[0, t] == 0 and debt[0, t] == 0:
            continue
        entry: dict[str, Any] = {
            "price": _price(eng, t),
            "collateral_amount": float(coll[0, t]),
            "debt_amount": float(debt[0, t]),
            "debt_value_usd": float(debt[0, t] * eng.market.price[t]),
        }
        if coll[0, t] > 0:
            entry["collateral"] = _collateral(eng, d, g, t, float(coll[0, t]))
        out[symbol] = entry
    return out


def plan(eng: Explained, p: Plans) -> dict[str, Any] | None:
    """The liquidation plan of the first account of `p` (None above HF 1)."""
    target = eng.risk_cfg.target_hf
    if p.kind[0] == PLAN_PARTIAL:
        t = int(p.asset[0])
        return {
            "model": "standard",
            "kind": "partial",
            "repay_usd": float(p.repay[0]),
            "chain": eng.chains[int(p.chain[0])],
            "asset": eng.symbols[t],
            "seize_usd": float(p.repay[0] * (1 + eng.model.bonus[t])),
            "target_hf": target,
        }
    if p.kind[0] == PLAN_FULL:
        return {
            "model": "standard", "kind": "full", "repay_usd": float(p.repay[0]),
            "target_hf": target,
        }  # fmt: skip
    return None


def credit(eng: Explained, a: int, split: Split) -> dict[str, Any]:
    """The credit split of account `a` per chain and the rule that made it."""
    cr = eng.credits
    dem, share = split.demand.get(0, (None, cr.static_share))
    chains = {}
    for i, c in enumerate(eng.chains):
        value = int(split.credit[0, i])
        chains[c] = {
            "weight": float(cr.weights[i]),
            "static_share": float(cr.static_share[i]),
            "recent_consumption_usd": 0.0 if dem is None else float(dem[i]),
            "share": float(share[i]),
            "allocated_usd6": int(split.raw[0, i]),
            "previous_usd6": int(cr.prev_credit[a, i]),
            "credit_usd6": value,
            "credit_usd": usd6_text(value),
            "capped_by_previous": bool(value < split.raw[0, i]),
        }
    cfg = eng.credit_cfg
    return {
        "policy": cfg.policy,
        "demand_share": cfg.demand_share,
        "demand_window_s": cfg.demand_window_s,
        "budget_usd6": int(split.budget[0]),
        "rule": "credit_c = floor(budget * share_c); degraded: min(that, previous_c)",
        "chains": chains,
    }


def _params(eng: Explained) -> dict[str, Any]:
    cfg = eng.risk_cfg
    return {
        "z": cfg.z,
        "horizon_days": cfg.horizon_days,
        "impact": cfg.impact,
        "warn_hf": cfg.warn_hf,
        "target_hf": cfg.target_hf,
    }


def _totals(eng: Explained, r: Totals, held: NDArray[np.bool_]) -> dict[str, Any]:
    hf = float(r.hf[0])
    return {
        "collateral_value_usd": float(r.vtot[0]),
        "c_liq_usd": float(r.cliq[0]),
        "c_borrow_usd": float(r.cborrow[0]),
        "debt_usd": float(r.debt[0]),
        "hf": hf if math.isfinite(hf) else "inf",
        "borrowing_power_usd": float(r.bp[0]),
        "tier": TIERS[int(r.tier[0])],
        "degraded": bool(r.degraded[0]),
        "degraded_assets": [
            eng.symbols[t] for t in range(len(eng.symbols)) if eng.market.bad[t] and held[t]
        ],
        "close_factor": float(r.cf[0]),
    }


def explain(eng: Explained, address: str, now: float | None = None) -> dict[str, Any]:
    """Every number for one account (see the module docstring)."""
    eng.market.require_inputs()
    now = time.time() if now is None else now
    a = eng.index_of(address)
    acc = np.array([a], np.int64)
    coll, debt = eng.book.coll[acc], eng.book.debt[acc]
    r = eng.fresh_totals(acc)
    p = eng.plans(acc, r)
    split = eng.credits.split(acc, r.bp, r.degraded, now)
    g = int(r.grp[0])
    out = {
        "account": eng.book.account_address[a],
        "mode": "emode" if g >= 0 else "standard",
        "group": eng.groups[g].name if g >= 0 else None,
        "positions": positions(eng, a),
        "assets": assets(eng, coll, debt, g),
        **_totals(eng, r, (coll[0] > 0) | (debt[0] > 0)),
        "liquidation": plan(eng, p),
        "credit": credit(eng, a, split),
        "params": _params(eng),
    }
    rep, params = eng.reputation_of(address), eng.reputation_params
    if rep is not None and params is not None:
        # Only with [reputation] enabled: otherwise the explanation is unchanged.
        out["reputation"] = rep.as_dict(params)
    return out


__all__ = ["explain"]
