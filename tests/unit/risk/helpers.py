"""Shared builders for the risk tests: a fixed asset universe and hypothesis strategies."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from aggregator.config import AssetConfig, CorrelationGroup, CreditConfig, RiskConfig
from aggregator.risk import PositionRow, PriceInput, RiskEngine

from .reference import RefInputs

CHAINS = ["ethereum", "arbitrum", "base"]
# symbol, decimals, ltv, lt, bonus
UNIVERSE = [
    ("USDC", 6, 0.80, 0.85, 0.04),
    ("DAI", 18, 0.75, 0.80, 0.05),
    ("WBTC", 8, 0.70, 0.75, 0.08),
    ("WETH", 18, 0.80, 0.83, 0.05),
    ("wstETH", 18, 0.70, 0.75, 0.06),
    ("rETH", 18, 0.68, 0.74, 0.07),
]
SYMBOLS = [u[0] for u in UNIVERSE]
DECIMALS = {u[0]: u[1] for u in UNIVERSE}
GROUPS = [
    CorrelationGroup(
        name="eth", assets=["WETH", "wstETH", "rETH"], reference="WETH", ltv=0.90, lt=0.93
    ),
    CorrelationGroup(name="usd", assets=["USDC", "DAI"], reference="USDC", ltv=0.92, lt=0.95),
]
ADDRS = [f"0x{i:040x}" for i in range(1, 200)]


def assets(depth: dict[str, float | None] | None = None) -> list[AssetConfig]:
    depth = depth or {}
    return [
        AssetConfig(
            symbol=s,
            decimals=d,
            ltv=ltv,
            lt=lt,
            liquidation_bonus=b,
            depth_usd=depth.get(s),
            borrowable=s in ("USDC", "DAI", "WETH"),
        )
        for s, d, ltv, lt, b in UNIVERSE
    ]


def engine(
    depth: dict[str, float | None] | None = None,
    groups: list[CorrelationGroup] | None = None,
    risk: RiskConfig | None = None,
    credit: CreditConfig | None = None,
) -> RiskEngine:
    return RiskEngine(
        CHAINS,
        assets(depth),
        GROUPS if groups is None else groups,
        risk or RiskConfig(),
        credit or CreditConfig(),
    )


def amounts(decimals: int) -> st.SearchStrategy[int]:
    unit = 10**decimals
    return st.one_of(
        st.just(0),
        st.integers(0, 10),
        st.integers(0, 1000 * unit),
        st.integers(0, 10**7 * unit),
        st.integers(2**120, 2**200),
        st.just(2**200),
    )


@st.composite
def position_rows(draw: st.DrawFn, n_accounts: int = 5) -> list[PositionRow]:
    rows: dict[tuple[str, str, str, str], PositionRow] = {}
    n = draw(st.integers(0, 14))
    for _ in range(n):
        acct = ADDRS[draw(st.integers(0, n_accounts - 1))]
        chain = draw(st.sampled_from(CHAINS))
        sym = draw(st.sampled_from(SYMBOLS))
        side = draw(st.sampled_from(["collateral", "debt"]))
        head = draw(amounts(DECIMALS[sym]))
        conf = draw(st.one_of(st.just(head), amounts(DECIMALS[sym])))
        rows[(acct, chain, sym, side)] = PositionRow(acct, chain, sym, side, head, conf)
    return list(rows.values())


@st.composite
def market(draw: st.DrawFn) -> dict[str, Any]:
    prices: dict[str, PriceInput] = {}
    later: dict[str, PriceInput] = {}
    for s in SYMBOLS:
        prices[s] = PriceInput(draw(st.floats(0.01, 1e5)), "ok")
        status = draw(st.sampled_from(["ok"] * 6 + ["disputed", "unavailable"]))
        if status != "ok":
            # A later non-ok observation: valuation keeps the earlier ok value.
            later[s] = PriceInput(draw(st.floats(0.01, 1e5)), status)
    sigma = {s: draw(st.floats(0.0, 0.6)) for s in SYMBOLS}
    rel = {
        "eth": {s: draw(st.floats(0.0, 0.05)) for s in ("wstETH", "rETH")},
        "usd": {"DAI": draw(st.floats(0.0, 0.02))},
    }
    depth = {s: draw(st.one_of(st.none(), st.floats(1e3, 1e9))) for s in SYMBOLS}
    return {"prices": prices, "later": later, "sigma": sigma, "rel": rel, "depth": depth}


def apply_market(eng: RiskEngine, m: dict[str, Any]) -> None:
    eng.set_prices(m["prices"])
    eng.set_prices(m["later"])
    eng.set_volatility(m["sigma"], m["rel"])


def ref_inputs(eng: RiskEngine, m: dict[str, Any]) -> RefInputs:
    ok = {k: v.value for k, v in m["prices"].items()}
    status = {s: "ok" for s in SYMBOLS}
    for k, v in m["later"].items():
        status[k] = v.status
    return RefInputs(
        chains=CHAINS,
        assets=eng.asset_cfgs,
        groups=eng.groups,
        risk=eng.risk_cfg,
        credit=eng.credit_cfg,
        price=ok,  # type: ignore[arg-type]
        status=status,
        sigma=m["sigma"],
        rel_sigma=m["rel"],
    )


def rows_by_account(rows: list[PositionRow]) -> dict[str, list[tuple[str, str, str, int, int]]]:
    out: dict[str, list[tuple[str, str, str, int, int]]] = {}
    for r in rows:
        out.setdefault(r.account, []).append((r.chain, r.asset, r.side, r.head, r.confirmed))
    return out
