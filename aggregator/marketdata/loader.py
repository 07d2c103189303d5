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
    defects = _Defects(path, policy)
    lines = path.read_text(encoding="utf-8").splitlines()
    names = _read_header(path, lines)
    rows = _read_rows(lines, len(names) + 1, names, defects)
    missing = set(policy.known) - rows.seen_known
    if missing:
        raise CsvError(path, 0, "known", f"known rows not in the file: {sorted(missing)}")
    if rows.freq is None or not rows.values:
        raise CsvError(path, 2, "malformed", "no data rows")
    keep_ts, keep_rows = _on_grid(rows, STEP[rows.freq], defects)
    cols = _grid_columns(keep_ts, keep_rows, names, STEP[rows.freq])
    return PriceSeries(str(path), rows.freq, keep_ts[0], cols, defects.skipped)


class _Defects:
    """Raises a defect, or counts it when the policy skips its kind."""

    def __init__(self, path: Path, policy: SkipPolicy) -> None:
        self.path = path
        self.policy = policy
        self.skipped: dict[str, int] = {}

    def __call__(self, line: int, kind: str, message: str) -> None:
        if kind not in self.policy.kinds:
            raise CsvError(self.path, line, kind, message)
        self.count(kind)

    def count(self, kind: str, n: int = 1) -> None:
        self.skipped[kind] = self.skipped.get(kind, 0) + n


def _read_header(path: Path, lines: list[str]) -> tuple[str, ...]:
    """The price column names the header announces (a bad header is always an error)."""
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
    return HEADERS[header]


@dataclass
class _Rows:
    """The rows that passed the per-row checks, in file order, with their line numbers."""

    freq: Frequency | None = None
    ts: list[int] = field(default_factory=list)
    values: list[tuple[float, ...]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    seen_known: set[str] = field(default_factory=set)

    def append(self, ts: int, values: tuple[float, ...], line: int) -> None:
        self.ts.append(ts)
        self.values.append(values)
        self.lines.append(line)


def _read_rows(lines: list[str], n_fields: int, names: tuple[str, ...], defect: _Defects) -> _Rows:
    """Per-row checks (shape, timestamp, known rows, prices); order and grid come later."""
    out = _Rows()
    for i, raw in enumerate(lines[1:], start=2):
        parsed = _row_time(i, raw, n_fields, out.freq, defect)
        if parsed is None:
            continue
        ts_text, fields, (out.freq, ts) = parsed
        known = defect.policy.known.get(ts_text)
        if known is not None:
            out.seen_known.add(ts_text)
            if known.action == "drop":
                defect.count("known_drop")
                # The hole it leaves is expected: keep its timestamp for the grid check.
                out.append(ts, (math.nan,) * len(names), i)
                continue
            defect.count("known_keep")
        vals = _row_prices(i, fields, defect)
        if vals is not None:
            out.append(ts, vals, i)
    return out


def _row_time(
    i: int, raw: str, n_fields: int, freq: Frequency | None, defect: _Defects
) -> tuple[str, list[str], tuple[Frequency, int]] | None:
    """(timestamp text, fields, (frequency, unix seconds)) of a well-formed row, else
    None once the defect is reported."""
    if not raw.strip():
        defect(i, "malformed", "empty line")
        return None
    fields = raw.split(",")
    if len(fields) != n_fields:
        defect(i, "malformed", f"{len(fields)} fields, header has {n_fields}")
        return None
    ts_text = fields[0].strip()
    parsed = _parse_ts(ts_text)
    if parsed is None or (freq is not None and parsed[0] != freq):
        defect(i, "malformed", f"timestamp {ts_text!r} is not on the file's hourly/daily grid")
        return None
    return ts_text, fields, parsed


def _row_prices(i: int, fields: list[str], defect: _Defects) -> tuple[float, ...] | None:
    """The row's prices, or None once the defect is reported."""
    try:
        vals = tuple(float(f) for f in fields[1:])
    except ValueError:
        defect(i, "non_numeric", f"price fields {fields[1:]!r}")
        return None
    if not all(math.isfinite(v) for v in vals):
        defect(i, "non_numeric", f"non-finite price in {fields[1:]!r}")
        return None
    if min(vals) <= 0:
        defect(i, "non_positive", f"price <= 0 in {fields[1:]!r}")
        return None
    if len(vals) == 4:
        o, h, lo, c = vals
        if h < max(o, c, lo) or lo > min(o, c):
            defect(i, "ohlc", f"high/low do not bracket open/close: {fields[1:]!r}")
            return None
    return vals


def _on_grid(rows: _Rows, step: int, defect: _Defects) -> tuple[list[int], list[tuple[float, ...]]]:
    """Order and grid, in file order: duplicates and out-of-order rows are defects of the
    later row; a gap is a defect of the row after it."""
    keep_ts: list[int] = []
    keep_rows: list[tuple[float, ...]] = []
    for t, r, line in zip(rows.ts, rows.values, rows.lines, strict=True):
        if keep_ts:
            prev = keep_ts[-1]
            if t == prev:
                defect(line, "duplicate", f"timestamp repeats line before ({t})")
                continue
            if t < prev:
                defect(line, "out_of_order", "timestamp earlier than the row before")
                continue
            if t - prev != step:
                _gap(line, t - prev, step, rows.freq, defect)
        keep_ts.append(t)
        keep_rows.append(r)
    return keep_ts, keep_rows


def _gap(line: int, dt: int, step: int, freq: Frequency | None, defect: _Defects) -> None:
    """A gap of whole steps is counted as its missing steps when gaps are skipped; an
    off-grid gap is always an error."""
    if dt % step or "gap" not in defect.policy.kinds:
        raise CsvError(defect.path, line, "gap", f"{dt / step - 1:g} missing {freq} step(s) before")
    defect.count("gap", int(dt // step - 1))


def _grid_columns(
    keep_ts: list[int], keep_rows: list[tuple[float, ...]], names: tuple[str, ...], step: int
) -> dict[str, F64]:
    """The kept rows placed on the full regular grid; holes are NaN."""
    t0 = keep_ts[0]
    n = (keep_ts[-1] - t0) // step + 1
    idx = (np.asarray(keep_ts, np.int64) - t0) // step
    data = np.asarray(keep_rows, np.float64)
    cols: dict[str, F64] = {}
    for j, name in enumerate(names):
        col = np.full(n, np.nan)
        col[idx] = data[:, j]
        cols[name] = col
    return cols
