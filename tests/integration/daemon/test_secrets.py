"""The keeper key never leaves the process: `aggregator run` with a known key (the devnet
keeper's, so the pusher really signs with it) at DEBUG level; every log line, every API
response body (incl. errors and admin), /metrics, the SSE stream, a forced crash trace
(faulthandler on SIGABRT) and a failed start-up's traceback are searched for the key in
every spelling: with and without 0x, lower and upper case."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from devkit import manager
from devkit.anvil import DEV_KEYS, free_port

KEY = DEV_KEYS[1]
ADMIN = "secrets-test-admin-token-4242"
SPELLINGS = {KEY, KEY.upper(), KEY[2:], KEY[2:].upper(), "0X" + KEY[2:].upper()}


def leaks(text: str) -> list[str]:
    found = [s for s in SPELLINGS if s in text]
    # Any case mix of the 64 digits, too.
    if KEY[2:].lower() in text.lower():
        found.append("case-insensitive body")
    return found


def _proc(devnet: manager.DevnetState, db: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "AGG_STORE__URL": f"sqlite+aiosqlite:///{db}",
        "AGG_API__PORT": str(port),
        "AGG_KEEPER_KEY": KEY,
        "AGG_ADMIN_TOKEN": ADMIN,
        "AGG_LOG_FORMAT": "json",
        "PYTHONFAULTHANDLER": "1",
    }
    cmd = [sys.executable, "-m", "aggregator.cli", "-v", "-c"]
    cmd += [str(Path(devnet.root) / "config.toml"), "run"]
    with log.open("ab") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=out)


def _http(port: int, path: str, method: str = "GET", token: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _stream(port: int, seconds: float) -> str:
    chunks = []
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/stream", timeout=seconds) as r:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                line = r.readline()
                if not line:
                    break
                chunks.append(line.decode(errors="replace"))
    except OSError:
        pass
    return "".join(chunks)


def test_keeper_key_appears_nowhere(devnet: manager.DevnetState, tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "daemon.log"
    proc = _proc(devnet, tmp_path / "s.db", port, log)
    bodies: dict[str, str] = {}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if _http(port, "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(1)
        time.sleep(8)  # a few push cycles: the key signs real transactions meanwhile
        user = devnet.accounts["users"][0]
        paths = [
            "/healthz",
            "/readyz",
            "/metrics",
            "/openapi.json",
            "/v1/chains",
            "/v1/prices",
            "/v1/prices/WETH",
            "/v1/accounts",
            f"/v1/accounts/{user}",
            f"/v1/accounts/{user}/health",
            "/v1/accounts/not-an-address",
            "/v1/nope",
            "/v1/accounts?tier=bogus",
        ]
        for p in paths:
            bodies[p] = _http(port, p)[1]
        for tok in (None, "wrong", ADMIN):
            for action in ("pause", "resume"):
                bodies[f"POST {action} {tok}"] = _http(port, f"/v1/admin/{action}", "POST", tok)[1]
        bodies["/v1/stream"] = _stream(port, 3)
        chains = bodies["/v1/chains"]
        assert devnet.accounts["keeper"].lower() in chains.lower()  # the address is shown
        # A crash trace: faulthandler dumps every thread's stack on SIGABRT.
        proc.send_signal(signal.SIGABRT)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # A failed start-up with a traceback: the store cannot be created.
    bad = _proc(devnet, Path("/proc/no-such-dir/s.db"), free_port(), log)
    assert bad.wait(90) != 0
    text = log.read_text(errors="replace")
    assert "Fatal Python error: Aborted" in text or "Current thread" in text, text[-2000:]
    assert '"level": "debug"' in text  # -v: the most verbose logging was searched
    for where, body in {**bodies, "log": text}.items():
        assert not leaks(body), f"keeper key in {where}: {leaks(body)}"
    assert sum(len(b) for b in bodies.values()) > 10_000  # the responses were real
