"""VaR/ES maths against an independent scalar reference written from the formulas with
plain loops (tests/unit/risk/test_var.py only; nothing from aggregator.risk.var is
reused in the reference)."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.risk.portfolio import black76
from aggregator.risk.var import (
    _tail_losses,
    es_multiplier,
    filtered_scenarios,
    historical,
    option_revaluer,
    parametric,
    stressed_window,
    z_of,
)

SETTINGS = settings(max_examples=60, deadline=None)
N = NormalDist()


# -- the scalar reference -------------------------------------------------------------
def ref_parametric(x: list[float], cov: list[list[float]], a_var: float, a_es: float, h: float):
    k = len(x)
    q = 0.0
    for i in range(k):
        for j in range(k):
            q += x[i] * cov[i][j] * x[j]
    sigma = math.sqrt(max(q, 0.0) * h)
    z_v, z_e = N.inv_cdf(a_var), N.inv_cdf(a_es)
    es_k = N.pdf(z_e) / (1 - a_es)
    contrib = []
    for i in range(k):
        sx = sum(cov[i][j] * x[j] for j in range(k))
        contrib.append(0.0 if sigma == 0 else x[i] * sx * h / sigma * es_k)
    return z_v * sigma, es_k * sigma, contrib


def ref_historical(x: list[float], scen: list[list[float]], a_var: float, a_es: float, h: float):
    pnl = []
    for s in scen:
        pnl.append(sum(x[i] * (math.exp(math.sqrt(h) * s[i]) - 1) for i in range(len(x))))
    order = sorted(range(len(scen)), key=lambda s: pnl[s])  # worst first
    kv = max(1, math.ceil(round((1 - a_var) * len(scen), 9)))
    ke = max(1, math.ceil(round((1 - a_es) * len(scen), 9)))
    var = -pnl[order[kv - 1]]
    tail = order[:ke]
    es = -sum(pnl[s] for s in tail) / ke
    contrib = [
        -sum(x[i] * (math.exp(math.sqrt(h) * scen[s][i]) - 1) for s in tail) / ke
        for i in range(len(x))
    ]
    return var, es, contrib


def ref_fhs(r: list[list[float]], lam: float, n: int, init: int) -> list[list[float]]:
    k = len(r[0])
    out = []
    var = [sum(r[t][i] ** 2 for t in range(init)) / init for i in range(k)]
    vols = [None] * init
    for t in range(init, len(r)):
        vols.append([math.sqrt(v) for v in var])
        var = [lam * var[i] + (1 - lam) * r[t][i] ** 2 for i in range(k)]
    now = [math.sqrt(v) for v in var]
    for t in range(max(init, len(r) - n), len(r)):
        out.append([r[t][i] * (now[i] / vols[t][i] if vols[t][i] > 0 else 1.0) for i in range(k)])
    return out


# -- books -----------------------------------------------------------------------------
def cov_from(seed: int, k: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 0.03, (k + 3, k))
    return a.T @ a / (k + 3)


books = st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=6)


@SETTINGS
@given(st.integers(1, 8), st.integers(0, 2**32 - 1), st.floats(0.5, 10))
def test_parametric_matches_the_reference(n_acc: int, seed: int, h: float) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 7))
    cov = cov_from(seed, k)
    x = rng.normal(0, 1e5, (n_acc, k)) * (rng.random((n_acc, k)) < 0.7)
    got = parametric(x, cov, var_level=0.99, es_level=0.975, horizon=h, contributions=True)
    assert got.contributions is not None
    for a in range(n_acc):
        v, e, c = ref_parametric(x[a].tolist(), cov.tolist(), 0.99, 0.975, h)
        assert math.isclose(got.var[a], v, rel_tol=1e-9, abs_tol=1e-6)
        assert math.isclose(got.es[a], e, rel_tol=1e-9, abs_tol=1e-6)
        np.testing.assert_allclose(got.contributions[a], c, rtol=1e-8, atol=1e-6)
        assert math.isclose(sum(c), e, rel_tol=1e-9, abs_tol=1e-6)  # Euler: exact sum


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.sampled_from([0.95, 0.975, 0.99]), st.floats(1, 5))
def test_historical_matches_the_reference(seed: int, level: float, h: float) -> None:
    rng = np.random.default_rng(seed)
    k, n_s, n_acc = int(rng.integers(1, 6)), int(rng.integers(20, 300)), 5
    scen = rng.standard_t(4, (n_s, k)) * 0.02
    x = rng.normal(0, 1e4, (n_acc, k))
    x[0] = 0.0
    got = historical(
        x, scen, var_level=level, es_level=0.975, horizon=h, contributions=True, chunk=2
    )
    assert got.contributions is not None
    for a in range(n_acc):
        v, e, c = ref_historical(x[a].tolist(), scen.tolist(), level, 0.975, h)
        assert math.isclose(got.var[a], v, rel_tol=1e-9, abs_tol=1e-9)
        assert math.isclose(got.es[a], e, rel_tol=1e-9, abs_tol=1e-9)
        np.testing.assert_allclose(got.contributions[a], c, rtol=1e-8, atol=1e-8)
        assert math.isclose(got.contributions[a].sum(), got.es[a], rel_tol=1e-9, abs_tol=1e-8)
    assert got.var[0] == got.es[0] == 0.0


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.integers(30, 200), st.integers(5, 300))
def test_fhs_matches_the_reference(seed: int, t: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    r = rng.normal(0, 0.02, (t, 3)) * np.linspace(0.5, 3, t)[:, None]
    r[:, 2] = 0.0  # a factor without volatility keeps its raw returns
    got = filtered_scenarios(r, 0.94, n_scenarios=n, init=10)
    np.testing.assert_allclose(got, ref_fhs(r.tolist(), 0.94, n, 10), rtol=1e-10, atol=1e-15)


def ref_linear_tail(x: list[float], g: list[list[float]]) -> list[float]:
    """Every scenario's loss, largest first: minus the plain left-to-right sum of
    x_i g_si over the non-zero x_i in column order (g = expm1 of the scaled returns)."""
    losses = []
    for row in g:
        acc = 0.0
        for xi, gi in zip(x, row, strict=True):
            if xi != 0.0:
                acc += xi * gi
        losses.append(-acc)
    return sorted(losses, reverse=True)


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.sampled_from([0.95, 0.975, 0.99]), st.floats(1, 5))
def test_linear_pnl_is_the_column_order_sum_bit_for_bit(seed: int, level: float, h: float) -> None:
    # The compiled pass sums each account's P&L over its non-zero positions in column
    # order: the VaR is the scalar reference's order statistic exactly, and the ES the
    # numpy mean of its tail largest first (as computed before), not merely close.
    rng = np.random.default_rng(seed)
    k, n_s, n_acc = int(rng.integers(1, 12)), int(rng.integers(20, 600)), 7
    scen = rng.standard_t(4, (n_s, k)) * 0.02
    x = rng.lognormal(8, 2, (n_acc, k)) * rng.choice([-1.0, 1.0], (n_acc, k))
    x *= rng.random((n_acc, k)) < 0.5
    got = historical(x, scen, var_level=level, es_level=0.975, horizon=h, chunk=3)
    g = np.expm1(scen * math.sqrt(h)).tolist()
    kv = max(1, math.ceil(round((1 - level) * n_s, 9)))
    ke = max(1, math.ceil(round(0.025 * n_s, 9)))
    for a in range(n_acc):
        tail = ref_linear_tail(x[a].tolist(), g)
        assert got.var[a] == tail[kv - 1]
        assert got.es[a] == np.mean(np.array(tail[:ke]))


@SETTINGS
@given(st.integers(0, 2**32 - 1))
def test_historical_within_summation_rounding_of_the_dense_product(seed: int) -> None:
    # The stated tolerance against the dense matrix product (x @ g.T, then a sort) that
    # computed these figures before: the two differ by the rounding of a sum of k
    # terms only, within 1e-13 of sum_i |x_i| max|g| per account.
    rng = np.random.default_rng(seed)
    k, n_s, n_acc = 30, 500, 200
    scen = rng.standard_t(4, (n_s, k)) * 0.02
    x = np.zeros((n_acc, k))
    for _ in range(5):
        x[np.arange(n_acc), rng.integers(0, k, n_acc)] += rng.lognormal(8, 1.5, n_acc) * (
            rng.choice([-1.0, 1.0], n_acc, p=[0.3, 0.7])
        )
    got = historical(x, scen, es_level=0.975)
    g = np.expm1(scen)
    dense = -np.sort(x @ g.T, axis=1)  # losses, largest first
    bound = 1e-13 * np.abs(x).sum(axis=1) * np.abs(g).max()
    assert (np.abs(got.var - dense[:, 4]) <= bound).all()
    assert (np.abs(got.es - dense[:, :13].mean(axis=1)) <= bound).all()


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.integers(1, 20))
def test_tail_selection_is_the_stable_top_k(seed: int, k: int) -> None:
    # With ties (integer losses), the tail is the first k of a stable sort by loss,
    # largest first: the earlier scenario wins a tie, so contributions are
    # reproducible. Losses go in through the extra column (loss = -0.0 - extra).
    rng = np.random.default_rng(seed)
    n, m = 9, int(rng.integers(k, 80))
    loss = rng.integers(-5, 6, (n, m)).astype(np.float64)
    vals, idx = _tail_losses(np.zeros((n, 1)), np.zeros((1, m)), -loss, k)
    order = np.argsort(-loss, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(idx, order)
    np.testing.assert_array_equal(vals, np.take_along_axis(loss, order, axis=1))


def test_zero_position_accounts_give_zero() -> None:
    cov = cov_from(3, 4)
    x = np.zeros((3, 4))
    p = parametric(x, cov, contributions=True)
    assert not p.var.any() and not p.es.any() and p.contributions is not None
    assert not p.contributions.any()
    h = historical(x, np.random.default_rng(0).normal(0, 0.02, (500, 4)), contributions=True)
    assert not h.var.any() and not h.es.any()


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.floats(-0.99, 0.99))
def test_hedged_pair_below_the_sum_of_its_legs(seed: int, rho: float) -> None:
    rng = np.random.default_rng(seed)
    s1, s2 = rng.uniform(0.01, 0.08, 2)
    cov = np.array([[s1 * s1, rho * s1 * s2], [rho * s1 * s2, s2 * s2]])
    long_, short = rng.uniform(1e3, 1e6), -rng.uniform(1e3, 1e6)
    books_ = np.array([[long_, short], [long_, 0.0], [0.0, short]])
    v = parametric(books_, cov).var
    assert v[0] <= v[1] + v[2] + 1e-9
    if rho > 0.05:
        assert v[0] < v[1] + v[2]
    scen = rng.multivariate_normal([0, 0], cov, 1000)
    hv = historical(books_, scen).es
    assert hv[0] <= hv[1] + hv[2] + 1e-9 * hv.max()


@SETTINGS
@given(st.integers(0, 2**32 - 1))
def test_es_is_subadditive_on_random_books(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 6))
    scen = rng.standard_t(3, (int(rng.integers(50, 800)), k)) * 0.03
    a, b = rng.normal(0, 1e5, (2, k))
    e = historical(np.stack([a, b, a + b]), scen, es_level=0.975).es
    assert e[2] <= e[0] + e[1] + 1e-9 * max(1.0, e.max())
    cov = cov_from(seed, k)
    pe = parametric(np.stack([a, b, a + b]), cov).es
    assert pe[2] <= pe[0] + pe[1] + 1e-9 * max(1.0, pe.max())


def test_option_revaluation_hook_vs_a_plain_loop() -> None:
    rng = np.random.default_rng(5)
    scen = rng.normal(0, 0.05, (500, 2))
    spot, strike, t, iv = 3000.0, 3300.0, 30 / 365, 0.65
    sizes = np.array([-20.0, 0.0, 5.0])
    spot_x = np.array([[60_000.0, 0.0], [0.0, 0.0], [0.0, 1000.0]])
    hook = option_revaluer(
        0, spot=spot, strike=strike, t_years=t, implied_vol=iv, is_call=True, size=sizes
    )
    got = historical(spot_x, scen, revalue=hook, contributions=True, chunk=2)
    assert got.contributions is not None
    v0 = float(black76(spot, strike, t, iv, True))
    for a in range(3):
        pnl = []
        for s in range(500):
            lin = sum(spot_x[a][i] * (math.exp(scen[s][i]) - 1) for i in range(2))
            fwd = spot * math.exp(scen[s][0])
            opt = sizes[a] * (float(black76(fwd, strike, t - 1 / 365, iv, True)) - v0)
            pnl.append(lin + opt)
        worst = sorted(pnl)
        ke = math.ceil(0.025 * 500)
        es = -sum(worst[:ke]) / ke
        assert math.isclose(got.es[a], es, rel_tol=1e-9, abs_tol=1e-9)
        assert math.isclose(got.var[a], -worst[4], rel_tol=1e-9, abs_tol=1e-9)
        assert math.isclose(got.contributions[a].sum(), es, rel_tol=1e-9, abs_tol=1e-9)
    # The short call caps the covered position's upside, not its downside: the option
    # column's contribution is negative (a gain in the tail) for the covered book.
    assert got.contributions[0, 2] < 0


def test_stressed_window_finds_the_crash() -> None:
    rng = np.random.default_rng(9)
    r = rng.normal(0, 0.01, (400, 2))
    r[250:260] -= 0.08
    s, e = stressed_window(r, 50)
    # ES at 97.5% of 50 periods averages the 2 worst: the window holds 2+ crash days.
    assert len(set(range(s, e)) & set(range(250, 260))) >= 2
    s, e = stressed_window(r, 50, weights=np.array([-1.0, 0.0]))  # short: no crash
    assert len(set(range(s, e)) & set(range(250, 260))) == 0


@SETTINGS
@given(st.floats(0.5, 0.99999))
def test_normal_quantile_and_es_multiplier_are_scipy_stats(level: float) -> None:
    # var.py computes them without importing scipy.stats (start-up time): the quantile
    # bit for bit; the density within a few ulp (hypothesis found norm.pdf one ulp
    # below exp(-z**2/2) / sqrt(2 pi) at level 0.9479370435101873).
    from scipy.stats import norm

    assert z_of(level) == float(norm.ppf(level))
    want = float(norm.pdf(norm.ppf(level)) / (1.0 - level))
    assert es_multiplier(level) == pytest.approx(want, rel=1e-15, abs=0.0)
