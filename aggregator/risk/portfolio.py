"""Portfolio margin mode (DESIGN.md "Portfolio margin mode"), vectorised over accounts
and scenarios.

Every account's collateral, debt, perpetuals and European cash-settled options (all
chains together) are revalued in every scenario of a grid: spot shocks per
underlying crossed with implied-volatility shocks, extreme moves, an all-risk-assets
crash with correlations to one, and LST de-peg shocks. Options are fully repriced with
Black-76 (forward = spot, zero rates), never delta-approximated.

The book is a sparse account x instrument matrix X (instruments: one column per asset,
net units of collateral minus debt; one per underlying for perps; one per option
series) and the scenarios a dense instrument x scenario matrix P of per-unit P&L, so
dV = X @ P for the whole book at once. Options enter P per series (one Black-76
evaluation per series and scenario, shared by every account holding it), which is
exact because an option position's value is linear in its size.

MM = max(0, -min_s dV[a, s]) + contingency, IM = im_factor * MM, HF = equity / MM,
BP = max(0, equity - IM). See docs/portfolio-margin.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from aggregator.config import AppConfig, AssetConfig, PortfolioConfig
from aggregator.risk.model import health
from chains.units import TIERS

if TYPE_CHECKING:
    import scipy.sparse as sp

SECONDS_PER_YEAR = 365.0 * 86400.0
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
F64 = NDArray[np.float64]


def ndtr(x: Any) -> F64:
    """scipy.special.ndtr, imported at the first option valued rather than with the
    daemon (var.py `ndtri`: scipy costs a start 0.2-0.3 s of CPU it does not need
    before its book is rated)."""
    from scipy.special import ndtr as scipy_ndtr

    return np.asarray(scipy_ndtr(x), np.float64)


I64 = NDArray[np.int64]


class MissingMarketData(RuntimeError):
    """A price, implied volatility or funding index the valuation needs is missing."""


# -- Black-76 ---------------------------------------------------------------------
def black76(forward: Any, strike: Any, t_years: Any, sigma: Any, is_call: Any) -> F64:
    """Undiscounted Black-76 price (zero rates: forward = spot), broadcasting.

    At or after expiry, or with zero volatility, the value is the intrinsic value.
    """
    f = np.asarray(forward, np.float64)
    k = np.asarray(strike, np.float64)
    t = np.asarray(t_years, np.float64)
    s = np.asarray(sigma, np.float64)
    c = np.asarray(is_call, bool)
    sd = s * np.sqrt(np.maximum(t, 0.0))
    live = sd > 0.0
    sd_safe = np.where(live, sd, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        d1 = (np.log(f / k) + 0.5 * sd_safe * sd_safe) / sd_safe
    d2 = d1 - sd_safe
    call = f * ndtr(d1) - k * ndtr(d2)
    put = k * ndtr(-d2) - f * ndtr(-d1)
    price = np.where(c, call, put)
    intrinsic = np.where(c, np.maximum(f - k, 0.0), np.maximum(k - f, 0.0))
    out = np.where(live, np.maximum(price, 0.0), intrinsic)
    return np.asarray(out, np.float64)


def black76_greeks(
    forward: Any, strike: Any, t_years: Any, sigma: Any, is_call: Any
) -> tuple[F64, F64, F64]:
    """(delta, gamma, vega) per option: delta in underlying units, gamma per unit of
    underlying price, vega in USD per 1.00 of volatility (divide by 100 for a vol
    point). Expired or zero-vol options: delta of the intrinsic value, no gamma/vega."""
    f = np.asarray(forward, np.float64)
    k = np.asarray(strike, np.float64)
    t = np.maximum(np.asarray(t_years, np.float64), 0.0)
    s = np.asarray(sigma, np.float64)
    c = np.asarray(is_call, bool)
    sqt = np.sqrt(t)
    sd = s * sqt
    live = sd > 0.0
    sd_safe = np.where(live, sd, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        d1 = (np.log(f / k) + 0.5 * sd_safe * sd_safe) / sd_safe
    pdf = _INV_SQRT_2PI * np.exp(-0.5 * d1 * d1)
    n1 = ndtr(d1)
    delta = np.where(c, n1, n1 - 1.0)
    itm = np.where(c, f > k, f < k)
    delta_dead = np.where(itm, np.where(c, 1.0, -1.0), 0.0)
    delta = np.where(live, delta, delta_dead)
    gamma = np.where(live, pdf / (f * sd_safe), 0.0)
    vega = np.where(live, f * pdf * sqt, 0.0)
    return (
        np.asarray(delta, np.float64),
        np.asarray(gamma, np.float64),
        np.asarray(vega, np.float64),
    )


# -- assets, scenarios --------------------------------------------------------------
@dataclass(frozen=True)
class AssetSpec:
    """How an asset moves in the scenarios: `underlying` None = never shocked
    (stable); its own symbol = a base risk asset; an LST names its underlying."""

    symbol: str
    underlying: str | None
    lst: bool = False


def asset_specs(cfg: AppConfig) -> list[AssetSpec]:
    return specs_of(cfg.assets, cfg.portfolio)


def specs_of(assets: Sequence[AssetConfig], pcfg: PortfolioConfig) -> list[AssetSpec]:
    """An asset with an `underlying` (an LST) moves with it and de-pegs against it."""
    stable = set(pcfg.stable_assets)
    out = []
    for a in assets:
        if a.symbol in stable:
            out.append(AssetSpec(a.symbol, None))
        elif a.underlying is not None:
            out.append(AssetSpec(a.symbol, a.underlying, lst=True))
        else:
            out.append(AssetSpec(a.symbol, a.symbol))
    return out


@dataclass(frozen=True)
class ScenarioSet:
    """S scenarios over U underlyings and T assets.

    spot[s, u]: return of underlying u; depeg[s, t]: return of asset t against its
    underlying (<= 0, LSTs only); vol[s, u]: multiplier of u's implied volatility.
    """

    names: list[str]
    spot: F64
    depeg: F64
    vol: F64

    @property
    def size(self) -> int:
        return len(self.names)


def build_scenarios(
    pcfg: PortfolioConfig, underlyings: Sequence[str], assets: Sequence[AssetSpec]
) -> ScenarioSet:
    """The grid of docs/portfolio-margin.md "Scenarios"."""
    g = _ScenarioGrid(len(underlyings), len(assets))
    lst_idx = [i for i, a in enumerate(assets) if a.lst]
    for u, sym in enumerate(underlyings):
        _add_single_moves(g, pcfg, u, sym)
    vol_up = 1.0 + max(pcfg.vol_shocks)
    all_depeg = g.zero_t.copy()
    all_depeg[lst_idx] = -pcfg.depeg_shock
    for c in pcfg.crash_moves:
        # Correlations to one: every risk underlying together, LSTs de-pegged, vol up.
        g.add(f"crash {c:+.0%} all, LSTs -{pcfg.depeg_shock:.0%}", np.full(g.U, c), all_depeg,
              np.full(g.U, vol_up))  # fmt: skip
    if lst_idx and pcfg.depeg_shock > 0:
        _add_depegs(g, pcfg, assets, lst_idx, all_depeg)
    if not g.names:
        g.add("base", g.zero_u, g.zero_t, g.one_u)
    return g.scenarios()


class _ScenarioGrid:
    """Scenarios collected row by row: spot move per underlying, de-peg per asset and
    vol multiplier per underlying."""

    def __init__(self, n_underlyings: int, n_assets: int) -> None:
        self.U, self.T = n_underlyings, n_assets
        self.names: list[str] = []
        self.spot: list[F64] = []
        self.depeg: list[F64] = []
        self.vol: list[F64] = []
        self.zero_u, self.zero_t, self.one_u = np.zeros(self.U), np.zeros(self.T), np.ones(self.U)

    def add(self, name: str, spot: F64, depeg: F64, vol: F64) -> None:
        self.names.append(name)
        self.spot.append(spot)
        self.depeg.append(depeg)
        self.vol.append(vol)

    def scenarios(self) -> ScenarioSet:
        n = len(self.names)
        return ScenarioSet(
            self.names,
            np.array(self.spot, np.float64).reshape(n, self.U),
            np.array(self.depeg, np.float64).reshape(n, self.T),
            np.array(self.vol, np.float64).reshape(n, self.U),
        )


def _add_single_moves(g: _ScenarioGrid, pcfg: PortfolioConfig, u: int, sym: str) -> None:
    """One underlying alone: each spot shock, then each extreme move, crossed with each
    vol shock."""
    for label, moves in (("", pcfg.spot_shocks), ("extreme ", pcfg.extreme_moves)):
        for k in moves:
            for v in pcfg.vol_shocks:
                s_ = g.zero_u.copy()
                s_[u] = k
                vm = g.one_u.copy()
                vm[u] = 1.0 + v
                g.add(f"{sym} {label}{k:+.0%} vol {v:+.0%}", s_, g.zero_t, vm)


def _add_depegs(
    g: _ScenarioGrid,
    pcfg: PortfolioConfig,
    assets: Sequence[AssetSpec],
    lst_idx: list[int],
    all_depeg: F64,
) -> None:
    """Each LST de-pegged alone, then all together when there are several."""
    for t in lst_idx:
        d = g.zero_t.copy()
        d[t] = -pcfg.depeg_shock
        g.add(f"{assets[t].symbol} de-peg -{pcfg.depeg_shock:.0%}", g.zero_u, d, g.one_u)
    if len(lst_idx) > 1:
        g.add(f"all LSTs de-peg -{pcfg.depeg_shock:.0%}", g.zero_u, all_depeg, g.one_u)


# -- the book -------------------------------------------------------------------------
@dataclass(frozen=True)
class OptionSeries:
    """A European cash-settled option series; `underlying` is an asset symbol."""

    underlying: str
    strike: float
    expiry: float  # unix seconds
    is_call: bool

    def label(self) -> str:
        return (
            f"{self.underlying}-{self.strike:g}-{int(self.expiry)}-{'C' if self.is_call else 'P'}"
        )


@dataclass(frozen=True)
class SpotLeg:
    """Collateral (units > 0) or debt (units < 0) of an asset, in whole tokens."""

    account: str
    chain: str
    asset: str
    units: float


@dataclass(frozen=True)
class PerpLeg:
    """A perpetual position: signed size in underlying units, entry price (USD) and the
    market's cumulative funding index (USD per unit) at entry."""

    account: str
    chain: str
    market: str
    size: float
    entry_price: float
    entry_funding: float = 0.0


@dataclass(frozen=True)
class OptionLeg:
    account: str
    chain: str
    series: OptionSeries
    size: float


@dataclass
class PortfolioBook:
    """Columnar book: row arrays per leg kind, indices into `accounts`, the engine's
    assets / perp markets, and `series`. Build with `PortfolioEngine.book(...)`."""

    accounts: list[str]
    chains: list[str]
    s_acc: I64
    s_chain: I64
    s_asset: I64
    s_units: F64
    p_acc: I64
    p_chain: I64
    p_market: I64
    p_size: F64
    p_entry: F64
    p_fentry: F64
    o_acc: I64
    o_chain: I64
    o_series: I64
    o_size: F64
    series: list[OptionSeries] = field(default_factory=list)

    @property
    def n_accounts(self) -> int:
        return len(self.accounts)

    def isolated(self) -> tuple[PortfolioBook, list[tuple[str, str]]]:
        """The same legs with one pseudo-account per (account, chain): margined alone."""
        C = max(1, len(self.chains))
        keys = np.concatenate(
            [self.s_acc * C + self.s_chain, self.p_acc * C + self.p_chain,
             self.o_acc * C + self.o_chain]
        )  # fmt: skip
        uniq, inv = np.unique(keys, return_inverse=True)
        n1, n2 = self.s_acc.size, self.p_acc.size
        pairs = [(self.accounts[int(k) // C], self.chains[int(k) % C]) for k in uniq]
        book = PortfolioBook(
            [f"{a}@{c}" for a, c in pairs], self.chains,
            inv[:n1].astype(np.int64), self.s_chain, self.s_asset, self.s_units,
            inv[n1 : n1 + n2].astype(np.int64), self.p_chain, self.p_market, self.p_size,
            self.p_entry, self.p_fentry,
            inv[n1 + n2 :].astype(np.int64), self.o_chain, self.o_series, self.o_size,
            self.series,
        )  # fmt: skip
        return book, pairs


@dataclass(frozen=True)
class MarketState:
    """Prices (every asset), implied vols (every option underlying), funding index per
    perp market and the valuation time, validated by `PortfolioEngine.market`."""

    price: F64  # per asset
    spot: F64  # per underlying (= its asset price)
    iv: F64  # per underlying, annualised; nan where not needed
    funding: F64  # per perp market
    now: float


@dataclass
class PortfolioResult:
    accounts: list[str]
    scenario_names: list[str]
    equity: F64
    collateral_usd: F64
    debt_usd: F64
    perp_upnl: F64
    option_value: F64
    worst_loss: F64  # max(0, -min_s dV)
    worst_scenario: I64
    contingency: F64
    mm: F64
    im: F64
    hf: F64
    bp: F64
    tier: NDArray[np.int8]
    dv: F64 | None = None  # accounts x scenarios when asked for

    def row(self, i: int) -> dict[str, Any]:
        return {
            "equity_usd": float(self.equity[i]),
            "collateral_usd": float(self.collateral_usd[i]),
            "debt_usd": float(self.debt_usd[i]),
            "perp_upnl_usd": float(self.perp_upnl[i]),
            "option_value_usd": float(self.option_value[i]),
            "worst_loss_usd": float(self.worst_loss[i]),
            "worst_scenario": (
                self.scenario_names[int(self.worst_scenario[i])] if self.worst_loss[i] > 0 else None
            ),
            "contingency_usd": float(self.contingency[i]),
            "mm_usd": float(self.mm[i]),
            "im_usd": float(self.im[i]),
            "hf": float(self.hf[i]),
            "borrowing_power_usd": float(self.bp[i]),
            "tier": TIERS[int(self.tier[i])],
        }


def worst_of(
    a: PortfolioResult, b: PortfolioResult, im_factor: float, warn_hf: float
) -> PortfolioResult:
    """Asymmetric finality for derivatives: of two views (head, confirmed) of the same
    accounts, the lower equity and the higher margin count."""
    if a.accounts != b.accounts:
        raise ValueError("worst_of: the two views must list the same accounts")
    take_b = b.mm > a.mm
    mm = np.maximum(a.mm, b.mm)
    eq = np.minimum(a.equity, b.equity)
    out = PortfolioResult(
        a.accounts, a.scenario_names, eq,
        np.minimum(a.collateral_usd, b.collateral_usd), np.maximum(a.debt_usd, b.debt_usd),
        np.minimum(a.perp_upnl, b.perp_upnl), np.minimum(a.option_value, b.option_value),
        np.where(take_b, b.worst_loss, a.worst_loss),
        np.where(take_b, b.worst_scenario, a.worst_scenario),
        np.where(take_b, b.contingency, a.contingency),
        mm, mm * im_factor, *health(eq, mm, im_factor, warn_hf),
    )  # fmt: skip
    return out


def _sum_by(idx: I64, values: F64, n: int) -> F64:
    return np.asarray(np.bincount(idx, values, minlength=n), np.float64)


def _prices(symbols: Sequence[str], prices: Mapping[str, float]) -> F64:
    """Every asset's price: finite and > 0; all missing ones named at once."""
    price = np.zeros(len(symbols))
    missing = []
    for i, s in enumerate(symbols):
        v = prices.get(s)
        if v is None:
            missing.append(s)
            continue
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"prices.{s}: must be finite and > 0, got {v}")
        price[i] = v
    if missing:
        raise MissingMarketData(f"no price for asset(s) {', '.join(missing)}")
    return price


def _implied_vols(
    underlyings: Sequence[str],
    given: Mapping[str, float],
    configured: Mapping[str, float],
    daily_sigma: Mapping[str, float] | None,
) -> F64:
    """Per underlying: the given vol, else the configured one, else the daily sigma
    annualised; nan when there is none (only option underlyings need one)."""
    iv = np.full(len(underlyings), np.nan)
    for u, s in enumerate(underlyings):
        v = given.get(s, configured.get(s))
        if v is None and daily_sigma is not None and daily_sigma.get(s) is not None:
            v = float(daily_sigma[s]) * math.sqrt(365.0)
        if v is not None:
            if not math.isfinite(v) or v <= 0:
                raise ValueError(f"implied_vol.{s}: must be finite and > 0, got {v}")
            iv[u] = v
    return iv


def _funding(market_index: Mapping[str, int], funding: Mapping[str, float]) -> F64:
    """The cumulative funding index per perp market (0 where not given)."""
    fund = np.zeros(len(market_index))
    for m, v in funding.items():
        if m not in market_index:
            raise KeyError(f"funding: unknown perp market {m!r}")
        if not math.isfinite(v):
            raise ValueError(f"funding.{m}: must be finite, got {v}")
        fund[market_index[m]] = v
    return fund


class _Ids:
    """Dense ids in order of first appearance after the given names; with `closed` (a
    message template) a name outside the given ones is a KeyError instead."""

    def __init__(self, given: Sequence[str] | None, closed: str | None) -> None:
        self.index: dict[str, int] = {a: i for i, a in enumerate(given or [])}
        self.closed = closed if given is not None else None

    def of(self, name: str) -> int:
        if name not in self.index:
            if self.closed is not None:
                raise KeyError(self.closed.format(name))
            self.index[name] = len(self.index)
        return self.index[name]


class PortfolioEngine:
    """Scenario margin for a `PortfolioBook` under a `MarketState`."""

    def __init__(
        self,
        assets: Sequence[AssetSpec],
        pcfg: PortfolioConfig | None = None,
        *,
        perps: Mapping[str, str] | None = None,
        options: Mapping[str, str] | None = None,
        warn_hf: float = 1.10,
    ) -> None:
        self.cfg = pcfg or PortfolioConfig()
        self.warn_hf = warn_hf
        self.assets = list(assets)
        self.symbols = [a.symbol for a in self.assets]
        self.asset_index = {s: i for i, s in enumerate(self.symbols)}
        under: list[str] = []
        for a in self.assets:
            if a.underlying is None:
                continue
            if a.underlying not in self.asset_index:
                raise ValueError(f"asset {a.symbol}: unknown underlying {a.underlying!r}")
            ua = self.assets[self.asset_index[a.underlying]]
            if ua.underlying != ua.symbol:
                raise ValueError(
                    f"asset {a.symbol}: underlying {a.underlying!r} is not a base risk asset"
                )
            if a.underlying not in under:
                under.append(a.underlying)
        self.underlyings = under
        self.u_index = {s: i for i, s in enumerate(under)}
        self.asset_u = np.array(
            [self.u_index[a.underlying] if a.underlying is not None else -1 for a in self.assets],
            np.int64,
        )
        self.perp_markets = dict(perps or {})
        self.option_names = dict(options or {})
        for what, mapping in (("perps", self.perp_markets), ("options", self.option_names)):
            for name, sym in mapping.items():
                if sym not in self.u_index:
                    raise ValueError(f"portfolio.{what}.{name}: {sym!r} is not a risk underlying")
        self.market_names = list(self.perp_markets)
        self.market_index = {m: i for i, m in enumerate(self.market_names)}
        self.market_u = np.array(
            [self.u_index[self.perp_markets[m]] for m in self.market_names], np.int64
        )
        self.scenarios = build_scenarios(self.cfg, self.underlyings, self.assets)

    @classmethod
    def from_config(cls, cfg: AppConfig) -> PortfolioEngine:
        pf = cfg.portfolio
        return cls(
            asset_specs(cfg), pf,
            perps={m.name: m.underlying for m in pf.perps},
            options={o.name: o.underlying for o in pf.options},
            warn_hf=cfg.risk.warn_hf,
        )  # fmt: skip

    # -- inputs -----------------------------------------------------------------
    def market(
        self,
        prices: Mapping[str, float],
        implied_vol: Mapping[str, float] | None = None,
        funding: Mapping[str, float] | None = None,
        now: float = 0.0,
        daily_sigma: Mapping[str, float] | None = None,
    ) -> MarketState:
        """Validate market inputs. Implied vol per underlying: `implied_vol`, else the
        config's `implied_vol`, else the oracle's daily EWMA sigma * sqrt(365)."""
        price = _prices(self.symbols, prices)
        iv = _implied_vols(self.underlyings, implied_vol or {}, self.cfg.implied_vol, daily_sigma)
        fund = _funding(self.market_index, funding or {})
        spot = np.array([price[self.asset_index[s]] for s in self.underlyings])
        return MarketState(price, spot, iv, fund, float(now))

    def book(
        self,
        spot: Iterable[SpotLeg] = (),
        perps: Iterable[PerpLeg] = (),
        options: Iterable[OptionLeg] = (),
        accounts: Sequence[str] | None = None,
        chains: Sequence[str] | None = None,
    ) -> PortfolioBook:
        """Build a book from legs. `accounts` fixes the account order (and may list
        accounts without legs); otherwise the order of first appearance."""
        s_l, p_l, o_l = list(spot), list(perps), list(options)
        series = self._check_legs(s_l, p_l, o_l)
        acc = _Ids(accounts, "account {!r} not in the given account list")
        ch = _Ids(chains, None)
        ai, ci, i64 = acc.of, ch.of, np.int64
        arr: dict[str, Any] = {
            "s_acc": np.array([ai(x.account) for x in s_l], i64),
            "s_chain": np.array([ci(x.chain) for x in s_l], i64),
            "s_asset": np.array([self.asset_index[x.asset] for x in s_l], i64),
            "s_units": np.array([x.units for x in s_l], np.float64),
            "p_acc": np.array([ai(x.account) for x in p_l], i64),
            "p_chain": np.array([ci(x.chain) for x in p_l], i64),
            "p_market": np.array([self.market_index[x.market] for x in p_l], i64),
            "p_size": np.array([x.size for x in p_l], np.float64),
            "p_entry": np.array([x.entry_price for x in p_l], np.float64),
            "p_fentry": np.array([x.entry_funding for x in p_l], np.float64),
            "o_acc": np.array([ai(x.account) for x in o_l], i64),
            "o_chain": np.array([ci(x.chain) for x in o_l], i64),
            "o_series": np.array([series[x.series] for x in o_l], i64),
            "o_size": np.array([x.size for x in o_l], np.float64),
        }
        for name, v in arr.items():
            if v.dtype == np.float64 and not np.isfinite(v).all():
                raise ValueError(f"{name}: every value must be finite")
        return PortfolioBook(
            accounts=list(acc.index), chains=list(ch.index), series=list(series), **arr
        )

    def _check_legs(
        self, s_l: list[SpotLeg], p_l: list[PerpLeg], o_l: list[OptionLeg]
    ) -> dict[OptionSeries, int]:
        """Every leg names a known asset / perp market / risk underlying; returns the
        option series in order of first appearance."""
        for leg in s_l:
            if leg.asset not in self.asset_index:
                raise KeyError(f"spot leg {leg.account}: unknown asset {leg.asset!r}")
        for pl in p_l:
            if pl.market not in self.market_index:
                raise KeyError(f"perp leg {pl.account}: unknown perp market {pl.market!r}")
        series: dict[OptionSeries, int] = {}
        for ol in o_l:
            if ol.series.underlying not in self.u_index:
                raise KeyError(
                    f"option leg {ol.account}: {ol.series.underlying!r} is not a risk underlying"
                )
            if not (ol.series.strike > 0 and math.isfinite(ol.series.strike)):
                raise ValueError(f"option leg {ol.account}: strike must be > 0")
            series.setdefault(ol.series, len(series))
        return series

    # -- kernel -------------------------------------------------------------------
    def _series_arrays(
        self, book: PortfolioBook, mkt: MarketState
    ) -> tuple[I64, F64, F64, F64, NDArray[np.bool_]]:
        J = len(book.series)
        su = np.array([self.u_index[s.underlying] for s in book.series], np.int64).reshape(J)
        k = np.array([s.strike for s in book.series], np.float64).reshape(J)
        t = np.array([(s.expiry - mkt.now) / SECONDS_PER_YEAR for s in book.series]).reshape(J)
        call = np.array([s.is_call for s in book.series], bool).reshape(J)
        iv = mkt.iv[su]
        live = t > 0
        if np.isnan(iv[live]).any():
            bad = sorted({self.underlyings[int(u)] for u in su[live][np.isnan(iv[live])]})
            raise MissingMarketData(
                f"no implied volatility for option underlying(s) {', '.join(bad)}"
            )
        return su, k, t, np.nan_to_num(iv), call

    def scenario_pnl(
        self,
        book: PortfolioBook,
        mkt: MarketState,
        scenarios: ScenarioSet | None = None,
        dt_years: float = 0.0,
    ) -> tuple[F64, F64]:
        """(P, V0): per-unit P&L of every instrument in every scenario (I x S) and the
        option series' current values (J). `dt_years` ages the options in the
        scenarios (the stress replay's one day); the margin grid uses 0."""
        sc = scenarios or self.scenarios
        T, U = len(self.symbols), len(self.underlyings)
        has_u = self.asset_u >= 0
        au = np.where(has_u, self.asset_u, 0)
        # Asset return: its underlying's move, times (1 + de-peg) for LSTs.
        ret = np.where(has_u[None, :], (1.0 + sc.spot[:, au]) * (1.0 + sc.depeg) - 1.0, 0.0)
        p_assets = (mkt.price[None, :] * ret).T  # T x S
        p_perps = (mkt.spot[None, :] * sc.spot).T  # U x S
        su, k, t, iv, call = self._series_arrays(book, mkt)
        v0 = black76(mkt.spot[su], k, t, iv, call)
        if su.size:
            fwd = mkt.spot[su][:, None] * (1.0 + sc.spot[:, su].T)  # J x S
            tt = (t - dt_years)[:, None]
            vs = black76(fwd, k[:, None], tt, iv[:, None] * sc.vol[:, su].T, call[:, None])
            p_opts = vs - v0[:, None]
        else:
            p_opts = np.zeros((0, sc.size))
        assert p_assets.shape[0] == T and p_perps.shape[0] == U
        return np.vstack([p_assets, p_perps, p_opts]), v0

    def revalue(
        self, book: PortfolioBook, mkt: MarketState, scenarios: ScenarioSet, dt_years: float = 0.0
    ) -> F64:
        """dV (accounts x scenarios) of `book` under arbitrary scenarios (stress replay)."""
        P, _ = self.scenario_pnl(book, mkt, scenarios, dt_years)
        return np.asarray(self.exposure(book) @ P)

    def exposure(self, book: PortfolioBook) -> sp.csr_matrix:
        """X: accounts x instruments (assets, perp underlyings, option series), summed
        over chains (that is the cross-chain netting)."""
        T, U, J = len(self.symbols), len(self.underlyings), len(book.series)
        rows = np.concatenate([book.s_acc, book.p_acc, book.o_acc])
        cols = np.concatenate(
            [book.s_asset, T + self.market_u[book.p_market], T + U + book.o_series]
        )
        vals = np.concatenate([book.s_units, book.p_size, book.o_size])
        import scipy.sparse as sp  # with the first exposure, not with the daemon (ndtr)

        x = sp.coo_matrix((vals, (rows, cols)), shape=(book.n_accounts, T + U + J))
        return x.tocsr()

    def option_values(self, book: PortfolioBook, mkt: MarketState) -> F64:
        """Black-76 value of each option series of `book` now (J)."""
        su, k, t, iv, call = self._series_arrays(book, mkt)
        return black76(mkt.spot[su], k, t, iv, call)

    def marks(
        self, book: PortfolioBook, mkt: MarketState, v0: F64 | None = None
    ) -> tuple[F64, F64, F64, F64]:
        """Per account: collateral and debt at spot, perp PnL incl. funding, option
        marks (`v0`: the series' values, computed when not given). Their sum
        collateral - debt + PnL + marks is the account's equity in every model."""
        A = book.n_accounts
        v0 = self.option_values(book, mkt) if v0 is None else v0
        sv = book.s_units * mkt.price[book.s_asset]
        coll = _sum_by(book.s_acc, np.maximum(sv, 0.0), A)
        debt = _sum_by(book.s_acc, np.maximum(-sv, 0.0), A)
        mark = mkt.spot[self.market_u[book.p_market]]
        upnl_rows = book.p_size * (mark - book.p_entry) - book.p_size * (
            mkt.funding[book.p_market] - book.p_fentry
        )
        upnl = _sum_by(book.p_acc, upnl_rows, A)
        optv = _sum_by(book.o_acc, book.o_size * v0[book.o_series], A)
        return coll, debt, upnl, optv

    def compute(
        self, book: PortfolioBook, mkt: MarketState, keep_dv: bool = False
    ) -> PortfolioResult:
        """Every account of `book` in every scenario at once."""
        A = book.n_accounts
        T, U = len(self.symbols), len(self.underlyings)
        P, v0 = self.scenario_pnl(book, mkt)
        X = self.exposure(book)
        dv = np.asarray(X @ P) if P.shape[1] else np.zeros((A, 0))
        if dv.shape[1]:
            worst_s = np.argmin(dv, axis=1)
            worst = np.maximum(-dv[np.arange(A), worst_s], 0.0)
        else:
            worst_s = np.zeros(A, np.int64)
            worst = np.zeros(A)
        coll, debt, upnl, optv = self.marks(book, mkt, v0)
        equity = coll - debt + upnl + optv
        # Contingency on net (cross-chain) exposures, so an offsetting leg never adds any.
        c = self.cfg.contingency
        xp = X[:, T : T + U]
        perp_notional = np.asarray(abs(xp) @ mkt.spot).ravel()
        xo = X[:, T + U :]
        su = np.array([self.u_index[s.underlying] for s in book.series], np.int64)
        short = -xo.minimum(0.0)
        short_notional = np.asarray(short @ mkt.spot[su]).ravel() if su.size else np.zeros(A)
        has_deriv = np.zeros(A, bool)
        has_deriv[book.p_acc[book.p_size != 0]] = True
        has_deriv[book.o_acc[book.o_size != 0]] = True
        cont = c.perp_notional * perp_notional + c.short_option_notional * short_notional
        cont = cont + c.fixed_usd * has_deriv
        mm = worst + cont
        f = self.cfg.im_factor
        hf, bp, tier = health(equity, mm, f, self.warn_hf)
        return PortfolioResult(
            list(book.accounts), self.scenarios.names, equity, coll, debt, upnl, optv, worst,
            worst_s.astype(np.int64), cont, mm, f * mm, hf, bp, tier, dv if keep_dv else None,
        )  # fmt: skip

    def greeks(self, book: PortfolioBook, mkt: MarketState) -> dict[str, F64]:
        """Per account and underlying (A x U): delta (underlying units; an LST counts
        its price ratio), gamma, vega (USD per 1.00 vol), all chains together."""
        T, U, J = len(self.symbols), len(self.underlyings), len(book.series)
        X = self.exposure(book)
        d = np.zeros((T + U + J, U))
        has_u = self.asset_u >= 0
        ti = np.flatnonzero(has_u)
        d[ti, self.asset_u[ti]] = mkt.price[ti] / mkt.spot[self.asset_u[ti]]
        d[T + np.arange(U), np.arange(U)] = 1.0
        g = np.zeros((T + U + J, U))
        v = np.zeros((T + U + J, U))
        if J:
            su, k, t, iv, call = self._series_arrays(book, mkt)
            od, og, ov = black76_greeks(mkt.spot[su], k, t, iv, call)
            rows = T + U + np.arange(J)
            d[rows, su] = od
            g[rows, su] = og
            v[rows, su] = ov
        return {
            "delta": np.asarray(X @ d),
            "gamma": np.asarray(X @ g),
            "vega": np.asarray(X @ v),
        }


__all__ = [
    "TIERS",
    "AssetSpec",
    "MarketState",
    "MissingMarketData",
    "OptionLeg",
    "OptionSeries",
    "PerpLeg",
    "PortfolioBook",
    "PortfolioEngine",
    "PortfolioResult",
    "ScenarioSet",
    "SpotLeg",
    "asset_specs",
    "black76",
    "black76_greeks",
    "build_scenarios",
    "worst_of",
]
