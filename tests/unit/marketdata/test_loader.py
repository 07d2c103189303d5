"""The strict loader: each defect kind is an error naming file and line, or, when the
caller skips that kind, a count; known rows are applied one by one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aggregator.marketdata.loader import CsvError, KnownRow, SkipPolicy, load_csv

HEAD = "timestamp_utc,open,high,low,close"
GOOD = [
    "2022-01-01T00:00:00Z,10,11,9,10.5",
    "2022-01-01T01:00:00Z,10.5,12,10,11",
    "2022-01-01T02:00:00Z,11,11.5,10.5,11.2",
    "2022-01-01T03:00:00Z,11.2,11.4,11,11.1",
]


def write(tmp_path: Path, rows: list[str], head: str = HEAD) -> Path:
    p = tmp_path / "p.csv"
    p.write_text("\n".join([head, *rows]) + "\n")
    return p


def test_good_file(tmp_path: Path) -> None:
    s = load_csv(write(tmp_path, GOOD))
    assert s.frequency == "hourly" and len(s) == 4 and s.skipped == {}
    assert s.close.tolist() == [10.5, 11, 11.2, 11.1]
    assert s.close_times()[0] == s.start + 3600


def test_daily_close_only(tmp_path: Path) -> None:
    s = load_csv(write(tmp_path, ["2022-01-01,1.0", "2022-01-02,0.99"], "timestamp_utc,close"))
    assert s.frequency == "daily" and s.step == 86400 and list(s.columns) == ["close"]


BAD = {
    "malformed": (2, "2022-01-01T02:00:00Z,11,11.5,10.5"),
    "non_numeric": (2, "2022-01-01T02:00:00Z,11,x,10.5,11.2"),
    "non_positive": (2, "2022-01-01T02:00:00Z,11,11.5,0,11.2"),
    "ohlc": (2, "2022-01-01T02:00:00Z,11,10.9,10.5,11.2"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_row_defects_name_file_and_line(tmp_path: Path, kind: str) -> None:
    i, row = BAD[kind]
    rows = [*GOOD]
    rows[i] = row
    p = write(tmp_path, rows)
    with pytest.raises(CsvError) as e:
        load_csv(p)
    assert e.value.kind == kind and e.value.line == i + 2 and str(p) in str(e.value)
    # Skipped: counted, and the row's hole does not pass as a gap unless gaps are skipped.
    with pytest.raises(CsvError, match="gap"):
        load_csv(p, SkipPolicy(kinds=frozenset({kind})))
    s = load_csv(p, SkipPolicy(kinds=frozenset({kind, "gap"})))
    assert s.skipped == {kind: 1, "gap": 1} and np.isnan(s.close[i]) and len(s) == 4


def test_off_grid_and_mixed_timestamps_are_malformed(tmp_path: Path) -> None:
    for bad in ("2022-01-01T01:30:00Z,1,1,1,1", "2022-01-01,1,1,1,1", "01/01/2022,1,1,1,1"):
        with pytest.raises(CsvError, match="malformed") as e:
            load_csv(write(tmp_path, [GOOD[0], bad]))
        assert e.value.line == 3


def test_duplicate_out_of_order_and_gap(tmp_path: Path) -> None:
    dup = [GOOD[0], GOOD[1], GOOD[1], GOOD[2]]
    with pytest.raises(CsvError) as e:
        load_csv(write(tmp_path, dup))
    assert (e.value.kind, e.value.line) == ("duplicate", 4)
    s = load_csv(write(tmp_path, dup), SkipPolicy(kinds=frozenset({"duplicate"})))
    assert s.skipped == {"duplicate": 1} and len(s) == 3

    ooo = [GOOD[0], GOOD[2], GOOD[1], GOOD[3]]
    with pytest.raises(CsvError) as e:
        load_csv(write(tmp_path, ooo))
    assert e.value.kind == "gap" and e.value.line == 3  # 00:00 -> 02:00 is seen first
    with pytest.raises(CsvError) as e:
        load_csv(write(tmp_path, ooo), SkipPolicy(kinds=frozenset({"gap"})))
    assert (e.value.kind, e.value.line) == ("out_of_order", 4)
    s = load_csv(write(tmp_path, ooo), SkipPolicy(kinds=frozenset({"gap", "out_of_order"})))
    assert s.skipped == {"gap": 1, "out_of_order": 1}

    gap = [GOOD[0], GOOD[3]]
    with pytest.raises(CsvError) as e:
        load_csv(write(tmp_path, gap))
    assert (e.value.kind, e.value.line) == ("gap", 3) and "2 missing" in str(e.value)
    s = load_csv(write(tmp_path, gap), SkipPolicy(kinds=frozenset({"gap"})))
    assert s.skipped == {"gap": 2} and len(s) == 4 and int(np.isnan(s.close).sum()) == 2


@pytest.mark.parametrize("head", ["timestamp,open,high,low,close", "timestamp_utc,open,close", ""])
def test_bad_header(tmp_path: Path, head: str) -> None:
    with pytest.raises(CsvError) as e:
        load_csv(write(tmp_path, GOOD, head))
    assert (e.value.kind, e.value.line) == ("header", 1)


def test_unknown_skip_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown skip kinds"):
        SkipPolicy(kinds=frozenset({"everything"}))


def test_known_rows_drop_keep_and_stale(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD)
    known = {
        "2022-01-01T01:00:00Z": KnownRow("drop", "incomplete bar"),
        "2022-01-01T03:00:00Z": KnownRow("keep", "flat bar"),
    }
    s = load_csv(p, SkipPolicy(known=known))
    assert s.skipped == {"known_drop": 1, "known_keep": 1}
    assert np.isnan(s.close[1]) and s.close[3] == 11.1
    with pytest.raises(CsvError, match="known rows not in the file"):
        load_csv(p, SkipPolicy(known={"2022-02-01T00:00:00Z": KnownRow("drop", "x")}))
    # A known row still gets every other check when kept.
    bad = [*GOOD]
    bad[3] = "2022-01-01T03:00:00Z,11.2,11.4,11,-1"
    with pytest.raises(CsvError, match="non_positive"):
        load_csv(write(tmp_path, bad), SkipPolicy(known=known))
