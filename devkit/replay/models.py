"""The margin models a replay compares and the config each one runs with.

    standard     the cross-margin model on the EWMA alone: [forecast] off, no [apc] tool
                 (what the daemon does today with a fresh store)
    predictive   the standard model with the GARCH forecast (fitted at start on the
                 days before the episode, warmup.forecast_history) and the [apc] tools
                 PREDICTIVE_APC: volatility = max(EWMA, forecast), then the tools
    portfolio    [portfolio] mode = "portfolio" (scenario grid)
    var          [portfolio] mode = "var" (filtered historical VaR/ES)

Invariants: pure (a config dict in, a config dict out); only [portfolio] mode,
[forecast], [apc] and [oracle] history_days are touched here (time scaling is
timescale.py's); the recommended [apc] set is defined once, here.
"""

from __future__ import annotations

from typing import Any

MODELS = ("standard", "predictive", "portfolio", "var")
# Models whose margin reads the EWMA sigma (the others only for an option's implied
# volatility, which the replay sets explicitly: warmup.implied_vol).
USES_EWMA = frozenset({"standard", "predictive"})
# The recommended anti-procyclical set (docs/procyclicality.md, EMIR RTS 153/2013
# Art. 28): lookback floor, 25% weight on the stressed window, 25% buffer released in
# stress. The daily decrease cap is left out: its per-day bound is in wall days and
# cannot be expressed at the replay's compression (0.95 ** C rounds to 0; docs/replay.md).
PREDICTIVE_APC: dict[str, Any] = {
    "lookback_floor": True,
    "stressed_weight": 0.25,
    "buffer": 0.25,
    "max_daily_decrease": None,
}
# Fit once at start, on the history before the episode: a refit during the replay
# would find no new UTC day (the compressed episode lasts minutes of wall time).
FIT_ONCE_S = 10.0**9


class ModelError(ValueError):
    pass


def configure(data: dict[str, Any], model: str, forecast_days: int) -> dict[str, Any]:
    """The config dict for `model`; `forecast_days`: the predictive history's length."""
    if model not in MODELS:
        raise ModelError(f"unknown model {model!r}; one of {', '.join(MODELS)}")
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    out["portfolio"]["mode"] = "standard" if model == "predictive" else model
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
