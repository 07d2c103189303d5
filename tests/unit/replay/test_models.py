"""Each model's generated config: the predictive one turns on the forecast and the
recommended [apc] tools and keeps the forecast's history; the others run the EWMA
alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aggregator.config import VarConfig
from aggregator.replay import ReplayOptions, run
from devkit.replay import models

BASE = {
    "portfolio": {"mode": "standard"},
    "forecast": {"enabled": True, "refit_interval_s": 3600.0},
    "apc": {"lookback_floor": True, "stressed_weight": 0.0, "buffer": 0.0,
            "max_daily_decrease": None},
    "oracle": {"history_days": 90},
    "reputation": {"enabled": False, "interval_s": 300.0, "day_s": 86400.0,
                   "min_age_days": 90.0, "half_life_days": 180.0},
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
        ({"hours_per_block": 0}, "hours per block must be >= 1"),
        ({"block_interval_s": 0.0}, "block interval must be > 0 s"),
        ({"responders": 1.5}, "--responders 1.5: a share of the borrowers"),
        ({"response_max_delay_h": 0}, "--response-max-delay 0: at least 1 market hour"),
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


VAR = {"var": {"scenarios": 500, "min_history_days": 520, "stressed_window_days": 250}}


def test_var_window_ends_the_history_at_the_episode() -> None:
    cfg = models.var_window(VAR, "2023-03-01T00:00:00+00:00", {"WETH": 1933, "USDC": 1604})
    assert cfg["var"] == {**VAR["var"], "history_end": "2023-03-01T00:00:00+00:00"}
    assert "history_end" not in VAR["var"]  # the input is not modified


def test_var_window_shrinks_to_the_shortest_history_before_the_episode() -> None:
    # wstETH launched 2021-10: 205 daily returns before 2022-05-01.
    cfg = models.var_window(VAR, "2022-05-01T00:00:00+00:00", {"WETH": 1631, "wstETH": 205})
    v = cfg["var"]
    assert v["scenarios"] == 205 - models.VAR_SEED
    assert v["min_history_days"] <= 205 and v["stressed_window_days"] == 205
    VarConfig.model_validate(v)  # still a valid [var] section
    with pytest.raises(models.ModelError, match=r"wstETH: 0 daily returns up to 2020-03-01"):
        models.var_window(VAR, "2020-03-01T00:00:00+00:00", {"WETH": 842, "wstETH": 0})


def test_the_replayed_var_config_calibrates_without_look_ahead() -> None:
    from aggregator.replay import replay_config, shipped_returns
    from devkit.replay.timescale import TimeScale
    from tests.unit.risk.test_var_feed import config as var_config

    base = var_config(history={"USDC": "USDC", "WETH": "ETH"})
    start = 1_682_899_200.0  # 2023-05-01
    cfg = replay_config(base, "var", TimeScale(3, 1.0), start=start)
    assert cfg.var.history_end is not None and cfg.var.history_end.timestamp() == start
    assert shipped_returns(base, start)["WETH"] > shipped_returns(base, start - 86400 * 30)["WETH"]
    assert replay_config(base, "standard", TimeScale(3, 1.0), start=start).var.history_end is None


@pytest.mark.parametrize("model", models.MODELS)
def test_reputation_switch_turns_the_section_on_over_any_mode(model: str) -> None:
    on = models.configure({**BASE, "reputation": {**BASE["reputation"], "enabled": True}},
                          model, 730)  # fmt: skip
    assert on["reputation"]["enabled"] is False  # no --reputation: off, whatever the file says
    cfg = models.configure(BASE, model, 730, reputation=True)
    assert cfg["reputation"]["enabled"] is True
    off = models.configure(BASE, model, 730)
    assert {k: v for k, v in cfg.items() if k != "reputation"} == {
        k: v for k, v in off.items() if k != "reputation"
    }
    assert (
        models.label(model, True) == f"{model}+reputation" and models.label(model, False) == model
    )
    assert BASE["reputation"]["enabled"] is False


def test_the_replayed_reputation_runs_in_market_days() -> None:
    from aggregator.replay import replay_config
    from devkit.replay.timescale import TimeScale
    from tests.unit.risk.test_var_feed import config as var_config

    base = var_config()
    scale = TimeScale(3, 1.0)
    cfg = replay_config(base, "predictive", scale, reputation=True)
    r = cfg.reputation
    assert r.enabled and r.day_s == pytest.approx(86400.0 / scale.factor)
    assert r.interval_s == scale.step_s
    # The day-based parameters keep their market-day values: day_s carries the scale.
    assert (r.min_age_days, r.half_life_days) == (base.reputation.min_age_days,
                                                  base.reputation.half_life_days)  # fmt: skip
    assert replay_config(base, "predictive", scale).reputation.enabled is False
