"""Reputation (aggregator/risk/reputation.py): the score against a scalar reference
written from docs/reputation.md, the gaming rules, and the engine seam (bit for bit at
m = 1, HF non-increasing in m on random books, never healthy with V < D)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.risk import PositionRow, PriceInput, RiskEngine
from aggregator.risk.reputation import (
    DAY,
    Episode,
    History,
    Liquidation,
    Params,
    Reputation,
    episodes_from_points,
    score,
)
from chains.units import TIERS

from .helpers import ADDRS, apply_market, engine, market, position_rows
from .test_properties import SETTINGS

P = Params()
NOW = 1_000 * DAY
A = "0x00000000000000000000000000000000000000a1"


def ref_multiplier(h: History, p: Params, now: float) -> float:
    """Scalar reference, plain loops, from the formula in docs/reputation.md."""
    if h.first_seen is None or h.first_seen > now:
        return 1.0
    last = -math.inf
    for liq in h.liquidations:
        if liq.t <= now and liq.t > last:
            last = liq.t
    clean_start = h.first_seen if h.first_seen > last else last
    bad = 0.0
    for e in h.episodes or ():
        end = now if e.end is None else e.end
        lo = e.start if e.start > clean_start else clean_start
        hi = end if end < now else now
        if hi > lo:
            bad += hi - lo
    clean_days = max(0.0, now - clean_start - bad) / DAY
    mature = now - h.first_seen >= p.min_age_days * DAY
    reward = 0.0
    if mature and clean_days > p.min_age_days:
        reward = p.reward_per_30d * (clean_days - p.min_age_days) / 30.0
        reward = min(reward, 1.0 - p.lower)
    penalty = 0.0
    for liq in h.liquidations:
        if liq.t <= now:
            penalty += p.liquidation_penalty * 0.5 ** ((now - liq.t) / (p.half_life_days * DAY))
    for e in h.episodes or ():
        if e.worst_tier >= TIERS.index("liquidatable"):
            end = now if e.end is None else e.end
            penalty += p.liquidatable_penalty * 0.5 ** ((now - end) / (p.half_life_days * DAY))
    m = 1.0 - (reward - penalty)
    m = min(max(m, p.lower), p.upper)
    if not mature and m < 1.0:
        m = 1.0
    return m


times = st.floats(min_value=0.0, max_value=NOW, allow_nan=False)


@st.composite
def histories(draw: st.DrawFn) -> History:
    first = draw(st.one_of(st.none(), times))
    base = 0.0 if first is None else first
    later = st.floats(min_value=base, max_value=NOW, allow_nan=False)
    liqs = tuple(
        Liquidation(t, draw(st.sampled_from(["ethereum", "arbitrum", "base"])), 100.0)
        for t in draw(st.lists(later, max_size=3))
    )
    episodes = None
    if draw(st.booleans()):
        cuts = sorted(draw(st.lists(later, max_size=6)))
        eps = []
        for lo, hi in zip(cuts[::2], cuts[1::2], strict=False):
            eps.append(Episode(lo, hi, draw(st.integers(1, 3))))
        episodes = tuple(eps)
    return History(first, liqs, episodes)


def test_new_and_unknown_accounts_are_neutral() -> None:
    assert score(A, History(), P, NOW).multiplier == 1.0
    assert score(A, History(first_seen=NOW), P, NOW).multiplier == 1.0


def test_good_behaviour_lowers_slowly_to_the_floor() -> None:
    # 90 days of probation, then -0.01 per 30 clean days down to the floor 0.90.
    assert score(A, History(NOW - 89 * DAY), P, NOW).multiplier == 1.0
    assert score(A, History(NOW - 120 * DAY), P, NOW).multiplier == pytest.approx(0.99)
    assert score(A, History(NOW - 365 * DAY), P, NOW).multiplier == pytest.approx(1 - 0.275 / 3)
    assert score(A, History(NOW - 400 * DAY), P, NOW).multiplier == pytest.approx(0.90)
    # 30 more clean days never lower it by more than 0.01.
    for d in range(0, 600, 7):
        m0 = score(A, History(NOW - d * DAY), P, NOW).multiplier
        m1 = score(A, History(NOW - d * DAY), P, NOW + 30 * DAY).multiplier
        assert m0 - m1 <= 0.01 + 1e-12


def test_a_liquidation_raises_it_at_once_and_decays() -> None:
    h = History(NOW - 400 * DAY, (Liquidation(NOW, "base", 5_000.0),))
    r = score(A, h, P, NOW)
    assert r.multiplier == pytest.approx(1.30)
    f = {x.name: x for x in r.factors}
    assert f["liquidations"].contribution == pytest.approx(-0.30)
    assert "5000.00 USD" in f["liquidations"].note
    later = score(A, h, P, NOW + 180 * DAY).multiplier
    assert later == pytest.approx(1.0 + 0.15 - 0.03)  # half the penalty, 90 earned days


@SETTINGS
@given(histories(), st.floats(min_value=0.0, max_value=NOW, allow_nan=False))
def test_score_matches_the_scalar_reference(h: History, dt: float) -> None:
    now = NOW + dt
    r = score(A, h, P, now)
    assert r.multiplier == pytest.approx(ref_multiplier(h, P, now), abs=1e-12)
    assert P.lower <= r.multiplier <= P.upper


@SETTINGS
@given(histories(), st.integers(1, 50), st.floats(0.0, 3600.0), st.floats(0.0, NOW))
def test_loops_in_one_hour_do_not_move_the_score(
    h: History, n: int, spread: float, at: float
) -> None:
    """Deposit/withdraw or borrow/repay loops add events, never a liquidation nor an
    earlier first event: the history the score reads is the same."""
    first = h.first_seen if h.first_seen is not None else at
    at = max(at, first)
    loop_events = [at + spread * i / n for i in range(n)]
    # The feed folds events into first_seen = min over events: the loop is later.
    folded = History(min([first, *loop_events]), h.liquidations, h.episodes)
    assert score(A, folded, P, NOW + DAY) == score(
        A, History(first, h.liquidations, h.episodes), P, NOW + DAY
    )


@SETTINGS
@given(histories(), st.floats(0.0, 1.0))
def test_a_fresh_address_is_never_better_than_neutral(h: History, frac: float) -> None:
    first = NOW - frac * P.min_age_days * DAY * 0.999
    young = History(first, tuple(x for x in h.liquidations if x.t >= first), h.episodes)
    assert score(A, young, P, NOW).multiplier >= 1.0


def test_liquidation_on_one_chain_raises_the_one_multiplier() -> None:
    """One history per account across chains: a liquidation on arbitrum raises the
    multiplier the engine applies to the account, whichever chain its positions are on."""
    clean = History(NOW - 400 * DAY)
    hit = History(NOW - 400 * DAY, (Liquidation(NOW - DAY, "arbitrum", 1.0),))
    assert score(A, clean, P, NOW).multiplier == pytest.approx(0.90)
    assert score(A, hit, P, NOW).multiplier > 1.29


def test_episodes_from_history_points() -> None:
    w, liq = TIERS.index("warning"), TIERS.index("liquidatable")
    pts = [(0.0, 0, 0), (3600.0, w, w), (7200.0, w, liq), (10800.0, 0, 0), (14400.0, 0, w)]
    eps = episodes_from_points(pts, 20_000.0)
    assert eps == (Episode(3600.0, 10800.0, liq), Episode(14400.0, 14400.0, w))
    assert episodes_from_points([(0.0, w, w)], 10.0) == (Episode(0.0, None, w),)


def test_time_in_warning_is_not_clean_time() -> None:
    eps = (Episode(NOW - 60 * DAY, NOW - 30 * DAY, TIERS.index("warning")),)
    r = score(A, History(NOW - 180 * DAY, (), eps), P, NOW)
    assert r.multiplier == pytest.approx(0.98)  # 150 clean days, not 180


def test_bad_parameters_name_the_field() -> None:
    with pytest.raises(ValueError, match="lower"):
        Params(lower=1.1)
    with pytest.raises(ValueError, match="half_life_days"):
        Params(half_life_days=0)


# -- the engine seam ---------------------------------------------------------------
def _engine(rows: list, m: dict) -> RiskEngine:
    eng = engine()
    apply_market(eng, m)
    eng.load_positions(rows)
    eng.recompute()
    return eng


def _stored(eng: RiskEngine) -> tuple[np.ndarray, ...]:
    n = eng.book.n_accounts
    return (eng.r_hf[:n].copy(), eng.r_bp[:n].copy(), eng.r_tier[:n].copy())


def _rep(addr: str, m: float) -> Reputation:
    return Reputation(addr, 1.0 - m, m, 400.0, ())


@SETTINGS
@given(position_rows(), market())
def test_multiplier_one_is_bit_for_bit_the_base_model(rows: list, m: dict) -> None:
    eng = _engine(rows, m)
    base = _stored(eng)
    addrs = list(eng.book.account_address)
    eng.set_reputation(P, dict.fromkeys(addrs, 1.0), lambda a: _rep(a, 1.0))
    eng.recompute()
    for x, y in zip(base, _stored(eng), strict=True):
        assert x.tobytes() == y.tobytes()
    for a in addrs:
        eng.recompute_account(a)
        assert eng.standard_health(a) == engine_health_without(rows, m, a)


def engine_health_without(rows: list, m: dict, addr: str) -> object:
    return _engine(rows, m).standard_health(addr)


@SETTINGS
@given(
    position_rows(),
    market(),
    st.lists(st.floats(P.lower, P.upper), min_size=2, max_size=2).map(sorted),
)
def test_hf_and_bp_are_non_increasing_in_the_multiplier(rows: list, m: dict, ms: list) -> None:
    eng = _engine(rows, m)
    addrs = list(eng.book.account_address)
    out = []
    for mult in ms:
        eng.set_reputation(P, dict.fromkeys(addrs, mult), lambda a, x=mult: _rep(a, x))
        eng.recompute()
        out.append(_stored(eng))
    (hf0, bp0, t0), (hf1, bp1, t1) = out
    # The parallel post-tick rewrite equals the per-account path bit for bit.
    for i, a in enumerate(addrs):
        eng.recompute_account(a)
        assert eng.r_hf[i].tobytes() == hf1[i].tobytes()
        assert eng.r_bp[i].tobytes() == bp1[i].tobytes() and eng.r_tier[i] == t1[i]
    # C' = V - m (V - C) is non-increasing in m in exact arithmetic; allow the
    # rounding of one multiply-subtract.
    assert (hf1 <= hf0 + 1e-12 * np.abs(hf0)).all()
    assert (bp1 <= bp0 + 1e-12 * np.abs(bp0) + 1e-9).all()
    assert (t1 >= t0).all()


@SETTINGS
@given(position_rows(), market(), st.floats(P.lower, P.upper))
def test_never_healthy_with_collateral_below_debt(rows: list, m: dict, mult: float) -> None:
    eng = _engine(rows, m)
    addrs = list(eng.book.account_address)
    eng.set_reputation(P, dict.fromkeys(addrs, mult), lambda a: _rep(a, mult))
    eng.recompute()
    for a in addrs:
        h = eng.standard_health(a)
        if h.collateral_usd < h.debt_usd:
            assert eng.health(a).tier == "insolvent"


def test_stored_event_and_tick_paths_agree_with_a_multiplier() -> None:
    """A reduced multiplier on one account: the tick's stored figures, the per-account
    path and the explanation agree, and the explanation carries the factors."""
    eng = engine()
    prices = {"USDC": 1.0, "DAI": 1.0, "WBTC": 6e4, "WETH": 3e3, "wstETH": 3.5e3, "rETH": 3.3e3}
    eng.set_prices({k: PriceInput(v, "ok") for k, v in prices.items()})
    eng.set_volatility(dict.fromkeys(prices, 0.02), {})
    e18 = 10**18
    eng.load_positions([
        PositionRow(ADDRS[0], "ethereum", "WETH", "collateral", 10 * e18, 10 * e18),
        PositionRow(ADDRS[0], "base", "USDC", "debt", 20_000 * 10**6, 20_000 * 10**6),
    ])  # fmt: skip
    eng.recompute()
    base = eng.health(ADDRS[0])
    rep = score(ADDRS[0], History(NOW - 400 * DAY), P, NOW)
    eng.set_reputation(P, {ADDRS[0]: rep.multiplier}, lambda a: rep)
    eng.recompute()
    tick = eng.health(ADDRS[0])
    eng.recompute_account(ADDRS[0])
    event = eng.health(ADDRS[0])
    assert tick == event
    v = base.collateral_usd
    # A reward lowers the borrowing requirement only: HF and tier are the base ones.
    assert tick.c_liq == base.c_liq and tick.hf == base.hf and tick.tier == base.tier
    assert tick.c_borrow == pytest.approx(min(v - 0.9 * (v - base.c_borrow), base.c_liq))
    assert tick.bp > base.bp
    ex = eng.explain(ADDRS[0], now=NOW)
    assert ex["hf"] == tick.hf
    assert ex["reputation"]["multiplier"] == pytest.approx(0.90)
    names = [f["name"] for f in ex["reputation"]["factors"]]
    assert {"clean_days", "liquidations", "risk_history"} <= set(names)


def test_disabled_engine_explanation_has_no_reputation() -> None:
    eng = engine()
    assert eng.reputation_of(ADDRS[0]) is None


@SETTINGS
@given(histories(), st.floats(0.0, NOW))
def test_below_neutral_only_after_a_long_clean_history(h: History, dt: float) -> None:
    """m < 1 only for an account older than min_age_days with more than min_age_days of
    clean time since its first event and its last liquidation; everything else >= 1."""
    now = NOW + dt
    r = score(A, h, P, now)
    if r.multiplier < 1.0:
        clean = {f.name: f for f in r.factors}["clean_days"].value
        assert h.first_seen is not None and now - h.first_seen >= P.min_age_days * DAY
        assert clean is not None and clean > P.min_age_days


@SETTINGS
@given(
    st.lists(
        st.tuples(
            st.floats(-1e9, 1e9),
            st.one_of(st.just(0.0), st.floats(1e-3, 1e9)),
            st.floats(P.lower, P.upper),
        ),
        min_size=1,
        max_size=20,
    ),
    st.floats(P.lower, P.upper),
)
def test_pushed_model_requirement_scaled_monotone_and_exact_at_one(
    rows: list[tuple[float, float, float]], bump: float
) -> None:
    """portfolio / var: m scales the requirement; m = 1 is the model's own result, HF and
    BP never rise with m, and negative equity stays insolvent."""
    from aggregator.risk.model import MarginResult, health
    from aggregator.risk.reputation import personalise_result

    eq = np.array([r[0] for r in rows])
    req = np.array([r[1] for r in rows])
    m0 = np.array([r[2] for r in rows])
    m1 = np.maximum(m0, bump)
    res = MarginResult.of(
        np.arange(eq.size), equity_usd=eq, requirement_usd=req,
        **dict(zip(("hf", "bp", "tier"), health(eq, req, 1.25, 1.1), strict=True)),
    )  # fmt: skip
    same = personalise_result(res, np.ones(eq.size), 1.25, 1.1)
    assert same is res
    a = personalise_result(res, m0, 1.25, 1.1)
    b = personalise_result(res, m1, 1.25, 1.1)
    assert (b.hf <= a.hf).all() and (b.bp <= a.bp).all() and (b.tier >= a.tier).all()
    assert (a.tier[eq < 0] == TIERS.index("insolvent")).all()


def test_engine_adopt_scales_the_pushed_requirement() -> None:
    from aggregator.risk.model import MarginResult, health

    eng = engine()
    e18 = 10**18
    eng.load_positions([PositionRow(a, "ethereum", "WETH", "collateral", e18, e18)
                        for a in ADDRS[:2]])  # fmt: skip
    eq, req = np.array([1000.0, 1000.0]), np.array([800.0, 800.0])
    res = MarginResult.of(
        np.arange(2), equity_usd=eq, requirement_usd=req,
        **dict(zip(("hf", "bp", "tier"), health(eq, req, 1.25, 1.1), strict=True)),
    )  # fmt: skip
    eng.adopt(res, im_factor=1.25)
    assert eng.r_hf[:2].tolist() == [1.25, 1.25]
    eng.set_reputation(P, {ADDRS[1]: 1.3}, lambda a: _rep(a, 1.3))
    eng.adopt(res, im_factor=1.25)
    assert eng.r_hf[0] == 1.25 and eng.r_hf[1] == pytest.approx(1000.0 / (1.3 * 800.0))
    assert eng.health(ADDRS[1]).tier == "liquidatable"  # 1000 / 1040
    eng.adopt(res)  # no im_factor (a caller that does not personalise): the model's own
    assert eng.r_hf[1] == 1.25


def test_a_bad_day_length_is_refused() -> None:
    from aggregator.config import ReputationConfig

    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="day_s"):
            Params(day_s=bad)
        with pytest.raises(ValueError, match="day_s"):
            ReputationConfig(day_s=bad)


# -- liquidation plans follow the personalised requirement ---------------------------
def _plan_book(m: float, debt_usd: float) -> tuple[RiskEngine, dict]:
    eng = engine()
    prices = {"USDC": 1.0, "DAI": 1.0, "WBTC": 6e4, "WETH": 3e3, "wstETH": 3.5e3, "rETH": 3.3e3}
    eng.set_prices({k: PriceInput(v, "ok") for k, v in prices.items()})
    eng.set_volatility(dict.fromkeys(prices, 0.02), {})
    e18 = 10**18
    debt = int(debt_usd * 10**6)
    eng.load_positions([
        PositionRow(ADDRS[0], "ethereum", "WETH", "collateral", 6 * e18, 6 * e18),
        PositionRow(ADDRS[0], "arbitrum", "WBTC", "collateral", 2 * 10**7, 2 * 10**7),
        PositionRow(ADDRS[0], "base", "USDC", "debt", debt, debt),
    ])  # fmt: skip
    if m != 1.0:
        eng.set_reputation(P, {ADDRS[0]: m}, lambda a: _rep(a, m))
    eng.recompute()
    return eng, eng.explain(ADDRS[0], now=NOW)


def _execute(eng: RiskEngine, plan: dict, debt_usd: float) -> float:
    """The plan done on the book: seize repay x (1 + bonus) of the asset, repay the debt;
    the account's HF after, with its multiplier."""
    price = {"WETH": 3e3, "WBTC": 6e4}[plan["asset"]]
    dec = {"WETH": 18, "WBTC": 8}[plan["asset"]]
    held = {"WETH": 6 * 10**18, "WBTC": 2 * 10**7}[plan["asset"]]
    left = held - round(plan["seize_usd"] / price * 10**dec)
    eng.apply_position(PositionRow(ADDRS[0], plan["chain"], plan["asset"], "collateral",
                                   left, left))  # fmt: skip
    debt = round((debt_usd - plan["repay_usd"]) * 10**6)
    eng.apply_position(PositionRow(ADDRS[0], "base", "USDC", "debt", debt, debt))
    return eng.health(ADDRS[0]).hf


@SETTINGS
@given(st.floats(P.lower, P.upper), st.floats(0.80, 1.0))
def test_a_plan_restores_the_target_hf_of_the_personalised_account(m: float, x: float) -> None:
    """The keeper's plan is sized on the pushed (personalised) figures: done on the book,
    it brings the personalised HF to target_hf (the base lt_eff would miss it)."""
    debt_usd = x * 30_000.0  # V: 6 WETH at 3,000 and 0.2 WBTC at 60,000
    eng, ex = _plan_book(m, debt_usd)
    plan = ex["liquidation"]
    if plan is None or plan["kind"] != "partial":
        return
    hf = _execute(eng, plan, debt_usd)
    assert hf == pytest.approx(eng.risk_cfg.target_hf, rel=1e-7)


def test_a_plan_with_multiplier_one_is_the_base_plan_and_a_higher_one_repays_more() -> None:
    debt_usd = 0.84 * 30_000.0
    _, base = _plan_book(1.0, debt_usd)
    eng1, _ = _plan_book(1.0, debt_usd)
    # Another account personalised: this one's plan goes through the multiplier path at 1.
    eng1.set_reputation(P, {ADDRS[1]: 1.2}, lambda a: _rep(a, 1.0))
    assert eng1.explain(ADDRS[0], now=NOW)["liquidation"] == base["liquidation"]
    eng, high = _plan_book(1.15, debt_usd)
    assert base["liquidation"]["kind"] == high["liquidation"]["kind"] == "partial"
    assert high["liquidation"]["repay_usd"] > base["liquidation"]["repay_usd"]
    assert _execute(eng, high["liquidation"], debt_usd) == pytest.approx(1.05, rel=1e-7)


# -- bounds and safety on random parameters and books --------------------------------
@st.composite
def params(draw: st.DrawFn) -> Params:
    return Params(
        lower=draw(st.floats(0.5, 1.0)),
        upper=draw(st.floats(1.0, 2.0)),
        min_age_days=draw(st.floats(0.0, 400.0)),
        reward_per_30d=draw(st.floats(0.0, 0.2)),
        liquidation_penalty=draw(st.floats(0.0, 1.0)),
        liquidatable_penalty=draw(st.floats(0.0, 1.0)),
        half_life_days=draw(st.floats(1.0, 1000.0)),
    )


@SETTINGS
@given(histories(), params(), st.floats(0.0, NOW))
def test_the_multiplier_is_within_the_configured_bounds(h: History, p: Params, dt: float) -> None:
    m = score(A, h, p, NOW + dt).multiplier
    assert p.lower <= m <= p.upper
    assert m == pytest.approx(ref_multiplier(h, p, NOW + dt), abs=1e-12)


@SETTINGS
@given(histories(), params(), st.floats(0.0, 0.999))
def test_a_fresh_address_is_never_better_than_neutral_whatever_the_parameters(
    h: History, p: Params, frac: float
) -> None:
    first = NOW - frac * p.min_age_days * DAY
    young = History(first, tuple(x for x in h.liquidations if x.t >= first), h.episodes)
    assert score(A, young, p, NOW).multiplier >= 1.0
    assert score(A, History(), p, NOW).multiplier == 1.0


@SETTINGS
@given(position_rows(), market(), st.data())
def test_the_personal_requirement_is_never_below_lower_times_the_base_one(
    rows: list, m: dict, data: st.DataObject
) -> None:
    """Per account a random multiplier in the bounds: the liquidation haircut V - C_liq'
    is max(m, 1) (V - C_liq) (a reward never rates an account healthier: HF' <= HF),
    the borrowing one max(m (V - C_borrow), V - C_liq') >= lower (V - C_borrow), and no
    account with collateral worth less than its debt is rated better than insolvent."""
    base = _engine(rows, m)
    eng = _engine(rows, m)
    addrs = list(eng.book.account_address)
    mults = {a: data.draw(st.floats(P.lower, P.upper)) for a in addrs}
    eng.set_reputation(P, mults, lambda a: _rep(a, mults[a]))
    eng.recompute()
    for a in addrs:
        b, r = base.standard_health(a), eng.standard_health(a)
        v, mu = b.collateral_usd, mults[a]
        tol = 1e-12 * max(v, 1.0)
        assert v - r.c_liq == pytest.approx(max(mu, 1.0) * (v - b.c_liq), rel=1e-9, abs=tol)
        assert r.hf <= b.hf and TIERS.index(r.tier) >= TIERS.index(b.tier)
        assert r.c_borrow <= r.c_liq
        assert v - r.c_borrow >= P.lower * (v - b.c_borrow) - tol
        want = max(mu * (v - b.c_borrow), v - r.c_liq)
        assert v - r.c_borrow == pytest.approx(want, rel=1e-9, abs=tol)
        if b.collateral_usd < b.debt_usd:
            assert eng.health(a).tier == "insolvent"


@SETTINGS
@given(
    st.lists(
        st.tuples(st.floats(-1e9, 1e9), st.one_of(st.just(0.0), st.floats(1e-3, 1e9))),
        min_size=1,
        max_size=20,
    ),
    st.data(),
)
def test_a_pushed_requirement_is_never_below_lower_times_the_models(
    rows: list[tuple[float, float]], data: st.DataObject
) -> None:
    from aggregator.risk.model import MarginResult, health
    from aggregator.risk.reputation import personalise_result

    eq = np.array([r[0] for r in rows])
    req = np.array([r[1] for r in rows])
    mult = np.array([data.draw(st.floats(P.lower, P.upper)) for _ in rows])
    res = MarginResult.of(
        np.arange(eq.size), equity_usd=eq, requirement_usd=req,
        **dict(zip(("hf", "bp", "tier"), health(eq, req, 1.25, 1.1), strict=True)),
    )  # fmt: skip
    out = personalise_result(res, mult, 1.25, 1.1)
    # HF and tier: never better than the model's own (a reward is on borrowing only).
    assert (out.hf <= res.hf).all() and (out.tier >= res.tier).all()
    # Borrowing: the requirement is >= lower x the model's IM, and >= R (HF 1).
    pos = eq >= 0
    im_req = np.maximum(1.25 * mult, np.maximum(mult, 1.0)) * req
    assert (im_req >= P.lower * 1.25 * req).all() and (im_req >= req).all()
    assert np.array_equal(out.bp[pos], np.maximum(eq[pos] - im_req[pos], 0.0))
    assert (out.tier[eq < 0] == TIERS.index("insolvent")).all()


@SETTINGS
@given(st.lists(st.tuples(st.floats(0, NOW), st.floats(0, 1e9), st.floats(0, 1e9)), max_size=20))
def test_credit_utilisation_matches_a_scalar_loop(samples: list) -> None:
    from aggregator.risk.reputation import credit_utilisation

    total, n = 0.0, 0
    for _, d, b in samples:
        if d + b > 0:
            total += d / (d + b)
            n += 1
    got = credit_utilisation(samples)
    assert got == (None if n == 0 else pytest.approx(total / n))
    if got is not None:
        assert 0.0 <= got <= 1.0
    # Shown in every explanation that has a risk history, weight 0.
    r = score(A, History(NOW - 400 * DAY, (), (), (), tuple(samples)), P, NOW)
    f = {x.name: x for x in r.factors}["credit_utilisation"]
    assert f.weight == 0.0 and f.contribution == 0.0 and f.value == got


def ref_personal(v: float, cliq: float, cbor: float, m: float) -> tuple[float, float]:
    """docs/reputation.md, scalar: C_liq' = V - max(m, 1) (V - C_liq), C_borrow' =
    min(V - m (V - C_borrow), C_liq'); m <= 1 leaves C_liq the very float (V - (V -
    C_liq) need not be), m == 1 both."""
    if m == 1.0:
        return cliq, cbor
    cl = v - m * (v - cliq) if m > 1.0 else cliq
    return cl, min(v - m * (v - cbor), cl)


@given(
    st.lists(
        st.tuples(
            st.floats(0.0, 1e9),
            st.floats(0.0, 1.0),
            st.floats(0.0, 1.0),
            st.just(0.0) | st.floats(1e-3, 2e9),  # no overflow of HF = C / D
            st.sampled_from([1.0, 0.9, 0.95, 1.05, 1.3]) | st.floats(0.9, 1.3),
        ),
        min_size=1,
        max_size=20,
    )
)
@SETTINGS
def test_personalise_matches_the_scalar_reference(rows: list) -> None:
    from aggregator.config import RiskConfig
    from aggregator.risk.reputation import personalise
    from aggregator.risk.standard import Totals

    risk = RiskConfig()
    v = np.array([r[0] for r in rows])
    cliq = v * np.array([r[1] for r in rows])
    cbor = np.minimum(cliq, v * np.array([r[2] for r in rows]))
    debt = np.array([r[3] for r in rows])
    mult = np.array([r[4] for r in rows])
    n = v.size
    with np.errstate(divide="ignore", invalid="ignore"):
        hf0 = np.where(debt > 0, cliq / np.where(debt > 0, debt, 1.0), np.inf)
    t = Totals(
        grp=np.zeros(n, np.int16), vtot=v, debt=debt, cliq=cliq, cborrow=cbor, hf=hf0,
        bp=np.maximum(cbor - debt, 0.0), tier=np.zeros(n, np.int8),
        degraded=np.zeros(n, np.bool_), cf=np.zeros(n),
    )  # fmt: skip
    out = personalise(t, mult, risk)
    for i, (vi, ci, bi, di, mi) in enumerate(
        zip(v.tolist(), cliq.tolist(), cbor.tolist(), debt.tolist(), mult.tolist(), strict=True)
    ):
        cl, cb = ref_personal(vi, ci, bi, mi)
        assert out.cliq[i] == cl and out.cborrow[i] == cb  # bit for bit
        if mi == 1.0:
            assert out.hf[i] == hf0[i] and out.tier[i] == 0  # the row untouched
            continue
        hf = cl / di if di > 0.0 else math.inf
        assert out.hf[i] == hf
        assert out.bp[i] == max(cb - di, 0.0)
        assert out.tier[i] == (hf < risk.warn_hf) + (hf < 1.0) + (vi < di)
        assert out.cf[i] == (
            0.0 if hf >= 1.0 else 1.0 if hf < risk.full_close_hf else risk.close_factor
        )
