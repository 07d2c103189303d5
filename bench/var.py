"""VaR benchmark: python -m bench.var [--accounts N] [--fhs-accounts N].

Prints, each against a baseline measured in the same run:
  - parametric VaR (aggregator.risk.var.parametric) for 1M accounts x 30 assets vs the
    bare numpy quadratic form einsum(X @ S, X) over the same data (target <= 3x);
  - FHS VaR/ES for 100k accounts x 500 scenarios (aggregator.risk.var.historical) vs a
    per-account Python loop over the same formulas (timed on a sample and
    extrapolated; target >= 100x faster); a per-account loop calling numpy for each
    account is reported beside it;
  - the process peak RSS.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np

from aggregator.risk.var import historical, parametric
from bench.results import Figure, peak_rss_mb, record


def best_of(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def book(n: int, k: int, seed: int) -> np.ndarray:
    """Accounts x assets USD exposures, ~5 non-zero assets per account."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, k))
    for _ in range(5):
        x[np.arange(n), rng.integers(0, k, n)] += rng.lognormal(8, 1.5, n) * rng.choice(
            [-1.0, 1.0], n, p=[0.3, 0.7]
        )
    return x


def python_loop(x: list[list[float]], scen: list[list[float]], level: float) -> None:
    ke = max(1, math.ceil(round((1 - level) * len(scen), 9)))
    g = [[math.expm1(v) for v in row] for row in scen]
    for xa in x:
        nz = [(i, v) for i, v in enumerate(xa) if v]
        pnl = sorted(sum(v * row[i] for i, v in nz) for row in g)
        _es = -sum(pnl[:ke]) / ke


def numpy_loop(x: np.ndarray, scen: np.ndarray, level: float) -> None:
    ke = max(1, math.ceil(round((1 - level) * scen.shape[0], 9)))
    g = np.expm1(scen)
    for xa in x:
        pnl = np.sort(g @ xa)
        _es = -pnl[:ke].mean()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.var")
    ap.add_argument("--accounts", type=int, default=1_000_000)
    ap.add_argument("--assets", type=int, default=30)
    ap.add_argument("--fhs-accounts", type=int, default=100_000)
    ap.add_argument("--scenarios", type=int, default=500)
    ap.add_argument("--sample", type=int, default=500, help="accounts timed in the loops")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    k = args.assets
    rng = np.random.default_rng(args.seed)
    a = rng.normal(0, 0.03, (k + 10, k))
    cov = a.T @ a / (k + 10)

    x = book(args.accounts, k, args.seed)
    t_bare = best_of(lambda: np.sqrt(np.einsum("ij,ij->i", x @ cov, x)), args.repeat)
    t_par = best_of(lambda: parametric(x, cov).var, args.repeat)
    ref = np.sqrt(np.einsum("ij,ij->i", x @ cov, x))
    assert np.allclose(parametric(x[:1000], cov).sigma, ref[:1000])
    print(f"parametric VaR/ES, {args.accounts:,} x {k}: {t_par * 1e3:.0f} ms")
    print(f"bare numpy quadratic form:            {t_bare * 1e3:.0f} ms")
    print(f"  ratio: {t_par / t_bare:.2f}x (target <= 3x)")

    xf = book(args.fhs_accounts, k, args.seed + 1)
    scen = rng.standard_t(4, (args.scenarios, k)) * 0.02
    t_fhs = best_of(lambda: historical(xf, scen, es_level=0.975), args.repeat)
    t_fhs_c = best_of(lambda: historical(xf, scen, contributions=True), 1)
    pick = rng.choice(args.fhs_accounts, args.sample, replace=False)
    xs = xf[pick]
    t_py = best_of(lambda: python_loop(xs.tolist(), scen.tolist(), 0.975), 1)
    t_py_all = t_py / args.sample * args.fhs_accounts
    t_np = best_of(lambda: numpy_loop(xs, scen, 0.975), 1)
    t_np_all = t_np / args.sample * args.fhs_accounts
    size = f"{args.fhs_accounts:,} accounts x {args.scenarios} scenarios x {k} assets"
    print(f"FHS VaR+ES, {size}: {t_fhs * 1e3:.0f} ms ({t_fhs_c * 1e3:.0f} ms with contributions)")
    print(f"per-account Python loop (extrapolated from {args.sample}): {t_py_all:.1f} s")
    print(f"  ratio: {t_py_all / t_fhs:.0f}x faster (target >= 100x)")
    print(f"per-account numpy loop (extrapolated): {t_np_all:.2f} s ({t_np_all / t_fhs:.1f}x)")
    print(f"process peak RSS: {peak_rss_mb():.0f} MB")
    record(
        Figure(
            "var_parametric",
            f"parametric VaR/ES, {args.accounts:,} accounts x {k} assets",
            t_par / t_bare,
            "x",
            f"bare numpy quadratic form over the same data ({t_bare * 1e3:.0f} ms)",
            "<= 3x",
            t_par / t_bare <= 3.0,
            {"parametric_ms": t_par * 1e3, "bare_ms": t_bare * 1e3},
        )
    )
    record(
        Figure(
            "var_fhs",
            f"FHS VaR/ES, {size}",
            t_py_all / t_fhs,
            "x",
            f"per-account Python loop, extrapolated from {args.sample} accounts ({t_py_all:.1f} s)",
            ">= 100x faster",
            t_py_all / t_fhs >= 100,
            {
                "fhs_ms": t_fhs * 1e3,
                "fhs_with_contributions_ms": t_fhs_c * 1e3,
                "python_loop_s": t_py_all,
                "numpy_loop_s": t_np_all,
                "ratio_numpy_loop": t_np_all / t_fhs,
            },
        )
    )
    record(
        Figure(
            "var_bench_rss",
            "peak RSS of this benchmark: 1M x 30 exposures and the 100k FHS book",
            peak_rss_mb(),
            "MB",
            "-",
            "< 1536 MB",
            peak_rss_mb() < 1536,
        )
    )


if __name__ == "__main__":
    main()
