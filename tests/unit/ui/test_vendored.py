"""The vendored uPlot files are byte for byte node_modules' copies of the pinned version,
so the pin in package.json and the files the daemon serves cannot drift apart."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from aggregator.dashboard import UI_DIR

ROOT = Path(__file__).resolve().parents[3]
UPLOT = ROOT / "node_modules" / "uplot"
VENDORED = {
    "uPlot.iife.min.js": "dist/uPlot.iife.min.js",
    "uPlot.min.css": "dist/uPlot.min.css",
    "uPlot.LICENSE.txt": "LICENSE",
}


def _pinned() -> str:
    return json.loads((ROOT / "package.json").read_text())["dependencies"]["uplot"]


@pytest.mark.parametrize("name", sorted(VENDORED))
def test_vendored_file_is_node_modules_copy(name: str) -> None:
    assert (UPLOT / "package.json").exists(), "node_modules/uplot missing: run npm ci"
    assert (UI_DIR / name).read_bytes() == (UPLOT / VENDORED[name]).read_bytes(), (
        f"aggregator/ui/{name} differs from node_modules/uplot/{VENDORED[name]}: copy it "
        "again (aggregator/ui/VENDORED.md)"
    )


def test_installed_pinned_and_recorded_versions_agree() -> None:
    installed = json.loads((UPLOT / "package.json").read_text())["version"]
    assert _pinned() == installed, "package.json pins an exact uplot version; npm ci"
    lock = json.loads((ROOT / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/uplot"]["version"] == installed
    recorded = set(
        re.findall(
            r"\| `[^`]+` \| npm `uplot`[^|]*\| ([0-9.]+) \|", (UI_DIR / "VENDORED.md").read_text()
        )
    )
    assert recorded == {installed}
