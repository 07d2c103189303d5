"""Hand-written hostile requests on the live daemon's API (complementing the schemathesis
and hypothesis fuzzers): path traversal, 1 MB bodies on every route (admin included),
a slow client trickling its request, invalid UTF-8 in path and query. Never a 5xx, other
clients keep being served, and the process memory stays bounded."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from pathlib import Path

from aiohttp import ClientSession, ClientTimeout
from daemon_helpers import wait_ready

from aggregator.daemon import Daemon

MB = 1024 * 1024
ROUTES = [
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/v1/chains"),
    ("GET", "/v1/prices"),
    ("GET", "/v1/prices/WETH"),
    ("GET", "/v1/accounts"),
    ("GET", "/v1/accounts/0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"),
    ("GET", "/v1/accounts/0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC/health"),
    ("POST", "/v1/admin/pause"),
    ("POST", "/v1/admin/resume"),
    ("PUT", "/v1/accounts"),
    ("POST", "/nope"),
]
TRAVERSALS = [
    "/../../../../etc/passwd",
    "/v1/../../etc/passwd",
    "/v1/prices/..%2f..%2f..%2fetc%2fpasswd",
    "/v1/prices/%2e%2e/%2e%2e/etc/passwd",
    "/v1/accounts/..%5c..%5cwindows%5cwin.ini",
    "/static/../../../../etc/shadow",
    "/v1/accounts/%2e%2e%2f%2e%2e%2fetc%2fpasswd/health",
    "//etc/passwd",
    "/v1/prices/....//....//etc/passwd",
    "/v1/prices/%00",
    "/v1/accounts/0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC%00/health",
]
RAW_BAD_UTF8 = [
    b"GET /v1/prices/\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /v1/accounts/\xc3\x28 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /v1/accounts?tier=\xed\xa0\x80 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /v1/accounts?limit=%ff%fe&cursor=%c3%28 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /v1/prices/%ff%fe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /v1/accounts/%c3%28/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _raw(port: int, payload: bytes, timeout: float = 10) -> int:
    """Send raw bytes; return the HTTP status (0 if the server closed without one)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    parts = line.split()
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0


def ok_status(path: str, status: int) -> bool:
    # /readyz answers 503 by design whenever the daemon is not ready (docs/operations.md).
    return status < 500 or (path == "/readyz" and status == 503)


async def test_hostile_requests_never_5xx_and_memory_stays_bounded(daemon: Daemon) -> None:
    await wait_ready(daemon)
    base = f"http://127.0.0.1:{daemon.api.port}"
    async with ClientSession(timeout=ClientTimeout(total=30)) as http:

        async def warm() -> None:
            for method, path in ROUTES:
                async with http.request(method, base + path) as r:
                    await r.read()

        await warm()
        gc.collect()
        before = rss_mb()
        body = b"A" * MB
        statuses: dict[str, int] = {}
        for _round in range(3):
            for method, path in ROUTES:
                for payload in (body, b"\xff\xfe" * (MB // 2), b'{"a":' * (MB // 5)):
                    async with http.request(
                        method,
                        base + path,
                        data=payload,
                        headers={"Authorization": "Bearer x", "Content-Type": "application/json"},
                    ) as r:
                        await r.read()
                        statuses[f"{method} {path} 1MB"] = r.status
                        assert ok_status(path, r.status), (method, path, r.status)
        for path in TRAVERSALS:
            st = await _raw(
                daemon.api.port,
                f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
            )
            statuses[path] = st
            assert 0 < st < 500, (path, st)
            # Nothing of the file system is ever served.
            async with http.get(base + path) as r:
                text = await r.text(errors="replace")
                assert r.status < 500 and "root:" not in text, (path, r.status)
        for raw in RAW_BAD_UTF8:
            st = await _raw(daemon.api.port, raw)
            statuses[repr(raw[:40])] = st
            assert 0 < st < 500, (raw, st)
        gc.collect()
        after = rss_mb()
    # 14 routes x 3 bodies x 3 rounds = 126 MB of bodies went in: none of it may stay.
    assert after - before < 40, f"RSS {before:.0f} MB -> {after:.0f} MB"


async def test_slow_client_does_not_block_others(daemon: Daemon) -> None:
    """A client trickling its request one byte at a time (slowloris) holds only its own
    connection: others are served meanwhile, and the slow one still gets no 5xx."""
    port = daemon.api.port
    request = b"GET /v1/prices HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 40 + b"\r\n\r\n"

    async def trickle() -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in range(len(request)):
                writer.write(request[i : i + 1])
                await writer.drain()
                await asyncio.sleep(0.05)
            line = await asyncio.wait_for(reader.readline(), 15)
        except ConnectionError:
            return 0  # the server may cut a slow client: allowed, not a 5xx
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        parts = line.split()
        return int(parts[1]) if len(parts) >= 2 else 0

    slow = [asyncio.create_task(trickle()) for _ in range(20)]
    latencies = []
    async with ClientSession(timeout=ClientTimeout(total=10)) as http:
        for _ in range(20):
            t0 = time.monotonic()
            async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                assert r.status == 200
            latencies.append(time.monotonic() - t0)
            await asyncio.sleep(0.1)
    results = await asyncio.gather(*slow)
    assert all(s < 500 for s in results), results
    assert max(latencies) < 2.0, latencies
