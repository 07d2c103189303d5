"""Risk engine benchmark: python -m bench.risk_engine [--accounts N].

Builds a synthetic book (3 chains, 8 assets, about 5 positions per account), then
prints, each against a baseline measured in the same run:
  - full recompute after a price tick vs a bare scipy CSR mat-vec over the same
    positions (target <= 2x) and vs a per-account Python loop (timed on a sample and
    extrapolated; target >= 100x faster);
  - credit allocation for every account;
  - single-account update latency after one event (apply_position + its credit);
  - RSS of the loaded book and the process peak.
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import time
from collections.abc import Iterator
from itertools import islice
from typing import Any

import numba
import numpy as np

from aggregator.config import AssetConfig, CorrelationGroup, CreditConfig, RiskConfig
from aggregator.risk import PositionRow, PriceInput, RiskEngine
from aggregator.risk.book import SIDES
from bench.results import Figure, record

CHAINS = ["ethereum", "arbitrum", "base"]
# symbol, decimals, ltv, lt, depth_usd, price, sigma, typical holding in units
ASSETS: list[tuple[str, int, float, float, float | None, float, float, float]] = [
    ("USDC", 6, 0.80, 0.85, None, 1.0, 0.001, 20_000),
    ("USDT", 6, 0.75, 0.80, None, 1.0, 0.002, 15_000),
    ("DAI", 18, 0.75, 0.80, None, 1.0, 0.002, 10_000),
    ("WBTC", 8, 0.70, 0.75, None, 60_000.0, 0.030, 0.3),
    ("WETH", 18, 0.80, 0.83, None, 3_000.0, 0.035, 5),
    ("wstETH", 18, 0.70, 0.75, None, 3_500.0, 0.036, 4),
    ("rETH", 18, 0.68, 0.74, 20_000_000.0, 3_300.0, 0.037, 3),
    ("LINK", 18, 0.50, 0.60, 5_000_000.0, 15.0, 0.060, 800),
]
GROUPS = [
    CorrelationGroup(
        name="eth", assets=["WETH", "wstETH", "rETH"], reference="WETH", ltv=0.9, lt=0.93
    ),
    CorrelationGroup(
        name="usd", assets=["USDC", "USDT", "DAI"], reference="USDC", ltv=0.92, lt=0.95
    ),
]
DEBT_ASSETS = [0, 2, 4]  # USDC, DAI, WETH


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_engine() -> RiskEngine:
    assets = [
        AssetConfig(
            symbol=s, decimals=d, ltv=ltv, lt=lt, depth_usd=depth, borrowable=i in DEBT_ASSETS
        )
        for i, (s, d, ltv, lt, depth, *_rest) in enumerate(ASSETS)
    ]
    return RiskEngine(CHAINS, assets, GROUPS, RiskConfig(), CreditConfig())


def synth(n_accounts: int, seed: int) -> dict[str, np.ndarray]:
    """Positions as arrays: 5 collateral draws per account (duplicates merge), debt on
    60% of accounts, sized so that about 1% of accounts are liquidatable."""
    rng = np.random.default_rng(seed)
    n_assets = len(ASSETS)
    k = 5
    acct = np.repeat(np.arange(n_accounts), k)
    chain = rng.integers(0, len(CHAINS), acct.size)
    asset = rng.integers(0, n_assets, acct.size)
    side = np.zeros(acct.size, np.int64)
    has_debt = rng.random(n_accounts) < 0.6
    d_acct = np.nonzero(has_debt)[0]
    d_chain = rng.integers(0, len(CHAINS), d_acct.size)
    d_asset = np.array(DEBT_ASSETS)[rng.integers(0, len(DEBT_ASSETS), d_acct.size)]
    acct = np.concatenate([acct, d_acct])
    chain = np.concatenate([chain, d_chain])
    asset = np.concatenate([asset, d_asset])
    side = np.concatenate([side, np.ones(d_acct.size, np.int64)])
    key = ((acct * len(CHAINS) + chain) * n_assets + asset) * 2 + side
    _, first = np.unique(key, return_index=True)
    acct, chain, asset, side = acct[first], chain[first], asset[first], side[first]
    typical = np.array([a[7] for a in ASSETS])
    units = typical[asset] * rng.lognormal(0.0, 1.0, acct.size)
    prices = np.array([a[5] for a in ASSETS])
    # Debt sized against the account's collateral value so HF spreads around 1..3.
    coll_val = np.bincount(
        acct[side == 0], weights=(units * prices[asset])[side == 0], minlength=n_accounts
    )
    frac = rng.uniform(0.15, 0.75, acct.size)
    debt_rows = side == 1
    units[debt_rows] = coll_val[acct[debt_rows]] * frac[debt_rows] / prices[asset[debt_rows]] / 1.0
    pending = rng.random(acct.size) < 0.02
    return {
        "acct": acct,
        "chain": chain,
        "asset": asset,
        "side": side,
        "units": units,
        "pending": pending,
    }


def rows(data: dict[str, np.ndarray]) -> Iterator[PositionRow]:
    decimals = [a[1] for a in ASSETS]
    symbols = [a[0] for a in ASSETS]
    sides = SIDES
    for a, c, t, s, u, p in zip(
        data["acct"].tolist(),
        data["chain"].tolist(),
        data["asset"].tolist(),
        data["side"].tolist(),
        data["units"].tolist(),
        data["pending"].tolist(),
        strict=True,
    ):
        raw = int(u * 10 ** min(decimals[t], 9)) * 10 ** max(0, decimals[t] - 9)
        # A few deposits still waiting for confirmations: head above confirmed.
        conf = raw // 2 if p and s == 0 else raw
        yield PositionRow(f"0x{a:040x}", CHAINS[c], symbols[t], sides[s], raw, conf)


def synth_rows(n_accounts: int, seed: int, chunk: int = 50_000) -> Iterator[PositionRow]:
    """The synthetic book as rows, generated a chunk of accounts at a time, so the
    generator holds one chunk and the process peak is the engine's own."""
    for lo in range(0, n_accounts, chunk):
        data = synth(min(chunk, n_accounts - lo), seed * 100_003 + lo)
        data["acct"] += lo
        yield from rows(data)


def timed(it: Iterator[PositionRow], clock: list[float]) -> Iterator[PositionRow]:
    """Pass rows through, adding the time spent generating them to clock[0] (so the
    engine's share of the load can be told apart from the generator's)."""
    while True:
        t0 = time.perf_counter()
        chunk = list(islice(it, 1 << 17))
        clock[0] += time.perf_counter() - t0
        if not chunk:
            return
        yield from chunk


def set_market(eng: RiskEngine, bump: float = 1.0) -> None:
    eng.set_prices({a[0]: PriceInput(a[5] * (bump if a[0] != "USDC" else 1.0)) for a in ASSETS})
    eng.set_volatility(
        {a[0]: a[6] for a in ASSETS},
        {"eth": {"wstETH": 0.004, "rETH": 0.005}, "usd": {"USDT": 0.001, "DAI": 0.001}},
    )


def python_loop(eng: RiskEngine, sample: list[list[tuple[int, int, float]]]) -> None:
    """Straight per-account loop over the same formulas (the non-vectorised baseline)."""
    cfg = eng.risk_cfg
    sq = math.sqrt(cfg.horizon_days)
    price = eng.market.price.tolist()
    sigma = eng.market.sigma.tolist()
    lt = eng.model.lt.tolist()
    ltv = eng.model.ltv.tolist()
    k = eng.model.k.tolist()
    member = [set(np.nonzero(m)[0].tolist()) for m in eng.model.member]
    gsig = eng.market.sigma_tab.tolist()
    glt = eng.model.lt_tab.tolist()
    gltv = eng.model.ltv_tab.tolist()
    for positions in sample:
        coll: dict[int, float] = {}
        debt = 0.0
        debt_assets = set()
        for t, s, q in positions:
            if s == 0:
                coll[t] = coll.get(t, 0.0) + q
            else:
                debt += q * price[t]
                if q > 0:
                    debt_assets.add(t)
        g = -1
        if debt_assets:
            for gi, m in enumerate(member):
                if debt_assets <= m:
                    g = gi
                    break
        cliq = cbor = vtot = 0.0
        for t, q in coll.items():
            v = q * price[t]
            vtot += v
            if g >= 0:
                sg, lc, lvc = gsig[g + 1][t], glt[g + 1][t], gltv[g + 1][t]
            else:
                sg, lc, lvc = sigma[t], lt[t], ltv[t]
            h = cfg.z * sg * sq + k[t] * v
            le = max(0.0, min(lc, 1 - h))
            lve = max(0.0, min(lvc, le - (lc - lvc)))
            cliq += v * le
            cbor += v * lve
        hf = cliq / debt if debt > 0 else math.inf
        _bp = max(0.0, cbor - debt)
        if vtot < debt:
            _tier = 3
        elif hf < 1:
            _tier = 2
        elif hf < cfg.warn_hf:
            _tier = 1
        else:
            _tier = 0


def best_of(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.risk_engine")
    ap.add_argument("--accounts", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--sample", type=int, default=20_000, help="accounts timed in the Python loop")
    ap.add_argument("--events", type=int, default=2_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)

    rss0 = rss_mb()
    t0 = time.perf_counter()
    eng = build_engine()  # compiles the kernel, or loads it from numba's disk cache
    t_build = time.perf_counter() - t0
    set_market(eng)
    gen = [0.0]
    t0 = time.perf_counter()
    n_rows = eng.load_positions(timed(synth_rows(args.accounts, args.seed), gen))
    t_total = time.perf_counter() - t0
    t_load = t_total - gen[0]
    t0 = time.perf_counter()
    eng.recompute()
    t_first = time.perf_counter() - t0
    rss_book = rss_mb() - rss0
    print(f"book: {args.accounts:,} accounts, {n_rows:,} positions, 3 chains, 8 assets")
    print(f"engine construction (kernel compile or cache load): {t_build:.2f} s")
    print(
        f"load: engine {t_load:.1f} s ({t_load / n_rows * 1e6:.2f} us/row) = "
        f"{t_load / gen[0]:.2f}x the time to build the Python rows ({gen[0]:.1f} s); "
        f"total {t_total:.1f} s"
    )
    print(f"first recompute after load: {t_first * 1e3:.1f} ms")

    # Here, not at the top: bench/startup_book.py takes its synthetic book from this
    # module, and the daemon it measures no longer imports scipy.sparse.
    import scipy.sparse as sp

    book = eng.book
    n = book.n
    # Baseline 1: the bare sparse mat-vec (value of every account's positions).
    mat = sp.csr_matrix(
        (book.r_amount[:n], (book.r_account[:n], book.r_asset[:n].astype(np.int64))),
        shape=(book.n_accounts, book.n_assets),
    )
    mat.sum_duplicates()
    csr_full = sp.csr_matrix(
        (book.r_amount[:n], (book.r_account[:n], book.r_asset[:n].astype(np.int64) + 0)),
        shape=(book.n_accounts, book.n_assets),
    )
    p = eng.price.copy()
    t_mv = best_of(lambda: csr_full @ p, args.repeat)
    t_mv_summed = best_of(lambda: mat @ p, args.repeat)

    bumps = iter(np.linspace(0.97, 1.03, 4 * args.repeat + 4))

    def tick() -> None:
        set_market(eng, float(next(bumps)))
        eng.recompute()

    t_tick = best_of(tick, args.repeat)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    t_tick1 = best_of(tick, args.repeat)
    numba.set_num_threads(threads)
    t_credit = best_of(lambda: eng.allocate_credit(now=1_000.0), max(1, args.repeat // 2))

    # Baseline 2: per-account Python loop on a sample, extrapolated.
    rng = np.random.default_rng(args.seed + 1)
    pick = np.sort(rng.choice(book.n_accounts, min(args.sample, book.n_accounts), replace=False))
    sample_rows = book.rows_of_many(pick)
    acc_of = book.r_account[sample_rows]
    bounds = [*np.searchsorted(acc_of, pick, side="left").tolist(), sample_rows.size]
    triples = list(
        zip(
            book.r_asset[sample_rows].tolist(),
            book.r_side[sample_rows].tolist(),
            book.r_amount[sample_rows].tolist(),
            strict=True,
        )
    )
    sample = [triples[bounds[i] : bounds[i + 1]] for i in range(len(pick))]
    t_loop_sample = best_of(lambda: python_loop(eng, sample), 2)
    t_loop = t_loop_sample / len(pick) * book.n_accounts

    # Single-account latency: one event = apply_position + that account's credit.
    lat = []
    ev_rng = np.random.default_rng(args.seed + 2)
    for _ in range(args.events):
        a = int(ev_rng.integers(0, book.n_accounts))
        addr = book.account_address[a]
        amt = int(ev_rng.integers(1, 10**6)) * 10**12
        t0 = time.perf_counter()
        eng.apply_position(PositionRow(addr, "base", "WETH", "collateral", amt, amt))
        eng.allocate_credit(now=1_000.0, accounts=[addr])
        lat.append(time.perf_counter() - t0)
    lat.sort()

    counts = eng.tier_counts()
    print(f"tiers after the ticks: {counts}")
    print(f"baseline CSR mat-vec ({n:,} nnz):           {t_mv * 1e3:8.1f} ms")
    print(f"baseline CSR mat-vec, duplicates summed:   {t_mv_summed * 1e3:8.1f} ms")
    print(f"full recompute after a price tick ({threads} threads): {t_tick * 1e3:6.1f} ms")
    print(f"  ratio to CSR mat-vec:                    {t_tick / t_mv:8.2f} x  (target <= 2x)")
    print(f"full recompute, 1 thread:                  {t_tick1 * 1e3:8.1f} ms")
    print(f"  ratio to CSR mat-vec (also 1 thread):    {t_tick1 / t_mv:8.2f} x")
    print(f"credit allocation, all accounts:           {t_credit * 1e3:8.1f} ms")
    print(f"  tick + credit ratio to CSR mat-vec:      {(t_tick + t_credit) / t_mv:8.2f} x")
    print(
        f"Python per-account loop (extrapolated from {len(pick):,}): {t_loop:8.2f} s"
        f" -> engine is {t_loop / t_tick:,.0f}x faster (target >= 100x),"
        f" {t_loop / t_tick1:,.0f}x on 1 thread"
    )
    med = statistics.median(lat)
    print(
        f"single-account update (event + recompute + credit): median "
        f"{med * 1e6:.0f} us, p99 {lat[int(0.99 * (len(lat) - 1))] * 1e6:.0f} us"
        f" ({t_tick / med:,.0f} events per full-tick time)"
    )
    print(
        f"RSS of the loaded book: {rss_book:,.0f} MB (target < 1536 MB); "
        f"process peak {peak_mb():,.0f} MB"
    )
    size = f"{book.n_accounts:,} accounts, {n:,} positions"
    record(
        Figure(
            "ledger_recompute",
            f"full recompute after a price tick, {size}, {threads} threads",
            t_tick / t_mv,
            "x",
            f"bare scipy CSR mat-vec over the same positions ({t_mv * 1e3:.1f} ms)",
            "<= 2x",
            t_tick / t_mv <= 2.0,
            {
                "tick_ms": t_tick * 1e3,
                "tick_1_thread_ms": t_tick1 * 1e3,
                "matvec_ms": t_mv * 1e3,
                "ratio_1_thread": t_tick1 / t_mv,
                "credit_ms": t_credit * 1e3,
            },
        )
    )
    record(
        Figure(
            "ledger_vs_loop",
            f"full recompute vs a per-account Python loop, {size}",
            t_loop / t_tick,
            "x",
            f"per-account Python loop, extrapolated from {len(pick):,} accounts ({t_loop:.2f} s)",
            ">= 100x faster",
            t_loop / t_tick >= 100,
            {"loop_s": t_loop, "tick_ms": t_tick * 1e3, "ratio_1_thread": t_loop / t_tick1},
        )
    )
    record(
        Figure(
            "ledger_event",
            "one event: apply_position + that account's credit (median)",
            med * 1e6,
            "us",
            "-",
            "reported",
            None,
            {"p99_us": lat[int(0.99 * (len(lat) - 1))] * 1e6},
        )
    )
    record(
        Figure(
            "peak_rss",
            f"process peak RSS: load {size}, ticks, credit, events",
            peak_mb(),
            "MB",
            "-",
            "< 1536 MB",
            peak_mb() < 1536,
            {"book_rss_mb": rss_book},
        )
    )


if __name__ == "__main__":
    main()
