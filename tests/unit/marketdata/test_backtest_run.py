"""The backtest runner: no look-ahead, and a run over the shipped history."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from aggregator.config import RiskConfig
from aggregator.marketdata import backtest_run as br
from aggregator.marketdata.covariance import ewma_vol_series
from aggregator.risk.var import filtered_scenarios, filtered_scenarios_at


def test_rolling_fhs_equals_fhs_on_the_past_only() -> None:
    rng = np.random.default_rng(4)
    r = rng.normal(0, 0.02, (300, 2))
    vol = ewma_vol_series(r, 0.94, 20)
    for t in (60, 150, 299):
        np.testing.assert_allclose(
            filtered_scenarios_at(r, vol, t, 100, 20), filtered_scenarios(r[:t], 0.94, 100, 20)
        )


def test_the_backtest_runs_and_writes(tmp_path: Path) -> None:
    assert br.main(["--out", str(tmp_path)]) == 0
    text = (tmp_path / "README.md").read_text()
    assert "| 2022 | 1 USD WETH".replace("WETH", "ETH") in text
    assert (tmp_path / "var_2022.png").stat().st_size > 10_000
    s = br.run_item(br.Item("eth", {"WETH": 1.0}), RiskConfig())
    rows = {(r.window, r.model): r for r in br.evaluate([s])}
    r22 = rows[("2022", "var_fhs")]
    assert r22.n >= 360 and abs(r22.expected - r22.n * 0.01) < 1e-9


def test_portfolio_grid_bound_is_the_worst_grid_loss() -> None:
    from aggregator.risk.capital import load_reference

    pcfg = load_reference().portfolio
    worst_move = min([*pcfg.spot_shocks, *pcfg.extreme_moves, *pcfg.crash_moves])
    # A long underlying loses its worst spot move; an LST that too, de-pegged on top;
    # a stable asset is never shocked.
    assert br.grid_bound(br.Item("eth", {"WETH": 1.0}), ["WETH"]) == pytest.approx(-worst_move)
    lst = br.grid_bound(br.Item("lst", {"wstETH": 1.0}), ["wstETH"])
    assert lst == pytest.approx(1.0 - (1.0 + worst_move) * (1.0 - pcfg.depeg_shock))
    assert br.grid_bound(br.Item("usd", {"USDC": 1.0}), ["USDC"]) == 0.0
    # Long the underlying, short its LST: a de-peg only helps, the rest nets out.
    pair = br.Item("pair", {"WETH": 1.0, "wstETH": -1.0})
    assert br.grid_bound(pair, ["WETH", "wstETH"]) == pytest.approx(0.0, abs=1e-12)


def _venue_copy(tmp_path: Path, scale: float) -> Path:
    """The shipped ETH daily closes as another venue would quote them (all prices
    scaled by `scale`: the same returns, other levels)."""
    src = (br.history.HISTORY_DIR / "eth_usd_daily.csv").read_text().splitlines()
    out = [src[0]]
    for line in src[1:]:
        day, *px = line.split(",")
        out.append(",".join([day, *(f"{float(p) * scale:.6f}" for p in px)]))
    path = tmp_path / "eth_other_venue.csv"
    path.write_text("\n".join(out) + "\n")
    return path


def test_another_venues_series_and_other_windows(tmp_path: Path) -> None:
    venue = _venue_copy(tmp_path, 1.01)
    out = tmp_path / "out"
    args = ["--out", str(out), "--series", f"ETH={venue}", "--windows", "2021,full"]
    assert br.main(args) == 0
    text = (out / "README.md").read_text()
    assert f"`--series ETH={venue}`" in text and "Windows: 2021, full." in text
    assert "| 2021 | 1 USD ETH | var_fhs |" in text and "| 2022 |" not in text
    assert (out / "var_2021.png").stat().st_size > 10_000
    # Same returns at other price levels: the same breaches as the shipped series.
    shipped = br.run_item(br.Item("eth", {"WETH": 1.0}), RiskConfig())
    other = br.run_item(
        br.Item("eth", {"WETH": 1.0}),
        RiskConfig(),
        lambda n: br.load_csv(venue) if n == "ETH" else br.history.daily(n),
    )
    # The copy keeps the 2 rows the shipped file's loader drops (SOURCES.md §5): 4 more
    # returns; on the days both have, the same P&L.
    assert other.pnl.size == shipped.pnl.size + 4
    both, i, j = np.intersect1d(other.times, shipped.times, return_indices=True)
    assert both.size == shipped.times.size
    np.testing.assert_allclose(other.pnl[i], shipped.pnl[j], rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--series", "DOGE=x.csv"], "unknown asset 'DOGE'"),
        (["--series", "ETH"], "want ASSET=CSV"),
        (["--series", "ETH=/nonexistent.csv"], "no such file"),
        (["--series", "ETH={hourly}"], "is hourly; the backtest takes daily closes"),
        (["--series", "ETH={broken}"], r"broken\.csv:5: non_numeric"),
        (["--series", "ETH={short}"], r"ETH.*(history|returns)"),
        (["--windows", "2022,last"], "'last' is neither a calendar year nor 'full'"),
    ],
)
def test_bad_backtest_input_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], error: str
) -> None:
    lines = _venue_copy(tmp_path, 1.0).read_text().splitlines()
    files = {
        "hourly": str(br.history.HISTORY_DIR / "eth_usd_hourly_2023-03.csv"),
        "broken": str(tmp_path / "broken.csv"),
        "short": str(tmp_path / "short.csv"),
    }
    day = lines[4].split(",")[0]
    Path(files["broken"]).write_text("\n".join([*lines[:4], f"{day},1,2,0.5,abc", *lines[5:]]))
    Path(files["short"]).write_text("\n".join([lines[0], *lines[-30:]]))
    assert br.main(["--no-write", *(a.format(**files) for a in args)]) == 2
    assert re.search(error, capsys.readouterr().out)
