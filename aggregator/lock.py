"""One daemon per SQLite store: an exclusive flock on `<db>.lock`, held for the process lifetime.

Two daemons writing one SQLite file would both index, both push and interleave
their checkpoints; SQLite's own locking only serialises the writes, it does not
stop that. The lock is advisory and kernel-held, so a crashed daemon (kill -9)
releases it with its file descriptors: there is no stale lock to clean up by hand.
PostgreSQL and in-memory SQLite stores take no lock here.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from sqlalchemy.engine import make_url


class StoreLockedError(RuntimeError):
    """Another process (or another daemon in this process) holds the store."""


def lock_path_for(store_url: str) -> Path | None:
    """`<db>.lock` next to a file-backed SQLite database; None for anything else."""
    url = make_url(store_url)
    if url.get_backend_name() != "sqlite":
        return None
    db = url.database
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db).resolve().with_name(Path(db).name + ".lock")


class StoreLock:
    """Exclusive, non-blocking flock. flock (not fcntl/lockf) on purpose: its lock
    belongs to the open file, so a second daemon in the same process is refused too."""

    def __init__(self, store_url: str) -> None:
        self.path = lock_path_for(store_url)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self.path is None or self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            db = self.path.with_name(self.path.name.removesuffix(".lock"))
            raise StoreLockedError(
                f"store {db} is in use by another aggregator ({holder}; lock file {self.path}); "
                "stop that daemon first, or give this one its own store.url"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # The pid is only for the message a second daemon prints: the kernel lock,
        # not this content, decides who holds the store.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        # Closing the descriptor drops the flock. The file stays: unlinking it would
        # race a newcomer that opened the old inode and would then lock a ghost.
        os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        raw = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        raw = ""
    return f"pid {raw}" if raw.isdigit() else "pid unknown"
