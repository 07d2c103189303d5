"""Hostile API clients: python -m bench.api_hostile [--streams N] [--slow N].

The real API (aggregator.api.Api, its middleware and its /v1/stream handler) over a
real HealthStream fed by a synthetic book of 10k accounts, in a process of its own; the
clients in this one. Measured, each against the same server idle:

- N open /v1/stream connections (default 10,000) receiving a broadcast of
  `--events-per-s` health events per second (default 10): the server's RSS per 1,000
  streams, and /healthz latency (p50, p99) from a separate connection meanwhile;
- one stream more than `--max-streams` is refused (503) while the others are served;
- slowloris: `--slow` connections (default 1,000) trickling a request header one byte a
  second: /healthz latency meanwhile;
- 100 POST /v1/whatif with 16 MB bodies: 413s (api.max_body_bytes), and the server's RSS
  after them.

Figures go to bench.results (docs/performance.md) and docs/reliability.md quotes them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.results import Figure, record

BOOK = 10_000


def _serve(port_file: Path, max_streams: int, events_per_s: int) -> None:
    """The server process: Api over a backend with a real HealthStream."""
    import numpy as np

    from aggregator.api import Api
    from aggregator.risk.engine import AccountHealth
    from aggregator.stream import HealthStream

    addresses = [f"0x{i + 1:040x}" for i in range(BOOK)]
    index = {a: i for i, a in enumerate(addresses)}
    rng = np.random.default_rng(3)
    hf = rng.uniform(1.0, 3.0, BOOK)

    class Source:
        def find(self, address: str) -> int | None:
            return index.get(address)

        def accounts(self) -> list[str]:
            return addresses

        def health(self, address: str) -> AccountHealth:
            i = index[address]
            return AccountHealth(
                account=address,
                collateral_usd=1e4,
                c_liq=8e3,
                c_borrow=7e3,
                debt_usd=float(8e3 / hf[i]),
                hf=float(hf[i]),
                bp=7e3 - float(8e3 / hf[i]),
                tier="healthy",
                degraded=False,
                close_factor=0.5,
            )

    stream = HealthStream(Source())

    class Backend:
        def readiness(self) -> tuple[bool, list[str]]:
            return True, []

        def subscribe(self) -> Any:
            return stream.subscribe()

        def __getattr__(self, name: str) -> Any:
            raise AttributeError(name)

    async def main() -> None:
        api = Api(Backend(), sse_keepalive_s=15.0, max_streams=max_streams)  # type: ignore[arg-type]
        port = await api.start("127.0.0.1", 0)
        await asyncio.to_thread(port_file.write_text, str(port))
        k = 0
        while True:
            await asyncio.sleep(0.1)
            # events_per_s / 10 accounts move each tick: that many events a second to
            # every stream.
            moved = [addresses[(k + j) % BOOK] for j in range(max(1, events_per_s // 10))]
            for a in moved:
                hf[index[a]] *= 1.01
            stream.publish(moved)
            k += len(moved)

    asyncio.run(main())


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _latency(url: str, n: int = 200) -> tuple[float, float]:
    """p50 and p99 of GET /healthz in ms over one fresh connection."""
    times = []
    async with aiohttp.ClientSession() as s:
        for _ in range(n):
            t0 = time.perf_counter()
            async with s.get(url + "/healthz") as r:
                await r.read()
                assert r.status == 200
            times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


async def _probe(url: str) -> tuple[float, float]:
    """_latency from a process of its own: this one drains 10k streams, and its event
    loop would delay the probe's answers as much as the server does."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.api_hostile", "--probe", url, stdout=subprocess.PIPE
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"/healthz probe failed (exit {proc.returncode})")
    p50, p99 = json.loads(out)
    return float(p50), float(p99)


async def _streams(url: str, n: int, pid: int) -> dict[str, Any]:
    conn = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:
        rss0 = _rss_mb(pid)
        opened: list[aiohttp.ClientResponse] = []
        received = [0]

        async def drain(r: aiohttp.ClientResponse) -> None:
            with contextlib.suppress(Exception):
                async for chunk in r.content.iter_any():
                    received[0] += len(chunk)

        t0 = time.perf_counter()
        for i in range(0, n, 500):
            batch = await asyncio.gather(
                *(s.get(url + "/v1/stream") for _ in range(min(500, n - i)))
            )
            opened += batch
        open_s = time.perf_counter() - t0
        statuses = [r.status for r in opened]
        drains = [asyncio.create_task(drain(r)) for r in opened if r.status == 200]
        await asyncio.sleep(5)
        rss1 = _rss_mb(pid)
        p50, p99 = await _probe(url)
        extra = await s.get(url + "/v1/stream")
        extra_status = extra.status
        extra.close()
        for r in opened:
            r.close()
        for d in drains:
            d.cancel()
        await asyncio.gather(*drains, return_exceptions=True)
    return {
        "streams": n,
        "accepted": statuses.count(200),
        "refused_503": statuses.count(503),
        "open_s": round(open_s, 1),
        "rss_before_mb": round(rss0, 1),
        "rss_open_mb": round(rss1, 1),
        "mb_per_1k_streams": round((rss1 - rss0) / max(1, statuses.count(200)) * 1000, 2),
        "healthz_p50_ms": round(p50, 2),
        "healthz_p99_ms": round(p99, 2),
        "bytes_received": received[0],
        "one_more_status": extra_status,
    }


async def _slowloris(host: str, port: int, url: str, n: int) -> dict[str, Any]:
    writers = []
    for _ in range(n):
        _, w = await asyncio.open_connection(host, port)
        w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        writers.append(w)
    stop = asyncio.Event()

    async def trickle() -> None:
        while not stop.is_set():
            for w in writers:
                with contextlib.suppress(Exception):
                    w.write(b"X")
            await asyncio.sleep(1.0)

    task = asyncio.create_task(trickle())
    await asyncio.sleep(3)
    p50, p99 = await _probe(url)
    stop.set()
    await task
    for w in writers:
        w.close()
    return {"slow_connections": n, "healthz_p50_ms": round(p50, 2), "healthz_p99_ms": round(p99, 2)}


async def _big_bodies(url: str, pid: int) -> dict[str, Any]:
    body = b"x" * (16 << 20)
    codes = []
    async with aiohttp.ClientSession() as s:
        for _ in range(100):
            async with s.post(url + "/v1/whatif", data=body) as r:
                codes.append(r.status)
    return {
        "requests": 100,
        "body_mb": 16,
        "statuses": sorted(set(codes)),
        "rss_after_mb": round(_rss_mb(pid), 1),
    }


def start_server(
    port_file: Path, max_streams: int, events_per_s: int
) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.api_hostile",
            "--serve",
            str(port_file),
            "--max-streams",
            str(max_streams),
            "--events-per-s",
            str(events_per_s),
        ]
    )
    deadline = time.monotonic() + 60
    while not port_file.exists() or not port_file.read_text():
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("the API server did not start")
        time.sleep(0.1)
    return proc, int(port_file.read_text())


def _reported(
    key: str,
    *,
    figure: str,
    value: float,
    baseline: str,
    detail: dict[str, Any],
    unit: str = "x",
    target: str = "reported",
) -> None:
    """One of this benchmark's figures: measured and reported, no pass/fail target."""
    record(Figure(key, figure, value, unit, baseline, target, None, detail))


async def run(args: argparse.Namespace, pid: int, port: int) -> None:
    url = f"http://127.0.0.1:{port}"
    idle = await _probe(url)
    streams = await _streams(url, args.streams, pid)
    slow = await _slowloris("127.0.0.1", port, url, args.slow)
    bodies = await _big_bodies(url, pid)
    base = {"idle_healthz_p50_ms": round(idle[0], 2), "idle_healthz_p99_ms": round(idle[1], 2)}
    idle_p99 = f"idle p50 {idle[0]:.2f} ms, p99 {idle[1]:.2f} ms"
    _reported(
        "api_streams_rss",
        figure=f"server RSS per 1,000 open /v1/stream connections "
        f"({streams['accepted']:,} open, {args.events_per_s} events/s each)",
        value=streams["mb_per_1k_streams"],
        unit="MB",
        baseline="-",
        target="reported (bounded by api.max_streams)",
        detail={**streams, **base},
    )
    _reported(
        "api_streams_healthz",
        figure=f"/healthz p99 with {streams['accepted']:,} streams open vs idle (p50 "
        f"{streams['healthz_p50_ms']:.2f} ms, p99 {streams['healthz_p99_ms']:.2f} ms)",
        value=streams["healthz_p99_ms"] / max(idle[1], 1e-3),
        baseline=idle_p99,
        detail={**streams, **base},
    )
    _reported(
        "api_slowloris_healthz",
        figure=f"/healthz p99 with {args.slow:,} slowloris connections vs idle (p50 "
        f"{slow['healthz_p50_ms']:.2f} ms, p99 {slow['healthz_p99_ms']:.2f} ms)",
        value=slow["healthz_p99_ms"] / max(idle[1], 1e-3),
        baseline=idle_p99,
        detail={**slow, **base, "big_bodies": bodies},
    )
    print({"idle": base, "streams": streams, "slowloris": slow, "big_bodies": bodies})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=10_000)
    ap.add_argument("--max-streams", type=int, default=10_000)
    ap.add_argument("--slow", type=int, default=1_000)
    ap.add_argument("--events-per-s", type=int, default=10)
    ap.add_argument("--serve", type=Path, default=None)
    ap.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe is not None:
        print(json.dumps(asyncio.run(_latency(args.probe))))
        return
    if args.serve is not None:
        _serve(args.serve, args.max_streams, args.events_per_s)
        return
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_server(Path(tmp) / "port", args.max_streams, args.events_per_s)
        try:
            asyncio.run(run(args, proc.pid, port))
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
