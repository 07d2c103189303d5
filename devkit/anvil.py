"""Start and stop real anvil nodes (from the pinned npm package) on free loopback ports."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# anvil's well-known dev mnemonic: account 0 deploys, 1 is the keeper, 2.. are users.
DEV_KEYS = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
]


class AnvilError(RuntimeError):
    pass


def anvil_binary() -> Path:
    """The platform binary shipped inside @foundry-rs/anvil's optional dependency.

    Calling it directly (not the node wrapper in node_modules/.bin) means a signal
    reaches anvil itself, so stopping never leaves an orphan behind.
    """
    override = os.environ.get("AGG_ANVIL_BIN")
    if override:
        return Path(override)
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), platform.machine().lower()
    )
    system = platform.system().lower()
    path = ROOT / "node_modules" / "@foundry-rs" / f"anvil-{system}-{arch}" / "bin" / "anvil"
    if not path.exists():
        raise AnvilError(f"anvil binary not found at {path}; run `npm ci` (or `make setup`) first")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rpc_call(
    url: str, method: str, params: list[object] | None = None, timeout: float = 10
) -> object:
    """A minimal synchronous JSON-RPC call, for process management and test setup."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
    req = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        answer = json.loads(resp.read())
    if "error" in answer:
        raise AnvilError(f"{method} failed on {url}: {answer['error']}")
    return answer["result"]


def mined_receipt(url: str, tx_hash: str, timeout: float = 60.0) -> dict[str, Any] | None:
    """The receipt of `tx_hash`, polled until mined; None when it is not within `timeout`
    (the caller says what that means, and what a failed status means)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        receipt = rpc_call(url, "eth_getTransactionReceipt", [tx_hash])
        if isinstance(receipt, dict):
            return receipt
        time.sleep(0.1)
    return None


@dataclass
class AnvilNode:
    chain_id: int
    port: int = 0
    fork_url: str | None = None
    fork_block: int | None = None
    block_time: float | None = None
    log_path: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [
            str(anvil_binary()),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--chain-id",
            str(self.chain_id),
            "--accounts",
            str(len(DEV_KEYS)),
            "--silent",
        ]
        if self.fork_url:
            cmd += ["--fork-url", self.fork_url, "--no-rate-limit"]
            if self.fork_block is not None:
                cmd += ["--fork-block-number", str(self.fork_block)]
        if self.block_time:
            cmd += ["--block-time", str(self.block_time)]
        return cmd + self.extra_args

    def start(self, timeout: float = 30.0) -> AnvilNode:
        if self.process is not None:
            raise AnvilError("already started")
        if not self.port:
            self.port = free_port()
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            # A new session: Ctrl-C in a terminal goes to our process group, and
            # we want to stop anvil ourselves, in order, not race the signal.
            self.process = subprocess.Popen(
                self.command(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AnvilError(
                    f"anvil (chain {self.chain_id}, port {self.port}) exited with "
                    f"{self.process.returncode}; see {self.log_path or 'its output'}"
                )
            try:
                got = int(str(rpc_call(self.url, "eth_chainId", timeout=2)), 16)
            except (OSError, urllib.error.URLError, AnvilError):
                time.sleep(0.05)
                continue
            if got != self.chain_id:
                self.stop()
                raise AnvilError(f"anvil on {self.url} reports chain id {got}, not {self.chain_id}")
            return self
        self.stop()
        raise AnvilError(f"anvil on port {self.port} did not answer within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)

    def rpc(self, method: str, params: list[object] | None = None) -> object:
        return rpc_call(self.url, method, params)

    def mine(self, blocks: int = 1) -> None:
        self.rpc("anvil_mine", [hex(blocks)])

    def block_number(self) -> int:
        return int(str(self.rpc("eth_blockNumber")), 16)

    def __enter__(self) -> AnvilNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def kill_pid(pid: int, timeout: float = 10.0) -> bool:
    """SIGTERM then SIGKILL a process we started earlier (from a pid file)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return True
