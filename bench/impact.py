"""Impact benchmark: python -m bench.impact [--accounts N] [--pools P] [--chains C].

The price impact of selling each account's amount of one asset through P pools on each of
C chains (optimal split, exact tick walk; aggregator/risk/impact.py), for every account
at once, against baselines measured in the same run:
  - a per-account Python loop over the same sale curve (C bisect + the closed form per
    account), timed on a sample and extrapolated: the cost of vectorising alone, reported
    (the loop already shares the precomputed curve, so no 100x is to be had here);
  - the scalar reference of the tests (a plain tick loop per pool, the split by bisection
    on the common marginal rate), timed on a few accounts and extrapolated: what a
    per-account walk of the ticks costs (reported).
Also the curve construction itself (done once per pool change or price round), and the
ledger's full recompute on bench/risk_engine.py's book with WETH's concentration term
from the 60 pools vs from its depth_usd (what pool pricing costs a price round).
"""

from __future__ import annotations

import argparse
import bisect
import math
import sys
import time
from pathlib import Path

import numpy as np

from aggregator.risk.impact import SaleLeg, build_curve
from bench.results import Figure, record
from chains.pool_state import Q96, PoolSnapshot, TickLiquidity

PRICE = 3000.0  # WETH in USDC


def pool(rng: np.random.Generator, chain: str, i: int) -> PoolSnapshot:
    """A WETH/USDC pool: 60 positions concentrated around the price, thinner tails."""
    spacing = 60
    tick = math.floor(math.log(PRICE * 1e6 / 1e18) / math.log(1.0001)) + int(rng.integers(-20, 20))
    nets: dict[int, int] = {}
    liq = 0
    for _ in range(60):
        half = int(rng.choice([2, 5, 20, 80, 300])) * spacing
        c = tick + int(rng.normal(0, 3) * spacing)
        lo, hi = (c - half) // spacing * spacing, (c + half) // spacing * spacing + spacing
        amount = int(rng.lognormal(40, 1.0))
        nets[lo] = nets.get(lo, 0) + amount
        nets[hi] = nets.get(hi, 0) - amount
        if lo <= tick < hi:
            liq += amount
    band = 2232  # ~20%
    ticks = tuple(TickLiquidity(k, v) for k, v in sorted(nets.items())
                  if v and tick - band <= k <= tick + band)  # fmt: skip
    sp = int(math.sqrt(1.0001 ** (tick + 0.5)) * Q96)
    return PoolSnapshot(
        chain, f"0x{i:040x}", "0x" + "01" * 20, "0x" + "02" * 20, 18, 6,
        int(rng.choice([500, 3000])), spacing, sp, tick, liq, ticks, tick - band, tick + band,
        1, "0x" + "00" * 32,
    )  # fmt: skip


def python_loop(xs: list[float], table: list[list[float]], price: float) -> list[float]:
    """Per account: find the curve row by bisect, then the closed form (plain floats)."""
    keys = [row[0] for row in table]
    out = []
    for x in xs:
        k = bisect.bisect_right(keys, x) - 1
        x0, y0, s0, b, d = table[k]
        if b <= 0:
            y = y0
        else:
            w = (x - x0) / b * s0
            y = y0 + d * s0 * w / (1 + w)
        out.append(1 - y / (x * price) if x > 0 else 0.0)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.impact")
    ap.add_argument("--accounts", type=int, default=1_000_000)
    ap.add_argument("--pools", type=int, default=20, help="pools per chain")
    ap.add_argument("--chains", type=int, default=3)
    ap.add_argument("--sample", type=int, default=20_000)
    ap.add_argument("--ref-sample", type=int, default=5)
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--engine-accounts", type=int, default=1_000_000)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    pools = [
        pool(rng, f"c{c}", c * 1000 + i) for c in range(args.chains) for i in range(args.pools)
    ]
    legs = [SaleLeg(p, True, 1.0) for p in pools]
    t_build = math.inf
    for _ in range(3):  # a price round rebuilds it: best of 3 (the first one warms up)
        t0 = time.perf_counter()
        curve = build_curve(legs, PRICE, 18)
        t_build = min(t_build, time.perf_counter() - t0)
    x = rng.lognormal(0, 2.5, args.accounts)  # WETH per account: 0.01 .. 10k
    imp = curve.impact(x)  # compiled already (numba cache); warms the call path
    t_vec = math.inf
    for _ in range(3):  # best of 3: the box is shared
        t0 = time.perf_counter()
        imp = curve.impact(x)
        t_vec = min(t_vec, time.perf_counter() - t0)
    sample = x[: args.sample].tolist()
    table = curve.table.tolist()
    t0 = time.perf_counter()
    loop = python_loop(sample, table, PRICE)
    t_loop = (time.perf_counter() - t0) / args.sample * args.accounts
    assert np.allclose(loop, imp[: args.sample], rtol=1e-9, atol=1e-12)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.unit.risk.reference import RefInputs, pool_output

    inp = RefInputs([], [], [], None, None, {"WETH": PRICE, "USDC": 1.0}, {}, {})  # type: ignore[arg-type]
    inp.assets = [type("A", (), {"symbol": "WETH", "decimals": 18})()]  # type: ignore[list-item]
    inp.pools = {"WETH": [(p, True, "USDC") for p in pools]}
    t0 = time.perf_counter()
    for xi in x[: args.ref_sample]:
        y = pool_output(inp, "WETH", float(xi))
        assert abs((1 - y / (xi * PRICE)) - float(curve.impact(xi)[0])) < 1e-6
    t_ref = (time.perf_counter() - t0) / args.ref_sample * args.accounts

    t_depth, t_pools, moved = engine_round(args.engine_accounts, pools)
    ratio = t_loop / t_vec
    n_rows = curve.table.shape[0]
    print(f"{len(pools)} pools ({args.pools} x {args.chains} chains), {n_rows} curve rows")
    print(f"curve construction: {t_build * 1e3:.1f} ms")
    print(f"impact of {args.accounts:,} accounts, vectorised: {t_vec * 1e3:.1f} ms")
    print(f"per-account Python loop (extrapolated from {args.sample:,}): {t_loop:.2f} s")
    print(f"  ratio: {ratio:.0f}x faster")
    print(f"ledger recompute, {args.engine_accounts:,} accounts: without pools "
          f"{t_depth * 1e3:.1f} ms, on the pools {t_pools * 1e3:.1f} ms "
          f"({moved:,} accounts' HF moved)")  # fmt: skip
    record(
        Figure(
            "impact_recompute",
            f"ledger full recompute, {args.engine_accounts:,} accounts, WETH's term from "
            f"{len(pools)} pools (curve rebuilt: a new price round)",
            t_pools / t_depth,
            "x",
            f"the same recompute without pools ({t_depth * 1e3:.1f} ms)",
            "reported",
            None,
            {"depth_ms": t_depth * 1e3, "pools_ms": t_pools * 1e3, "hf_moved": moved},
        )
    )
    print(f"scalar tick-walk reference (extrapolated from {args.ref_sample}): {t_ref:,.0f} s "
          f"({t_ref / t_vec:,.0f}x)")  # fmt: skip
    record(
        Figure(
            "impact_vs_tick_walk",
            f"price impact, {args.accounts:,} accounts, vs walking the ticks per account",
            t_ref / t_vec,
            "x",
            f"the tests' scalar tick-walk reference, extrapolated from {args.ref_sample} "
            f"accounts ({t_ref:,.0f} s)",
            ">= 100x faster",
            t_ref / t_vec >= 100,
            {"vectorised_ms": t_vec * 1e3, "tick_walk_reference_s": t_ref},
        )
    )
    record(
        Figure(
            "impact_accounts",
            f"price impact through {len(pools)} pools on {args.chains} chains, "
            f"{args.accounts:,} accounts",
            ratio,
            "x",
            f"per-account Python loop over the same curve, extrapolated from {args.sample:,} "
            f"({t_loop:.1f} s)",
            "reported",
            None,
            {"vectorised_ms": t_vec * 1e3, "python_loop_s": t_loop, "build_ms": t_build * 1e3,
             "tick_walk_reference_s": t_ref, "curve_rows": n_rows},
        )
    )  # fmt: skip


def engine_round(n: int, pools: list[PoolSnapshot]) -> tuple[float, float, int]:
    """(recompute without pools, with WETH on the pools, accounts whose HF moved) on
    bench/risk_engine.py's synthetic book of n accounts (WETH has no depth_usd there)."""
    from aggregator.risk.liquidity import AssetPools, PoolSale
    from bench import risk_engine as rb
    from bench.book import loaded_engine

    eng, _ = loaded_engine(n, 7, recompute=False)

    def best(fn: object) -> float:
        out = math.inf
        for _ in range(5):
            t0 = time.perf_counter()
            fn()  # type: ignore[operator]
            out = min(out, time.perf_counter() - t0)
        return out

    t_depth = best(eng.recompute)
    hf_depth = eng.r_hf[:n].copy()
    eng.set_pools({"WETH": AssetPools(tuple(PoolSale(p, True, "USDC") for p in pools))})

    def with_pools() -> None:
        eng.set_prices({"USDC": rb.PriceInput(1.0)})  # a new price round: curves rebuilt
        eng.recompute()

    t_pools = best(with_pools)
    moved = int((eng.r_hf[:n] != hf_depth).sum())
    return t_depth, t_pools, moved


if __name__ == "__main__":
    main()
