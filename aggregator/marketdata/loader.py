"""One strict loader for price CSVs (the shipped history and any other file).

Format: header `timestamp_utc,open,high,low,close` or `timestamp_utc,close`; one row per
hourly bar (`YYYY-MM-DDTHH:00:00Z`, the bar's open time) or per UTC day (`YYYY-MM-DD`).
The whole file must use one of the two.

Invariants:
- Every defect is an error naming the file and the 1-based line number (the header is
  line 1): a malformed row (field count, timestamp format, off-grid minute), a non-numeric
  or non-positive price, an OHLC row whose high/low do not bracket open and close, a
  duplicate or out-of-order timestamp, a gap in the time grid. A bad header is always an
  error.
- A caller may skip defect kinds (`SkipPolicy.kinds`); what was skipped is counted per
  kind in `PriceSeries.skipped`, never dropped silently. A skipped gap stays a hole.
- Known bad rows are named one by one (`SkipPolicy.known`, timestamp -> KnownRow). A
  `drop` row is removed and its hole is expected; a `keep` row is a documented tolerance.
  Both are counted, and a listed timestamp absent from the file is an error (the list
  must not go stale silently).
- The result sits on a full regular grid: `close[i]` is the price at the close time
  `start + (i + 1) * step` seconds; holes are NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]
HOUR = 3600
DAY = 86400
STEP = {"hourly": HOUR, "daily": DAY}
Frequency = Literal["hourly", "daily"]

# Defect kinds a caller may choose to skip (and count).
SKIP_KINDS = (
    "malformed",
    "non_numeric",
    "non_positive",
    "ohlc",
    "duplicate",
    "out_of_order",
    "gap",
)
HEADERS: dict[tuple[str, ...], tuple[str, ...]] = {
    ("timestamp_utc", "open", "high", "low", "close"): ("open", "high", "low", "close"),
    ("timestamp_utc", "close"): ("close",),
}


class CsvError(ValueError):
    """A defect in a price CSV: names the file, the line and the kind."""

    def __init__(self, path: Path | str, line: int, kind: str, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.kind = kind
        super().__init__(f"{self.path}:{line}: {kind}: {message}")


@dataclass(frozen=True)
class KnownRow:
    """A row SOURCES.md flags: `drop` removes it (its hole is expected), `keep` keeps it
    as a documented tolerance. `reason` says why, for the docs and the counts."""

    action: Literal["drop", "keep"]
    reason: str


@dataclass(frozen=True)
class SkipPolicy:
    kinds: frozenset[str] = frozenset()
    known: Mapping[str, KnownRow] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(SKIP_KINDS)
        if unknown:
            raise ValueError(f"unknown skip kinds {sorted(unknown)}; known: {SKIP_KINDS}")


STRICT = SkipPolicy()


@dataclass(frozen=True)
class PriceSeries:
    path: str
    frequency: Frequency
    start: int  # unix seconds of the first bar's open
    columns: dict[str, F64]  # "close" always; open/high/low when the file has them
    skipped: dict[str, int]  # defect kind (or "known_drop"/"known_keep") -> count

    @property
    def step(self) -> int:
        return STEP[self.frequency]

    @property
    def close(self) -> F64:
        return self.columns["close"]

    def __len__(self) -> int:
        return int(self.close.size)

    def close_times(self) -> NDArray[np.int64]:
        """Unix seconds at which each close is observed (bar open + one step)."""
        return self.start + self.step * (np.arange(len(self), dtype=np.int64) + 1)

    def last_close_time(self) -> int:
        return self.start + self.step * len(self)


def _parse_ts(text: str) -> tuple[Frequency, int] | None:
    try:
        if len(text) == 10:
            d = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
            return "daily", int(d.timestamp())
        if len(text) == 20 and text.endswith("Z"):
            d = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            if d.minute or d.second:
                return None
            return "hourly", int(d.timestamp())
    except ValueError:
        return None
    return None


def load_csv(path: Path | str, policy: SkipPolicy = STRICT) -> PriceSeries:
    path = Path(path)
    skipped: dict[str, int] = {}

    def defect(line: int, kind: str, message: str) -> None:
        if kind not in policy.kinds:
            raise CsvError(path, line, kind, message)
        skipped[kind] = skipped.get(kind, 0) + 1

    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        raise CsvError(path, 1, "header", "empty file")
    header = tuple(h.strip() for h in lines[0].split(","))
    if header not in HEADERS:
        raise CsvError(
            path,
            1,
            "header",
            f"got {','.join(header)!r}, want one of "
            + " or ".join(repr(",".join(h)) for h in HEADERS),
        )
    names = HEADERS[header]
    freq: Frequency | None = None
    ts_list: list[int] = []
    rows: list[tuple[float, ...]] = []
    lines_of: list[int] = []
    seen_known: set[str] = set()
    for i, raw in enumerate(lines[1:], start=2):
        if not raw.strip():
            defect(i, "malformed", "empty line")
            continue
        fields = raw.split(",")
        if len(fields) != len(header):
            defect(i, "malformed", f"{len(fields)} fields, header has {len(header)}")
            continue
        ts_text = fields[0].strip()
        parsed = _parse_ts(ts_text)
        if parsed is None or (freq is not None and parsed[0] != freq):
            defect(i, "malformed", f"timestamp {ts_text!r} is not on the file's hourly/daily grid")
            continue
        freq = parsed[0]
        known = policy.known.get(ts_text)
        if known is not None:
            seen_known.add(ts_text)
            if known.action == "drop":
                skipped["known_drop"] = skipped.get("known_drop", 0) + 1
                # The hole it leaves is expected: keep its timestamp for the grid check.
                ts_list.append(parsed[1])
                rows.append((math.nan,) * len(names))
                lines_of.append(i)
                continue
            skipped["known_keep"] = skipped.get("known_keep", 0) + 1
        try:
            vals = tuple(float(f) for f in fields[1:])
        except ValueError:
            defect(i, "non_numeric", f"price fields {fields[1:]!r}")
            continue
        if not all(math.isfinite(v) for v in vals):
            defect(i, "non_numeric", f"non-finite price in {fields[1:]!r}")
            continue
        if min(vals) <= 0:
            defect(i, "non_positive", f"price <= 0 in {fields[1:]!r}")
            continue
        if len(vals) == 4:
            o, h, lo, c = vals
            if h < max(o, c, lo) or lo > min(o, c):
                defect(i, "ohlc", f"high/low do not bracket open/close: {fields[1:]!r}")
                continue
        ts_list.append(parsed[1])
        rows.append(vals)
        lines_of.append(i)
    missing = set(policy.known) - seen_known
    if missing:
        raise CsvError(path, 0, "known", f"known rows not in the file: {sorted(missing)}")
    if freq is None or not rows:
        raise CsvError(path, 2, "malformed", "no data rows")
    step = STEP[freq]
    # Order and grid, in file order: duplicates and out-of-order rows are defects of the
    # later row; a gap is a defect of the row after it.
    keep_ts: list[int] = []
    keep_rows: list[tuple[float, ...]] = []
    for t, r, line in zip(ts_list, rows, lines_of, strict=True):
        if keep_ts:
            prev = keep_ts[-1]
            if t == prev:
                defect(line, "duplicate", f"timestamp repeats line before ({t})")
                continue
            if t < prev:
                defect(line, "out_of_order", "timestamp earlier than the row before")
                continue
            if t - prev != step:
                missing_steps = (t - prev) // step - 1
                if (t - prev) % step or "gap" not in policy.kinds:
                    raise CsvError(
                        path,
                        line,
                        "gap",
                        f"{(t - prev) / step - 1:g} missing {freq} step(s) before",
                    )
                skipped["gap"] = skipped.get("gap", 0) + int(missing_steps)
        keep_ts.append(t)
        keep_rows.append(r)
    t0 = keep_ts[0]
    n = (keep_ts[-1] - t0) // step + 1
    idx = (np.asarray(keep_ts, np.int64) - t0) // step
    data = np.asarray(keep_rows, np.float64)
    cols: dict[str, F64] = {}
    for j, name in enumerate(names):
        col = np.full(n, np.nan)
        col[idx] = data[:, j]
        cols[name] = col
    return PriceSeries(str(path), freq, t0, cols, skipped)
