"""Episode building from history/: shapes, the known dropped bar held, and the errors a
replay must raise before it starts (unknown episode, missing file, gap, undrivable feed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from aggregator.marketdata.history import HISTORY_DIR
from devkit.replay import episodes
from devkit.replay.episodes import EpisodeError

RATES = {"wstETH": 1.18, "rETH": 1.10}


@pytest.mark.parametrize("name", sorted(episodes.EPISODES))
def test_every_episode_builds_an_hourly_path(name: str) -> None:
    path = episodes.build(name, RATES)
    start, end = episodes.EPISODES[name].bounds()
    assert path.times[0] == start and path.times[-1] == end
    assert np.all(np.diff(path.times) == 3600)
    assert set(path.prices) == {"USDC", "WBTC", "WETH", "wstETH", "rETH"}
    for v in path.prices.values():
        assert v.shape == path.times.shape and np.all(v > 0)
    # rETH has no series: WETH times its constant rate, exactly.
    np.testing.assert_allclose(path.prices["rETH"], path.prices["WETH"] * 1.10)


def test_crash_legs_are_in_the_paths() -> None:
    p = episodes.build("2020-03", RATES)
    assert p.prices["WETH"].min() < 0.5 * p.prices["WETH"][0]  # Black Thursday
    june = episodes.build("2022-06", RATES)
    ratio = june.prices["wstETH"] / (june.prices["WETH"] * 1.18)
    assert 0.93 < ratio.min() < 0.945  # the stETH de-peg (SOURCES.md: 0.9367)
    assert "hourly" in june.sources["WBTC"] and "daily" in june.sources["USDC"]
    # SOURCES.md §5's incomplete Bitstamp bar is dropped by the loader, held here.
    assert june.held["btc_usd_hourly_2022-05_07.csv"] == 1
    usdc = episodes.build("2023-03", RATES).prices["USDC"]
    assert usdc.min() < 0.98  # the SVB de-peg (daily closes only)


def test_slice() -> None:
    p = episodes.build("2022-11", RATES).slice(100, 48)
    assert len(p) == 48 and p.prices["WETH"].size == 48
    with pytest.raises(EpisodeError, match="outside"):
        p.slice(10, 48)


def _copy(tmp_path: Path) -> Path:
    d = tmp_path / "history"
    shutil.copytree(HISTORY_DIR, d)
    return d


def test_unknown_episode() -> None:
    with pytest.raises(EpisodeError, match="unknown episode '1929-10'"):
        episodes.build("1929-10", RATES)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    (d / "btc_usd_hourly_2022-11.csv").unlink()
    with pytest.raises(EpisodeError, match=r"missing: .*btc_usd_hourly_2022-11\.csv"):
        episodes.build("2022-11", RATES, d)


def test_gap_is_an_error(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    f = d / "eth_usd_hourly_2022-11.csv"
    lines = f.read_text().splitlines(keepends=True)
    del lines[200]
    f.write_text("".join(lines))
    with pytest.raises(EpisodeError, match=r"eth_usd_hourly_2022-11\.csv.*gap"):
        episodes.build("2022-11", RATES, d)


def test_window_outside_the_file_is_an_error(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    f = d / "eth_usd_hourly_2023-03.csv"
    lines = f.read_text().splitlines(keepends=True)
    f.write_text("".join(lines[:-48]))  # the file now ends two days early
    with pytest.raises(EpisodeError, match="the episode needs"):
        episodes.build("2023-03", RATES, d)


def test_undrivable_feed_and_missing_rate() -> None:
    p = episodes.build("2023-03", RATES)
    episodes.require_drivable(p, ["USDC", "WETH", "wstETH"], ["rETH"])
    with pytest.raises(EpisodeError, match="feed cbETH"):
        episodes.require_drivable(p, ["WETH", "cbETH"], [])
    with pytest.raises(EpisodeError, match="no usable exchange rate for rETH"):
        episodes.build("2023-03", {"wstETH": 1.18})


def test_a_date_range_inside_a_shipped_hourly_file_is_that_episodes_slice() -> None:
    june = episodes.build("2022-06", RATES)
    part = episodes.build("2022-06-10..2022-06-20", RATES)
    assert part.name == "2022-06-10..2022-06-20" and len(part) == 10 * 24 + 1
    k = int((part.times[0] - june.times[0]) // 3600)
    np.testing.assert_array_equal(part.times, june.times[k : k + len(part)])
    for asset, v in part.prices.items():
        np.testing.assert_allclose(v, june.prices[asset][k : k + len(part)], rtol=1e-12)
    assert part.sources == june.sources


def test_a_date_range_without_hourly_data_follows_the_daily_closes() -> None:
    from aggregator.marketdata import history

    p = episodes.build("2021-05-12..2021-05-26", RATES)  # the May 2021 crash
    assert "daily eth_usd_daily.csv" in p.sources["WETH"]
    assert "daily btc_usd_daily.csv" in p.sources["WBTC"]
    # Each daily close stands at its day's end: the path passes through it exactly.
    eth = history.daily("ETH")
    day_ends = eth.close_times()
    for t in p.times[p.times % 86400 == 0]:
        j = int(np.flatnonzero(day_ends == t)[0])
        assert p.prices["WETH"][p.times == t][0] == pytest.approx(eth.close[j], rel=1e-12)
    assert p.prices["WETH"].min() < 0.7 * p.prices["WETH"][0]  # May 19, 2021


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("2021-13-01..2021-05-02", "a date range is YYYY-MM-DD..YYYY-MM-DD"),
        ("2021-05-02..2021-05-03", "at least 2 days"),
        ("2021-05-09..2021-05-02", "at least 2 days"),
        ("2016-01-01..2016-02-01", r"eth_usd_daily\.csv covers .* the episode needs"),
        ("1929-10", "or a date range"),
    ],
)
def test_a_bad_date_range_is_an_error_naming_it(name: str, error: str) -> None:
    with pytest.raises(EpisodeError, match=error):
        episodes.build(name, RATES)
