"""Backtest statistics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aggregator.risk.backtest import (
    breaches,
    christoffersen,
    conditional_coverage_p,
    kupiec,
    traffic_light,
    zone_bounds,
)


def test_breaches_are_losses_beyond_var() -> None:
    hits = breaches(np.array([1.0, 1.0, 2.0]), np.array([-1.5, -1.0, 3.0]))
    assert hits.tolist() == [True, False, False]
    with pytest.raises(ValueError):
        breaches(np.ones(2), np.ones(3))


def test_kupiec_hand_computed() -> None:
    # n = 250, x = 5, p = 1%: LR = -2[245 ln .99 + 5 ln .01] + 2[245 ln .98 + 5 ln .02]
    k = kupiec(250, 5, 0.01)
    assert math.isclose(k.lr, 1.956808, abs_tol=1e-5)
    # chi2(1) survival = erfc(sqrt(LR / 2))
    assert math.isclose(k.p_value, math.erfc(math.sqrt(1.956808 / 2)), abs_tol=1e-6)
    assert math.isclose(k.p_value, 0.16185, abs_tol=1e-4)
    assert k.expected == 2.5
    # No breaches: LR = -2 n ln(1 - p).
    z = kupiec(250, 0, 0.01)
    assert math.isclose(z.lr, -2 * 250 * math.log(0.99), rel_tol=1e-12)
    # Exactly the expected count: LR = 0, p-value 1.
    assert kupiec(500, 5, 0.01).lr == 0.0 and kupiec(500, 5, 0.01).p_value == 1.0
    all_ = kupiec(10, 10, 0.01)
    assert math.isclose(all_.lr, -2 * 10 * math.log(0.01), rel_tol=1e-12)


def test_christoffersen_hand_computed() -> None:
    even = christoffersen(np.array([0, 0, 1, 1, 0, 0, 0, 1, 0, 0], bool))
    assert (even.n00, even.n01, even.n10, even.n11) == (4, 2, 2, 1)
    assert even.lr_ind == 0.0 and even.p_value == 1.0  # pi01 = pi11 = pi = 1/3
    c = christoffersen(np.array([0, 1, 1, 1, 0, 0, 0, 0], bool))
    assert (c.n00, c.n01, c.n10, c.n11) == (3, 1, 1, 2)
    # ll0 = 4 ln 4/7 + 3 ln 3/7; ll1 = 3 ln 3/4 + ln 1/4 + ln 1/3 + 2 ln 2/3
    assert math.isclose(c.lr_ind, 1.2429474, abs_tol=1e-6)
    assert math.isclose(c.p_value, math.erfc(math.sqrt(1.2429474 / 2)), abs_tol=1e-6)
    k = kupiec(8, 3, 0.01)
    cc = conditional_coverage_p(k, c)
    assert math.isclose(cc, math.exp(-(k.lr + c.lr_ind) / 2), rel_tol=1e-9)  # chi2(2) sf
    none = christoffersen(np.zeros(20, bool))
    assert none.lr_ind == 0.0


def test_traffic_light_bounds_at_250_are_the_basel_table() -> None:
    assert zone_bounds(250, 0.01) == (4, 9)
    assert [traffic_light(250, x) for x in (0, 4, 5, 9, 10, 30)] == [
        "green",
        "green",
        "yellow",
        "yellow",
        "red",
        "red",
    ]
    # Scaled binomially: more observations, wider zones.
    g, y = zone_bounds(500, 0.01)
    assert g > 4 and y > 9 and g < y
