"""Risk history and alert snapshot cost: python -m bench.history [--accounts N].

On the synthetic book of bench/risk_engine.py (1M accounts by default), each against
one full recompute after a price tick measured in the same run:
  - a steady `history` run (nothing moved: the system sample and the comparison,
    no account point), which runs once per `[history] interval_s` (60 s), and the
    longest event-loop pause during it (absolute, ms);
  - a `history` run after a 3% price move (every moved account a candidate; at most
    `max_accounts_per_bucket` written, riskiest first), SQLite store;
  - one alert snapshot (`alerts` job, every `[alerts] interval_s`, 10 s) after the move.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from typing import Any

from aggregator.alerts.snapshot import SnapshotCollector
from aggregator.history.config import HistoryConfig
from aggregator.history.recorder import HistoryRecorder
from aggregator.metrics import Metrics
from aggregator.risk.view import LedgerView
from aggregator.store import Store
from aggregator.store.history_repo import HistoryRepo
from bench.book import loaded_engine
from bench.results import Figure, record
from bench.risk_engine import CHAINS, set_market


class LoopTicker:
    """The longest the event loop went without running this coroutine (what an API
    request waiting during a history run would see)."""

    def __init__(self) -> None:
        self.stop = False
        self.longest = 0.0

    async def run(self) -> None:
        last = time.perf_counter()
        while not self.stop:
            await asyncio.sleep(0.001)
            t = time.perf_counter()
            self.longest = max(self.longest, t - last)
            last = t


def _recompute_s(eng: Any, repeat: int) -> float:
    times = []
    for k in range(repeat):
        set_market(eng, 1.0 + 0.001 * k)
        t0 = time.perf_counter()
        eng.recompute()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


async def run(args: argparse.Namespace) -> None:
    eng, _ = loaded_engine(args.accounts, args.seed)
    base = _recompute_s(eng, args.repeat)
    cfg = HistoryConfig()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite+aiosqlite:///{tmp}/h.db")
        await store.upgrade()
        now = [1_765_000_800.0]
        metrics = Metrics()

        def gauge(name: str) -> float:
            return metrics.registry.get_sample_value(name) or 0.0

        rec = HistoryRecorder(
            cfg, HistoryRepo(store), LedgerView(eng), metrics=metrics,
            ready=lambda: True, clock=lambda: now[0],
        )  # fmt: skip
        # Fill: new accounts go in max_accounts_per_bucket at a time; time the steady
        # state only once every account has its first point.
        runs = 0
        while True:
            now[0] += 60
            await rec.run()
            runs += 1
            if gauge("agg_history_deferred") == 0:
                break
        steady, pauses = [], []
        for _ in range(args.repeat):
            now[0] += 60
            ticker = LoopTicker()
            task = asyncio.create_task(ticker.run())
            t0 = time.perf_counter()
            await rec.run()
            steady.append(time.perf_counter() - t0)
            ticker.stop = True
            await task
            pauses.append(ticker.longest)
        set_market(eng, 0.97)
        eng.recompute()
        now[0] += 60
        t0 = time.perf_counter()
        await rec.run()
        shocked = time.perf_counter() - t0
        written = gauge("agg_history_points_total")
        deferred = gauge("agg_history_deferred")
        await store.close()

    col = SnapshotCollector(
        LedgerView(eng), prices=dict, indexers={}, pusher=lambda _c: {"enabled": False},
        leases=lambda _c: None, chains=CHAINS, ready=lambda: True, keeper_min_eth=0.0,
        checksum=str,
    )  # fmt: skip
    col.take(set())
    set_market(eng, 0.94)
    eng.recompute()
    t0 = time.perf_counter()
    snap = col.take(set())
    snap_s = time.perf_counter() - t0

    detail = {"accounts": args.accounts, "recompute_s": base, "fill_runs": runs}
    steady_s = statistics.median(steady)
    record(
        Figure(
            "history_steady", "history run, nothing moved (once per 60 s)", steady_s / base,
            # What the ledger itself spends per minute on price ticks at the default
            # 10 s refresh: history may cost no more than that.
            "x", "one full recompute", "<= 6x", steady_s / base <= 6,
            {**detail, "run_s": steady_s},
        )
    )  # fmt: skip
    record(
        Figure(
            "history_loop_pause", "longest event-loop pause during a steady history run",
            max(pauses) * 1000, "ms", "-", "reported", None, {**detail, "pauses_s": pauses},
        )
    )  # fmt: skip
    record(
        Figure(
            "history_shock", "history run after a 3% move (<= 20k points written)",
            shocked / base, "x", "one full recompute", "reported", None,
            {**detail, "run_s": shocked, "deferred": deferred, "points_total": written},
        )
    )  # fmt: skip
    record(
        Figure(
            "alert_snapshot", "alert snapshot after a 3% move (once per 10 s)", snap_s / base,
            "x", "one full recompute", "reported", None,
            {**detail, "snapshot_s": snap_s, "tier_moves": len(snap.tier_moves)},
        )
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.history")
    ap.add_argument("--accounts", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=3)
    asyncio.run(run(ap.parse_args(argv)))


if __name__ == "__main__":
    main()
