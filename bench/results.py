"""One result format for every benchmark.

A benchmark calls `record(Figure(...))` for each figure it measures: the figure is
printed as a line, and when `python -m bench` runs it (env AGG_BENCH_RESULTS names a
file) also appended there as one JSON line. `python -m bench` then writes
bench/results/latest.json and the table in docs/performance.md from those lines, so
the table can only show what a run measured.

Every figure is a ratio against a baseline from the same run (or an absolute figure
where the issue sets an absolute limit, e.g. peak RSS): these machines are shared and
noisy, and a ratio survives a busy neighbour far better than a time does.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

RESULTS_ENV = "AGG_BENCH_RESULTS"


@dataclass(frozen=True)
class Figure:
    key: str  # stable id: the row of docs/performance.md it fills
    figure: str  # what was measured, in words
    value: float  # the measured figure (ratio, or absolute in `unit`)
    unit: str  # "x" for a ratio, else the unit of an absolute figure
    baseline: str  # what it is measured against, in words ("-" for absolute limits)
    target: str  # the limit, in words, e.g. "<= 2x"
    met: bool | None  # None: reported, no pass/fail limit
    detail: dict[str, Any] = field(default_factory=dict)  # raw numbers behind it

    def line(self) -> str:
        verdict = {True: "met", False: "MISSED", None: "reported"}[self.met]
        return (
            f"RESULT {self.key}: {self.value:,.3g} {self.unit} "
            f"(baseline: {self.baseline}; target {self.target}: {verdict})"
        )


def record(fig: Figure) -> None:
    print(fig.line(), flush=True)
    path = os.environ.get(RESULTS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(asdict(fig), sort_keys=True) + "\n")


def load(path: Path) -> list[Figure]:
    if not path.exists():
        return []
    return [Figure(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict[str, Any]:
    """What the figures were measured on (they are only comparable on a like box)."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gb"] = round(int(line.split()[1]) / 2**20, 1)
                break
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    for dist in ("numpy", "numba", "scipy", "aiohttp", "web3"):
        with contextlib.suppress(PackageNotFoundError):
            info[dist] = version(dist)
    return info
