"""EWMA covariance of factor returns, always positive semi-definite.

RiskMetrics: S_t = lam * S_{t-1} + (1 - lam) * r_{t-1} r_{t-1}' (zero mean), lam = 0.94
for daily returns. For another sampling step, keep the half-life in calendar time:
lam_step = lam_daily ** (step / 1 day). The daily 0.94 has a half-life of
ln(0.5) / ln(0.94) = 11.2 days; the hourly lambda with the same half-life is
0.94 ** (1/24) = 0.99743 (269 hours). We recommend that for hourly returns rather than
0.94 per hour (a 11-hour half-life, which forgets a crash by the next day).

Invariants: `ewma_covariance` returns a symmetric matrix whose eigenvalues are >= 0
(up to rounding) whatever its input (missing values are pairwise deleted, which can
make the raw estimate indefinite: `nearest_psd` repairs it); forecasts in
`ewma_forecasts` for period t use only returns before t (no look-ahead).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]
DAILY_LAMBDA = 0.94


def lambda_for_step(step_s: float, daily_lambda: float = DAILY_LAMBDA) -> float:
    """The lambda for returns every `step_s` seconds with the daily lambda's half-life."""
    return float(daily_lambda ** (step_s / 86400.0))


def half_life(lam: float) -> float:
    """Half-life of the EWMA weights in periods."""
    return math.log(0.5) / math.log(lam)


def nearest_psd(s: F64, floor_rel: float = 1e-12) -> F64:
    """Symmetric PSD matrix near `s`: eigenvalues clipped at floor_rel * largest (never
    below 0), then rescaled to keep the original diagonal (variances) where it is
    positive. The rescaling is a congruence by a positive diagonal, so it keeps PSD."""
    a = 0.5 * (np.asarray(s, np.float64) + np.asarray(s, np.float64).T)
    if a.size == 0:
        return a
    w, v = np.linalg.eigh(a)
    top = max(float(w.max()), 0.0)
    w = np.maximum(w, floor_rel * top)
    out = (v * w) @ v.T
    d_new = np.diag(out).copy()
    d_old = np.diag(a)
    scale = np.where(
        (d_new > 0) & (d_old > 0), np.sqrt(np.abs(d_old) / np.where(d_new > 0, d_new, 1)), 1.0
    )
    out = out * scale[:, None] * scale[None, :]
    return np.asarray(0.5 * (out + out.T), np.float64)


def ewma_weights(n: int, lam: float) -> F64:
    """Weights of the n observations, oldest first, summing to 1."""
    w = (1.0 - lam) * lam ** np.arange(n - 1, -1, -1, dtype=np.float64)
    return np.asarray(w / w.sum(), np.float64)


def ewma_covariance(returns: F64, lam: float = DAILY_LAMBDA, min_obs: int = 2) -> F64:
    """EWMA covariance (forecast for the next period) of periods x factors returns.
    NaNs are pairwise deleted: each pair uses the periods where both are present, with
    the EWMA weights of those periods renormalised. The result is made PSD."""
    r = np.asarray(returns, np.float64)
    if r.ndim != 2:
        raise ValueError("returns must be periods x factors")
    n = r.shape[0]
    w = ewma_weights(n, lam)
    present = np.isfinite(r)
    if present.all():
        if n < min_obs:
            raise ValueError(f"{n} returns, need {min_obs}")
        cov = (r * w[:, None]).T @ r
        return nearest_psd(cov)
    z = np.where(present, r, 0.0)
    pw = present.astype(np.float64) * w[:, None]
    num = (z * w[:, None]).T @ z  # sum over periods where both present (zeros elsewhere)
    den = pw.T @ present.astype(np.float64)  # weight mass of the shared periods
    cnt = present.astype(np.float64).T @ present.astype(np.float64)
    if np.any(np.diag(cnt) < min_obs):
        bad = int(np.argmin(np.diag(cnt)))
        raise ValueError(f"factor {bad} has {int(cnt[bad, bad])} returns, need {min_obs}")
    cov = np.where(cnt >= min_obs, num / np.where(den > 0, den, 1.0), 0.0)
    return nearest_psd(cov)


def ewma_forecasts(returns: F64, lam: float = DAILY_LAMBDA, init: int = 20) -> F64:
    """(periods + 1) x factors x factors: element t is the covariance forecast for
    period t from returns[:t] only (element `periods` is the forecast for the next
    period). Seeded with the plain second moment of the first `init` returns, so the
    first forecast is element `init`; earlier elements are NaN."""
    r = np.asarray(returns, np.float64)
    n, k = r.shape
    out = np.full((n + 1, k, k), np.nan)
    if init < 1 or n < init:
        return out
    s = r[:init].T @ r[:init] / init
    out[init] = s
    for t in range(init, n):
        s = lam * s + (1.0 - lam) * np.outer(r[t], r[t])
        out[t + 1] = s
    return out


def ewma_vol_series(returns: F64, lam: float = DAILY_LAMBDA, init: int = 20) -> F64:
    """(periods + 1) x factors EWMA volatility forecasts, element t from returns[:t]
    only; NaN before element `init` (the seed is the mean square of the first `init`)."""
    r = np.asarray(returns, np.float64)
    n, k = r.shape
    out = np.full((n + 1, k), np.nan)
    if init < 1 or n < init:
        return out
    v = np.mean(r[:init] ** 2, axis=0)
    out[init] = v
    for t in range(init, n):
        v = lam * v + (1.0 - lam) * r[t] ** 2
        out[t + 1] = v
    return np.asarray(np.sqrt(out), np.float64)
