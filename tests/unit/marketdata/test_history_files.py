"""The shipped history: byte-identical to its inventory, every file loads strictly with
only its documented known rows, and SOURCES.md keeps each file's provenance."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest

from aggregator.marketdata import history

SOURCES = (history.HISTORY_DIR / "SOURCES.md").read_text()


def _inventory() -> dict[str, tuple[int, str]]:
    rows = {}
    for m in re.finditer(
        r"^\| `([^`]+)`[^|]*\|[^|]*\|[^|]*\| (\d+) \| ([0-9a-f]{12}) \|$", SOURCES, re.M
    ):
        rows[m.group(1)] = (int(m.group(2)), m.group(3))
    return rows


def test_every_shipped_csv_is_in_the_inventory_and_the_catalogue() -> None:
    on_disk = {p.name for p in history.HISTORY_DIR.glob("*.csv")}
    assert on_disk == set(_inventory()) == set(history.FILES)


@pytest.mark.parametrize("name", sorted(history.FILES))
def test_sha256_prefix_matches_the_inventory(name: str) -> None:
    digest = hashlib.sha256((history.HISTORY_DIR / name).read_bytes()).hexdigest()[:12]
    assert digest == _inventory()[name][1] == history.FILES[name].sha256_12


@pytest.mark.parametrize("name", sorted(history.FILES))
def test_every_shipped_file_loads_cleanly(name: str) -> None:
    s = history.load(name)
    rows, _sha = _inventory()[name]
    known = history.KNOWN_ROWS.get(name, {})
    drops = sum(1 for k in known.values() if k.action == "drop")
    keeps = len(known) - drops
    assert len(s) == rows  # a full grid: no gap anywhere
    assert int(np.isnan(s.close).sum()) == drops
    assert s.skipped == {k: v for k, v in (("known_drop", drops), ("known_keep", keeps)) if v}
    assert s.frequency == history.FILES[name].frequency
    assert np.nanmin(s.close) > 0
