"""Where numba keeps this package's compiled kernels: a directory per source digest.

numba invalidates a cached function only when its own file changes. A kernel in
kernels.py that calls `impact.curve_impact` kept the previous liquidity curve after
impact.py changed, so a daemon upgraded in place rated with the old rule until its
cache was removed (found when the beyond-band continuation landed: the new test of it
passed on a fresh clone and failed in a checkout that had run the old code).

Invariants:
- The cache directory is `<base>/<digest>`, the digest covering every Python file of
  this package: any change to any of them starts from an empty directory, so a cached
  kernel is never older than a function it calls. `<base>` is NUMBA_CACHE_DIR when set
  (the benchmarks' cold starts point it at a new directory), else this package's
  `__pycache__/numba`.
- `configure()` runs before any module of this package compiles or loads a kernel: the
  package's `__init__` calls it first, and numba reads the directory when a function
  is decorated.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def source_digest(package_dir: Path = PACKAGE_DIR) -> str:
    """sha256 of the package's Python files (names and bytes, in name order), short."""
    h = hashlib.sha256()
    for path in sorted(package_dir.glob("*.py")):
        h.update(path.name.encode())
        h.update(b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def cache_dir(base: str | None = None, package_dir: Path = PACKAGE_DIR) -> Path:
    root = Path(base) if base else package_dir / "__pycache__" / "numba"
    return root / source_digest(package_dir)


def configure() -> Path:
    """Point numba's cache at this source's directory; returns it."""
    from numba.core import config

    d = cache_dir(os.environ.get("NUMBA_CACHE_DIR") or None)
    config.CACHE_DIR = str(d)  # type: ignore[attr-defined]  # numba sets it from the env
    return d
