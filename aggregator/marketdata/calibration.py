"""The VaR model's calibration: what the margin model needs from price history, built
off the hot path (aggregator/var_feed.py runs it as a scheduled job) and handed to the
model through `ModelSources` (risk/var_model.py).

From the daily factor returns (factors.py: USD log returns, each LST against its
underlying) of every configured asset:
- `cov`: the EWMA covariance forecast of the asset log returns (lambda from [var]),
  mapped from the factors (loadings S_f loadings'), so it is PSD (covariance.py);
- `scenarios`: filtered historical simulation, the last `scenarios` factor returns
  rescaled by current over then EWMA volatility (risk/var.py), mapped to assets;
- `stressed`: the raw returns of the worst `stressed_window_days` window of the
  shipped history (risk/var.py `stressed_window`, a crash of a long book in every
  asset), the floor that keeps calm markets from shrinking the margin.
Every matrix is per one-day asset log return; the model scales by each asset's
horizon.

Invariants: the assets are the config's, in its order; `source` says which history
fed the covariance and scenarios ("daemon" or "shipped"), `stressed_source` the floor's;
an asset without enough history is `InsufficientHistory` naming it (never a zero).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from aggregator.config import VarConfig
from aggregator.marketdata import history
from aggregator.marketdata.covariance import ewma_covariance
from aggregator.marketdata.factors import Factors, InsufficientHistory, build_factors
from aggregator.risk.var import filtered_scenarios, stressed_window

F64 = NDArray[np.float64]
SEED = 20  # EWMA seed of the FHS filter


@dataclass(frozen=True)
class VarCalibration:
    assets: tuple[str, ...]
    source: str  # "daemon" | "shipped"
    as_of: int  # unix close time of the last return used
    n_returns: int
    cov: F64  # assets x assets, one-day log returns
    vol: F64  # assets, current one-day volatility (sqrt of cov's diagonal)
    scenarios: F64  # S x assets, FHS one-day log returns
    stressed: F64 | None  # W x assets, the stressed window's one-day log returns
    stressed_window: tuple[int, int] | None  # unix close times of its first and last
    stressed_source: str | None

    def scaled(self, factor: float) -> VarCalibration:
        """Every current volatility times `factor` (a what-if's shift,
        risk/whatif.py): the FHS scenario returns, the covariance and `vol`. The
        stressed window is history, not a current estimate, and stays as it was."""
        return replace(
            self, cov=self.cov * factor**2, vol=self.vol * factor,
            scenarios=self.scenarios * factor,
        )  # fmt: skip

    def describe(self) -> dict[str, object]:
        """JSON-able summary for the explanation and the API."""
        return {
            "source": self.source,
            "as_of": self.as_of,
            "returns": self.n_returns,
            "scenarios": int(self.scenarios.shape[0]),
            "stressed_source": self.stressed_source,
            "stressed_window": list(self.stressed_window) if self.stressed_window else None,
            "daily_vol": {a: float(v) for a, v in zip(self.assets, self.vol, strict=True)},
        }


def _asset_order(factors: Factors, assets: tuple[str, ...]) -> NDArray[np.int64]:
    missing = [a for a in assets if a not in factors.assets]
    if missing:
        raise KeyError(f"no factor history for asset(s) {', '.join(missing)}")
    return np.array([factors.assets.index(a) for a in assets], np.int64)


def stressed_returns(
    factors: Factors, assets: tuple[str, ...], window: int
) -> tuple[F64, tuple[int, int]]:
    """The worst `window` days of `factors` for a long book in every asset, as asset
    log returns (window x assets), and the close times of its first and last day."""
    order = _asset_order(factors, assets)
    r = (factors.returns @ factors.loadings.T)[:, order]
    lo, hi = stressed_window(r, min(window, r.shape[0]))
    return np.ascontiguousarray(r[lo:hi]), (int(factors.times[lo]), int(factors.times[hi - 1]))


def calibrate(
    factors: Factors,
    cfg: VarConfig,
    assets: tuple[str, ...],
    source: str,
    *,
    stressed: Factors | None = None,
    stressed_source: str | None = None,
) -> VarCalibration:
    """Calibration of `assets` (column order) from daily `factors`; the floor's window
    from `stressed` (when given and [var] stressed_floor is on)."""
    order = _asset_order(factors, assets)
    load = factors.loadings[order]  # assets x factors
    cov = load @ ewma_covariance(factors.returns, cfg.ewma_lambda) @ load.T
    cov = 0.5 * (cov + cov.T)
    n = factors.returns.shape[0]
    scen_f = filtered_scenarios(
        factors.returns, cfg.ewma_lambda, min(cfg.scenarios, n - SEED), SEED
    )
    vol_now = np.sqrt(np.maximum(np.diag(cov), 0.0))
    st: F64 | None = None
    window: tuple[int, int] | None = None
    if stressed is not None and cfg.stressed_floor:
        st, window = stressed_returns(stressed, assets, cfg.stressed_window_days)
    return VarCalibration(
        assets, source, int(factors.times[-1]), n, np.asarray(cov, np.float64),
        np.asarray(vol_now, np.float64), np.ascontiguousarray(scen_f @ load.T), st, window,
        stressed_source if st is not None else None,
    )  # fmt: skip


def shipped_calibration(
    assets: Mapping[str, str | None], cfg: VarConfig, history_dir: Path | None = None
) -> VarCalibration:
    """Calibration of `assets` (symbol -> underlying or None, in column order) from the
    shipped daily history alone, each asset through [var] history (the capital
    report's reference book; the daemon's fallback is aggregator/var_feed.py)."""
    missing = [a for a in assets if a not in cfg.history]
    if missing:
        raise InsufficientHistory(missing[0], cfg.scenarios + SEED + 1, 0,
                                  "[var] history names no shipped series")  # fmt: skip
    where = history.HISTORY_DIR if history_dir is None else history_dir
    series = {a: history.daily(cfg.history[a], directory=where) for a in assets}
    need = max(cfg.scenarios + SEED + 1, cfg.stressed_window_days)
    f = build_factors(series, underlying=underlying_map(assets), min_returns=need)
    return calibrate(f, cfg, tuple(assets), "shipped", stressed=f, stressed_source="shipped")


def underlying_map(assets: Mapping[str, str | None]) -> dict[str, str]:
    """LST -> underlying for the factor builder, from symbol -> underlying (or None)."""
    return {a: u for a, u in assets.items() if u is not None}


__all__ = [
    "SEED",
    "VarCalibration",
    "calibrate",
    "shipped_calibration",
    "stressed_returns",
    "underlying_map",
]
