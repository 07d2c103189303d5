"""Preflight: does this machine have what the project needs? (make doctor)

    python3 scripts/doctor.py [--for demo|test|all] [--quiet]

Runs before anything is installed, so it uses the standard library only and runs on
any Python 3.7+ (it is also what says that Python is too old). Each check names what is
missing and how to get it; the exit status is 1 if any check for the chosen target
failed. `--quiet` (what `make demo` and `make test` use) prints only failures.

The minimum versions are read from where they are declared, not repeated here: Python
from pyproject.toml's `requires-python`, Node.js from package.json's `engines` (the
floor of the pinned anvil's own `engines` field).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/agg_test"


class Check:
    def __init__(self, name: str, ok: bool, detail: str, fix: str = "") -> None:
        self.name, self.ok, self.detail, self.fix = name, ok, detail, fix

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        text = f"{mark} {self.name}: {self.detail}"
        if not self.ok and self.fix:
            text += f"\n     fix: {self.fix}"
        return text


def _version(text: str) -> tuple[int, ...]:
    m = re.search(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", text)
    if not m:
        return ()
    return tuple(int(g) for g in m.groups() if g is not None)


def _floor(spec: str) -> tuple[int, ...]:
    """The lower bound of a '>=X.Y' requirement."""
    m = re.search(r">=\s*([\d.]+)", spec)
    if not m:
        raise ValueError(f"no '>=' bound in {spec!r}")
    return _version(m.group(1))


def _dotted(v: tuple[int, ...]) -> str:
    return ".".join(map(str, v))


def python_floor() -> tuple[int, ...]:
    text = (ROOT / "pyproject.toml").read_text()
    m = re.search(r'^requires-python\s*=\s*"([^"]+)"', text, re.M)
    if not m:
        raise ValueError("pyproject.toml has no requires-python")
    return _floor(m.group(1))


def node_floor() -> tuple[int, ...]:
    spec = json.loads((ROOT / "package.json").read_text())["engines"]["node"]
    return _floor(spec)


def check_python(python: str) -> Check:
    need = python_floor()
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print('.'.join(map(str, sys.version_info[:3])))"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return Check("python", False, f"{python!r} does not run ({exc})", _python_fix(need))
    have = _version(out)
    ok = have >= need
    return Check(
        "python",
        ok,
        f"{python} is {_dotted(have)}, need >= {_dotted(need)}",
        _python_fix(need),
    )


def _python_fix(need: tuple[int, ...]) -> str:
    v = _dotted(need[:2])
    return (
        f"install Python {v} or newer with venv (Debian: apt-get install python3 python3-venv)"
        f" and run make with PY=python{v} (or newer) if it is not the default python3"
    )


def check_venv_module(python: str) -> Check:
    try:
        subprocess.run(
            [python, "-c", "import venv, ensurepip"], capture_output=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return Check(
            "python venv",
            False,
            f"{python} has no venv/ensurepip module",
            "apt-get install python3-venv (or the python3.X-venv matching your Python)",
        )
    return Check("python venv", True, "venv and ensurepip available")


def check_node() -> Check:
    need = node_floor()
    fix = f"install Node.js {_dotted(need)} or newer with npm (Debian: apt-get install nodejs npm)"
    exe = shutil.which("node")
    if exe is None:
        return Check("node", False, "node is not on PATH", fix)
    try:
        out = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return Check("node", False, f"node does not run ({exc})", fix)
    have = _version(out)
    return Check(
        "node",
        have >= need,
        f"{out.strip()}, need >= {_dotted(need)} (package.json engines: anvil's own floor)",
        fix,
    )


def check_npm() -> Check:
    exe = shutil.which("npm")
    if exe is None:
        return Check("npm", False, "npm is not on PATH", "apt-get install npm")
    try:
        out = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return Check("npm", False, f"npm does not run ({exc})", "reinstall npm")
    return Check("npm", out.returncode == 0, f"npm {out.stdout.strip()}", "reinstall npm")


def check_loopback() -> Check:
    """The devnet and the tests bind free ports on 127.0.0.1; the demo's API its
    configured one."""
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen(1)
    except OSError as exc:
        return Check(
            "loopback", False, f"cannot listen on 127.0.0.1 ({exc})", "bring up the lo interface"
        )
    return Check("loopback", True, "can listen on 127.0.0.1")


def demo_api_port() -> int | None:
    text = (ROOT / "config.toml").read_text()
    m = re.search(r"^\[api\][^\[]*?^port\s*=\s*(\d+)", text, re.M | re.S)
    return int(m.group(1)) if m else None


def check_port_free(port: int, what: str) -> Check:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return Check(
                f"port {port}",
                False,
                f"127.0.0.1:{port} ({what}) is in use",
                f"stop what listens there (ss -ltnp 'sport = :{port}') or set AGG_API__PORT",
            )
    return Check(f"port {port}", True, f"127.0.0.1:{port} ({what}) is free")


def check_postgres(url: str) -> Check:
    parts = urlsplit(url.replace("+asyncpg", ""))
    host, port = parts.hostname or "127.0.0.1", parts.port or 5432
    fix = (
        f"start PostgreSQL on {host}:{port} with trust auth for the tests (bash .ci/run "
        "starts the machine's cluster: pg_ctlcluster <version> main start) and create the "
        "database, or point AGG_TEST_PG_URL at another server"
    )
    try:
        with socket.create_connection((host, port), timeout=5):
            pass
    except OSError as exc:
        return Check("postgresql", False, f"{host}:{port} does not accept connections ({exc})", fix)
    return Check("postgresql", True, f"{host}:{port} accepts connections (AGG_TEST_PG_URL)")


CHROMIUM = "/usr/bin/chromium"


def check_chromium(path: str = CHROMIUM) -> Check:
    """The browser tests drive Debian's chromium (never Playwright's own download).
    Missing is fine when `make test`'s setup can install it (root or passwordless sudo,
    apt-get): scripts/install-chromium.sh does."""
    fix = "as root: apt-get update && apt-get install -y --no-install-recommends chromium"
    if os.access(path, os.X_OK):
        return Check("chromium", True, f"{path} (browser tests)")
    can_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if not can_root and shutil.which("sudo"):
        probe = subprocess.run(["sudo", "-n", "true"], capture_output=True, timeout=30, check=False)
        can_root = probe.returncode == 0
    if can_root and shutil.which("apt-get"):
        return Check("chromium", True, f"{path} missing; `make test` installs it (apt-get)")
    return Check(
        "chromium",
        False,
        f"{path} is missing and this user cannot install it (browser tests need it)",
        fix,
    )


def checks(target: str, python: str) -> list[Check]:
    out = [check_python(python), check_venv_module(python), check_node(), check_npm()]
    out.append(check_loopback())
    if target in ("demo", "all"):
        port = int(os.environ.get("AGG_API__PORT") or demo_api_port() or 0)
        if port:
            out.append(check_port_free(port, "the demo daemon's API"))
    if target in ("test", "all"):
        out.append(check_postgres(os.environ.get("AGG_TEST_PG_URL", DEFAULT_PG_URL)))
        out.append(check_chromium())
    return out


_TARGETS = {"demo": "`make demo`", "test": "`make test`", "all": "`make demo` and `make test`"}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description="Check what the project needs from this machine.")
    ap.add_argument("--for", dest="target", choices=("demo", "test", "all"), default="all")
    ap.add_argument("--python", default=os.environ.get("PY", "python3"))
    ap.add_argument("--quiet", action="store_true", help="print failures only")
    args = ap.parse_args(argv)
    results = checks(args.target, args.python)
    failed = [c for c in results if not c.ok]
    for c in results:
        if not args.quiet or not c.ok:
            print(c.line())
    if failed:
        print(f"doctor: {len(failed)} problem(s) for {_TARGETS[args.target]}; see fix: above")
        return 1
    if not args.quiet:
        print(f"doctor: everything {_TARGETS[args.target]} needs is here")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
