"""The backtest runner: no look-ahead, and a run over the shipped history."""

from __future__ import annotations

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
