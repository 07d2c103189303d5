"""Portfolio margin benchmark: python -m bench.portfolio_margin [--accounts N] [--sample N].

A synthetic book (default 100,000 accounts over 3 chains: collateral, debt, perps and
options from a pool of option series) margined over exactly 40 scenarios (2
underlyings x 9 spot shocks x 2 vol shocks, one crash, three LST de-pegs). Prints the
vectorised engine's time (PortfolioEngine.compute: scenario P&L matrix, sparse
account x instrument product, MM/IM/HF/BP for every account) against a per-account
Python loop over the same accounts and scenarios (full Black-Scholes reprice per option
leg with math.erf), timed on a sample and extrapolated; target >= 100x. The loop's
results on the sample are checked against the engine's.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import math
import time

import numpy as np

from aggregator.config import PortfolioConfig
from aggregator.risk.portfolio import (
    SECONDS_PER_YEAR,
    AssetSpec,
    OptionSeries,
    PortfolioBook,
    PortfolioEngine,
)
from bench.results import Figure, record

CHAINS = ["ethereum", "arbitrum", "base"]
ASSETS = [
    AssetSpec("USDC", None),
    AssetSpec("WETH", "WETH"),
    AssetSpec("WBTC", "WBTC"),
    AssetSpec("wstETH", "WETH", lst=True),
    AssetSpec("rETH", "WETH", lst=True),
]
PRICES = {"USDC": 1.0, "WETH": 3000.0, "WBTC": 60000.0, "wstETH": 3540.0, "rETH": 3330.0}
IV = {"WETH": 0.65, "WBTC": 0.55}
PERPS = {"ETH-PERP": "WETH", "BTC-PERP": "WBTC"}
CFG = PortfolioConfig(
    spot_shocks=[round(-0.2 + 0.05 * i, 2) for i in range(9)],
    vol_shocks=[-0.3, 0.5],
    extreme_moves=[],
    crash_moves=[-0.4],
    depeg_shock=0.07,
)


def build(n: int, seed: int = 7) -> tuple[PortfolioEngine, PortfolioBook]:
    rng = np.random.default_rng(seed)
    eng = PortfolioEngine(ASSETS, CFG, perps=PERPS, options={"ETH": "WETH", "BTC": "WBTC"})
    series = [
        OptionSeries(u, PRICES[u] * k, d * 86400.0, c)
        for u in ("WETH", "WBTC")
        for k in (0.8, 0.9, 1.0, 1.1, 1.25)
        for d in (7, 30, 90)
        for c in (True, False)
    ]
    # Per account: 2 spot legs (collateral; 30% also owe USDC or WETH), 1 perp, 1-2 options.
    acc = np.arange(n)
    s_acc = np.concatenate([acc, acc, acc[rng.random(n) < 0.3]])
    m = s_acc.size
    s_asset = np.concatenate(
        [rng.integers(0, 5, n), rng.integers(0, 5, n), rng.choice([0, 1], m - 2 * n)]
    )
    usd = rng.lognormal(9.0, 1.0, m) * np.where(np.arange(m) >= 2 * n, -0.5, 1.0)
    price = np.array([PRICES[a.symbol] for a in ASSETS])
    s_units = usd / price[s_asset]
    p_acc = acc.copy()
    p_market = rng.integers(0, 2, n)
    pu = np.array([PRICES["WETH"], PRICES["WBTC"]])[p_market]
    p_size = rng.normal(0.0, 1.0, n) * rng.lognormal(9.0, 1.0, n) / pu
    o_extra = acc[rng.random(n) < 0.5]
    o_acc = np.concatenate([acc, o_extra])
    o_series = rng.integers(0, len(series), o_acc.size)
    o_under = np.array([PRICES[s.underlying] for s in series])[o_series]
    o_size = rng.normal(0.0, 1.0, o_acc.size) * rng.lognormal(8.5, 1.0, o_acc.size) / o_under
    book = PortfolioBook(
        accounts=[f"0x{i:040x}" for i in range(n)], chains=CHAINS,
        s_acc=s_acc, s_chain=rng.integers(0, 3, m), s_asset=s_asset, s_units=s_units,
        p_acc=p_acc, p_chain=rng.integers(0, 3, n), p_market=p_market, p_size=p_size,
        p_entry=pu * rng.uniform(0.9, 1.1, n), p_fentry=np.zeros(n),
        o_acc=o_acc, o_chain=rng.integers(0, 3, o_acc.size), o_series=o_series, o_size=o_size,
        series=series,
    )  # fmt: skip
    return eng, book


def _n(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _bs(f: float, k: float, t: float, s: float, call: bool) -> float:
    if t <= 0 or s <= 0:
        return max(f - k, 0.0) if call else max(k - f, 0.0)
    sd = s * math.sqrt(t)
    d1 = (math.log(f / k) + 0.5 * sd * sd) / sd
    d2 = d1 - sd
    return f * _n(d1) - k * _n(d2) if call else k * _n(-d2) - f * _n(-d1)


def loop_margin(eng: PortfolioEngine, book: PortfolioBook, accounts: np.ndarray) -> list[float]:
    """What a per-account implementation does: for each account, each scenario, each
    leg, revalue (options by a full Black-Scholes reprice)."""
    sc = eng.scenarios
    cont = eng.cfg.contingency
    by_acc: dict[int, list[tuple]] = {int(a): [] for a in accounts}
    wanted = set(by_acc)
    for i in range(book.s_acc.size):
        a = int(book.s_acc[i])
        if a in wanted:
            by_acc[a].append(("s", int(book.s_asset[i]), float(book.s_units[i])))
    for i in range(book.p_acc.size):
        a = int(book.p_acc[i])
        if a in wanted:
            by_acc[a].append(("p", int(eng.market_u[book.p_market[i]]), float(book.p_size[i])))
    for i in range(book.o_acc.size):
        a = int(book.o_acc[i])
        if a in wanted:
            by_acc[a].append(("o", book.series[int(book.o_series[i])], float(book.o_size[i])))
    spot = [PRICES[u] for u in eng.underlyings]
    out = []
    for a in accounts:
        legs = by_acc[int(a)]
        worst = 0.0
        for s in range(sc.size):
            dv = 0.0
            for kind, what, q in legs:
                if kind == "s":
                    u = eng.asset_u[what]
                    p = PRICES[ASSETS[what].symbol]
                    if u >= 0:
                        dv += q * p * ((1 + sc.spot[s, u]) * (1 + sc.depeg[s, what]) - 1)
                elif kind == "p":
                    dv += q * spot[what] * sc.spot[s, what]
                else:
                    u = eng.u_index[what.underlying]
                    t = what.expiry / SECONDS_PER_YEAR
                    f0 = spot[u]
                    v0 = _bs(f0, what.strike, t, IV[what.underlying], what.is_call)
                    v1 = _bs(f0 * (1 + sc.spot[s, u]), what.strike, t,
                             IV[what.underlying] * sc.vol[s, u], what.is_call)  # fmt: skip
                    dv += q * (v1 - v0)
            worst = min(worst, dv)
        perp: dict[int, float] = {}
        short = 0.0
        for kind, what, q in legs:
            if kind == "p":
                perp[what] = perp.get(what, 0.0) + q
        opt: dict[OptionSeries, float] = {}
        for kind, what, q in legs:
            if kind == "o":
                opt[what] = opt.get(what, 0.0) + q
        for ser, q in opt.items():
            short += max(0.0, -q) * PRICES[ser.underlying]
        c = cont.perp_notional * sum(abs(q) * spot[u] for u, q in perp.items())
        c += cont.short_option_notional * short
        out.append(-worst + c)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--accounts", type=int, default=100_000)
    ap.add_argument("--sample", type=int, default=1_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    eng, book = build(args.accounts)
    mkt = eng.market(PRICES, IV, now=0.0)
    assert eng.scenarios.size == 40, eng.scenarios.size
    eng.compute(book, mkt)  # warm-up (imports, allocator)
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        res = eng.compute(book, mkt)
        times.append(time.perf_counter() - t0)
    vec = min(times)
    rng = np.random.default_rng(1)
    sample = np.sort(rng.choice(args.accounts, min(args.sample, args.accounts), replace=False))
    t0 = time.perf_counter()
    ref = loop_margin(eng, book, sample)
    loop_s = (time.perf_counter() - t0) / sample.size * args.accounts
    err = float(np.max(np.abs(np.array(ref) - res.mm[sample]) / (1.0 + np.abs(res.mm[sample]))))
    legs = book.s_acc.size + book.p_acc.size + book.o_acc.size
    print(
        f"book: {args.accounts:,} accounts, {legs:,} legs ({book.o_acc.size:,} options over "
        f"{len(book.series)} series), {eng.scenarios.size} scenarios"
    )
    print(f"vectorised engine (compute, best of {args.repeat}): {vec * 1e3:.0f} ms "
          f"(runs: {', '.join(f'{t * 1e3:.0f}' for t in times)} ms)")  # fmt: skip
    print(
        f"per-account Python loop: {loop_s:.1f} s extrapolated from {sample.size:,} accounts "
        f"(max relative difference in MM vs the engine {err:.1e})"
    )
    print(f"ratio: engine is {loop_s / vec:.0f}x faster than the loop (target >= 100x)")
    record(
        Figure(
            "portfolio_margin",
            f"portfolio margin, {args.accounts:,} accounts x {eng.scenarios.size} scenarios "
            f"({legs:,} legs), vectorised engine {vec * 1e3:.0f} ms",
            loop_s / vec,
            "x",
            f"per-account Python loop, extrapolated from {sample.size:,} accounts ({loop_s:.1f} s)",
            ">= 100x faster",
            loop_s / vec >= 100,
            {"engine_ms": vec * 1e3, "loop_s": loop_s, "max_rel_diff": err},
        )
    )
    if err > 1e-9:
        raise SystemExit("loop and engine disagree")


if __name__ == "__main__":
    main()
