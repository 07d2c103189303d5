"""GARCH forecast: parameter recovery on simulated data, convergence of the forecast
to the long-run variance, a fit of the shipped ETH history, and every fallback path
by injecting its failure."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

import oracles.forecast as fc
from aggregator.marketdata import history
from oracles.forecast import ForecastSettings, daily_returns, fit_forecast, persistence


def simulate(
    n: int, omega: float, alpha: float, beta: float, *, gamma: float = 0.0, seed: int = 7
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = np.empty(n)
    v = omega / (1 - alpha - beta - gamma / 2)
    for i in range(n):
        r[i] = math.sqrt(v) * rng.standard_normal()
        v = omega + (alpha + gamma * (r[i] < 0)) * r[i] ** 2 + beta * v
    return r


def test_recovers_garch_parameters_roughly() -> None:
    r = simulate(6000, 2e-5, 0.08, 0.90)
    f = fit_forecast(r, ForecastSettings())
    assert f.reason is None and f.sigma is not None
    assert f.params["alpha[1]"] == pytest.approx(0.08, abs=0.03)
    assert f.params["beta[1]"] == pytest.approx(0.90, abs=0.04)
    assert f.long_run_sigma == pytest.approx(math.sqrt(2e-5 / 0.02), rel=0.25)


def test_gjr_recovers_the_asymmetry() -> None:
    r = simulate(6000, 2e-5, 0.03, 0.90, gamma=0.10, seed=3)
    f = fit_forecast(r, ForecastSettings(model="gjr"))
    assert f.reason is None
    assert f.params["gamma[1]"] == pytest.approx(0.10, abs=0.05)
    assert persistence(f.params) == pytest.approx(0.98, abs=0.02)


def test_long_horizon_forecast_converges_to_long_run_variance() -> None:
    r = simulate(4000, 2e-5, 0.08, 0.90)
    r[-5:] = 0.15  # start far above the long-run level
    s = [fit_forecast(r, ForecastSettings(horizon_days=h)) for h in (1, 100, 20000)]
    lr = s[0].long_run_sigma
    assert lr is not None and all(f.sigma is not None for f in s)
    gaps = [abs(f.sigma - lr) for f in s]  # type: ignore[operator]
    assert s[0].sigma > 2 * lr  # type: ignore[operator]
    assert gaps[0] > gaps[1] > gaps[2]
    # Mean variance over 20000 days: the long-run level, to within 2%.
    assert s[2].sigma == pytest.approx(lr, rel=0.02)


def test_fits_the_shipped_eth_daily_history() -> None:
    s = history.daily("ETH")
    r = daily_returns(s.close_times().tolist(), s.close.tolist())
    for model in ("garch", "gjr"):
        f = fit_forecast(r, ForecastSettings(model=model))
        assert f.reason is None, f
        assert 0.01 < f.sigma < 0.2  # type: ignore[operator]
        assert persistence(f.params) < 1


def test_daily_returns_last_price_per_day_and_gap_scaling() -> None:
    day = 86400.0
    t = [0.0, 100.0, day + 5, 3 * day + 7]
    p = [1.0, 2.0, 4.0, 16.0]
    r = daily_returns(t, p)
    assert r.tolist() == pytest.approx([math.log(2), math.log(4) / math.sqrt(2)])


def test_short_history_falls_back() -> None:
    f = fit_forecast(simulate(100, 2e-5, 0.08, 0.9), ForecastSettings())
    assert (f.sigma, f.reason, f.n_returns) == (None, "short_history", 100)


def test_fit_error_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(_r: object, _name: str) -> object:
        raise np.linalg.LinAlgError("singular")

    monkeypatch.setattr(fc, "_fit", boom)
    f = fit_forecast(simulate(400, 2e-5, 0.08, 0.9), ForecastSettings())
    assert (f.sigma, f.reason) == (None, "fit_error")
    assert "singular" in f.detail


def _fake(flag: int, alpha: float, beta: float) -> object:
    params = {"omega": 0.1, "alpha[1]": alpha, "beta[1]": beta}
    return SimpleNamespace(convergence_flag=flag, params=params)


def test_not_converged_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fc, "_fit", lambda _r, _n: _fake(1, 0.1, 0.8))
    f = fit_forecast(simulate(400, 2e-5, 0.08, 0.9), ForecastSettings())
    assert (f.sigma, f.reason) == (None, "not_converged")


def test_non_stationary_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fc, "_fit", lambda _r, _n: _fake(0, 0.2, 0.8))
    f = fit_forecast(simulate(400, 2e-5, 0.08, 0.9), ForecastSettings())
    assert (f.sigma, f.reason) == (None, "non_stationary")


def test_implausible_forecast_falls_back() -> None:
    r = simulate(2000, 2e-5, 0.08, 0.90)
    r[-3:] = 0.5  # a forecast far above the sample sigma
    f = fit_forecast(r, ForecastSettings(max_ratio=1.5))
    assert (f.sigma, f.reason) == (None, "implausible")
    assert f.long_run_sigma is not None
