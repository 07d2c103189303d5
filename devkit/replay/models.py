"""The margin models a replay compares and the config each one runs with.

    standard     the cross-margin model on the EWMA alone: [forecast] off, no [apc] tool
                 (what the daemon does today with a fresh store)
    predictive   the standard model with the GARCH forecast (fitted at start on the
                 days before the episode, warmup.forecast_history) and the [apc] tools
                 PREDICTIVE_APC: volatility = max(EWMA, forecast), then the tools
    portfolio    [portfolio] mode = "portfolio" (scenario grid)
    var          [portfolio] mode = "var" (filtered historical VaR/ES)

`reputation` (the replay's --reputation) turns [reputation] on over any of them (off
otherwise); the run is labelled `<model>+reputation` (`label`), its report
`<episode>-<model>-reputation.json`.

Invariants: pure (a config dict in, a config dict out); only [portfolio] mode,
[forecast], [apc], [reputation] enabled, [oracle] history_days and (var_window) [var]
history_end and sample sizes are touched here (time scaling is timescale.py's); the
recommended [apc] set is defined once, here.
"""

from __future__ import annotations

from typing import Any

MODELS = ("standard", "predictive", "portfolio", "var")
REPUTATION = "+reputation"
# Every run label, each model followed by its reputation variant (report order).
LABELS = tuple(x for m in MODELS for x in (m, m + REPUTATION))
# The recommended anti-procyclical set (docs/procyclicality.md, EMIR RTS 153/2013
# Art. 28): lookback floor, 25% weight on the stressed window, 25% buffer released in
# stress, and sigma's fall capped at 5% per market day (its period is rescaled to
# market time by timescale.overrides, like the other durations).
PREDICTIVE_APC: dict[str, Any] = {
    "lookback_floor": True,
    "stressed_weight": 0.25,
    "buffer": 0.25,
    "max_daily_decrease": 0.05,
}
# Fit once at start, on the history before the episode: a refit during the replay
# would find no new UTC day (the compressed episode lasts minutes of wall time).
FIT_ONCE_S = 10.0**9


# Fewest FHS scenarios the replay accepts when the shipped history before an episode is
# short ([var] scenarios' own lower bound).
MIN_VAR_SCENARIOS = 100
# Returns the FHS filter spends before its first scenario (calibration.SEED + 1).
VAR_SEED = 21


class ModelError(ValueError):
    pass


def var_window(data: dict[str, Any], end: str, returns: dict[str, int]) -> dict[str, Any]:
    """The config dict with [var] calibrating on the shipped history up to `end` (the
    episode's first hour, ISO UTC) only. `returns`: daily returns each asset's shipped
    series holds up to `end`. When the shortest holds fewer than [var] min_history_days
    (an LST launched shortly before the episode), the scenario count, min_history_days
    and stressed window shrink to what it holds (at least MIN_VAR_SCENARIOS scenarios;
    fewer is a ModelError naming the asset): what was knowable then, not the years after."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    var = out["var"]
    var["history_end"] = end
    if not returns:
        return out
    short = min(returns, key=lambda a: returns[a])
    have = returns[short]
    if have >= int(var["min_history_days"]):
        return out
    scenarios = min(int(var["scenarios"]), have - VAR_SEED)
    if scenarios < MIN_VAR_SCENARIOS:
        raise ModelError(
            f"[var] history of {short}: {have} daily returns up to {end}, the VaR model needs "
            f"at least {MIN_VAR_SCENARIOS + VAR_SEED}"
        )
    var.update(
        scenarios=scenarios,
        min_history_days=max(scenarios + 20, 40),
        stressed_window_days=min(int(var["stressed_window_days"]), have),
    )
    return out


def label(model: str, reputation: bool) -> str:
    """The run's name in reports and file names: the model, `+reputation` when on."""
    return model + REPUTATION if reputation else model


def configure(
    data: dict[str, Any], model: str, forecast_days: int, *, reputation: bool = False
) -> dict[str, Any]:
    """The config dict for `model`; `forecast_days`: the predictive history's length;
    `reputation`: [reputation] on (else off, whatever the file says)."""
    if model not in MODELS:
        raise ModelError(f"unknown model {model!r}; one of {', '.join(MODELS)}")
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    out["portfolio"]["mode"] = "standard" if model == "predictive" else model
    out["reputation"]["enabled"] = reputation
    if model == "predictive":
        out["forecast"].update(enabled=True, refit_interval_s=FIT_ONCE_S)
        out["apc"].update(PREDICTIVE_APC)
        out["oracle"]["history_days"] = forecast_days + 2
    else:
        out["forecast"]["enabled"] = False
        out["apc"].update(
            lookback_floor=False, stressed_weight=0.0, buffer=0.0, max_daily_decrease=None
        )
    return out
