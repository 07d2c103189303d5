"""Start-up with a big book: python -m bench.startup_book [--accounts 1000000].

The daemon's start-up path up to "book loaded and rated", with N accounts in a SQLite
store (bench/risk_engine.py's synthetic book: ~5 positions per account over 3 chains
and 8 assets, written straight into `chain_position`, with a checkpoint per chain as
the indexer leaves it): a fresh process is spawned and times, from its spawn,

  - imports (the daemon's modules: aggregator.daemon and what it pulls in);
  - the risk engine (its numba kernels compiled, or loaded from the cache);
  - the book load (BookSync.load: every chain's stored positions into the book, or
    the book snapshot and the positions written since, aggregator/book_snapshot.py);
  - the first rating (prices and volatilities set, a full recompute, credit).

Run cold (an empty numba cache) then warm (the same cache again; the store file is in
the OS page cache by then either way), both reading every stored position; then one
process writes the book snapshot (as the daemon's job or its clean stop would), the
store moves on (`--changed` positions rewritten at a later block: what a restart
replays), and warm starts from the snapshot. The figures are absolute seconds against
the performance issue's target (< 5 s warm at 1M accounts) and the child's peak RSS;
the detail also has the child's CPU seconds at each mark (on a shared box the wall
clock includes the time spent waiting for a core).
Baseline in the same run: a bare Python process that imports aiohttp (what any
Python service pays before its first line of work).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.results import Figure, record

TARGET_S = 5.0
MARK = 1000  # the checkpoint of every chain in the synthetic store
TOKENS = {
    a: {c: f"0x{(i + 1) * 16 + j:040x}" for j, c in enumerate(("ethereum", "arbitrum", "base"))}
    for i, a in enumerate(("USDC", "USDT", "DAI", "WBTC", "WETH", "wstETH", "rETH", "LINK"))
}


def app_config() -> Any:
    from aggregator.config import AppConfig
    from bench.risk_engine import ASSETS, CHAINS, GROUPS

    return AppConfig(
        chains=[
            {"name": c, "chain_id": i + 1, "rpc_urls": ["http://127.0.0.1:1"]}
            for i, c in enumerate(CHAINS)
        ],
        assets=[
            {"symbol": s, "decimals": d, "ltv": ltv, "lt": lt, "depth_usd": depth,
             "tokens": TOKENS[s], "borrowable": i in (0, 2, 4)}
            for i, (s, d, ltv, lt, depth, *_) in enumerate(ASSETS)
        ],
        correlation_groups=[g.model_dump() for g in GROUPS],
    )  # type: ignore[arg-type]  # fmt: skip


def build_store(path: Path, n_accounts: int, seed: int) -> int:
    """The synthetic book in a migrated SQLite store, as the indexer leaves it."""
    from aggregator.store import Store
    from bench.risk_engine import synth_rows

    async def migrate() -> None:
        store = Store(f"sqlite+aiosqlite:///{path}")
        await store.upgrade()
        await store.close()

    asyncio.run(migrate())
    symbols = {s: s for s in TOKENS}
    con = sqlite3.connect(path)
    for chain in ("ethereum", "arbitrum", "base"):
        con.execute(
            "INSERT INTO chain_checkpoint (chain, indexed_block, indexed_hash, log_range, "
            "head_block, confirmed_block, last_reconcile_block, rollbacks, updated_at) "
            "VALUES (?, ?, ?, 1000, ?, ?, ?, 0, CURRENT_TIMESTAMP)",
            (chain, MARK, f"0x{MARK:064x}", MARK, MARK - 12, MARK),
        )
    n = 0
    batch: list[tuple[Any, ...]] = []
    for r in synth_rows(n_accounts, seed):
        pending = r.head - r.confirmed if r.side == "collateral" else r.confirmed - r.head
        token = TOKENS[symbols[r.asset]][r.chain]
        batch.append((r.chain, r.account, token, r.side, str(r.head), str(pending),
                      str(r.confirmed), 1))  # fmt: skip
        if len(batch) >= 200_000:
            con.executemany("INSERT INTO chain_position VALUES (?,?,?,?,?,?,?,?)", batch)
            n += len(batch)
            batch.clear()
    con.executemany("INSERT INTO chain_position VALUES (?,?,?,?,?,?,?,?)", batch)
    n += len(batch)
    con.commit()
    con.close()
    return n


def move_on(path: Path, n_changed: int) -> int:
    """The store after the snapshot: `n_changed` positions rewritten one block later
    (new head and confirmed amounts), every checkpoint one block on."""
    con = sqlite3.connect(path)
    rows = con.execute(
        "SELECT chain, account, token, kind, head_amount FROM chain_position "
        "WHERE chain = 'ethereum' LIMIT ?",
        (n_changed,),
    ).fetchall()
    con.executemany(
        "UPDATE chain_position SET head_amount = ?, confirmed_amount = ?, updated_block = ? "
        "WHERE chain = ? AND account = ? AND token = ? AND kind = ?",
        [(str(int(h) + 1), str(int(h) + 1), MARK + 1, c, a, t, k) for c, a, t, k, h in rows],
    )
    con.execute(
        "UPDATE chain_checkpoint SET indexed_block = ?, indexed_hash = ?, last_reconcile_block = ?",
        (MARK + 1, f"0x{MARK + 1:064x}", MARK + 1),
    )
    con.commit()
    con.close()
    return len(rows)


def child(store_path: str, spawned: float, mode: str, snapshot: str) -> None:
    """The measured process: the daemon's start-up steps up to a rated book. `mode`:
    full (every stored position), snapshot (the snapshot and the replay), write (full,
    then the snapshot written)."""
    marks: dict[str, float] = {}
    # What `aggregator run` imports first (cli.py `cmd_run`): the CLI, then the daemon
    # with the cyclic GC paused and its objects frozen out of later collections.
    import aggregator.cli
    from aggregator.startup import kept_for_life

    with kept_for_life():
        import aggregator.daemon  # noqa: F401
    from aggregator.book_snapshot import BookSnapshots
    from aggregator.book_sync import BookSync, book_fingerprint
    from aggregator.metrics import Metrics
    from aggregator.risk import RiskEngine
    from aggregator.store import Store
    from bench.risk_engine import set_market

    cpu: dict[str, float] = {}
    marks["imports"] = time.time() - spawned
    cpu["imports"] = time.process_time()
    cfg = app_config()
    with kept_for_life():  # as run_daemon(freeze=True) builds the Daemon and its engine
        eng = RiskEngine.from_config(cfg)
    marks["engine"] = time.time() - spawned
    cpu["engine"] = time.process_time()

    metrics = Metrics()

    async def load() -> None:
        store = Store(f"sqlite+aiosqlite:///{store_path}")
        from aggregator.store.chain_repo import SqlChainStore

        async def nothing(_: object) -> None:
            return None

        repo = SqlChainStore(store)
        snaps = BookSnapshots(Path(snapshot), fingerprint=book_fingerprint(cfg),
                              chains=cfg.chain_names, store=repo, metrics=metrics)  # fmt: skip
        use = snaps if mode == "snapshot" else None
        if use is not None:
            use.prefetch()  # as Daemon.start does before its store migration
        sync = BookSync(cfg, repo, metrics=metrics, indexers={}, owns_index=lambda _c: True,
                        recompute=nothing, snapshots=use)  # fmt: skip
        await sync.load(eng)
        if mode == "write":
            t0 = time.perf_counter()
            await snaps.save(eng.export_book, lambda: None, lambda: ({}, []))
            marks["snapshot_write_s"] = time.perf_counter() - t0
        await store.close()

    asyncio.run(load())
    if mode == "write":
        marks["snapshot_mb"] = Path(snapshot).stat().st_size / 1e6
    if mode == "snapshot":
        loaded = metrics.registry.get_sample_value(
            "agg_book_snapshot_loads_total", {"result": "loaded"}
        )
        if loaded != 1:
            raise SystemExit("the snapshot was not used: see the log above")
    marks["book_loaded"] = time.time() - spawned
    cpu["book_loaded"] = time.process_time()
    set_market(eng)
    eng.recompute()
    eng.allocate_credit()
    marks["rated"] = time.time() - spawned
    cpu["rated"] = time.process_time()
    # CPU seconds of this process up to each mark (all its threads): on a shared box
    # the wall-clock marks include time spent waiting for a core, these do not.
    marks.update({f"cpu_{k}": v for k, v in cpu.items()})
    hwm = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    marks["peak_rss_mb"] = hwm
    marks["accounts"] = eng.book.n_accounts
    marks["positions"] = eng.book.n
    print("CHILD " + json.dumps(marks), flush=True)


def spawn(
    store: Path, cache: Path, mode: str = "full", snapshot: Path | None = None
) -> dict[str, float]:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    snap = str(snapshot or store.with_suffix(".snapshot"))
    out = subprocess.run(
        [sys.executable, "-m", "bench.startup_book", "--child", str(store), str(time.time()),
         mode, snap],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"child ({mode}) failed:\n{out.stdout}\n{out.stderr}")
    line = [x for x in out.stdout.splitlines() if x.startswith("CHILD ")][-1]
    return dict(json.loads(line[6:]))


def bare() -> float:
    t0 = time.time()
    subprocess.run([sys.executable, "-c", "import aiohttp.web"], check=True)
    return time.time() - t0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.startup_book")
    ap.add_argument("--accounts", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--runs", type=int, default=2, help="warm start-ups (the best counts)")
    ap.add_argument("--store", type=Path, help="reuse (or build once) this SQLite file")
    ap.add_argument(
        "--changed", type=int, default=10_000,
        help="positions the store rewrites after the snapshot (what the start replays)",
    )  # fmt: skip
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child[0], float(args.child[1]), args.child[2], args.child[3])
        return
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or Path(tmp) / "agg.db"
        if not store.exists():
            t0 = time.perf_counter()
            n = build_store(store, args.accounts, args.seed)
            print(f"  store: {n:,} positions written in {time.perf_counter() - t0:.0f} s")
        cache = Path(tmp) / "numba-cache"
        snapshot = Path(tmp) / "book.snapshot"
        shutil.rmtree(cache, ignore_errors=True)
        cold = spawn(store, cache)
        warm = min((spawn(store, cache) for _ in range(args.runs)), key=lambda m: m["rated"])
        wrote = spawn(store, cache, "write", snapshot)
        print(
            f"  snapshot written: {wrote['snapshot_mb']:,.0f} MB in "
            f"{wrote['snapshot_write_s']:.2f} s (copy of the book, then the file in a thread)",
            flush=True,
        )
        if args.store is not None:
            print("  (the --store file is changed after the snapshot: build a new one next time)")
        changed = move_on(store, args.changed)
        snap = min(
            (spawn(store, cache, "snapshot", snapshot) for _ in range(args.runs)),
            key=lambda m: m["rated"],
        )
        snap["replayed"] = changed
        snap["snapshot_mb"] = wrote["snapshot_mb"]
        snap["snapshot_write_s"] = wrote["snapshot_write_s"]
        base = min(bare() for _ in range(3))
    load = os.getloadavg()
    print(f"  load average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    for label, m in (("cold", cold), ("warm", warm), ("warm, from the snapshot", snap)):
        print(
            f"  {label}: imports {m['imports']:.2f} s, engine {m['engine']:.2f} s, book loaded "
            f"{m['book_loaded']:.2f} s, rated {m['rated']:.2f} s; peak RSS "
            f"{m['peak_rss_mb']:,.0f} MB ({m['accounts']:,} accounts, {m['positions']:,} "
            f"positions); CPU s at those marks {m['cpu_imports']:.2f} / {m['cpu_engine']:.2f} / "
            f"{m['cpu_book_loaded']:.2f} / {m['cpu_rated']:.2f}",
            flush=True,
        )
    print(f"  bare python + aiohttp import: {base:.2f} s")
    for key, label, m in (
        ("startup_book_cold", "empty numba cache, every stored position read", cold),
        ("startup_book_warm", "warm numba cache, every stored position read", warm),
        (
            "startup_book_snapshot",
            f"warm numba cache, from the book snapshot + {changed:,} positions written since",
            snap,
        ),
    ):
        record(
            Figure(
                key=key,
                figure=(
                    f"start-up to book loaded and rated, {warm['accounts']:,} accounts in "
                    f"SQLite, {label}"
                ),
                value=m["rated"],
                unit="s",
                baseline=f"bare python process importing aiohttp ({base:.2f} s)",
                target=f"< {TARGET_S:.0f} s" if key.endswith("snapshot") else "reported",
                met=m["rated"] < TARGET_S if key.endswith("snapshot") else None,
                detail={**m, "bare_s": base, "load_average_end": list(load)},
            )
        )


if __name__ == "__main__":
    main()
