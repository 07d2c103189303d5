"""aggregator.lock: one daemon per SQLite store, across processes and within one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aggregator.lock import StoreLock, StoreLockedError, lock_path_for


def test_lock_path_only_for_file_backed_sqlite(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/a.db"
    assert lock_path_for(url) == tmp_path / "a.db.lock"
    assert lock_path_for("sqlite+aiosqlite:///:memory:") is None
    assert lock_path_for("postgresql+asyncpg://u@h/db") is None


def test_second_holder_in_this_process_is_refused_with_pid_and_path(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/a.db"
    first, second = StoreLock(url), StoreLock(url)
    first.acquire()
    try:
        with pytest.raises(StoreLockedError) as err:
            second.acquire()
        msg = str(err.value)
        assert f"pid {os.getpid()}" in msg
        assert str(tmp_path / "a.db") in msg and "a.db.lock" in msg
        assert not second.held
    finally:
        first.release()
    second.acquire()  # released: the next one gets it
    second.release()


HOLD = """
import sys, time
from aggregator.lock import StoreLock
lock = StoreLock(sys.argv[1]); lock.acquire(); print("held", flush=True)
sys.stdin.read()  # until the parent closes stdin (or kills us)
"""


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_another_process_holds_it_until_it_exits_or_dies(tmp_path: Path, how: str) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/a.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        mine = StoreLock(url)
        with pytest.raises(StoreLockedError, match=rf"pid {proc.pid}\b"):
            mine.acquire()
        if how == "kill":
            proc.kill()  # kill -9: the kernel drops the lock, no stale file to clean
        else:
            assert proc.stdin is not None
            proc.stdin.close()
        proc.wait(10)
        mine.acquire()
        assert mine.held
        mine.release()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()
        if proc.stdin and not proc.stdin.closed:
            proc.stdin.close()
