"""Daemon start-up time, cold and warm: python -m bench.startup [--runs 3].

Starts the devnet once, then `aggregator run` as a real process against it, several
times, and measures from the spawn until /healthz answers (the API serves) and until
/readyz answers 200 (book loaded, prices known, ledger settled).

- cold: an empty numba cache (NUMBA_CACHE_DIR points at a new directory), so every
  kernel compiles, as on a fresh machine or after a numba upgrade;
- warm: the same cache again, as on every later start.

Each run gets a new SQLite store, so the only difference between cold and warm is the
kernel cache. Baseline from the same run: a bare Python process that imports aiohttp
and serves /healthz from a one-route aiohttp app: what any Python HTTP service pays
before it can answer. The figures are the daemon's time over that baseline.

This is a benchmark, not a test: start-up time depends on the machine (the old start-up
test timed it and failed on slow ones).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.results import Figure, record
from devkit import manager
from devkit.anvil import DEV_KEYS

REPO = Path(__file__).resolve().parents[1]
WAIT_LIMIT_S = 900.0

BARE_SERVER = """
import sys
from aiohttp import web
async def ok(_):
    return web.Response(text="ok")
app = web.Application()
app.router.add_get("/healthz", ok)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def time_until(proc: subprocess.Popen[bytes], port: int, paths: list[str]) -> list[float]:
    """Seconds from now until each of `paths` first answers 200, in order."""
    t0 = time.perf_counter()
    out: list[float] = []
    for path in paths:
        while _status(f"http://127.0.0.1:{port}{path}") != 200:
            if proc.poll() is not None:
                raise RuntimeError(f"process exited with {proc.returncode} before {path}")
            if time.perf_counter() - t0 > WAIT_LIMIT_S:
                raise RuntimeError(f"{path} did not answer 200 within {WAIT_LIMIT_S:.0f}s")
            time.sleep(0.05)
        out.append(time.perf_counter() - t0)
    return out


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def bare_start() -> float:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", BARE_SERVER, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        return time_until(proc, port, ["/healthz"])[0]
    finally:
        stop(proc)


def daemon_start(config: Path, store: Path, numba_cache: Path) -> tuple[float, float]:
    port = free_port()
    env = {
        **os.environ,
        "AGG_STORE__URL": f"sqlite+aiosqlite:///{store}",
        "AGG_API__PORT": str(port),
        "AGG_KEEPER_KEY": DEV_KEYS[1],
        "NUMBA_CACHE_DIR": str(numba_cache),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "aggregator.cli", "-c", str(config), "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        healthz, readyz = time_until(proc, port, ["/healthz", "/readyz"])
    finally:
        stop(proc)
    return healthz, readyz


def main(runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copy(REPO / "config.toml", root / "config.toml")
        state = manager.up(root)
        try:
            bare = [bare_start() for _ in range(runs)]
            cache = root / "numba-cache"
            config = Path(state.root) / "config.toml"
            cold: list[tuple[float, float]] = []
            warm: list[tuple[float, float]] = []
            for i in range(runs):
                # A new cache directory each time: every cold run compiles everything.
                shutil.rmtree(cache, ignore_errors=True)
                cold.append(daemon_start(config, root / f"c{i}.db", cache))
            for i in range(runs):
                warm.append(daemon_start(config, root / f"w{i}.db", cache))
        finally:
            manager.down(root)
    base = statistics.median(bare)
    for key, label, times in (("startup_cold", "cold", cold), ("startup_warm", "warm", warm)):
        healthz = statistics.median(t[0] for t in times)
        readyz = statistics.median(t[1] for t in times)
        record(
            Figure(
                key=key,
                figure=f"daemon start-up, {label} numba cache: spawn -> /healthz, median of {runs}",
                value=healthz / base,
                unit="x",
                baseline="bare aiohttp process spawn -> /healthz",
                target="reported",
                met=None,
                detail={
                    "healthz_s": [round(t[0], 3) for t in times],
                    "readyz_s": [round(t[1], 3) for t in times],
                    "median_healthz_s": round(healthz, 3),
                    "median_readyz_s": round(readyz, 3),
                    "bare_s": [round(b, 3) for b in bare],
                },
            )
        )
        print(
            f"  {label}: /healthz {healthz:.2f}s, /readyz {readyz:.2f}s; bare aiohttp {base:.2f}s",
            flush=True,
        )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="start-ups of each kind (median)")
    main(ap.parse_args().runs)
