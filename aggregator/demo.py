"""`aggregator demo`: devnet up, market simulator, daemon, a live table; Ctrl-C tears all down.

Needs the devkit/ package of a source checkout (cli.py checks before importing this)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

from aggregator import tables
from aggregator.config import ConfigError, load_config
from aggregator.daemon import Daemon, StartupError
from devkit import manager
from devkit.anvil import DEV_KEYS
from devkit.deploy import KEEPER
from devkit.simulator import run_simulator

log = logging.getLogger("aggregator.demo")


def _fmt_hf(hf: float | None) -> str:
    if hf is None or math.isinf(hf):
        return "inf"
    return f"{hf:.3f}"


SHOWN_ACCOUNTS = 8


def summary(daemon: Daemon, api_url: str) -> str:
    """What the demo prints every few seconds: readiness and prices, accounts per tier,
    the riskiest accounts' HF and credit per chain, each chain's sync and pushes landed
    (from the same views the API serves)."""
    ok, reasons = daemon.status.readiness()
    prices = daemon.oracle.prices()
    line = "  ".join(
        f"{sym} {p.value:,.2f}{'' if p.usable else '(' + str(p.status) + ')'}"
        for sym, p in prices.items()
        if p.value is not None
    )
    out = [f"[{time.strftime('%H:%M:%S')}] ready={ok}  {line}"]
    out += [f"    not ready: {r}" for r in reasons[:4]]
    counts = daemon.engine.tier_counts()
    out.append(
        f"accounts: {sum(counts.values())}  "
        + "  ".join(f"{tier} {n}" for tier, n in counts.items())
    )
    chains = daemon.views.chains()
    if daemon.ledger.prices_ready:
        out.append(_accounts_table(daemon, [c["chain"] for c in chains]))
    out.append(_chains_table(chains))
    out.append(f"API: {api_url}  dashboard: {api_url}/ui  (Ctrl-C stops everything)")
    return "\n".join(out)


def _accounts_table(daemon: Daemon, names: list[str]) -> str:
    items = daemon.views.list_accounts(None, 1000, None)[0]
    # The riskiest first: they are what a demo watcher wants to see move.
    items.sort(key=lambda h: math.inf if h["hf"] is None else h["hf"])
    rows = [
        [
            h["account"],
            _fmt_hf(h["hf"]),
            h["tier"],
            f"{h['borrowing_power_usd']:,.0f}",
            *(f"{float(h['credit_usd'].get(c, 0)):,.0f}" for c in names),
            h["status"],
        ]
        for h in items[:SHOWN_ACCOUNTS]
    ]
    return tables.table(
        ["account", "hf", "tier", "bp_usd", *(f"credit {c}" for c in names), "status"], rows
    )


def _chains_table(chains: list[dict[str, Any]]) -> str:
    return tables.table(
        ["chain", "indexed", "lag", "pushes landed", "pending"],
        [
            [
                c["chain"],
                c.get("indexed_block"),
                c.get("lag"),
                tables.pushes_landed(c),
                (c.get("pusher") or {}).get("pending_txs")
                if (c.get("pusher") or {}).get("enabled")
                else None,
            ]
            for c in chains
        ],
    )


def print_table(daemon: Daemon, api_url: str = "") -> None:
    print("\n" + summary(daemon, api_url), flush=True)


async def _demo(root: Path, config_path: str | None, duration_s: float | None) -> int:
    state = await asyncio.to_thread(manager.up, root)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    daemon: Daemon | None = None
    sim: asyncio.Task[None] | None = None
    try:
        try:
            cfg = load_config(config_path or root / "config.toml")
        except ConfigError as exc:
            print(exc)
            return 2
        if not os.environ.get("AGG_KEEPER_KEY") and cfg.pusher.keystore_path is None:
            # The devnet's keeper is anvil dev account 1, whose key is public: without
            # it the demo would not push, which is half of what it shows.
            os.environ["AGG_KEEPER_KEY"] = DEV_KEYS[KEEPER]
            print("demo: pushing as the devnet keeper (anvil dev account 1)", flush=True)
        daemon = Daemon(cfg)
        try:
            port = await daemon.start()
        except StartupError as exc:
            print(f"daemon refused to start: {exc}")
            return 1
        api_url = f"http://{cfg.api.host}:{port}"
        print(f"daemon API: {api_url}  (try /v1/accounts, /v1/prices, /metrics)", flush=True)
        print(f"dashboard:  {api_url}/ui", flush=True)
        sim = asyncio.create_task(run_simulator(state, stop), name="simulator")
        deadline = None if duration_s is None else time.monotonic() + duration_s
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 5.0)
            if sim.done() and sim.exception() is not None:
                print(f"market simulator failed: {sim.exception()!r}")
                return 1
            print_table(daemon, api_url)
            if deadline is not None and time.monotonic() >= deadline:
                break
        return 0
    finally:
        stop.set()
        if sim is not None:
            sim.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sim
        if daemon is not None:
            await daemon.stop()
        await asyncio.to_thread(manager.down, root)
        print("demo stopped; devnet down")


def run_demo(root: Path, config_path: str | None = None, duration_s: float | None = None) -> int:
    return asyncio.run(_demo(root, config_path, duration_s))
