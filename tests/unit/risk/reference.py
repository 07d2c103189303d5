"""Scalar reference of DESIGN.md's risk model and credit split: plain floats and loops,
written from the text, not from the engine. The vectorised engine must agree with it."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from aggregator.config import AssetConfig, CorrelationGroup, CreditConfig, RiskConfig


@dataclass
class RefInputs:
    chains: list[str]
    assets: list[AssetConfig]
    groups: list[CorrelationGroup]
    risk: RiskConfig
    credit: CreditConfig
    price: dict[str, float]  # price used for valuation (last ok; 0 if never)
    status: dict[str, str]
    sigma: dict[str, float]
    rel_sigma: dict[str, dict[str, float]] = field(default_factory=dict)
    # asset -> [(pool snapshot, asset is token0, quote asset)]; units sold first
    pools: dict[str, list[tuple[Any, bool, str]]] = field(default_factory=dict)
    liquidating: dict[str, float] = field(default_factory=dict)


@dataclass
class RefResult:
    group: str | None
    vtot: float
    debt: float
    cliq: float
    cborrow: float
    hf: float
    bp: float
    tier: str
    degraded: bool
    close_factor: float
    plan: tuple[str, float, str | None, str | None] | None
    plan_margin: float  # distance of the plan decision from its nearest boundary
    lt_eff: dict[str, float]
    ltv_eff: dict[str, float]


def _pool_walk(
    pool: Any, sells0: bool, quote_usd: float, dec_q: int, rate: float
) -> tuple[float, float]:
    """(raw units of the asset in, USD out) of selling into one pool until its marginal
    rate after fee, (1 - fee) * sqrt_price^2 * USD per raw quote unit, falls to `rate`:
    Uniswap's L*(1/b - 1/a)/(1 - fee) in and L*(a - b) out per tick range, a plain loop."""
    fee = pool.fee / 1e6
    q = quote_usd / 10**dec_q
    sp = pool.sqrt_price_x96 / 2**96
    liq = float(pool.liquidity)
    if sells0:
        ticks = [t for t in sorted(pool.ticks, key=lambda t: -t.index)
                 if pool.band_lower <= t.index <= pool.tick]  # fmt: skip
        edge = 1.0001 ** (pool.band_lower / 2)
    else:
        ticks = [t for t in sorted(pool.ticks, key=lambda t: t.index)
                 if pool.tick < t.index <= pool.band_upper]  # fmt: skip
        edge = 1.0001 ** (pool.band_upper / 2)
    bounds = [1.0001 ** (t.index / 2) for t in ticks] + [edge]
    nets = [t.liquidity_net for t in ticks] + [0]
    a = sp if sells0 else 1 / sp
    target = math.sqrt(rate / ((1 - fee) * q))
    x_in = y_out = 0.0
    for bound, net in zip(bounds, nets, strict=True):
        b = bound if sells0 else 1 / bound
        if target >= a:
            break
        end = max(b, target)
        if end < a and liq > 0:
            # (a - end) / (a * end) rather than 1/end - 1/a: the same rounded a - end in
            # input and output keeps their ratio exact for tiny sales
            x_in += liq * (a - end) / (a * end) / (1 - fee)
            y_out += liq * (a - end) * q
        a = min(a, b)
        if end == target:
            break
        liq += -net if sells0 else net
    return x_in, y_out


def pool_output(inp: RefInputs, asset: str, x: float) -> float:
    """USD received for selling x units of `asset` through its pools with the split that
    equalises the pools' final marginal rates (bisection on the common rate)."""
    dec = {a.symbol: a.decimals for a in inp.assets}
    legs = [
        (p, s0, inp.price[qs], p.decimals1 if s0 else p.decimals0) for p, s0, qs in inp.pools[asset]
    ]
    raw = x * 10 ** dec[asset]

    def walk(rate: float) -> tuple[float, float]:
        parts = [_pool_walk(p, s0, qu, dq, rate) for p, s0, qu, dq in legs]
        return sum(i for i, _ in parts), sum(o for _, o in parts)

    if raw <= 0:
        return 0.0
    cap_in, cap_out = walk(0.0)
    if raw >= cap_in:
        return cap_out + beyond_band_output(inp, asset, (raw - cap_in) / 10 ** dec[asset])
    lo, hi = 0.0, 1.0
    while walk(hi)[0] > 0:
        hi *= 2
    for _ in range(300):
        mid = 0.5 * (lo + hi)
        if walk(mid)[0] > raw:
            lo = mid
        else:
            hi = mid
    (x_lo, y_lo), (x_hi, y_hi) = walk(hi), walk(lo)
    w = (raw - x_lo) / (x_hi - x_lo) if x_hi > x_lo else 0.0
    return y_lo + w * (y_hi - y_lo)


def edge_rate(inp: RefInputs, asset: str) -> float:
    """USD per whole unit of `asset` at the lowest band edge of its pools: the rate
    (1 - fee) * sqrt_price^2 * USD per raw quote unit there, times 10^decimals."""
    dec = {a.symbol: a.decimals for a in inp.assets}[asset]
    rates = []
    for p, s0, qs in inp.pools[asset]:
        q = inp.price[qs] / 10 ** (p.decimals1 if s0 else p.decimals0)
        sq = 1.0001 ** (p.band_lower / 2) if s0 else 1 / 1.0001 ** (p.band_upper / 2)
        rates.append((1 - p.fee / 1e6) * sq * sq * q * 10**dec)
    return min(rates)


def beyond_band_output(inp: RefInputs, asset: str, u: float) -> float:
    """USD for the u units the bands cannot absorb (docs/risk.md "Beyond the band"): the
    static depth model continued from the edge rate m, marginal m * (1 - 2 v / w) at v
    units past the edge, w = depth_usd / price, integrated by a plain midpoint sum up to
    w / 2, where the marginal reaches 0 (nothing beyond); no depth_usd: nothing."""
    depth = {a.symbol: a.depth_usd for a in inp.assets}[asset]
    if depth is None or u <= 0:
        return 0.0
    m, w = edge_rate(inp, asset), depth / inp.price[asset]
    end = min(u, w / 2)  # the marginal is 0 from w / 2 on
    steps = 2000
    dv = end / steps
    total = 0.0
    for i in range(steps):
        v = (i + 0.5) * dv
        total += m * (1 - 2 * v / w) * dv
    return total


def pool_impact(inp: RefInputs, asset: str, x: float) -> float:
    """1 - USD received / (x * oracle price) for selling x after the book's liquidations."""
    if x <= 0:
        return 0.0
    after = inp.liquidating.get(asset, 0.0)
    y = pool_output(inp, asset, after + x) - pool_output(inp, asset, after)
    return 1 - y / (x * inp.price[asset])


def counted(side: str, head: int, confirmed: int) -> int:
    return min(head, confirmed) if side == "collateral" else max(head, confirmed)


def account_risk(inp: RefInputs, rows: list[tuple[str, str, str, int, int]]) -> RefResult:
    """rows: (chain, asset, side, head, confirmed) of one account."""
    cfg = {a.symbol: a for a in inp.assets}
    coll_ct: dict[tuple[str, str], float] = {}
    debt_t: dict[str, float] = {}
    for chain, asset, side, head, conf in rows:
        q = counted(side, head, conf) / 10 ** cfg[asset].decimals
        if side == "collateral":
            coll_ct[(chain, asset)] = coll_ct.get((chain, asset), 0.0) + q
        else:
            debt_t[asset] = debt_t.get(asset, 0.0) + q
    coll_t: dict[str, float] = {}
    for (_chain, asset), q in coll_ct.items():
        coll_t[asset] = coll_t.get(asset, 0.0) + q

    debt_assets = {t for t, q in debt_t.items() if q > 0}
    group = None
    if debt_assets:
        for g in inp.groups:
            if debt_assets <= set(g.assets):
                group = g
                break

    r = inp.risk
    lt_eff: dict[str, float] = {}
    ltv_eff: dict[str, float] = {}
    cliq = cborrow = vtot = 0.0
    for t, q in coll_t.items():
        a = cfg[t]
        value = q * inp.price[t]
        vtot += value
        lt_cap, ltv_cap, sigma = a.lt, a.ltv, inp.sigma[t]
        if group is not None and t in group.assets:
            lt_cap, ltv_cap = group.lt, group.ltv
            if t == group.reference:
                sigma = inp.rel_sigma.get(group.name, {}).get(t, 0.0)
            else:
                sigma = inp.rel_sigma.get(group.name, {}).get(t, inp.sigma[t])
        h = r.z * sigma * math.sqrt(r.horizon_days)
        if inp.pools.get(t) and inp.price[t] > 0:
            h += r.impact * max(0.0, pool_impact(inp, t, q))
        elif a.depth_usd is not None:
            h += r.impact * value / a.depth_usd
        le = max(0.0, min(lt_cap, 1 - h))
        lve = max(0.0, min(ltv_cap, le - (lt_cap - ltv_cap)))
        lt_eff[t], ltv_eff[t] = le, lve
        cliq += value * le
        cborrow += value * lve
    debt = sum(q * inp.price[t] for t, q in debt_t.items())
    hf = cliq / debt if debt > 0 else math.inf
    bp = max(0.0, cborrow - debt)
    if vtot < debt:
        tier = "insolvent"
    elif hf < 1:
        tier = "liquidatable"
    elif hf < r.warn_hf:
        tier = "warning"
    else:
        tier = "healthy"
    cf = 0.0
    if hf < 1:
        cf = 1.0 if hf < r.full_close_hf else r.close_factor
    held = set(coll_t) | set(debt_t)
    degraded = any(
        inp.status[t] != "ok" for t in held if (coll_t.get(t, 0.0) > 0 or debt_t.get(t, 0.0) > 0)
    )

    plan = None
    margin = math.inf
    if hf < 1:
        best: tuple[float, float, int, int] | None = None
        best_plan = None
        rs: list[float] = []
        for (chain, t), q in coll_ct.items():
            if q <= 0:
                continue
            a = cfg[t]
            value_ct = q * inp.price[t]
            den = r.target_hf - (1 + a.liquidation_bonus) * lt_eff[t]
            margin = min(margin, abs(den))
            if den <= 0:
                continue
            rr = (r.target_hf * debt - cliq) / den
            cap_cf = cf * debt
            cap_val = value_ct / (1 + a.liquidation_bonus)
            scale = max(abs(rr), 1e-300)
            margin = min(margin, abs(rr - cap_cf) / scale, abs(rr - cap_val) / scale)
            if rr <= cap_cf and rr <= cap_val:
                rs.append(rr)
                key = (
                    rr,
                    -value_ct,
                    inp.chains.index(chain),
                    [x.symbol for x in inp.assets].index(t),
                )
                if best is None or key < best:
                    best = key
                    best_plan = ("partial", rr, chain, t)
        # Near-equal candidates from different assets: the choice is a rounding tie.
        rs.sort()
        for x, y in itertools.pairwise(rs):
            if x != y:
                margin = min(margin, (y - x) / max(abs(y), 1e-300))
        plan = best_plan if best_plan is not None else ("full", debt, None, None)
    return RefResult(
        group.name if group else None,
        vtot,
        debt,
        cliq,
        cborrow,
        hf,
        bp,
        tier,
        degraded,
        cf,
        plan,
        margin,
        lt_eff,
        ltv_eff,
    )


def credit_split(
    inp: RefInputs,
    bp: float,
    degraded: bool,
    previous: dict[str, int],
    consumption: dict[str, float],
) -> dict[str, int]:
    """USD6 credit per chain. budget = floor(BP * 1e6) exactly (Fraction)."""
    budget = math.floor(Fraction(bp) * 10**6)
    budget = min(budget, 2**62)
    w = [inp.credit.weights.get(c, 1.0) for c in inp.chains]
    total = sum(w)
    static = [x / total if total > 0 else 0.0 for x in w]
    shares = list(static)
    if inp.credit.policy == "demand":
        u = [consumption.get(c, 0.0) if w[i] > 0 else 0.0 for i, c in enumerate(inp.chains)]
        if sum(u) > 0:
            s = inp.credit.demand_share
            shares = [(1 - s) * static[i] + s * u[i] / sum(u) for i in range(len(u))]
    out = {c: math.floor(budget * shares[i]) for i, c in enumerate(inp.chains)}
    if degraded:
        out = {c: min(v, previous.get(c, 0)) for c, v in out.items()}
    return out


def as_dict(res: RefResult) -> dict[str, Any]:
    return res.__dict__
