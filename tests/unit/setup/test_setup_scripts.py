"""The preflight (scripts/doctor.py) and the quiet/loud setup step (scripts/step.sh)."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _doctor() -> ModuleType:
    spec = importlib.util.spec_from_file_location("doctor", ROOT / "scripts" / "doctor.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


doctor = _doctor()


def test_minimum_versions_come_from_where_they_are_declared() -> None:
    assert doctor.python_floor() == (3, 11)
    assert doctor.node_floor() == (20,)


def test_this_python_passes_and_a_missing_one_is_named_with_the_fix() -> None:
    assert doctor.check_python(sys.executable).ok
    bad = doctor.check_python("/nonexistent/python9")
    assert not bad.ok
    assert "/nonexistent/python9" in bad.detail and "Python 3.11" in bad.fix


def test_an_old_python_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "python_floor", lambda: (sys.version_info[0] + 1, 0))
    c = doctor.check_python(sys.executable)
    assert not c.ok and "need >=" in c.detail


def test_node_missing_from_path_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    c = doctor.check_node()
    assert not c.ok and "not on PATH" in c.detail and "Node.js 20" in c.fix


def test_a_port_in_use_and_an_unreachable_postgres_fail() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        busy = doctor.check_port_free(port, "test")
        assert not busy.ok and str(port) in busy.detail
        # Nothing accepts on a port we bound but never listen on.
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            url = f"postgresql+asyncpg://postgres@127.0.0.1:{closed.getsockname()[1]}/x"
            pg = doctor.check_postgres(url)
    assert not pg.ok and "AGG_TEST_PG_URL" in pg.fix


def test_doctor_exit_status_and_quiet_output() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "doctor.py"), "--for", "demo", "--quiet"],
        capture_output=True,
        text=True,
        env={"PATH": "/nonexistent", "PY": sys.executable},
        check=False,
    )
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    # Quiet: only failures (node and npm are off PATH here) and the verdict.
    assert all(not ln.startswith("ok ") for ln in lines)
    assert any(ln.startswith("FAIL node") for ln in lines)
    assert any(ln.startswith("FAIL npm") for ln in lines)
    # Node and npm; the demo port too when something else listens on it right now.
    fails = sum(ln.startswith("FAIL ") for ln in lines)
    assert fails in (2, 3)
    assert lines[-1].startswith(f"doctor: {fails} problem(s) for `make demo`")


def _step(tmp_path: Path, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ROOT / "scripts" / "step.sh", "a step", tmp_path / "logs" / "s.log", "bash", "-c", script],
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_step_that_works_prints_one_line(tmp_path: Path) -> None:
    out = _step(tmp_path, "echo lots; echo of; echo output")
    assert out.returncode == 0
    assert out.stdout.splitlines() == [out.stdout.strip()]
    assert out.stdout.startswith("setup: a step ... ok")
    assert (tmp_path / "logs" / "s.log").read_text() == "lots\nof\noutput\n"


def test_a_failing_step_shows_its_cause(tmp_path: Path) -> None:
    out = _step(tmp_path, "echo the real cause; exit 3")
    assert out.returncode == 3
    assert "FAILED (exit 3)" in out.stderr and "the real cause" in out.stderr


def test_npm_lock_drift_is_one_line_with_the_fix(tmp_path: Path) -> None:
    npm_text = (
        "npm error code EUSAGE\n"
        "npm error `npm ci` can only install packages when your package.json and "
        "package-lock.json or npm-shrinkwrap.json are in sync. Please update your lock "
        "file with `npm install` before continuing.\n"
        "npm error Missing: @foundry-rs/anvil-darwin-amd64@1.7.1 from lock file\n"
        + "npm error   --workspaces usage text\n"
        * 60
    )
    log = tmp_path / "npm.txt"
    log.write_text(npm_text)
    out = _step(tmp_path, f"cat {log}; exit 1")
    assert out.returncode == 1
    lines = out.stderr.splitlines()
    assert len(lines) == 2, out.stderr
    assert "Missing: @foundry-rs/anvil-darwin-amd64@1.7.1" in lines[1]
    assert "npm install --package-lock-only" in lines[1]
    assert "usage text" not in out.stderr


def test_the_lock_lists_every_platform_of_anvil() -> None:
    import json

    lock = json.loads((ROOT / "package-lock.json").read_text())
    anvil = lock["packages"]["node_modules/@foundry-rs/anvil"]
    for name in anvil["optionalDependencies"]:
        assert f"node_modules/{name}" in lock["packages"], name


def test_chromium_present_missing_installable_and_missing_for_good(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    browser = tmp_path / "chromium"
    browser.write_text("#!/bin/sh\n")
    browser.chmod(0o755)
    assert doctor.check_chromium(str(browser)).ok
    missing = str(tmp_path / "absent")
    # root with apt-get: `make test` installs it, so the preflight passes and says so.
    monkeypatch.setattr(doctor.os, "geteuid", lambda: 0)
    monkeypatch.setattr(doctor.shutil, "which", lambda name: f"/usr/bin/{name}")
    installable = doctor.check_chromium(missing)
    assert installable.ok and "installs it" in installable.detail
    # Neither root nor sudo: fails, naming the path and the command that fixes it.
    monkeypatch.setattr(doctor.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(doctor.shutil, "which", lambda name: None)
    c = doctor.check_chromium(missing)
    assert not c.ok and missing in c.detail and "apt-get install" in c.fix and "chromium" in c.fix


@pytest.mark.parametrize(
    ("name", "line"),
    [
        ("chromium", "CHROMIUM=/usr/bin/chromium"),
        ("wrk", "if command -v wrk >/dev/null 2>&1; then"),
    ],
)
def test_install_scripts_fail_clearly_without_root(tmp_path: Path, name: str, line: str) -> None:
    """scripts/install-<name>.sh as a user that cannot install: exit 1 naming the fix.
    The script is copied (with scripts/apt-install.sh) and made to find the tool missing;
    PATH holds only a fake `id` (non-root), so there is no sudo and nothing can be
    installed for real."""
    script = (ROOT / "scripts" / f"install-{name}.sh").read_text()
    assert line in script
    missing = f"CHROMIUM={tmp_path}/none" if name == "chromium" else "if false; then"
    copy = tmp_path / "install.sh"
    copy.write_text(script.replace(line, missing))
    shutil.copy(ROOT / "scripts" / "apt-install.sh", tmp_path / "apt-install.sh")
    (tmp_path / "apt-install.sh").chmod(0o755)
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    (fakebin / "id").write_text("#!/bin/sh\necho 1000\n")
    (fakebin / "id").chmod(0o755)
    out = subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(copy)],
        capture_output=True,
        text=True,
        env={"PATH": str(fakebin)},
        timeout=30,
        check=False,
    )
    assert out.returncode == 1, out.stderr
    assert out.stderr.startswith(f"{name}: missing"), out.stderr
    assert "cannot install packages" in out.stderr and "apt-get install" in out.stderr
