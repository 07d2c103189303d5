"""python -m bench: run every benchmark module in bench/ (each as `python -m bench.<name>`).

Each module runs in its own process with its default arguments, so one benchmark's
imports, threads or event loop never skew another's numbers. Exit status is
non-zero if any benchmark failed; the others still run.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import time
from pathlib import Path


def modules() -> list[str]:
    here = Path(__file__).resolve().parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))


def main(argv: list[str]) -> int:
    names = argv or modules()
    failed = []
    for name in names:
        print(f"=== bench.{name} ===", flush=True)
        start = time.perf_counter()
        rc = subprocess.call([sys.executable, "-m", f"bench.{name}"])
        print(
            f"=== bench.{name}: exit {rc} after {time.perf_counter() - start:.1f}s ===\n",
            flush=True,
        )
        if rc != 0:
            failed.append(name)
    if failed:
        print("failed:", ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
