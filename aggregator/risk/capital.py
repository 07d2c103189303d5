"""Capital efficiency of the margin models on a reference book, and the stress replay.

Three ways to margin the same positions (docs/portfolio-margin.md "Capital-efficiency
report"); each gives a requirement R in USD such that the account may open the book
exactly when its equity (collateral value + perp PnL + option marks - debt) is >= R:

- isolated per-chain: every chain's positions are margined alone with the standard
  rules (collateral haircuts of the standard engine with that chain's positions only,
  derivatives by per-position rules); nothing nets or pools across chains. R_iso is
  the sum over chains; in addition each chain must fund its own shortfall, so the
  collateral to post is sum_c max(0, R_c - equity_c).
- standard cross-margin: the standard engine over all chains (DESIGN.md standard
  mode: pooled collateral, e-mode, haircuts) plus the same per-position derivative
  rules, summed: R_std = (collateral value - C_borrow) + sum of rule margins.
- portfolio: R_pm = IM = im_factor * MM of the scenario engine.
- var: R_var = im_factor * max(ES 97.5%, stressed ES) of the VaR model
  (risk/var_model.py), calibrated on the shipped real history (history/, loaded once
  per process; the file's [var] section maps each asset to its series).

The stress replay funds every reference portfolio with USDC to several portfolio-mode
health factors and applies one correlated move (ETH -40%, LSTs -7% against ETH, BTC
-30%, implied vol up, options a day older) to check that no account the portfolio
mode rated healthy ends with negative equity.
"""

from __future__ import annotations

import functools
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from aggregator.config import (
    AssetConfig,
    CorrelationGroup,
    PortfolioConfig,
    RiskConfig,
    StandardRulesConfig,
    VarConfig,
)
from aggregator.marketdata.calibration import VarCalibration, shipped_calibration
from aggregator.risk.book import PositionRow
from aggregator.risk.engine import RiskEngine
from aggregator.risk.market import PriceInput
from aggregator.risk.portfolio import (
    SECONDS_PER_YEAR,
    MarketState,
    OptionLeg,
    OptionSeries,
    PerpLeg,
    PortfolioBook,
    PortfolioEngine,
    ScenarioSet,
    SpotLeg,
    black76,
    specs_of,
)
from aggregator.risk.var_model import VarPricer

REFERENCE_PATH = Path(__file__).with_name("reference_portfolios.toml")
DAY = 86400.0


# -- the reference file (same strictness as config.toml) ----------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RefMarket(_Strict):
    prices: dict[str, float]
    sigma: dict[str, float]
    relative_sigma: dict[str, dict[str, float]] = Field(default_factory=dict)
    implied_vol: dict[str, float] = Field(default_factory=dict)
    funding: dict[str, float] = Field(default_factory=dict)
    now: float = 0.0


class RefSpot(_Strict):
    chain: str
    asset: str
    units: float


class RefPerp(_Strict):
    chain: str
    market: str
    size: float
    entry: float = Field(gt=0)
    entry_funding: float = 0.0


class RefOption(_Strict):
    chain: str
    underlying: str  # the on-chain option underlying name, e.g. "ETH"
    strike: float = Field(gt=0)
    expiry_days: float
    type: str = Field(pattern="^(call|put)$")
    size: float


class RefPortfolio(_Strict):
    name: str
    description: str = ""
    spot: list[RefSpot] = Field(default_factory=list)
    perps: list[RefPerp] = Field(default_factory=list)
    options: list[RefOption] = Field(default_factory=list)


class StressSpec(_Strict):
    spot: dict[str, float] = Field(default_factory=lambda: {"WETH": -0.40, "WBTC": -0.30})
    lst_depeg: float = Field(default=0.07, ge=0, lt=1)
    vol_shock: float = Field(default=0.50, gt=-1)
    days: float = Field(default=1.0, ge=0)


class ReferenceFile(_Strict):
    chains: list[str] = Field(min_length=1)
    market: RefMarket
    assets: list[AssetConfig] = Field(min_length=1)
    correlation_groups: list[CorrelationGroup] = Field(default_factory=list)
    risk: RiskConfig = RiskConfig()
    portfolio: PortfolioConfig = PortfolioConfig()
    var: VarConfig = VarConfig()
    stress: StressSpec = StressSpec()
    portfolios: list[RefPortfolio] = Field(min_length=1)


def load_reference(path: str | Path | None = None) -> ReferenceFile:
    p = Path(path) if path is not None else REFERENCE_PATH
    return ReferenceFile.model_validate(tomllib.loads(p.read_text()))


# -- models --------------------------------------------------------------------------------------
@dataclass
class Legs:
    spot: list[SpotLeg] = field(default_factory=list)
    perps: list[PerpLeg] = field(default_factory=list)
    options: list[OptionLeg] = field(default_factory=list)

    def on(self, chain: str) -> Legs:
        return Legs(
            [x for x in self.spot if x.chain == chain],
            [x for x in self.perps if x.chain == chain],
            [x for x in self.options if x.chain == chain],
        )

    def relabel(self, account: str, extra: list[SpotLeg] | None = None) -> Legs:
        """The same legs for another account (plus `extra` spot legs)."""
        a = account
        return Legs(
            [SpotLeg(a, x.chain, x.asset, x.units) for x in self.spot] + (extra or []),
            [
                PerpLeg(a, x.chain, x.market, x.size, x.entry_price, x.entry_funding)
                for x in self.perps
            ],
            [OptionLeg(a, x.chain, x.series, x.size) for x in self.options],
        )

    def chains(self) -> list[str]:
        out: list[str] = []
        every: list[SpotLeg | PerpLeg | OptionLeg] = [*self.spot, *self.perps, *self.options]
        for x in every:
            if x.chain not in out:
                out.append(x.chain)
        return out


class MarginModels:
    """The three models over one reference file's parameters and market."""

    def __init__(self, ref: ReferenceFile) -> None:
        self.ref = ref
        pf = ref.portfolio
        self.engine = PortfolioEngine(
            specs_of(ref.assets, pf), pf,
            perps={m.name: m.underlying for m in pf.perps},
            options={o.name: o.underlying for o in pf.options},
            warn_hf=ref.risk.warn_hf,
        )  # fmt: skip
        m = ref.market
        self.mkt: MarketState = self.engine.market(
            m.prices, m.implied_vol, m.funding, m.now, daily_sigma=m.sigma
        )
        self.decimals = {a.symbol: a.decimals for a in ref.assets}
        self.option_underlying = {o.name: o.underlying for o in pf.options}
        self.rules: StandardRulesConfig = pf.standard_rules

    def legs(self, account: str, p: RefPortfolio) -> Legs:
        now = self.ref.market.now
        every: list[RefSpot | RefPerp | RefOption] = [*p.spot, *p.perps, *p.options]
        for x in every:
            if x.chain not in self.ref.chains:
                raise ValueError(f"portfolio {p.name}: unknown chain {x.chain!r}")
        opts = []
        for o in p.options:
            if o.underlying not in self.option_underlying:
                raise ValueError(f"portfolio {p.name}: unknown option underlying {o.underlying!r}")
            s = OptionSeries(
                self.option_underlying[o.underlying], o.strike, now + o.expiry_days * DAY,
                o.type == "call",
            )  # fmt: skip
            opts.append(OptionLeg(account, o.chain, s, o.size))
        return Legs(
            [SpotLeg(account, x.chain, x.asset, x.units) for x in p.spot],
            [
                PerpLeg(account, x.chain, x.market, x.size, x.entry, x.entry_funding)
                for x in p.perps
            ],
            opts,
        )

    def book(self, accounts: list[str], legs: list[Legs]) -> PortfolioBook:
        return self.engine.book(
            [x for lg in legs for x in lg.spot],
            [x for lg in legs for x in lg.perps],
            [x for lg in legs for x in lg.options],
            accounts=accounts,
            chains=self.ref.chains,
        )

    # -- standard rules ---------------------------------------------------------------------
    def derivative_rule_margin(self, legs: Legs) -> float:
        """Per-position rules, summed gross (no offsets): perps perp_im * notional;
        short options max(min, base - OTM fraction) * spot per contract; long options
        their mark (a paid premium is not margin)."""
        r = self.rules
        total = 0.0
        mk = self.engine
        for p in legs.perps:
            u = mk.market_u[mk.market_index[p.market]]
            total += r.perp_im * abs(p.size) * float(self.mkt.spot[u])
        for o in legs.options:
            s = o.series
            spot = float(self.mkt.spot[mk.u_index[s.underlying]])
            if o.size < 0:
                otm = (s.strike - spot) / spot if s.is_call else (spot - s.strike) / spot
                rate = max(r.option_short_min, r.option_short_base - max(otm, 0.0))
                total += rate * spot * -o.size
            else:
                total += o.size * self._mark(s)
        return total

    def _mark(self, s: OptionSeries) -> float:
        u = self.engine.u_index[s.underlying]
        t = (s.expiry - self.mkt.now) / SECONDS_PER_YEAR
        return float(black76(self.mkt.spot[u], s.strike, t, self.mkt.iv[u], s.is_call))

    def collateral_lock(self, legs: Legs, chains: list[str]) -> float:
        """Collateral value - C_borrow of the standard engine over `chains` only."""
        if not legs.spot:
            return 0.0
        ref = self.ref
        eng = RiskEngine(chains, ref.assets, ref.correlation_groups, ref.risk)
        rows = []
        for x in legs.spot:
            raw = round(abs(x.units) * 10 ** self.decimals[x.asset])
            side: Literal["collateral", "debt"] = "collateral" if x.units > 0 else "debt"
            rows.append(PositionRow(x.account.lower(), x.chain, x.asset, side, raw, raw))
        eng.load_positions(rows)
        eng.set_prices({s: PriceInput(v) for s, v in ref.market.prices.items()})
        eng.set_volatility(ref.market.sigma, ref.market.relative_sigma)
        eng.recompute()
        h = eng.health(legs.spot[0].account.lower())
        return h.collateral_usd - h.c_borrow

    def equity(self, legs: Legs) -> float:
        acc = "0x" + "0" * 40
        r = self.engine.compute(self.book([acc], [legs.relabel(acc)]), self.mkt)
        return float(r.equity[0])

    def standard(self, legs: Legs, chains: list[str]) -> float:
        return self.collateral_lock(legs, chains) + self.derivative_rule_margin(legs)


@dataclass
class ReportRow:
    name: str
    description: str
    equity_usd: float
    isolated_usd: float
    standard_usd: float
    portfolio_usd: float
    post_isolated_usd: float
    post_standard_usd: float
    post_portfolio_usd: float
    portfolio_mm_usd: float
    var_usd: float
    post_var_usd: float
    var_mm_usd: float
    worst_scenario: str | None
    per_chain: dict[str, dict[str, float]]


@dataclass
class CapitalReport:
    rows: list[ReportRow]
    scenarios: int
    im_factor: float
    var_calibration: dict[str, Any] = field(default_factory=dict)

    def totals(self) -> dict[str, float]:
        keys = ("isolated_usd", "standard_usd", "portfolio_usd", "var_usd",
                "post_isolated_usd", "post_standard_usd", "post_portfolio_usd",
                "post_var_usd")  # fmt: skip
        return {k: sum(getattr(r, k) for r in self.rows) for k in keys}

    def reductions(self) -> dict[str, float]:
        t = self.totals()

        def red(a: float, b: float) -> float:
            return 1.0 - a / b if b > 0 else 0.0

        return {
            "portfolio_vs_isolated": red(t["portfolio_usd"], t["isolated_usd"]),
            "portfolio_vs_standard": red(t["portfolio_usd"], t["standard_usd"]),
            "var_vs_standard": red(t["var_usd"], t["standard_usd"]),
            "var_vs_portfolio": red(t["var_usd"], t["portfolio_usd"]),
            "standard_vs_isolated": red(t["standard_usd"], t["isolated_usd"]),
            "post_portfolio_vs_isolated": red(t["post_portfolio_usd"], t["post_isolated_usd"]),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "portfolios": [vars(r) for r in self.rows],
            "totals": self.totals(),
            "reductions": self.reductions(),
            "scenarios": self.scenarios,
            "im_factor": self.im_factor,
            "var_calibration": self.var_calibration,
        }


def account_of(i: int) -> str:
    return f"0x{0xA11CE000 + i:040x}"


@functools.cache
def _real_history(ref_assets: tuple[tuple[str, str | None], ...], var: str) -> VarCalibration:
    """The reference book's calibration on the shipped history, loaded once per
    assets and [var] section (its JSON text: the cache key)."""
    return shipped_calibration(dict(ref_assets), VarConfig.model_validate_json(var))


def capital_report(ref: ReferenceFile | None = None) -> CapitalReport:
    ref = ref or load_reference()
    mm = MarginModels(ref)
    accounts = [account_of(i) for i in range(len(ref.portfolios))]
    legs = [mm.legs(a, p) for a, p in zip(accounts, ref.portfolios, strict=True)]
    pbook = mm.book(accounts, legs)
    pm = mm.engine.compute(pbook, mm.mkt)
    cal = _real_history(
        tuple((a.symbol, a.underlying) for a in ref.assets), ref.var.model_dump_json()
    )
    vf = VarPricer(mm.engine, ref.var).figures(pbook, mm.mkt, cal)
    f = ref.portfolio.im_factor
    rows = []
    for i, (p, lg) in enumerate(zip(ref.portfolios, legs, strict=True)):
        eq = float(pm.equity[i])
        per_chain: dict[str, dict[str, float]] = {}
        iso = post_iso = 0.0
        for c in lg.chains():
            sub = lg.on(c)
            r_c = mm.standard(sub, [c])
            e_c = mm.equity(sub)
            per_chain[c] = {"requirement_usd": r_c, "equity_usd": e_c}
            # In isolation a chain's own deficit (debt or a losing leg there) is not
            # covered by surplus elsewhere: that chain must hold collateral for it.
            iso += r_c + max(0.0, -e_c)
            post_iso += max(0.0, r_c - e_c)
        std = mm.standard(lg, ref.chains)
        im = float(pm.im[i])
        r_var = f * float(vf.requirement[i])
        rows.append(
            ReportRow(
                p.name,
                p.description,
                eq,
                iso,
                std,
                im,
                post_iso,
                max(0.0, std - eq),
                max(0.0, im - eq),
                float(pm.mm[i]),
                r_var,
                max(0.0, r_var - eq),
                float(vf.requirement[i]),
                pm.row(i)["worst_scenario"],
                per_chain,
            )
        )
    return CapitalReport(rows, mm.engine.scenarios.size, f, cal.describe())


# -- stress replay --------------------------------------------------------------------------------
@dataclass
class StressRow:
    name: str
    funded: str  # "PM HF 1.10" or "std BP=0"
    funded_hf: float  # the target PM HF, nan for standard-funded accounts
    usdc_added: float
    equity_before: float
    mm: float
    hf: float
    tier: str
    stress_pnl: float
    equity_after: float


@dataclass
class StressReport:
    rows: list[StressRow]
    spec: dict[str, Any]

    @property
    def violations(self) -> list[StressRow]:
        """Accounts rated healthy by portfolio margin that end with negative equity."""
        return [r for r in self.rows if r.tier == "healthy" and r.equity_after < 0]

    def to_json(self) -> dict[str, Any]:
        return {
            "stress": self.spec,
            "accounts": [vars(r) for r in self.rows],
            "healthy": sum(r.tier == "healthy" for r in self.rows),
            "violations": [vars(r) for r in self.violations],
            "passed": not self.violations,
        }


def stress_scenario(engine: PortfolioEngine, spec: StressSpec) -> ScenarioSet:
    U, T = len(engine.underlyings), len(engine.symbols)
    spot = np.zeros((1, U))
    for sym, move in spec.spot.items():
        if sym not in engine.u_index:
            raise ValueError(f"stress.spot.{sym}: not a risk underlying")
        spot[0, engine.u_index[sym]] = move
    depeg = np.zeros((1, T))
    for t, a in enumerate(engine.assets):
        if a.lst:
            depeg[0, t] = -spec.lst_depeg
    vol = np.full((1, U), 1.0 + spec.vol_shock)
    moves = ", ".join(f"{k} {v:+.0%}" for k, v in spec.spot.items())
    return ScenarioSet([f"stress: {moves}, LSTs -{spec.lst_depeg:.0%}"], spot, depeg, vol)


def _standard_funding(
    mm: MarginModels, legs: Legs, acc: str, *, chain: str, cash: str, price: float
) -> float:
    """USD of `cash` (negative: borrowed) that brings the standard cross-margin BP to 0.

    Bisection, because cash collateral carries its own haircut and cash debt can switch
    the account out of e-mode (a jump in the requirement)."""
    chains = mm.ref.chains
    eq = mm.equity(legs)

    def excess(add: float) -> float:
        extra = [SpotLeg(acc, chain, cash, add / price)] if add != 0 else []
        return eq + add - mm.standard(legs.relabel(acc, extra), chains)

    lo, hi = -max(eq, 0.0) - 1.0, max(mm.standard(legs, chains) - eq, 0.0) * 2.0 + 1.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if excess(mid) >= 0:
            hi = mid
        else:
            lo = mid
    return hi


def stress_replay(
    ref: ReferenceFile | None = None, funded_hfs: tuple[float, ...] | None = None
) -> StressReport:
    """Fund every reference portfolio with the first stable asset (on its first chain;
    a negative amount is a loan of it) to exactly each portfolio HF in `funded_hfs`
    (default: 1.0, warn_hf, im_factor), and once to the standard model's BP = 0; rate
    it with portfolio margin, then apply the stress."""
    ref = ref or load_reference()
    mm = MarginModels(ref)
    stable = ref.portfolio.stable_assets
    if not stable:
        raise ValueError("portfolio.stable_assets: the stress funds accounts in a stable asset")
    cash = stable[0]
    price_cash = ref.market.prices[cash]
    hfs = funded_hfs or (1.0, ref.risk.warn_hf, ref.portfolio.im_factor)
    accounts = [account_of(i) for i in range(len(ref.portfolios))]
    legs = [mm.legs(a, p) for a, p in zip(accounts, ref.portfolios, strict=True)]
    base = mm.engine.compute(mm.book(accounts, legs), mm.mkt)
    f_accounts, f_legs, meta = [], [], []
    for i, (p, lg) in enumerate(zip(ref.portfolios, legs, strict=True)):
        for j, h in enumerate(hfs):
            acc = f"0x{0xF00D0000 + i * 16 + j:040x}"
            # Negative: the account borrows the stable asset down to the target HF.
            add = h * float(base.mm[i]) * (1 + 1e-12) - float(base.equity[i])
            chain = (lg.chains() or ref.chains)[0]
            extra = [SpotLeg(acc, chain, cash, add / price_cash)] if add != 0 else []
            f_legs.append(lg.relabel(acc, extra))
            f_accounts.append(acc)
            meta.append((p.name, f"PM HF {h:.2f}", h, add))
        # Contrast: the same book funded to the standard model's requirement (BP = 0).
        acc = f"0x{0xF00D0000 + i * 16 + 15:040x}"
        chain = (lg.chains() or ref.chains)[0]
        add = _standard_funding(mm, lg.relabel(acc), acc, chain=chain, cash=cash, price=price_cash)
        extra = [SpotLeg(acc, chain, cash, add / price_cash)] if add != 0 else []
        f_legs.append(lg.relabel(acc, extra))
        f_accounts.append(acc)
        meta.append((p.name, "std BP=0", math.nan, add))
    book = mm.book(f_accounts, f_legs)
    r = mm.engine.compute(book, mm.mkt)
    sc = stress_scenario(mm.engine, ref.stress)
    dv = mm.engine.revalue(book, mm.mkt, sc, ref.stress.days / 365.0)[:, 0]
    rows = []
    for k, (name, how, h, add) in enumerate(meta):
        row = r.row(k)
        rows.append(
            StressRow(
                name,
                how,
                h,
                add,
                row["equity_usd"],
                row["mm_usd"],
                row["hf"],
                row["tier"],
                float(dv[k]),
                row["equity_usd"] + float(dv[k]),
            )
        )
    return StressReport(rows, {"scenario": sc.names[0], **ref.stress.model_dump()})


# -- text rendering (CLI) --------------------------------------------------------------------------
def _usd(x: float) -> str:
    return f"{x:,.0f}"


def render_report(rep: CapitalReport) -> str:
    head = ("portfolio", "equity", "isolated", "standard", "portfolio PM", "VaR", "post iso",
            "post std", "post PM", "post VaR", "PM worst scenario")  # fmt: skip
    lines = [
        [r.name, _usd(r.equity_usd), _usd(r.isolated_usd), _usd(r.standard_usd),
         _usd(r.portfolio_usd), _usd(r.var_usd), _usd(r.post_isolated_usd),
         _usd(r.post_standard_usd), _usd(r.post_portfolio_usd), _usd(r.post_var_usd),
         r.worst_scenario or "-"]
        for r in rep.rows
    ]  # fmt: skip
    t = rep.totals()
    lines.append(["TOTAL", "", _usd(t["isolated_usd"]), _usd(t["standard_usd"]),
                  _usd(t["portfolio_usd"]), _usd(t["var_usd"]), _usd(t["post_isolated_usd"]),
                  _usd(t["post_standard_usd"]), _usd(t["post_portfolio_usd"]),
                  _usd(t["post_var_usd"]), ""])  # fmt: skip
    out = _table(head, lines)
    red = rep.reductions()
    out += (
        "\nChange in the requirement (USD of equity to hold the book): portfolio vs "
        f"isolated {-red['portfolio_vs_isolated']:+.1%}, portfolio vs standard "
        f"{-red['portfolio_vs_standard']:+.1%}, standard vs isolated "
        f"{-red['standard_vs_isolated']:+.1%}; collateral to post, portfolio vs isolated "
        f"{-red['post_portfolio_vs_isolated']:+.1%}. ({rep.scenarios} scenarios, "
        f"IM = {rep.im_factor:g} x MM)\n"
        f"VaR: IM = {rep.im_factor:g} x max(ES, stressed ES) on the shipped history "
        f"({rep.var_calibration.get('returns')} daily returns), VaR vs standard "
        f"{-red['var_vs_standard']:+.1%}, VaR vs portfolio {-red['var_vs_portfolio']:+.1%}\n"
    )
    return out


def render_stress(rep: StressReport) -> str:
    head = ("portfolio", "funded to", "cash added", "equity", "MM", "HF", "tier",
            "stress P&L", "equity after")  # fmt: skip
    lines = [
        [r.name, r.funded, _usd(r.usdc_added), _usd(r.equity_before), _usd(r.mm),
         "inf" if math.isinf(r.hf) else f"{r.hf:.3f}", r.tier, _usd(r.stress_pnl),
         _usd(r.equity_after)]
        for r in rep.rows
    ]  # fmt: skip
    sp_ = rep.spec
    out = f"{sp_['scenario']}, implied vol {sp_['vol_shock']:+.0%}, {sp_['days']:g} day\n"
    out += _table(head, lines)
    healthy = sum(r.tier == "healthy" for r in rep.rows)
    if rep.violations:
        out += (
            f"\nFAILED: {len(rep.violations)} of {healthy} healthy accounts end with "
            "negative equity\n"
        )
    else:
        out += f"\nPASSED: none of the {healthy} accounts rated healthy ends with negative equity\n"
    return out


def _table(head: tuple[str, ...], rows: list[list[str]]) -> str:
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) for i in range(len(head))]

    def fmt(cells: list[str] | tuple[str, ...]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 or (i == len(cells) - 1 and not c[:1].isdigit()) else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)]) + "\n"


__all__ = [
    "REFERENCE_PATH",
    "CapitalReport",
    "MarginModels",
    "ReferenceFile",
    "StressReport",
    "capital_report",
    "load_reference",
    "render_report",
    "render_stress",
    "stress_replay",
]
