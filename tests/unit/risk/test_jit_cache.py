"""numba's cache per source digest (aggregator/risk/jit_cache.py): a cached kernel is
never older than a jitted function of another file that it calls."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numba
import pytest

import aggregator.risk  # noqa: F401  (configures the cache)
from aggregator.risk import jit_cache, kernels

REPO = Path(__file__).resolve().parents[3]


def test_the_package_kernels_are_cached_under_the_source_digest() -> None:
    want = jit_cache.cache_dir(os.environ.get("NUMBA_CACHE_DIR") or None)
    assert str(want) == numba.config.CACHE_DIR
    assert want.name == jit_cache.source_digest()
    assert kernels.totals_kernel._cache._cache_path.startswith(str(want))


def test_any_source_change_moves_the_directory(tmp_path: Path) -> None:
    for name in ("a.py", "b.py"):
        (tmp_path / name).write_text(f"# {name}\n")
    before = jit_cache.cache_dir(str(tmp_path / "cache"), tmp_path)
    assert before.parent == tmp_path / "cache"
    (tmp_path / "b.py").write_text("# b.py, changed\n")
    assert jit_cache.cache_dir(str(tmp_path / "cache"), tmp_path) != before
    (tmp_path / "b.py").write_text("# b.py\n")
    assert jit_cache.cache_dir(str(tmp_path / "cache"), tmp_path) == before


@pytest.mark.timeout(180)
def test_a_kernel_calling_a_changed_function_of_another_file_is_recompiled(
    tmp_path: Path,
) -> None:
    """The upgrade case: g (a.py, cached) calls f (b.py, cached); b.py changes and a.py
    does not. numba alone would load g's cached machine code with the old f inlined."""
    pkg = tmp_path / "jitpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        textwrap.dedent(
            """
            from pathlib import Path
            from numba.core import config
            from aggregator.risk.jit_cache import cache_dir
            config.CACHE_DIR = str(cache_dir(None, Path(__file__).parent))
            """
        )
    )
    (pkg / "a.py").write_text(
        "from numba import njit\nfrom jitpkg.b import f\n\n"
        "@njit(cache=True)\ndef g(x):\n    return f(x)\n"
    )

    def b(add: int) -> None:
        (pkg / "b.py").write_text(
            f"from numba import njit\n\n@njit(cache=True)\ndef f(x):\n    return x + {add}\n"
        )

    def run() -> str:
        env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
        env.pop("NUMBA_CACHE_DIR", None)
        out = subprocess.run(
            [sys.executable, "-c", "from jitpkg.a import g; print(g(1))"],
            env=env, capture_output=True, text=True, check=True, timeout=120,
        )  # fmt: skip
        return out.stdout.strip()

    b(1)
    assert run() == "2"
    assert run() == "2"  # from the cache
    b(2)
    assert run() == "3"
