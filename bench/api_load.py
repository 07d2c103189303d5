"""API load benchmark: python -m bench.api_load [--accounts N] [--seconds S] [--connections C].

Serves GET /v1/accounts/{address}/health from the real API stack (aggregator.api.Api
started as the daemon starts it, so its hot path (aggregator/api_fast.py), its error
and latency middleware and the daemon's own account_health view over a RiskEngine
holding a synthetic book of N accounts), and as the baseline in the same run a bare
aiohttp handler on the same route shape that returns a constant JSON body of the same
size. Each server runs alone in its own process; the load generator is wrk (C, one
thread) in another, C keep-alive connections cycling through the book's addresses.
Prints req/s, p50 and p99 latency of both and the ratio API / baseline (target >= 0.6).

wrk is required (`make bench` installs it: scripts/install-wrk.sh) so that the ratio
means the same on every machine. `--tool python` is an explicit alternative for a
machine without it: an asyncio client on raw streams, which spends CPU like the
server does and so compresses the ratio towards 1 (0.75 where wrk measured 0.55);
its figure is labelled with the tool.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see bench/risk_engine.py

import argparse
import asyncio
import contextlib
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TARGET_RATIO = 0.6


# --------------------------------------------------------------------------- servers
def _book_backend(n_accounts: int) -> tuple[Any, list[str]]:
    """An ApiBackend whose account_health is the daemon's own method over a synthetic
    book: the measured path is the production one, minus chains and the store."""
    from aggregator.api_views import AccountViews, LedgerReader
    from bench.book import loaded_engine

    eng, _ = loaded_engine(n_accounts, seed=7)
    eng.allocate_credit()

    views = AccountViews(
        LedgerReader(eng),
        prices_ready=lambda: True,
        decimals={},
        indexers={},
        onchain=lambda address: None,
        margin=lambda address: None,
    )
    return views, list(eng.book.account_address)


def _serve(kind: str, n_accounts: int, port_file: Path) -> None:
    from aiohttp import web

    async def serve_api() -> int:
        from aggregator.api import Api
        from aggregator.metrics import Metrics

        backend, _ = _book_backend(n_accounts)
        api = Api(backend, request_seconds=Metrics().api_request_seconds)
        # As the daemon starts it: Api.start() builds the runner with the hot path.
        return await api.start("127.0.0.1", 0)

    async def serve_baseline() -> int:
        body = port_file.with_suffix(".body").read_bytes()

        async def handler(_: web.Request) -> web.Response:
            return web.Response(body=body, content_type="application/json")

        app = web.Application()
        app.router.add_get("/v1/accounts/{address}/health", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port: int = runner.addresses[0][1]
        return port

    async def main() -> None:
        port = await (serve_api() if kind == "api" else serve_baseline())
        port_file.write_text(str(port))  # noqa: ASYNC240 - once, before serving
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


# --------------------------------------------------------------------------- client
async def _client(
    port: int, addresses: list[str], connections: int, seconds: float, warmup: float
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    statuses: dict[int, int] = {}
    offset = random.randrange(len(addresses))  # see _wrk: no replay of the last run
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + seconds

    async def conn(i: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        k = offset + i
        try:
            while True:
                addr = addresses[k % len(addresses)]
                k += connections
                req = (
                    f"GET /v1/accounts/{addr}/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                ).encode()
                t0 = time.perf_counter()
                writer.write(req)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                t1 = time.perf_counter()
                if t1 >= stop_at:
                    return
                if t0 >= measure_from:
                    latencies.append(t1 - t0)
                    statuses[status] = statuses.get(status, 0) + 1
                    if status != 200:
                        errors += 1
        finally:
            writer.close()
            await writer.wait_closed()

    await asyncio.gather(*(conn(i) for i in range(connections)))
    latencies.sort()
    n = len(latencies)
    return {
        "requests": n,
        "rps": n / seconds,
        "p50_ms": latencies[n // 2] * 1e3 if n else float("nan"),
        "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1e3 if n else float("nan"),
        "errors": errors,
        "statuses": statuses,
    }


WRK_SCRIPT = """
local paths = {}
for line in io.lines("%s") do paths[#paths + 1] = "/v1/accounts/" .. line .. "/health" end
local i = %d
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1])
end
"""


def _wrk(port: int, addresses: list[str], args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """wrk (C, one thread) when installed: a load generator far cheaper than any Python
    client, so the numbers are the server's. Same connections and duration."""
    (tmp / "addresses.txt").write_text("\n".join(addresses) + "\n")
    # Each run starts at a random account: a run must not replay the accounts the run
    # before it asked for (any per-account cache would then measure its hits only).
    start = random.randrange(len(addresses))
    (tmp / "paths.lua").write_text(WRK_SCRIPT % (tmp / "addresses.txt", start))
    cmd = [
        "wrk",
        "-t1",
        f"-c{args.connections}",
        f"-d{args.seconds:.0f}s",
        "--latency",
        "-s",
        str(tmp / "paths.lua"),
        f"http://127.0.0.1:{port}",
    ]
    subprocess.run([*cmd[:3], "-d1s", *cmd[4:]], capture_output=True, check=True, timeout=60)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout

    def ms(token: str) -> float:
        scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
        for unit in ("us", "ms", "s"):
            if token.endswith(unit):
                return float(token[: -len(unit)]) * scale[unit]
        return float(token)

    result: dict[str, Any] = {"errors": 0, "statuses": {}}
    for line in out.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            result["rps"] = float(parts[1])
        elif parts[:1] == ["50%"]:
            result["p50_ms"] = ms(parts[1])
        elif parts[:1] == ["99%"]:
            result["p99_ms"] = ms(parts[1])
        elif "Non-2xx" in line:
            result["errors"] = int(parts[-1])
    return result


def _load(port: int, addresses: list[str], args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """The load generator in its own process, so it never shares the server's GIL."""
    if args.tool == "wrk":
        return _wrk(port, addresses, args, tmp)
    cmd = [
        sys.executable,
        "-m",
        "bench.api_load",
        "--_client",
        str(port),
        "--seconds",
        str(args.seconds),
        "--connections",
        str(args.connections),
    ]
    out = subprocess.run(
        cmd, input="\n".join(addresses), capture_output=True, text=True, check=True, timeout=120
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _with_server(kind: str, args: argparse.Namespace, tmp: Path) -> subprocess.Popen[bytes]:
    port_file = tmp / f"{kind}.port"
    port_file.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.api_load",
            "--_serve",
            kind,
            "--accounts",
            str(args.accounts),
            "--_port_file",
            str(port_file),
        ]
    )
    # Loading 1M accounts takes ~30 s on a quiet box and several minutes on a shared,
    # loaded one; the bound only catches a server that never comes up.
    deadline = time.monotonic() + 900
    while not port_file.exists() or not port_file.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            code = proc.wait()
            raise SystemExit(f"{kind} server did not start (exit {code}) within 900 s")
        time.sleep(0.05)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--accounts", type=int, default=1_000_000)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--tool",
        choices=["wrk", "python"],
        default="wrk",
        help="load generator: wrk (required by default: scripts/install-wrk.sh), or the "
        "built-in asyncio client, whose ratio is compressed and not comparable",
    )
    p.add_argument("--_serve", choices=["api", "baseline"], help=argparse.SUPPRESS)
    p.add_argument("--_port_file", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--_client", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args._serve:
        _serve(args._serve, args.accounts, args._port_file)
        return 0
    if args._client:
        addresses = sys.stdin.read().split()
        result = asyncio.run(
            _client(args._client, addresses, args.connections, args.seconds, warmup=1.0)
        )
        print(json.dumps(result))
        return 0

    import shutil
    import tempfile

    if args.tool == "wrk" and shutil.which("wrk") is None:
        # No silent fallback: the Python client's ratio is not comparable with wrk's.
        print(
            "api_load: wrk is not on PATH; install it with scripts/install-wrk.sh "
            "(`make bench` does), or measure with --tool python (a compressed ratio)",
            file=sys.stderr,
        )
        return 2

    from aggregator.metrics import Metrics  # noqa: F401  (import cost paid before timing)

    # synth_rows numbers its accounts 0..N-1 (every one holds 5 collateral draws), so
    # the client's addresses need no second copy of the book in this process.
    addresses = [f"0x{a:040x}" for a in range(args.accounts)]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        runs: dict[str, list[dict[str, Any]]] = {"api": [], "baseline": []}
        api = _with_server("api", args, tmp)
        baseline: subprocess.Popen[bytes] | None = None
        try:
            # The baseline answers with a body of the size the API sends.
            import urllib.request

            port = int((tmp / "api.port").read_text())
            url = f"http://127.0.0.1:{port}/v1/accounts/{addresses[0]}/health"
            with urllib.request.urlopen(url, timeout=10) as resp:
                sample = resp.read()
            (tmp / "baseline.body").write_bytes(sample)
            baseline = _with_server("baseline", args, tmp)
            ports = {"api": port, "baseline": int((tmp / "baseline.port").read_text())}
            # Alternating rounds, best of each: on a shared machine a neighbour's burst
            # lands in one round, not in all of one side's.
            for _ in range(args.rounds):
                for name in ("api", "baseline"):
                    runs[name].append(_load(ports[name], addresses, args, tmp))
        finally:
            _stop(api)
            if baseline is not None:
                _stop(baseline)
    results = {name: max(rs, key=lambda r: r["rps"]) for name, rs in runs.items()}

    print(
        f"GET /v1/accounts/{{address}}/health with {args.tool}, {args.connections} keep-alive "
        f"connections, best of {args.rounds} alternating {args.seconds:.0f}s rounds (1s warm-up), "
        f"body {len(sample)} bytes"
    )
    for name, r in results.items():
        print(
            f"  {name:<9} {r['rps']:>9,.0f} req/s   p50 {r['p50_ms']:6.2f} ms   "
            f"p99 {r['p99_ms']:6.2f} ms   non-200 {r['errors']}"
        )
    ratio = results["api"]["rps"] / results["baseline"]["rps"]
    verdict = "OK" if ratio >= TARGET_RATIO else "BELOW TARGET"
    print(f"  ratio api/baseline {ratio:.2f} (target >= {TARGET_RATIO}) {verdict}")
    from bench.results import Figure, record

    api_r, base_r = results["api"], results["baseline"]
    record(
        Figure(
            "api_health",
            f"GET /v1/accounts/{{a}}/health req/s, {len(addresses):,} accounts loaded "
            f"({args.tool}, {args.connections} connections); API p99 {api_r['p99_ms']:.2f} ms",
            ratio,
            "x",
            f"bare aiohttp handler, same body size ({base_r['rps']:,.0f} req/s, "
            f"p99 {base_r['p99_ms']:.2f} ms)",
            f">= {TARGET_RATIO} of its req/s",
            ratio >= TARGET_RATIO,
            {"api": api_r, "baseline": base_r, "tool": args.tool},
        )
    )
    if results["api"]["errors"]:
        print("  API answered non-200:", results["api"]["statuses"], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
