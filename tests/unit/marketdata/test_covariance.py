"""EWMA covariance: the recursion, PSD repair on indefinite and pairwise-deleted input,
the hourly lambda, and forecasts without look-ahead."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from aggregator.marketdata.covariance import (
    ewma_covariance,
    ewma_forecasts,
    ewma_vol_series,
    half_life,
    lambda_for_step,
    nearest_psd,
)


def min_eig(a: np.ndarray) -> float:
    return float(np.linalg.eigvalsh(a).min())


def test_ewma_matches_the_plain_sum() -> None:
    rng = np.random.default_rng(1)
    r = rng.normal(0, 0.02, (50, 3))
    lam = 0.94
    w = [(1 - lam) * lam ** (49 - t) for t in range(50)]
    ref = sum(wt * np.outer(r[t], r[t]) for t, wt in enumerate(w)) / sum(w)
    np.testing.assert_allclose(ewma_covariance(r, lam), ref, rtol=1e-9)


def test_hourly_lambda_keeps_the_daily_half_life() -> None:
    lh = lambda_for_step(3600)
    assert abs(lh - 0.94 ** (1 / 24)) < 1e-15 and abs(lh - 0.99743) < 1e-5
    assert abs(half_life(lh) / 24 - half_life(0.94)) < 1e-9
    assert abs(half_life(0.94) - 11.2) < 0.05


def test_indefinite_matrix_becomes_psd_keeping_variances() -> None:
    # Correlations 0.9, 0.9, -0.9 cannot coexist: eigenvalue < 0.
    c = np.array([[1, 0.9, 0.9], [0.9, 1, -0.9], [0.9, -0.9, 1.0]])
    s = np.diag([0.02, 0.03, 0.01])
    a = s @ c @ s
    assert min_eig(a) < -1e-5
    out = nearest_psd(a)
    assert min_eig(out) >= -1e-15 * np.abs(out).max()
    np.testing.assert_allclose(np.diag(out), np.diag(a), rtol=1e-12)
    np.testing.assert_allclose(out, out.T)


@settings(max_examples=150, deadline=None)
@given(
    arrays(np.float64, (5, 5), elements=st.floats(-1, 1)),
    arrays(np.float64, 5, elements=st.floats(1e-3, 1)),
)
def test_psd_for_any_symmetric_input(m: np.ndarray, d: np.ndarray) -> None:
    a = (m + m.T) / 2
    np.fill_diagonal(a, d)
    out = nearest_psd(a)
    w = np.linalg.eigvalsh(out)
    assert w.min() >= -1e-12 * max(1.0, w.max())
    np.testing.assert_allclose(np.diag(out), d, rtol=1e-9)


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.2, 0.7))
def test_pairwise_deleted_data_gives_psd(seed: int, missing: float) -> None:
    rng = np.random.default_rng(seed)
    r = rng.normal(0, 0.02, (40, 4))
    r[:, 1] = -r[:, 0] + rng.normal(0, 0.001, 40)
    r[rng.random(r.shape) < missing] = np.nan
    r[:3] = rng.normal(0, 0.02, (3, 4))  # every factor keeps a few returns
    out = ewma_covariance(r, 0.94)
    w = np.linalg.eigvalsh(out)
    assert w.min() >= -1e-12 * max(1e-12, w.max())
    assert np.all(np.isfinite(out))


def test_forecasts_use_only_the_past() -> None:
    rng = np.random.default_rng(2)
    r = rng.normal(0, 0.02, (60, 2))
    f = ewma_forecasts(r, 0.94, init=10)
    v = ewma_vol_series(r, 0.94, init=10)
    assert np.isnan(f[9]).all() and np.isnan(v[9]).all()
    r2 = r.copy()
    r2[40:] *= 10  # changing the future must not change forecasts up to t = 40
    np.testing.assert_array_equal(ewma_forecasts(r2, 0.94, init=10)[:41], f[:41])
    np.testing.assert_allclose(np.sqrt(np.diagonal(f, axis1=1, axis2=2))[10:], v[10:])
    s = r[:10].T @ r[:10] / 10
    for t in range(10, 12):
        s = 0.94 * s + 0.06 * np.outer(r[t], r[t])
    np.testing.assert_allclose(f[12], s)
    assert math.isclose(v[12, 0], math.sqrt(s[0, 0]))
