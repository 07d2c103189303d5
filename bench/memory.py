"""Where the memory goes: python -m bench.memory [--accounts 1000000] [--tracemalloc].

The ledger's synthetic book (bench/risk_engine.py: 1M accounts x ~5 positions over 3
chains and 8 assets) loaded into the real engine, then every model and state the daemon
holds with every feature on, one step at a time:

  1. engine construction (imports, numba kernels from the cache);
  2. the position load (the daemon's book load);
  3. prices, volatilities, a full recompute and the credit allocation (standard model);
  4. Uniswap pools for WETH (60 pools on 3 chains: the liquidity curves) and a recompute;
  5. reputation multipliers on 10% of the accounts and a recompute;
  6. the portfolio model evaluated for every account and adopted ([portfolio] mode);
  7. the VaR/ES model (FHS, 500 scenarios) evaluated for every account and adopted;
  8. one what-if with a chain down, the standard and VaR models (POST /v1/whatif).

Each step reports the process RSS after it and the peak RSS during it (Linux: VmHWM,
reset before each step through /proc/self/clear_refs), so a step's transient
temporaries show apart from what it keeps. At the end every numpy array the engine
holds is listed with its nbytes (found by walking the engine's objects), and the
per-account Python objects (the address map) are measured with sys.getsizeof.
With --tracemalloc the top allocation sites (file:line) of each step are printed too
(slow: use a smaller --accounts).

The figure is the process peak against the absolute budget of the performance issue
(1.5 GB), so it is not a ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.results import Figure, record

BUDGET_MB = 1536.0
MB = 2**20


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def rss_mb() -> float:
    return _status_kb("VmRSS") / 1024


def hwm_mb() -> float:
    return _status_kb("VmHWM") / 1024


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def arrays_of(root: object, prefix: str, limit_depth: int = 4) -> dict[str, int]:
    """nbytes of every numpy array reachable from `root` through attributes, dicts,
    lists and tuples (each buffer counted once, under the first path found: a view
    counts its whole base)."""
    seen: set[int] = set()
    out: dict[str, int] = {}

    def walk(obj: object, path: str, depth: int) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            base = obj
            while isinstance(base.base, np.ndarray):
                base = base.base
            if base is obj or id(base) not in seen:
                seen.add(id(base))
                out[path] = out.get(path, 0) + base.nbytes
            return
        if depth <= 0 or isinstance(obj, (str, bytes, int, float, bool, type(None))):
            return
        if isinstance(obj, dict):
            items = list(obj.items())
            if len(items) > 64:
                return  # a per-account map: measured as Python objects, not walked
            for k, v in items:
                walk(v, f"{path}[{k!r}]", depth - 1)
            return
        if isinstance(obj, (list, tuple)):
            if len(obj) > 64:
                return
            for i, v in enumerate(obj):
                walk(v, f"{path}[{i}]", depth - 1)
            return
        attrs = getattr(obj, "__dict__", None)
        if attrs is None and hasattr(obj, "__slots__"):
            attrs = {s: getattr(obj, s, None) for s in obj.__slots__}
        if attrs is None:
            if hasattr(obj, "_fields"):  # NamedTuple
                attrs = obj._asdict()  # type: ignore[attr-defined]
            else:
                return
        for k, v in attrs.items():
            walk(v, f"{path}.{k}", depth - 1)

    walk(root, prefix, limit_depth)
    return out


def str_map_bytes(index: dict[str, int], addresses: list[str]) -> tuple[int, int, int]:
    """(dict, list, the address strings) of the book's account map, in bytes."""
    strings = sum(sys.getsizeof(s) for s in addresses)
    ints = sum(sys.getsizeof(v) for v in index.values() if v > 256)
    return sys.getsizeof(index) + ints, sys.getsizeof(addresses), strings


class Steps:
    """Runs the steps, recording RSS after and peak during each."""

    def __init__(self, trace: bool) -> None:
        self.rows: list[dict[str, Any]] = []
        self.trace = trace
        self.can_reset = reset_peak()

    def run(self, name: str, fn: Callable[[], object]) -> Any:
        reset_peak()
        before = rss_mb()
        snap = tracemalloc.take_snapshot() if self.trace else None
        t0 = time.perf_counter()
        out = fn()
        took = time.perf_counter() - t0
        after = rss_mb()
        peak = hwm_mb()
        self.rows.append(
            {"step": name, "rss_before_mb": before, "rss_after_mb": after, "peak_mb": peak,
             "seconds": took}
        )  # fmt: skip
        print(
            f"  {name:<58} RSS {before:7.0f} -> {after:7.0f} MB (kept {after - before:+6.0f}),"
            f" peak {peak:7.0f} MB, {took:5.1f} s",
            flush=True,
        )
        if snap is not None:
            top = tracemalloc.take_snapshot().compare_to(snap, "lineno")[:12]
            for st in top:
                print(f"      {st.size_diff / MB:+8.1f} MB  {st.traceback[0]}", flush=True)
        return out


def _rounded(row: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.memory")
    ap.add_argument("--accounts", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--tracemalloc", action="store_true", help="top allocation sites per step")
    args = ap.parse_args(argv)
    if args.tracemalloc:
        tracemalloc.start()
    start_rss = rss_mb()
    steps = Steps(args.tracemalloc)

    def imports() -> Any:
        from bench import risk_engine

        return risk_engine.build_engine()

    eng = steps.run("1. imports, engine (numba kernels from the cache)", imports)
    from aggregator.config import AppConfig, PortfolioConfig, RiskConfig, VarConfig
    from aggregator.marketdata.calibration import shipped_calibration
    from aggregator.risk import LedgerView
    from aggregator.risk.liquidity import AssetPools, PoolSale
    from aggregator.risk.portfolio_model import PortfolioModel
    from aggregator.risk.reputation import Params, Reputation
    from aggregator.risk.var_model import VarModel
    from aggregator.whatif import WhatIfService
    from bench import impact, var_rss, whatif
    from bench.book import load_book
    from bench.risk_engine import ASSETS, set_market

    n_rows = steps.run(
        f"2. load {args.accounts:,} accounts",
        lambda: load_book(eng, args.accounts, args.seed),
    )
    n = eng.book.n_accounts

    def standard() -> None:
        set_market(eng)
        eng.recompute()
        eng.allocate_credit(now=1_000.0)

    steps.run("3. prices, recompute, credit (standard)", standard)

    def pools() -> None:
        rng = np.random.default_rng(3)
        chains = ("ethereum", "arbitrum", "base")
        snaps = [impact.pool(rng, c, i) for c in chains for i in range(20)]
        eng.set_pools({"WETH": AssetPools(tuple(PoolSale(p, True, "USDC") for p in snaps))})
        eng.recompute()

    steps.run("4. WETH pool curves (60 pools), recompute", pools)

    def reputation() -> None:
        rng = np.random.default_rng(5)
        p = Params()
        pick = np.flatnonzero(rng.random(n) < 0.1)
        m = rng.uniform(p.lower, p.upper, pick.size)
        mults = {eng.book.account_address[i]: float(x) for i, x in zip(pick, m, strict=True)}
        eng.set_reputation(p, mults, lambda a: Reputation(a, 0.0, mults.get(a, 1.0), 0.0))
        eng.recompute()

    steps.run("5. reputation multipliers on 10% of accounts, recompute", reputation)

    all_idx = np.arange(n, dtype=np.int64)
    cfg = AppConfig.model_construct(
        **{
            **whatif.app_config().__dict__,
            "portfolio": PortfolioConfig(mode="portfolio", stable_assets=["USDC", "USDT", "DAI"]),
            "risk": RiskConfig(),
            "var": VarConfig(history=var_rss.HISTORY),
        }
    )

    def portfolio() -> None:
        res = PortfolioModel(cfg).evaluate(eng.book, eng.market, all_idx, 1_000.0)
        eng.adopt(res, im_factor=cfg.portfolio.im_factor)

    steps.run("6. portfolio model, every account, adopted", portfolio)
    var_cfg = cfg.model_copy(
        update={"portfolio": PortfolioConfig(mode="var", stable_assets=["USDC", "USDT", "DAI"])}
    )
    cal = shipped_calibration({a[0]: None for a in ASSETS}, var_cfg.var)
    var_model = VarModel(var_cfg, calibration=var_rss._Fixed(cal))

    def var() -> None:
        res = var_model.evaluate(eng.book, eng.market, all_idx)
        eng.adopt(res, im_factor=var_cfg.portfolio.im_factor)

    steps.run("7. VaR/ES model (FHS, 500 scenarios), every account, adopted", var)
    service = WhatIfService(
        var_cfg, LedgerView(eng), prices_ready=lambda: True, models=lambda: {"var": var_model}
    )
    # The API's path (serve): the ledger frozen, then computed in a worker thread; the
    # frozen copy is part of the daemon's peak while a what-if runs.
    steps.run(
        "8. what-if with a chain down, standard + VaR (API path: frozen copy, worker thread)",
        lambda: asyncio.run(service.serve(whatif.SHOCK)),
    )

    arrays = arrays_of(eng, "engine")
    arrays.update(arrays_of(var_model, "var_model"))
    d_bytes, l_bytes, s_bytes = str_map_bytes(eng.book.account_index, eng.book.account_address)
    python = {
        "book.account_index (dict str -> int)": d_bytes,
        "book.account_address (list of str)": l_bytes,
        "address strings (42 chars each, shared by both)": s_bytes,
    }
    total_arrays = sum(arrays.values())
    big_arrays = [(k, v) for k, v in sorted(arrays.items(), key=lambda kv: -kv[1]) if v >= MB]
    print(f"\n  numpy arrays held: {total_arrays / MB:,.1f} MB")
    for path, b in big_arrays:
        print(f"    {b / MB:8.1f} MB  {path}")
    print(f"  Python objects per account: {sum(python.values()) / MB:,.1f} MB")
    for what, b in python.items():
        print(f"    {b / MB:8.1f} MB  {what}")
    peak = max(r["peak_mb"] for r in steps.rows) if steps.can_reset else hwm_mb()
    final = rss_mb()
    record(
        Figure(
            key="memory_peak_rss",
            figure=(
                f"peak RSS, {args.accounts:,} accounts x ~5 positions with standard, pools, "
                "reputation, portfolio, VaR/ES and a what-if"
            ),
            value=peak,
            unit="MB",
            baseline="-",
            target=f"< {BUDGET_MB:.0f} MB",
            met=peak < BUDGET_MB,
            detail={
                "positions": int(n_rows),
                "rss_at_start_mb": round(start_rss, 1),
                "rss_at_end_mb": round(final, 1),
                "steps": [_rounded(r) for r in steps.rows],
                "arrays_mb": {k: round(v / MB, 1) for k, v in big_arrays},
                "arrays_total_mb": round(total_arrays / MB, 1),
                "python_mb": {k: round(v / MB, 1) for k, v in python.items()},
            },
        )
    )
    print(f"  peak {peak:,.0f} MB; RSS at the end {final:,.0f} MB", flush=True)


if __name__ == "__main__":
    main()
