"""EWMA volatility/correlation against simulated paths with known parameters."""

from __future__ import annotations

import math

import numpy as np
import pytest

from oracles.volatility import DAY_S, EwmaEstimator, VolatilitySettings


def simulate(
    sigma_a: float, sigma_b: float, rho: float, gaps_days: np.ndarray, seed: int = 7
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z1 = rng.standard_normal(len(gaps_days))
    z2 = rho * z1 + math.sqrt(1 - rho * rho) * rng.standard_normal(len(gaps_days))
    ra = sigma_a * np.sqrt(gaps_days) * z1
    rb = sigma_b * np.sqrt(gaps_days) * z2
    t = np.cumsum(gaps_days) * DAY_S
    return t, 100 * np.exp(np.cumsum(ra)), 3000 * np.exp(np.cumsum(rb))


def run(settings: VolatilitySettings, t: np.ndarray, a: np.ndarray, b: np.ndarray) -> EwmaEstimator:
    est = EwmaEstimator(["A", "B"], settings)
    for ti, pa, pb in zip(t, a, b, strict=True):
        est.update(float(ti), {"A": float(pa), "B": float(pb)})
    return est


def _means(gaps: np.ndarray, runs: int = 30) -> tuple[float, float, float, float]:
    # Average the (noisy by nature, lambda = 0.94 remembers ~16 days) end estimates
    # over independent paths.
    vols_a, vols_b, corrs, rels = [], [], [], []
    for seed in range(runs):
        t, a, b = simulate(0.02, 0.04, 0.6, gaps, seed)
        est = run(VolatilitySettings(prior_daily=None, min_interval_s=0), t, a, b)
        vols_a.append(est.volatility("A"))
        vols_b.append(est.volatility("B"))
        corrs.append(est.correlation("A", "B"))
        rels.append(est.relative_volatility("A", "B"))
    return (
        float(np.mean(vols_a)),
        float(np.mean(vols_b)),
        float(np.mean(corrs)),
        float(np.mean(rels)),
    )


@pytest.mark.parametrize("kind", ["daily", "irregular"])
def test_recovers_known_parameters(kind: str) -> None:
    rng = np.random.default_rng(1)
    gaps = np.ones(300) if kind == "daily" else rng.uniform(0.02, 3.0, 300)
    va, vb, corr, rel = _means(gaps)
    assert va == pytest.approx(0.02, rel=0.12)
    assert vb == pytest.approx(0.04, rel=0.12)
    assert corr == pytest.approx(0.6, abs=0.1)
    expected_rel = math.sqrt(0.02**2 + 0.04**2 - 2 * 0.6 * 0.02 * 0.04)
    assert rel == pytest.approx(expected_rel, rel=0.12)


def test_sampling_frequency_does_not_bias_the_daily_sigma() -> None:
    # The same 2%/day process sampled hourly must still read ~2%/day, not 2%/hour.
    hourly = np.full(24 * 40, 1 / 24)
    va, _, _, _ = _means(hourly, runs=10)
    assert va == pytest.approx(0.02, rel=0.12)


def test_prior_before_data_and_unknown_asset() -> None:
    est = EwmaEstimator(["A", "B"], VolatilitySettings(prior_daily=0.05))
    assert est.volatility("A") == 0.05
    assert est.correlation("A", "B") == 0.0
    assert est.relative_volatility("A", "B") == pytest.approx(math.sqrt(2) * 0.05)
    assert est.correlation("A", "A") == 1.0
    assert est.relative_volatility("A", "A") == 0.0
    with pytest.raises(KeyError, match="unknown asset 'Z'"):
        est.volatility("Z")


def test_rounds_closer_than_min_interval_are_skipped() -> None:
    est = EwmaEstimator(["A"], VolatilitySettings(min_interval_s=300))
    assert est.update(0.0, {"A": 100.0})
    assert not est.update(10.0, {"A": 200.0})  # a 10 s spike is ignored
    assert est.update(400.0, {"A": 100.0})
    assert est.samples("A") == 1
    assert est.volatility("A") < 0.05  # a flat return decays the prior, never raises it


def test_pegged_pair_has_low_relative_volatility() -> None:
    # stETH-like: moves with ETH, so the ratio barely moves although both are volatile.
    rng = np.random.default_rng(3)
    gaps = np.ones(200)
    eth_r = 0.04 * rng.standard_normal(200)
    lst_r = eth_r + 0.001 * rng.standard_normal(200)
    t = np.cumsum(gaps) * DAY_S
    est = run(
        VolatilitySettings(prior_daily=None, min_interval_s=0),
        t,
        1.1 * 3000 * np.exp(np.cumsum(lst_r)),
        3000 * np.exp(np.cumsum(eth_r)),
    )
    assert est.volatility("A") > 0.02
    assert est.relative_volatility("A", "B") < 0.003
    assert est.correlation("A", "B") > 0.99


def test_settings_validation() -> None:
    with pytest.raises(ValueError, match="ewma_lambda"):
        VolatilitySettings(ewma_lambda=1.0)
    with pytest.raises(ValueError, match="lambda_period_s"):
        VolatilitySettings(lambda_period_s=0.0)


@pytest.mark.parametrize("period_s", [DAY_S, 3600.0, 4.0])
def test_lambda_decays_per_its_period(period_s: float) -> None:
    """One return after the prior, `dt` seconds on: the weight of the prior is
    lambda ** (dt / period), written out here from the formula, not the estimator."""
    lam, prior, dt_s, r = 0.94, 0.05, 7200.0, 0.03
    est = EwmaEstimator(["A"], VolatilitySettings(lam, prior, 0.0, period_s))
    est.update(0.0, {"A": 100.0})
    est.update(dt_s, {"A": 100.0 * math.exp(r)})
    w = lam ** (dt_s / period_s)
    dt_days = dt_s / DAY_S
    want = w * prior**2 + (1 - w) * r * r / dt_days
    assert est.volatility("A") == pytest.approx(math.sqrt(want), rel=1e-12)
