"""python -m bench [name ...]: run the benchmarks, write bench/results/latest.json and
the table in docs/performance.md.

Each benchmark runs in its own process (one benchmark's imports, threads or event
loop never skew another's numbers) with the arguments listed in BENCHMARKS, and
reports its figures through bench.results.record. Exit status is non-zero if any
benchmark failed or any figure missed its target; the others still run.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.results import RESULTS_ENV, Figure, load, machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "latest.json"
DOC = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

# name -> command line (module and arguments) of the full-size run.
BENCHMARKS: dict[str, list[str]] = {
    "indexing": ["bench.indexing", "--events", "300000", "--chains", "3"],
    "risk_engine": ["bench.risk_engine", "--accounts", "1000000"],
    "portfolio_margin": ["bench.portfolio_margin"],
    "api_load": ["bench.api_load"],
    "push_latency": ["bench.push_latency"],
    "push_gas": ["bench.push_gas"],
    "push_economy": ["bench.push_economy", "--accounts", "2000"],
    "api_hostile": ["bench.api_hostile"],
    "reputation": ["bench.reputation"],
    "rpc_per_block": ["bench.rpc_per_block"],
    "oracle_refresh": ["bench.oracle_refresh"],
    "startup": ["bench.startup"],
    "startup_book": ["bench.startup_book", "--accounts", "1000000"],
    "var": ["bench.var"],
    "var_rss": ["bench.var_rss", "--accounts", "1000000"],
    "memory": ["bench.memory", "--accounts", "1000000"],
    "history": ["bench.history", "--accounts", "1000000"],
    "whatif": ["bench.whatif", "--accounts", "1000000"],
    "pools_refresh": ["bench.pools_refresh", "--pools", "20", "--chains", "3"],
    "impact": ["bench.impact", "--accounts", "1000000"],
    "model_plans": ["bench.model_plans", "--accounts", "1000000"],
    "claims": ["bench.claims", "--events", "1000000", "--claims", "10000"],
}

# The rows of docs/performance.md, in the order of the performance issue's table:
# key (as recorded by the benchmark) -> row title. Figures with other keys are
# listed below the table.
ROWS: dict[str, str] = {
    "indexing": "indexing rate, 300k vault events over 3 chains into the store",
    "ledger_recompute": "ledger full recompute, 1M accounts x ~5 positions",
    "portfolio_margin": "portfolio margin, 100k accounts x 40 scenarios",
    "api_health": "API /v1/accounts/{a}/health, 1M accounts loaded",
    "push_latency": "price change -> updates mined on all chains, 10k affected accounts",
    "push_gas": "gas per updated account, batch of 200",
    "push_economy_calm": "registry gas per account-hour, calm market (credit buffer vs before)",
    "push_economy_volatile": "registry gas per account-hour, 2022-06-13 crash (buffer vs before)",
    "rpc_per_block": "RPC calls per new block per chain in steady state, 100k accounts",
    "peak_rss": "peak RSS with 1M accounts loaded",
    "var_parametric": "parametric VaR/ES, 1M accounts x 30 assets",
    "var_fhs": "FHS VaR/ES, 100k accounts x 500 scenarios",
    "var_peak_rss": "peak RSS, 1M accounts with the VaR/ES model evaluated",
    "memory_peak_rss": "peak RSS, 1M accounts with every model, pools, reputation, what-if",
    "startup_cold": "daemon start-up to /healthz, empty numba cache",
    "startup_warm": "daemon start-up to /healthz, warm numba cache",
    "startup_book_warm": "start-up to book loaded and rated, 1M accounts in SQLite, warm cache",
    "startup_book_snapshot": (
        "start-up to book loaded and rated, 1M accounts, warm cache, from the book snapshot"
    ),
    "pools_refresh": "Uniswap v3 pool refresh per block, 20 pools x 3 chains, vs raw multicall",
}


def run(names: list[str]) -> tuple[dict[str, list[Figure]], list[str]]:
    figures: dict[str, list[Figure]] = {}
    failed: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            out = Path(tmp) / f"{name}.jsonl"
            cmd = [sys.executable, "-m", *BENCHMARKS[name]]
            print(f"=== {' '.join(cmd[2:])} ===", flush=True)
            start = time.perf_counter()
            rc = subprocess.call(cmd, env={**os.environ, RESULTS_ENV: str(out)}, cwd=ROOT)
            got = load(out)
            print(
                f"=== {name}: exit {rc}, {len(got)} figure(s), "
                f"{time.perf_counter() - start:.0f}s ===\n",
                flush=True,
            )
            figures[name] = got
            if rc != 0 or not got:
                failed.append(name)
    return figures, failed


def fmt(fig: Figure) -> str:
    if fig.unit == "x":
        return f"{fig.value:.3g}x"
    return f"{fig.value:,.4g} {fig.unit}"


def table(figures: list[Figure]) -> str:
    by_key = {f.key: f for f in figures}
    lines = [
        "| figure | measured | baseline in the same run | target | verdict |",
        "| --- | --- | --- | --- | --- |",
    ]
    verdict = {True: "met", False: "**missed**", None: "reported"}
    for key, title in ROWS.items():
        f = by_key.get(key)
        if f is None:
            lines.append(f"| {title} | not measured in this run | | | |")
        else:
            lines.append(f"| {title} | {fmt(f)} | {f.baseline} | {f.target} | {verdict[f.met]} |")
    extra = [f for f in figures if f.key not in ROWS]
    if extra:
        lines += ["", "Other figures:", ""]
        lines += [
            f"- {f.figure}: {fmt(f)} (baseline: {f.baseline}; target {f.target}: {verdict[f.met]})"
            for f in extra
        ]
    return "\n".join(lines)


def write(
    by_bench: dict[str, list[Figure]], failed: list[str], names: list[str], info: dict
) -> list[Figure]:
    """Record this run's benchmarks in latest.json, keeping the last result of any
    benchmark not run this time (each with its own time and machine), and rewrite the
    table from all of them. Returns every figure the table shows."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    finished = datetime.now(UTC).isoformat(timespec="seconds")
    runs: dict[str, dict] = {}
    if RESULTS.exists():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            runs = dict(json.loads(RESULTS.read_text())["runs"])
    for name in names:
        runs[name] = {
            "finished": finished,
            "machine": info,
            "failed": name in failed,
            "figures": [f.__dict__ for f in by_bench.get(name, [])],
        }
    kept = {n: runs[n] for n in BENCHMARKS if n in runs}
    RESULTS.write_text(
        json.dumps({"finished": finished, "runs": kept}, indent=2, sort_keys=True) + "\n"
    )
    figures = [Figure(**f) for r in kept.values() for f in r["figures"]]
    if not DOC.exists():
        return figures
    text = DOC.read_text()
    if BEGIN not in text or END not in text:
        return figures
    cpu = info.get("cpu", "?")
    when = ", ".join(f"{n} {r['finished']}" for n, r in kept.items())
    all_failed = [n for n, r in kept.items() if r["failed"]]
    block = (
        f"{BEGIN}\nMachine: {info.get('cpus')} x {cpu}, {info.get('memory_gb')} GB, load "
        f"average at start {info.get('load_average')} (Python {info.get('python')}, numpy "
        f"{info.get('numpy')}, numba {info.get('numba')}). Last run of each benchmark "
        f"(UTC): {when}"
        + (f"; failed: {', '.join(all_failed)}" if all_failed else "")
        + ".\n\n"
        + table(figures)
        + f"\n{END}"
    )
    head, rest = text.split(BEGIN, 1)
    DOC.write_text(head + block + rest.split(END, 1)[1])
    return figures


def main(argv: list[str]) -> int:
    names = argv or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
        return 2
    info = machine()
    by_bench, failed = run(names)
    figures = write(by_bench, failed, names, info)
    missed = [f.key for f in figures if f.met is False]
    print(f"wrote {RESULTS.relative_to(ROOT)} and {DOC.relative_to(ROOT)}")
    if failed:
        print("failed:", ", ".join(failed), file=sys.stderr)
    if missed:
        print("missed targets:", ", ".join(missed), file=sys.stderr)
    return 1 if failed or missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
