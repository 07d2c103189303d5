"""What-if benchmark: python -m bench.whatif [--accounts N].

The risk engine benchmark's synthetic book (bench/risk_engine.py: 3 chains, 8 assets,
about 5 positions per account, ~1% liquidatable), one shock set (WETH -30% and its LSTs
with it, wstETH de-pegged 5% on top, volatility +50%, chain `base` down: its collateral
frozen, its feeds stale), against one full recompute measured in the same run:
  - the what-if (risk/whatif.py `whatif`: both standard evaluations, the frozen
    chain's accounts laid out again, plans, seize and bad debt) / one recompute;
  - the whole POST /v1/whatif body (aggregator/whatif.py: the above, the price table,
    transitions, volume and the first page of accounts shaped as JSON) / one recompute;
  - the same without a chain down (prices and volatilities only);
  - what the API's what-if holds the event loop for: the frozen copy of the ledger
    (`LedgerView.snapshot().frozen()`) taken before the worker thread computes.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from aggregator.config import AppConfig
from aggregator.risk import LedgerView
from aggregator.risk.whatif import ShockSet, Universe, whatif
from aggregator.whatif import WhatIfService
from bench.book import loaded_engine
from bench.results import Figure, peak_rss_mb, record
from bench.risk_engine import ASSETS, CHAINS, GROUPS

SHOCK = {"shocks": {"WETH": -0.3}, "depegs": {"wstETH": -0.05}, "vol": 0.5, "chains_down": ["base"]}
UNDERLYING = {"wstETH": "WETH", "rETH": "WETH"}


def app_config() -> AppConfig:
    """The benchmark book's assets and chains as an app config (for the service)."""
    return AppConfig(
        chains=[
            {"name": c, "chain_id": i + 1, "rpc_urls": ["http://127.0.0.1:1"]}
            for i, c in enumerate(CHAINS)
        ],
        assets=[
            {"symbol": s, "decimals": d, "ltv": ltv, "lt": lt, "depth_usd": depth}
            | ({"underlying": UNDERLYING[s]} if s in UNDERLYING else {})
            for s, d, ltv, lt, depth, *_ in ASSETS
        ],
        correlation_groups=[g.model_dump() for g in GROUPS],
    )  # type: ignore[arg-type]


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.whatif")
    ap.add_argument("--accounts", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args(argv)

    eng, n_rows = loaded_engine(args.accounts, args.seed)
    view = LedgerView(eng)
    print(f"book: {args.accounts:,} accounts, {n_rows:,} positions; tiers {eng.tier_counts()}")
    shocks = ShockSet(
        price=SHOCK["shocks"], depeg=SHOCK["depegs"], vol=SHOCK["vol"],
        chains_down=tuple(SHOCK["chains_down"]),
    )  # fmt: skip
    universe = Universe(CHAINS, UNDERLYING, {})
    service = WhatIfService(app_config(), view, prices_ready=lambda: True)
    # Warm-up: compiles (or loads) the what-if kernel, as the daemon's first call would.
    whatif(view.snapshot(), shocks, universe)

    # Rounds of (recompute, what-if, prices-only what-if, API body) back to back: each
    # ratio is the median over rounds of that round's pair, so a busy neighbour slows
    # both sides of a pair rather than one figure of the run.
    prices_only = ShockSet(price=shocks.price, vol=shocks.vol)
    rounds: list[list[float]] = []
    for _ in range(args.repeat):
        rounds.append(
            [
                timed(eng.recompute),
                timed(lambda: whatif(view.snapshot(), shocks, universe)),
                timed(lambda: whatif(view.snapshot(), prices_only, universe)),
                timed(lambda: service.run(SHOCK)),
                timed(lambda: view.snapshot().frozen()),
            ]
        )
    t_tick, t_whatif, t_prices, t_api, t_frozen = (
        statistics.median(r[i] for r in rounds) for i in range(5)
    )
    r_whatif, r_prices, r_api, r_frozen = (
        statistics.median(r[i] / r[0] for r in rounds) for i in (1, 2, 3, 4)
    )
    body = service.run(SHOCK)
    std = body["models"]["standard"]
    print(f"tiers after the shock: {std['tiers_after']}")
    print(
        f"newly liquidatable {std['liquidations']['newly_liquidatable']:,}, bad debt "
        f"{std['bad_debt_usd']:,.0f} USD, seize {std['liquidations']['seize_usd']:,.0f} USD"
    )
    print(f"full recompute:                         {t_tick * 1e3:8.1f} ms")
    print(f"what-if (chain down), risk/whatif.py:   {t_whatif * 1e3:8.1f} ms")
    print(f"what-if, prices and vol only:           {t_prices * 1e3:8.1f} ms")
    print(f"POST /v1/whatif body (chain down):      {t_api * 1e3:8.1f} ms")
    print(f"the API's loop hold (frozen copy):      {t_frozen * 1e3:8.1f} ms")
    base = f"one full recompute of the same book ({t_tick * 1e3:.1f} ms), median of paired rounds"
    detail = {
        "accounts": args.accounts, "positions": n_rows, "recompute_ms": t_tick * 1e3,
        "whatif_ms": t_whatif * 1e3, "whatif_prices_only_ms": t_prices * 1e3,
        "api_body_ms": t_api * 1e3, "frozen_ms": t_frozen * 1e3, "peak_rss_mb": peak_rss_mb(),
        "rounds": args.repeat,
    }  # fmt: skip
    record(
        Figure(
            "whatif",
            f"what-if, {args.accounts:,} accounts, one shock set with a chain down",
            r_whatif,
            "x",
            base,
            "reported",
            None,
            detail,
        )
    )
    record(
        Figure(
            "whatif_api",
            f"POST /v1/whatif answer body, {args.accounts:,} accounts",
            r_api,
            "x",
            base,
            "reported",
            None,
            detail,
        )
    )
    record(
        Figure(
            "whatif_prices_only",
            f"what-if without a chain down, {args.accounts:,} accounts",
            r_prices,
            "x",
            base,
            "reported",
            None,
            detail,
        )
    )

    record(
        Figure(
            "whatif_loop_hold",
            f"POST /v1/whatif's pause of the event loop (the frozen copy), "
            f"{args.accounts:,} accounts",
            r_frozen,
            "x",
            base,
            "reported",
            None,
            detail,
        )
    )


if __name__ == "__main__":
    main()
