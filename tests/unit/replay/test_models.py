"""Each model's generated config: the predictive one turns on the forecast and the
recommended [apc] tools and keeps the forecast's history; the others run the EWMA
alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aggregator.replay import ReplayOptions, run
from devkit.replay import models

BASE = {
    "portfolio": {"mode": "standard"},
    "forecast": {"enabled": True, "refit_interval_s": 3600.0},
    "apc": {"lookback_floor": True, "stressed_weight": 0.0, "buffer": 0.0,
            "max_daily_decrease": None},
    "oracle": {"history_days": 90},
}  # fmt: skip


def test_predictive() -> None:
    cfg = models.configure(BASE, "predictive", 730)
    assert cfg["portfolio"]["mode"] == "standard"
    assert cfg["forecast"]["enabled"] is True
    assert cfg["forecast"]["refit_interval_s"] >= 10**8
    assert cfg["apc"] == {**BASE["apc"], **models.PREDICTIVE_APC}
    assert cfg["oracle"]["history_days"] > 730


@pytest.mark.parametrize("model", ["standard", "portfolio", "var"])
def test_the_others_run_the_ewma_alone(model: str) -> None:
    cfg = models.configure(BASE, model, 730)
    assert cfg["portfolio"]["mode"] == model
    assert cfg["forecast"]["enabled"] is False
    assert cfg["apc"]["lookback_floor"] is False and cfg["apc"]["buffer"] == 0.0
    assert BASE["forecast"]["enabled"] is True  # the input is not modified


def test_unknown_model() -> None:
    with pytest.raises(models.ModelError, match="unknown model 'garch'"):
        models.configure(BASE, "garch", 730)


@pytest.mark.parametrize(
    ("opts", "said"),
    [
        ({"mode": "garch"}, "unknown model 'garch'"),
        ({"mode": "predictive", "hours_per_block": 8}, "Lower --hours-per-block"),
        ({"hours_per_block": 0}, "hours per block must be >= 1"),
    ],
)
async def test_refused_before_any_process_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], opts: dict[str, Any], said: str
) -> None:
    assert await run(tmp_path, None, ReplayOptions("2022-06", **opts)) == 2
    assert said in capsys.readouterr().out
    assert not (tmp_path / "data").exists()  # no devnet was started


def test_config_toml_maps_the_devnet_markets_names() -> None:
    """The daemon's [portfolio] perps / options name exactly what the devnet lists on
    its Markets contracts (an unmapped name is ignored by the daemon, not guessed)."""
    import tomllib

    from devkit.deploy import OPTION_UNDERLYINGS, PERP_MARKETS

    pf = tomllib.loads((Path(__file__).resolve().parents[3] / "config.toml").read_text())[
        "portfolio"
    ]
    assert {p["name"]: p["underlying"] for p in pf["perps"]} == PERP_MARKETS
    assert {o["name"]: o["underlying"] for o in pf["options"]} == OPTION_UNDERLYINGS


def test_the_replay_config_carries_the_implied_vol() -> None:
    from aggregator.config import AppConfig
    from aggregator.replay import replay_config
    from devkit.replay.timescale import TimeScale

    base = AppConfig(
        chains=[{"name": "alpha", "chain_id": 1, "rpc_urls": ["http://127.0.0.1:1"],
                 "contracts": {"vault": f"0x{1:040x}"}}],
        assets=[{"symbol": "WETH", "decimals": 18, "ltv": 0.8, "lt": 0.825}],
    )  # type: ignore[arg-type]  # fmt: skip
    cfg = replay_config(base, "portfolio", TimeScale(3, 1.0), {"WETH": 0.85})
    assert cfg.portfolio.implied_vol == {"WETH": 0.85}
    assert replay_config(base, "portfolio", TimeScale(3, 1.0)).portfolio.implied_vol == {}
