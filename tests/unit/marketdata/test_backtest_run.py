"""The backtest runner: no look-ahead, and a run over the shipped history."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
