"""The offline procyclicality report: figures by hand, no look-ahead, the treatments
on a real episode, and the table in docs/procyclicality.md."""

from __future__ import annotations

import numpy as np
import pytest

from aggregator.marketdata import procyclicality as pc
from oracles.forecast import ForecastSettings


def test_figures_reference() -> None:
    m = np.array([0.1, 0.12, 0.2, 0.15, 0.1, 0.05, 0.3, 0.25])
    f = pc.figures(m)
    assert f.peak_to_trough == pytest.approx(0.3 / 0.05)
    assert f.max_1d == pytest.approx(0.25)
    assert f.max_5d == pytest.approx(0.3 - 0.12)
    assert (f.peak, f.calm) == (0.3, 0.1)


def test_no_look_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    t, r = pc.returns("ETH")
    settings = ForecastSettings()
    base = pc.inputs("ETH", "2023-03", settings)
    assert base is not None
    # Blow up every return from 2023-03-15 on: margins of days up to 03-15 must not move.
    cut = pc._ts("2023-03-15")
    r2 = np.where(t > cut, r * 10, r)
    monkeypatch.setattr(pc, "returns", lambda _a: (t, r2))
    changed = pc.inputs("ETH", "2023-03", settings)
    assert changed is not None
    i = base.days.index("2023-03-15")
    for cfg in pc.TREATMENTS.values():
        a, b = pc.margin_path(base, cfg), pc.margin_path(changed, cfg)
        k = i - base.warmup + 1
        assert np.array_equal(a[:k], b[:k])
        assert not np.array_equal(a, b)


def test_eth_2022_treatments_and_ordering() -> None:
    x = pc.inputs("ETH", "2022-05..07", ForecastSettings())
    assert x is not None
    paths = {name: pc.margin_path(x, cfg) for name, cfg in pc.TREATMENTS.items()}
    assert all(len(p) == 92 for p in paths.values())
    assert np.all(paths["predictive"] >= paths["ewma"] - 1e-15)
    assert np.all(paths["all"] >= paths["predictive"] - 1e-15)
    f = {name: pc.figures(p) for name, p in paths.items()}
    assert f["all"].peak_to_trough < f["ewma"].peak_to_trough


def test_doc_has_the_table_markers_and_every_treatment() -> None:
    doc = pc.DOC.read_text()
    assert pc.BEGIN in doc and pc.END in doc
    table = doc.split(pc.BEGIN)[1].split(pc.END)[0]
    for name in pc.TREATMENTS:
        assert f"| 2022-05..07 | ETH | {name} |" in table


def test_a_date_range_is_an_episode_with_the_shipped_ones_days() -> None:
    assert pc.window("2022-11") == ("2022-11-01", "2022-11-30")
    assert pc.window("2022-11-01..2022-12-01") == ("2022-11-01", "2022-11-30")
    settings = ForecastSettings()
    shipped = pc.inputs("ETH", "2022-11", settings)
    ranged = pc.inputs("ETH", "2022-11-01..2022-12-01", settings)
    assert shipped is not None and ranged is not None
    assert ranged.days == shipped.days
    for cfg in pc.TREATMENTS.values():
        np.testing.assert_array_equal(pc.margin_path(ranged, cfg), pc.margin_path(shipped, cfg))


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--episode", "2021-05"], "nor a date range"),
        (["--episode", "2021-05-01..2021-05-04"], "at least 6 days"),
        (["--episode", "2024-11-20..2024-12-20", "--asset", "ETH"], "history ends 2024-12-07"),
        (["--episode", "2012-01-01..2012-02-01"], "no asset has"),
        (["--episode", "2021-05-10..2021-05-31", "--write"], "not with --episode"),
    ],
)
def test_a_bad_episode_is_refused_naming_it(
    argv: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        rc = pc.main(argv)
    except SystemExit as exc:  # argparse's own refusal
        rc = int(exc.code or 0)
    assert rc == 2
    assert error in capsys.readouterr().err
