"""`aggregator demo`: devnet up, market simulator, daemon, a live table; Ctrl-C tears all down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import time
from pathlib import Path

from aggregator.config import ConfigError, load_config
from aggregator.daemon import Daemon, StartupError
from aggregator.devnet import manager
from aggregator.devnet.simulator import run_simulator

log = logging.getLogger("aggregator.demo")


def _fmt_hf(hf: float | None) -> str:
    if hf is None or math.isinf(hf):
        return "inf"
    return f"{hf:.3f}"


def print_table(daemon: Daemon) -> None:
    ok, reasons = daemon.readiness()
    items = daemon.list_accounts(None, 50, None)[0] if daemon.prices_ready else []
    prices = daemon.oracle.prices()
    line = "  ".join(
        f"{sym} {p.value:,.2f}{'' if p.usable else '(' + str(p.status) + ')'}"
        for sym, p in prices.items()
        if p.value is not None
    )
    print(f"\n[{time.strftime('%H:%M:%S')}] ready={ok}  {line}")
    if not ok:
        for r in reasons[:4]:
            print(f"    not ready: {r}")
    for h in items:
        credit = " ".join(f"{c}={v:,.0f}" for c, v in h["credit_usd"].items())
        print(
            f"  {h['account']}  hf={_fmt_hf(h['hf']):>7}  {h['tier']:<12} "
            f"bp=${h['borrowing_power_usd']:>12,.2f}  credit: {credit}  {h['status']}"
        )


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
        daemon = Daemon(cfg)
        try:
            port = await daemon.start()
        except StartupError as exc:
            print(f"daemon refused to start: {exc}")
            return 1
        print(f"daemon API: http://{cfg.api.host}:{port}  (try /v1/accounts, /v1/prices, /metrics)")
        sim = asyncio.create_task(run_simulator(state, stop), name="simulator")
        deadline = None if duration_s is None else time.monotonic() + duration_s
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 5.0)
            if sim.done() and sim.exception() is not None:
                print(f"market simulator failed: {sim.exception()!r}")
                return 1
            print_table(daemon)
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
