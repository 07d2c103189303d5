"""`aggregator risk backtest`: the VaR model and the standard haircut against the
shipped daily history, per asset and for the reference portfolios.

For each item (1 USD long of an asset, or a reference portfolio held at constant USD
exposure, rebalanced daily) and each day t, with only returns before t (no look-ahead):
- model VaR 99%, parametric: z * sqrt(x' S_t x), S_t the EWMA covariance forecast of
  the factors (lambda 0.94) mapped to assets; options enter by their Black-76 delta;
- model VaR 99%, FHS: 500 filtered historical scenarios, options fully revalued with
  Black-76 through the `Revalue` hook;
- standard haircut bound: sum_i |x_i| z sigma_i sqrt(h) with z, h and lambda from
  RiskConfig's defaults (the standard mode sums haircuts, correlation ignored; sigma
  is the USD volatility, not the e-mode relative one);
against the realised P&L of day t (positions fully revalued at the day's returns).
Breaches, Kupiec, Christoffersen and the Basel traffic light per window ("2022": days in
calendar 2022; "full": every day with enough history). Writes docs/backtest/README.md
(the table) and docs/backtest/var_2022.png (P&L, VaR, breaches).

`--series ASSET=CSV` replaces a shipped daily series with another (another venue's
closes, in the strict loader's format: a defect is an error naming the file and line,
before anything runs); `--windows` picks the calendar years (and `full`) scored. The
README written says which series and windows the table is of.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from aggregator.config import RiskConfig
from aggregator.marketdata import history
from aggregator.marketdata.covariance import ewma_forecasts, ewma_vol_series
from aggregator.marketdata.factors import Factors, InsufficientHistory, build_factors
from aggregator.marketdata.loader import CsvError, PriceSeries, load_csv
from aggregator.risk import backtest as bt
from aggregator.risk.var import Revalue, filtered_scenarios_at, historical, z_of

F64 = NDArray[np.float64]
ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = ROOT / "docs" / "backtest"
LEVEL = 0.99
N_SCENARIOS = 500
INIT = 20  # EWMA seed
MIN_HISTORY = 60  # returns before the first backtested day
# Project asset symbol -> shipped daily series; LST -> underlying.
SERIES = {"WETH": "ETH", "WBTC": "BTC", "stETH": "stETH", "wstETH": "wstETH", "USDC": "USDC"}
UNDERLYING = {"stETH": "WETH", "wstETH": "WETH"}
MODELS = ("var_parametric", "var_fhs", "standard_haircut", "portfolio_grid")
WINDOWS = ("2022", "full")
# History asset -> its daily series (the shipped one, or a `--series` replacement).
Daily = Callable[[str], PriceSeries]


class BacktestInputError(ValueError):
    """A `--series` or `--windows` the backtest cannot use, named."""


@dataclass(frozen=True)
class OptionSpec:
    asset: str
    strike_rel: float  # strike / spot
    expiry_days: float
    implied_vol: float
    is_call: bool
    contracts_usd: float  # contracts x reference spot (signed)


@dataclass(frozen=True)
class Item:
    name: str
    exposures: dict[str, float]  # asset -> USD
    options: tuple[OptionSpec, ...] = ()


@dataclass
class Series:
    item: Item
    times: NDArray[np.int64]
    pnl: F64
    bounds: dict[str, F64] = field(default_factory=dict)


def reference_items() -> list[Item]:
    """The reference portfolios (aggregator/risk/reference_portfolios.toml), as USD
    exposures at the file's prices."""
    from aggregator.risk.capital import load_reference

    ref = load_reference()
    px = ref.market.prices
    perp_under = {p.name: p.underlying for p in ref.portfolio.perps}
    opt_under = {o.name: o.underlying for o in ref.portfolio.options}
    items = []
    for p in ref.portfolios:
        x: dict[str, float] = {}
        for s in p.spot:
            x[s.asset] = x.get(s.asset, 0.0) + s.units * px[s.asset]
        for q in p.perps:
            a = perp_under[q.market]
            x[a] = x.get(a, 0.0) + q.size * px[a]
        opts = []
        for o in p.options:
            a = opt_under[o.underlying]
            opts.append(
                OptionSpec(
                    a,
                    o.strike / px[a],
                    o.expiry_days,
                    ref.market.implied_vol[a],
                    o.type == "call",
                    o.size * px[a],
                )
            )
        for o2 in opts:
            x.setdefault(o2.asset, 0.0)
        items.append(Item(p.name, x, tuple(opts)))
    return items


def asset_items() -> list[Item]:
    return [Item(f"1 USD {SERIES[a]}", {a: 1.0}) for a in SERIES]


def _factors(assets: Sequence[str], daily: Daily = history.daily) -> Factors:
    need = list(assets)
    for a in assets:
        if a in UNDERLYING and UNDERLYING[a] not in need:
            need.append(UNDERLYING[a])
    series = {a: daily(SERIES[a]) for a in need}
    under = {a: u for a, u in UNDERLYING.items() if a in series}
    return build_factors(series, underlying=under, min_returns=MIN_HISTORY + 1)


def _option_pnl(o: OptionSpec, r: F64) -> F64:
    """P&L of an option position per unit reference spot (spot normalised to 1) for
    log returns r of its underlying over one day."""
    from aggregator.risk.portfolio import black76

    t = o.expiry_days / 365.0
    v0 = black76(1.0, o.strike_rel, t, o.implied_vol, o.is_call)
    v1 = black76(np.exp(r), o.strike_rel, t - 1 / 365.0, o.implied_vol, o.is_call)
    return np.asarray(o.contracts_usd * (v1 - v0), np.float64)


def _option_delta_usd(o: OptionSpec) -> float:
    from aggregator.risk.portfolio import black76_greeks

    d, _g, _v = black76_greeks(1.0, o.strike_rel, o.expiry_days / 365.0, o.implied_vol, o.is_call)
    return float(d) * o.contracts_usd


def grid_moves(assets: Sequence[str]) -> tuple[F64, F64]:
    """The portfolio mode's scenario grid (the reference book's [portfolio] settings)
    as price relatives of `assets` (S x A) and implied-vol multipliers of each asset's
    underlying (S x A): an underlying moves by its spot shock, an LST by its
    underlying's times its de-peg, a stable asset not at all."""
    from aggregator.risk.capital import load_reference
    from aggregator.risk.portfolio import AssetSpec, build_scenarios

    pcfg = load_reference().portfolio
    specs = [
        AssetSpec(a, None)
        if a in pcfg.stable_assets
        else AssetSpec(a, UNDERLYING[a], lst=True)
        if a in UNDERLYING
        else AssetSpec(a, a)
        for a in assets
    ]
    lst_under = {UNDERLYING[sp.symbol] for sp in specs if sp.lst}
    for base in sorted(lst_under - set(assets)):
        specs.append(AssetSpec(base, base))  # an LST's underlying moves the LST
    by_symbol = {sp.symbol: sp for sp in specs}
    under = [sp.symbol for sp in specs if sp.underlying == sp.symbol]
    grid = build_scenarios(pcfg, under, specs)
    moves = np.ones((grid.size, len(assets)))
    vol = np.ones((grid.size, len(assets)))
    for j, a in enumerate(assets):
        sp = by_symbol.get(a)
        if sp is None or sp.underlying is None:
            continue
        ui = under.index(sp.underlying)
        moves[:, j] = 1.0 + grid.spot[:, ui]
        vol[:, j] = grid.vol[:, ui]
        if sp.lst:
            moves[:, j] *= 1.0 + grid.depeg[:, specs.index(sp)]
    return moves, vol


def grid_bound(item: Item, assets: Sequence[str]) -> float:
    """The worst loss of `item` over the portfolio grid (options revalued with the
    shocked implied vol, one day older): the portfolio mode's maintenance margin before
    its im_factor, constant over time (the grid is fixed)."""
    from aggregator.risk.portfolio import black76

    moves, vol = grid_moves(assets)
    col = {a: i for i, a in enumerate(assets)}
    x = np.array([item.exposures.get(a, 0.0) for a in assets])
    pnl = (moves - 1.0) @ x
    for o in item.options:
        j = col[o.asset]
        t = o.expiry_days / 365.0
        v0 = black76(1.0, o.strike_rel, t, o.implied_vol, o.is_call)
        v1 = black76(moves[:, j], o.strike_rel, t - 1 / 365.0, o.implied_vol * vol[:, j], o.is_call)
        pnl += o.contracts_usd * (v1 - v0)
    return max(float(-pnl.min()), 0.0)


def run_item(item: Item, risk: RiskConfig, daily: Daily = history.daily) -> Series:
    f = _factors(list(item.exposures), daily)
    col = {a: i for i, a in enumerate(f.assets)}
    x = np.zeros(len(f.assets))
    for a, v in item.exposures.items():
        x[col[a]] = v
    x_delta = x.copy()
    for o in item.options:
        x_delta[col[o.asset]] += _option_delta_usd(o)
    n = f.returns.shape[0]
    cov_f = ewma_forecasts(f.returns, risk.ewma_lambda, INIT)
    vol_f = ewma_vol_series(f.returns, risk.ewma_lambda, INIT)
    vol_a = ewma_vol_series(f.asset_returns, risk.ewma_lambda, INIT)
    load = f.loadings
    z = z_of(LEVEL)
    hook: Revalue | None = None
    if item.options:

        def hook(scen: F64, rows: slice) -> F64:
            tot = np.zeros(scen.shape[0])
            for o in item.options:
                tot += _option_pnl(o, scen[:, col[o.asset]])
            return tot[None, :]

    days = range(MIN_HISTORY, n)
    pnl = np.expm1(f.asset_returns[MIN_HISTORY:]) @ x
    for o in item.options:
        pnl += _option_pnl(o, f.asset_returns[MIN_HISTORY:, col[o.asset]])
    par = np.empty(len(days))
    fhs = np.empty(len(days))
    hc = np.empty(len(days))
    for j, t in enumerate(days):
        s_a = load @ cov_f[t] @ load.T
        par[j] = z * math.sqrt(max(float(x_delta @ s_a @ x_delta), 0.0))
        scen = filtered_scenarios_at(f.returns, vol_f, t, N_SCENARIOS, INIT) @ load.T
        fhs[j] = historical(x[None, :], scen, var_level=LEVEL, revalue=hook).var[0]
        hc[j] = float(np.abs(x) @ (risk.z * vol_a[t] * math.sqrt(risk.horizon_days)))
    grid = np.full(len(days), grid_bound(item, f.assets))
    return Series(
        item,
        f.times[MIN_HISTORY:],
        pnl,
        {"var_parametric": par, "var_fhs": fhs, "standard_haircut": hc, "portfolio_grid": grid},
    )


@dataclass(frozen=True)
class Row:
    window: str
    item: str
    model: str
    n: int
    breaches: int
    expected: float
    kupiec_p: float
    christoffersen_p: float
    zone: str


def _window_mask(s: Series, window: str) -> NDArray[np.bool_]:
    if window == "full":
        return np.ones(s.times.size, bool)
    year = int(window)
    lo = datetime(year, 1, 1, tzinfo=UTC).timestamp() + 86400  # return of Jan 1
    hi = datetime(year + 1, 1, 1, tzinfo=UTC).timestamp() + 86400
    return np.asarray((s.times >= lo) & (s.times < hi))


def evaluate(series: Sequence[Series], windows: Sequence[str] = WINDOWS) -> list[Row]:
    rows = []
    for w in windows:
        for s in series:
            m = _window_mask(s, w)
            n = int(m.sum())
            if n < 2 or not np.any(s.pnl[m]):
                continue  # a book with no exposure (the hedged pair) cannot breach
            for model in MODELS:
                if not np.any(s.bounds[model][m]):
                    continue  # no margin at all (the grid never shocks a stable asset)
                hits = bt.breaches(s.bounds[model][m], s.pnl[m])
                x = int(hits.sum())
                k = bt.kupiec(n, x, 1 - LEVEL)
                c = bt.christoffersen(hits)
                rows.append(
                    Row(
                        w,
                        s.item.name,
                        model,
                        n,
                        x,
                        k.expected,
                        k.p_value,
                        c.p_value,
                        bt.traffic_light(n, x, 1 - LEVEL),
                    )
                )
    return rows


def render(rows: Sequence[Row]) -> str:
    head = (
        "| window | item | model | days | breaches | expected | Kupiec p "
        "| Christoffersen p | zone |"
    )
    out = [head, "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        out.append(
            f"| {r.window} | {r.item} | {r.model} | {r.n} | {r.breaches} | {r.expected:.1f} "
            f"| {r.kupiec_p:.3f} | {r.christoffersen_p:.3f} | {r.zone} |"
        )
    return "\n".join(out)


def chart(series: Sequence[Series], window: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    live = [s for s in series if int(_window_mask(s, window).sum()) > 1 and np.any(s.pnl)]
    fig, axes = plt.subplots(len(live), 1, figsize=(11, 2.2 * len(live)), sharex=True)
    for ax, s in zip(np.atleast_1d(axes), live, strict=True):
        m = _window_mask(s, window)
        days = (s.times[m] - s.times[m][0]) / 86400.0
        pnl = s.pnl[m]
        ax.bar(days, pnl, width=1.0, color="0.6", label="realised P&L")
        ax.plot(days, -s.bounds["var_fhs"][m], color="C0", lw=1, label="-VaR 99% (FHS)")
        ax.plot(days, -s.bounds["var_parametric"][m], color="C2", lw=0.8, label="-VaR 99% (param.)")
        ax.plot(
            days,
            -s.bounds["standard_haircut"][m],
            color="C1",
            lw=0.8,
            ls="--",
            label="-standard haircut",
        )
        hit = pnl < -s.bounds["var_fhs"][m]
        ax.scatter(days[hit], pnl[hit], color="red", s=14, zorder=3, label="FHS breach")
        ax.set_title(s.item.name, fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
    axes_list = np.atleast_1d(axes)
    axes_list[0].legend(fontsize=7, ncol=5, loc="lower left")
    axes_list[-1].set_xlabel(f"days from the start of {window} (USD P&L per item)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The command's options, for its own parser and for `aggregator risk backtest`."""
    ap.add_argument("--out", type=Path, default=OUT_DIR, help="output directory")
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    ap.add_argument(
        "--series",
        action="append",
        default=[],
        metavar="ASSET=CSV",
        help=f"a daily price CSV replacing the shipped series of ASSET "
        f"({', '.join(sorted(set(SERIES.values())))}), e.g. another venue's closes; repeatable",
    )
    ap.add_argument(
        "--windows",
        default=",".join(WINDOWS),
        help="comma-separated calendar years and/or 'full' (default: %(default)s)",
    )


def replacements(specs: Sequence[str]) -> dict[str, PriceSeries]:
    """`--series ASSET=CSV` values: history asset -> its strictly loaded daily series."""
    known = sorted(set(SERIES.values()))
    out: dict[str, PriceSeries] = {}
    for spec in specs:
        asset, sep, path = spec.partition("=")
        if not sep or not path:
            raise BacktestInputError(f"--series {spec!r}: want ASSET=CSV")
        if asset not in known:
            raise BacktestInputError(f"--series {spec!r}: unknown asset {asset!r}; known: {known}")
        if asset in out:
            raise BacktestInputError(f"--series: {asset} given twice")
        if not Path(path).is_file():
            raise BacktestInputError(f"--series {spec!r}: no such file {path}")
        try:
            got = load_csv(path)
        except CsvError as exc:
            raise BacktestInputError(f"--series {asset}: {exc}") from exc
        if got.frequency != "daily":
            raise BacktestInputError(
                f"--series {asset}: {path} is {got.frequency}; the backtest takes daily closes"
            )
        out[asset] = got
    return out


def windows_of(text: str) -> tuple[str, ...]:
    """`--windows`: calendar years (1970-2100) and/or `full`, each once."""
    out: list[str] = []
    for w in (x.strip() for x in text.split(",")):
        ok = w == "full" or (len(w) == 4 and w.isdigit() and 1970 <= int(w) <= 2100)
        if not ok:
            raise BacktestInputError(f"--windows: {w!r} is neither a calendar year nor 'full'")
        if w not in out:
            out.append(w)
    if not out:
        raise BacktestInputError("--windows: empty")
    return tuple(out)


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    try:
        replaced = replacements(args.series)
        windows = windows_of(args.windows)
    except BacktestInputError as exc:
        print(f"aggregator risk backtest: {exc}")
        return 2

    def daily(name: str) -> PriceSeries:
        return replaced[name] if name in replaced else history.daily(name)

    risk = RiskConfig()
    try:
        series = [run_item(it, risk, daily) for it in [*asset_items(), *reference_items()]]
    except InsufficientHistory as exc:
        print(f"aggregator risk backtest: {exc}")
        return 2
    rows = evaluate(series, windows)
    table = render(rows)
    print(table)
    if not rows:
        print(f"backtest: no item has two days of returns in the windows {', '.join(windows)}")
        return 2
    if not args.no_write:
        args.out.mkdir(parents=True, exist_ok=True)
        chart_name = f"var_{windows[0]}.png"
        chart(series, windows[0], args.out / chart_name)
        (args.out / "README.md").write_text(
            _readme(table, risk, windows, chart_name, {a: s.path for a, s in replaced.items()})
        )
    print(f"backtest: {len(series)} items, {time.perf_counter() - t0:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="aggregator risk backtest",
        description="VaR model and standard haircut vs the shipped daily history",
    )
    add_arguments(ap)
    return run(ap.parse_args(argv))


def _readme(
    table: str,
    risk: RiskConfig,
    windows: Sequence[str] = WINDOWS,
    chart_name: str = "var_2022.png",
    replaced: Mapping[str, str] | None = None,
) -> str:
    swapped = "".join(
        f"\n**{a} is not the shipped series**: `--series {a}={p}`."
        for a, p in (replaced or {}).items()
    )
    return f"""# VaR backtest over the shipped history

Written by `aggregator risk backtest` (aggregator/marketdata/backtest_run.py); regenerate
it after changing the model or the data. What the models are: docs/var.md.
{swapped}
Windows: {", ".join(windows)}.

Daily returns from `history/` (SOURCES.md), 1-day horizon, {LEVEL:.0%} level, each day
priced with only the returns before it (EWMA lambda {risk.ewma_lambda}, {N_SCENARIOS}
FHS scenarios, first {MIN_HISTORY} days of each item's history as warm-up). Items: 1 USD
long of each asset, and the reference portfolios of aggregator/risk/reference_portfolios.toml
held at constant USD exposure (options: constant moneyness and 30-day expiry, Black-76).
`standard_haircut` is the standard mode's bound sum |x| z sigma sqrt(h) with z = {risk.z},
h = {risk.horizon_days} day. A breach is a day whose realised P&L is below minus the
bound. Zones: Basel traffic light scaled binomially (green while the binomial CDF of the
breach count is below 95%, red from 99.99%). Windows: `2022` = the returns of the
calendar days of 2022 (LUNA, the stETH de-peg, FTX); `full` = every day with history.
The hedged perp pair has zero net exposure (zero P&L, zero VaR): it is left out of the
table and the chart, since it cannot breach and would fail Kupiec for that reason alone.

![P&L, VaR and breaches, {windows[0]}]({chart_name})

{table}
"""


if __name__ == "__main__":
    raise SystemExit(main())
