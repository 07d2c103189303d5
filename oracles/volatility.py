"""EWMA (RiskMetrics) volatility and correlation of log returns, robust to
irregular sampling.

A return r observed over dt days carries variance r**2 / dt per day, and the
older estimate decays by lambda**dt (lambda is the per-day decay), so a gap of
three days weighs like three daily updates and ten-second ticks do not swamp
the estimate:

    w = lambda ** dt
    var <- w * var + (1 - w) * r**2 / dt

Pairs are estimated on their joint samples (both prices present in the same
round), with the same weights for both variances and the covariance, so the 2x2
matrix stays positive semi-definite: |correlation| <= 1 and the variance of the
log ratio var_a + var_b - 2 cov is never negative.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import combinations

DAY_S = 86400.0


@dataclass(frozen=True)
class VolatilitySettings:
    ewma_lambda: float = 0.94
    # Daily sigma assumed before data exists; None = start from the first return.
    prior_daily: float | None = 0.05
    min_interval_s: float = 300.0
    # The time ewma_lambda decays over (the variance stays per day of DAY_S).
    lambda_period_s: float = DAY_S

    def __post_init__(self) -> None:
        if not 0 < self.ewma_lambda < 1:
            raise ValueError(f"ewma_lambda must be in (0, 1), got {self.ewma_lambda}")
        if not self.lambda_period_s > 0:
            raise ValueError(f"lambda_period_s must be > 0, got {self.lambda_period_s}")
        if self.prior_daily is not None and self.prior_daily < 0:
            raise ValueError(f"prior_daily must be >= 0, got {self.prior_daily}")


@dataclass
class _Single:
    t: float
    logp: float
    var: float | None
    n: int = 0


@dataclass
class _Pair:
    t: float
    la: float
    lb: float
    va: float | None
    vb: float | None
    cov: float | None
    n: int = 0


class EwmaEstimator:
    def __init__(self, assets: Iterable[str], settings: VolatilitySettings) -> None:
        self.settings = settings
        self.assets = tuple(assets)
        self._single: dict[str, _Single] = {}
        self._pair: dict[tuple[str, str], _Pair] = {}
        self._last_round: float | None = None

    def _weights(self, dt_days: float) -> tuple[float, float]:
        w = self.settings.ewma_lambda ** (dt_days * DAY_S / self.settings.lambda_period_s)
        return w, (1.0 - w) / dt_days

    def update(self, at: float, prices: Mapping[str, float]) -> bool:
        """Feed one round of accepted prices (asset -> price) computed at `at`.
        Rounds closer than min_interval_s to the last sampled one are skipped;
        returns whether the round was sampled."""
        if self._last_round is not None and at - self._last_round < self.settings.min_interval_s:
            return False
        if self._last_round is not None and at <= self._last_round:
            return False
        self._last_round = at
        logs = {a: math.log(p) for a, p in prices.items() if a in self.assets and p > 0}
        prior = self.settings.prior_daily
        prior_var = None if prior is None else prior * prior
        for a, lp in logs.items():
            s = self._single.get(a)
            if s is None:
                self._single[a] = _Single(at, lp, prior_var)
                continue
            dt = (at - s.t) / DAY_S
            r = lp - s.logp
            w, k = self._weights(dt)
            s.var = r * r / dt if s.var is None else w * s.var + k * r * r
            s.t, s.logp, s.n = at, lp, s.n + 1
        for a, b in combinations(sorted(logs), 2):
            p = self._pair.get((a, b))
            if p is None:
                self._pair[(a, b)] = _Pair(
                    at, logs[a], logs[b], prior_var, prior_var, None if prior_var is None else 0.0
                )
                continue
            dt = (at - p.t) / DAY_S
            ra, rb = logs[a] - p.la, logs[b] - p.lb
            w, k = self._weights(dt)
            if p.va is None or p.vb is None or p.cov is None:
                p.va, p.vb, p.cov = ra * ra / dt, rb * rb / dt, ra * rb / dt
            else:
                p.va = w * p.va + k * ra * ra
                p.vb = w * p.vb + k * rb * rb
                p.cov = w * p.cov + k * ra * rb
            p.t, p.la, p.lb, p.n = at, logs[a], logs[b], p.n + 1
        return True

    def _check(self, asset: str) -> None:
        if asset not in self.assets:
            raise KeyError(f"unknown asset {asset!r} (known: {', '.join(self.assets)})")

    def _prior(self) -> float:
        return self.settings.prior_daily or 0.0

    def volatility(self, asset: str) -> float:
        """Daily sigma of log returns."""
        self._check(asset)
        s = self._single.get(asset)
        if s is None or s.var is None:
            return self._prior()
        return math.sqrt(max(s.var, 0.0))

    def _pair_state(self, a: str, b: str) -> tuple[_Pair | None, bool]:
        self._check(a)
        self._check(b)
        if a < b:
            return self._pair.get((a, b)), False
        return self._pair.get((b, a)), True

    def correlation(self, a: str, b: str) -> float:
        if a == b:
            self._check(a)
            return 1.0
        p, _ = self._pair_state(a, b)
        if p is None or p.va is None or p.vb is None or p.cov is None:
            return 0.0
        denom = math.sqrt(p.va * p.vb)
        if denom == 0.0:
            return 0.0
        return max(-1.0, min(1.0, p.cov / denom))

    def relative_volatility(self, asset: str, ref: str) -> float:
        """Daily sigma of log(p(asset) / p(ref)), what hurts an e-mode position."""
        if asset == ref:
            self._check(asset)
            return 0.0
        p, _ = self._pair_state(asset, ref)
        if p is None or p.va is None or p.vb is None or p.cov is None:
            return math.sqrt(2.0) * self._prior()
        return math.sqrt(max(p.va + p.vb - 2.0 * p.cov, 0.0))

    def samples(self, asset: str) -> int:
        self._check(asset)
        s = self._single.get(asset)
        return 0 if s is None else s.n
