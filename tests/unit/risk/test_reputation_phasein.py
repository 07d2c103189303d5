"""Reputation is not procyclical (aggregator/risk/reputation.py, docs/reputation.md "Not
procyclical"): a penalty raises the borrowing multiplier at once, its maintenance side is
phased in over the account's clean time since its cause (held while the account is in
warning or worse). Checked against a scalar reference written from the formula, by
properties on random histories and books, and on a simulated crash that dips many
accounts into warning and liquidatable (the shape the crash replays showed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.config import ReputationConfig
from aggregator.reputation_feed import params_of
from aggregator.risk import PositionRow, PriceInput, RiskEngine
from aggregator.risk.model import MarginResult
from aggregator.risk.reputation import (
    DAY,
    Episode,
    History,
    Liquidation,
    Params,
    Reputation,
    episodes_from_points,
    personalise,
    personalise_result,
    phase,
    score,
)
from chains.units import TIERS

from .helpers import ADDRS, apply_market, engine, market, position_rows
from .test_properties import SETTINGS
from .test_reputation import NOW, histories, ref_multiplier

P = Params()
A = "0x00000000000000000000000000000000000000a1"
LIQUIDATABLE = TIERS.index("liquidatable")


def ref_maintenance(h: History, p: Params, now: float) -> float:
    """Scalar reference of the maintenance multiplier, plain loops, from the formula in
    docs/reputation.md: each penalty x its phase, the phase from the clean seconds
    (outside every episode) between its cause and now."""
    if h.first_seen is None or h.first_seen > now:
        return 1.0
    eps = h.episodes or ()

    def clean(t: float) -> float:
        if t >= now:
            return 0.0
        bad = 0.0
        for e in eps:
            end = now if e.end is None else e.end
            lo = e.start if e.start > t else t
            hi = end if end < now else now
            if hi > lo:
                bad += hi - lo
        return max(0.0, now - t - bad)

    def ph(c: float) -> float:
        hold, ramp = p.maintenance_hold_days * DAY, p.maintenance_ramp_days * DAY
        if c < hold:
            return 0.0
        if ramp <= 0.0:
            return 1.0
        return min(1.0, (c - hold) / ramp)

    def reward(clean_start: float) -> float:
        if now - h.first_seen < p.min_age_days * DAY:  # type: ignore[operator]
            return 0.0
        days = clean(clean_start) / DAY if clean_start < now else 0.0
        if days <= p.min_age_days:
            return 0.0
        return min(p.reward_per_30d * (days - p.min_age_days) / 30.0, 1.0 - p.lower)

    # The reward each liquidation took (the clean clock restarts) is phased out with it:
    # R_0 - sum_j phase_j (R_{j-1} - R_j), liquidations in time order.
    past = sorted(x.t for x in h.liquidations if x.t <= now)
    prev = reward(h.first_seen)
    rew = prev
    for t in past:
        r = reward(max(h.first_seen, t))
        rew -= ph(clean(t)) * (prev - r)
        prev = r
    pen = 0.0
    for x in h.liquidations:
        if x.t <= now:
            pen += (
                p.liquidation_penalty
                * 0.5 ** ((now - x.t) / (p.half_life_days * DAY))
                * ph(clean(x.t))
            )
    for e in eps:
        if e.worst_tier >= LIQUIDATABLE:
            end = now if e.end is None else e.end
            decay = 0.5 ** (max(0.0, now - end) / (p.half_life_days * DAY))
            pen += p.liquidatable_penalty * decay * ph(clean(e.start))
    return min(max(1.0 - (rew - pen), 1.0), p.upper)


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
        maintenance_hold_days=draw(st.floats(0.0, 60.0)),
        maintenance_ramp_days=draw(st.floats(0.0, 60.0)),
    )


# -- the rule, scalar ------------------------------------------------------------------
def test_phase_holds_then_ramps() -> None:
    p = Params(maintenance_hold_days=7.0, maintenance_ramp_days=30.0)
    assert phase(0.0, p) == 0.0
    assert phase(7 * DAY - 1, p) == 0.0
    assert phase(7 * DAY, p) == 0.0
    assert phase(22 * DAY, p) == pytest.approx(0.5)
    assert phase(37 * DAY, p) == 1.0
    assert phase(1e9, p) == 1.0
    at_once = Params(maintenance_hold_days=0.0, maintenance_ramp_days=0.0)
    assert phase(0.0, at_once) == 1.0


def test_a_liquidation_raises_borrowing_at_once_and_maintenance_after_the_hold() -> None:
    """Liquidated at t inside an episode (the crash), which ends 2 days later: the
    borrowing multiplier is 1.30 at once; the maintenance one stays 1 through the
    episode and the 7-day hold, then rises 0.30 x decay over 30 clean days (the reward
    the liquidation took away phased out alongside)."""
    t = NOW - 100 * DAY
    h = History(
        t - 400 * DAY, (Liquidation(t, "base", 5_000.0),), (Episode(t - DAY, t + 2 * DAY, 2),)
    )
    at = [t, t + DAY, t + 2 * DAY, t + 9 * DAY, t + 24 * DAY, t + 39 * DAY, t + 60 * DAY]
    reps = [score(A, h, P, x) for x in at]
    assert [r.multiplier for r in reps[:4]] == [pytest.approx(1.30, abs=0.01)] * 4
    assert [r.maintenance_multiplier for r in reps[:4]] == [1.0] * 4
    d = 0.5 ** (24 / 180)
    # Half-way through the ramp: half of each penalty, and half of the reward the
    # liquidation took (0.10, the floor's: 424 days of history) is phased out.
    assert reps[4].maintenance_multiplier == pytest.approx(
        1.0 + 0.30 * d * 0.5 + 0.10 * 0.5 * 0.5 ** (22 / 180) - 0.10 * 0.5
    )
    assert reps[5].maintenance_multiplier == pytest.approx(
        min(1.3, 1.0 + 0.30 * 0.5 ** (39 / 180) + 0.10 * 0.5 ** (37 / 180))
    )
    # Never above the borrowing one, never below 1.
    for r in reps:
        assert 1.0 <= r.maintenance_multiplier <= max(r.multiplier, 1.0)
    f = {x.name: x for x in reps[4].factors}
    assert f["liquidations"].side == "both"
    assert f["liquidations"].maintenance_contribution == pytest.approx(-0.30 * d * 0.5)
    assert f["clean_days"].side == "borrowing"
    assert f["hf_volatility"].side == "none"


def test_at_once_config_is_the_first_steps_rule() -> None:
    cfg = ReputationConfig(enabled=True, maintenance={"kind": "at_once"})
    p = params_of(cfg)
    assert (p.maintenance_hold_days, p.maintenance_ramp_days) == (0.0, 0.0)
    h = History(NOW - 400 * DAY, (Liquidation(NOW, "base", 1.0),), (Episode(NOW - DAY, None, 2),))
    r = score(A, h, p, NOW)
    assert r.maintenance_multiplier == r.multiplier == pytest.approx(1.30)
    d = params_of(ReputationConfig(enabled=True))
    assert (d.maintenance_hold_days, d.maintenance_ramp_days) == (7.0, 30.0)
    ph = params_of(ReputationConfig(maintenance={"kind": "phased", "hold_days": 2, "ramp_days": 5}))
    assert (ph.maintenance_hold_days, ph.maintenance_ramp_days) == (2.0, 5.0)
    with pytest.raises(ValueError, match="hold_days"):
        ReputationConfig(maintenance={"kind": "phased", "hold_days": -1})
    with pytest.raises(ValueError):
        ReputationConfig(maintenance={"kind": "later"})
    with pytest.raises(ValueError, match="maintenance_ramp_days"):
        Params(maintenance_ramp_days=math.nan)


@SETTINGS
@given(histories(), params(), st.floats(0.0, NOW))
def test_maintenance_matches_the_scalar_reference(h: History, p: Params, dt: float) -> None:
    now = NOW + dt
    r = score(A, h, p, now)
    assert r.multiplier == pytest.approx(ref_multiplier(h, p, now), abs=1e-12)
    assert r.maintenance_multiplier == pytest.approx(ref_maintenance(h, p, now), abs=1e-12)


# -- properties --------------------------------------------------------------------------
@SETTINGS
@given(histories(), params(), st.floats(0.0, NOW))
def test_maintenance_is_between_one_and_the_borrowing_multiplier(
    h: History, p: Params, dt: float
) -> None:
    r = score(A, h, p, NOW + dt)
    assert p.lower <= r.multiplier <= p.upper
    assert 1.0 <= r.maintenance_multiplier <= max(r.multiplier, 1.0)
    at_once = Params(**{**p.__dict__, "maintenance_hold_days": 0.0, "maintenance_ramp_days": 0.0})
    a = score(A, h, at_once, NOW + dt)
    assert a.multiplier == r.multiplier
    assert a.maintenance_multiplier == pytest.approx(max(a.multiplier, 1.0), abs=1e-12)


@SETTINGS
@given(histories(), params(), st.floats(0.0, 0.999))
def test_a_fresh_address_is_neutral_or_worse_on_both_sides(
    h: History, p: Params, frac: float
) -> None:
    now = NOW
    fresh = History(now - frac * p.min_age_days * DAY, h.liquidations, h.episodes)
    r = score(A, fresh, p, now)
    assert r.multiplier >= 1.0 and r.maintenance_multiplier >= 1.0


@SETTINGS
@given(histories(), params(), st.integers(1, 50), st.floats(0.0, 3600.0))
def test_loops_in_one_hour_move_neither_side(h: History, p: Params, k: int, span: float) -> None:
    """Activity is not an input: only first_seen, liquidations and episodes are. A loop
    of k events after the first one leaves first_seen, hence both multipliers."""
    if h.first_seen is None:
        return
    looped = History(min(h.first_seen, h.first_seen + span / k), h.liquidations, h.episodes)
    assert score(A, looped, p, NOW) == score(A, h, p, NOW)


@SETTINGS
@given(
    histories(),
    params(),
    st.floats(0.0, 100 * DAY),
    st.lists(st.floats(0.0, 100 * DAY), max_size=4),
    st.floats(0.0, 100 * DAY),
    st.integers(1, 3),
)
def test_maintenance_never_rises_while_the_account_is_in_warning(  # noqa: PLR0917
    h: History, p: Params, d1: float, liq_in: list, d2: float, worst: int
) -> None:
    """An episode (warning or worse) opens at t0, after everything in the history, and
    lasts; liquidations land during it. From any moment of the episode to any later
    one, the maintenance multiplier does not rise (only decay moves it, downwards),
    unless the phase-in is off (hold and ramp 0: at once, the procyclical rule)."""
    if p.maintenance_hold_days + p.maintenance_ramp_days == 0.0:
        return
    t0 = 2 * NOW
    base_eps = tuple(e for e in h.episodes or () if e.end is not None)
    eps = (*base_eps, Episode(t0, None, worst))
    liqs = (*h.liquidations, *(Liquidation(t0 + x, "base", 1.0) for x in liq_in))
    hh = History(0.0 if h.first_seen is None else h.first_seen, liqs, eps)
    t1, t2 = t0 + d1, t0 + d1 + d2
    m1 = score(A, hh, p, t1).maintenance_multiplier
    m2 = score(A, hh, p, t2).maintenance_multiplier
    assert m2 <= m1 + 1e-12


@SETTINGS
@given(histories(), params(), st.floats(0.0, NOW), st.floats(0.0, 10 * DAY))
def test_maintenance_rises_at_most_at_the_ramp_rate(
    h: History, p: Params, dt: float, step: float
) -> None:
    """Outside episodes each penalty's phase grows at most 1 / ramp per clean day, so
    the maintenance multiplier rises by at most (sum of the penalties' weights) x
    step / ramp over `step` (a reward only falls behind, never pushes it up)."""
    if p.maintenance_ramp_days == 0.0:
        return
    now = NOW + dt
    n_near = sum(1 for e in h.episodes or () if e.worst_tier >= LIQUIDATABLE)
    total = p.liquidation_penalty * len(h.liquidations) + p.liquidatable_penalty * n_near
    m0 = score(A, h, p, now).maintenance_multiplier
    m1 = score(A, h, p, now + step).maintenance_multiplier
    assert m1 - m0 <= total * step / (p.maintenance_ramp_days * DAY) + 1e-9


# -- the engine seam with two multipliers -----------------------------------------------
def _engine(rows: list, m: dict) -> RiskEngine:
    eng = engine()
    apply_market(eng, m)
    eng.load_positions(rows)
    eng.recompute()
    return eng


def _rep(addr: str, m: float, mm: float) -> Reputation:
    return Reputation(addr, 1.0 - m, m, 400.0, (), 1.0 - mm, mm)


@SETTINGS
@given(position_rows(), market(), st.data())
def test_two_multipliers_match_the_scalar_rule_and_are_never_healthier(
    rows: list, m: dict, data: st.DataObject
) -> None:
    """Per account, random borrowing m and maintenance mm in [1, max(m, 1)]: the stored
    figures equal the scalar rule C_liq' = V - mm (V - C_liq), C_borrow' = min(V - m (V -
    C_borrow), C_liq'); the tick path equals the per-account one bit for bit; HF and tier
    are never better than the neutral model's (so an account rated healthy is rated
    healthy by the neutral model too: reputation never adds a healthy-then-negative
    account on the same positions), and never healthy with V < D."""
    base = _engine(rows, m)
    eng = _engine(rows, m)
    addrs = list(eng.book.account_address)
    mults, maint = {}, {}
    for a in addrs:
        x = data.draw(st.floats(P.lower, P.upper))
        mults[a] = x
        maint[a] = data.draw(st.floats(1.0, max(x, 1.0)))
    eng.set_reputation(P, mults, lambda a: _rep(a, mults[a], maint[a]), maint)
    eng.recompute()
    for i, a in enumerate(addrs):
        b = base.standard_health(a)
        tick_hf, tick_bp, tick_tier = eng.r_hf[i], eng.r_bp[i], eng.r_tier[i]
        eng.recompute_account(a)
        assert eng.r_hf[i].tobytes() == tick_hf.tobytes()
        assert eng.r_bp[i].tobytes() == tick_bp.tobytes() and eng.r_tier[i] == tick_tier
        h = eng.health(a)
        v = b.collateral_usd
        cl = v - maint[a] * (v - b.c_liq) if maint[a] > 1.0 else b.c_liq
        cb = min(v - mults[a] * (v - b.c_borrow), cl)
        tol = 1e-9 * max(v, 1.0)
        assert h.c_liq == pytest.approx(cl, abs=tol) and h.c_borrow == pytest.approx(cb, abs=tol)
        assert h.hf <= b.hf + 1e-12 * abs(b.hf)
        assert TIERS.index(h.tier) >= TIERS.index(b.tier)
        if h.tier == "healthy":
            assert b.tier == "healthy"
        if h.collateral_usd < h.debt_usd:
            assert h.tier == "insolvent"


def test_a_maintenance_multiplier_outside_one_and_m_is_refused() -> None:
    eng = engine()
    with pytest.raises(ValueError, match="maintenance multiplier"):
        eng.set_reputation(P, {ADDRS[0]: 1.1}, lambda a: _rep(a, 1.1, 1.2), {ADDRS[0]: 1.2})
    with pytest.raises(ValueError, match="maintenance multiplier"):
        eng.set_reputation(P, {ADDRS[0]: 0.95}, lambda a: _rep(a, 0.95, 0.95), {ADDRS[0]: 0.95})
    with pytest.raises(ValueError, match="maintenance multiplier"):
        eng.set_reputation(P, {}, lambda a: _rep(a, 1.0, 1.1), {ADDRS[0]: 1.1})


def test_pushed_model_hf_from_maintenance_bp_from_borrowing() -> None:
    eq = np.array([100.0, 100.0, -5.0])
    req = np.array([50.0, 50.0, 10.0])
    res = MarginResult.of(
        np.arange(3, dtype=np.int64), equity_usd=eq, requirement_usd=req, hf=eq / req,
        bp=np.maximum(eq - 1.2 * req, 0.0), tier=np.zeros(3, np.int8), parts={},
    )  # fmt: skip
    out = personalise_result(res, np.array([1.3, 1.0, 1.3]), 1.2, 1.1, np.array([1.0, 1.0, 1.3]))
    assert out.hf[0] == res.hf[0]  # mm = 1: HF untouched
    assert out.bp[0] == pytest.approx(100.0 - 1.2 * 1.3 * 50.0)
    assert out.hf[1] == res.hf[1] and out.bp[1] == res.bp[1]
    assert out.hf[2] == res.hf[2]  # negative equity: as the model made it


# -- the crash: many accounts dip into warning at once ---------------------------------
STEP = 3 * 3600.0  # 3 market hours a step, as the 2020-03 / 2022-11 replays
PATH = [3_000.0 * f for f in (1.0, 0.97, 0.94, 0.91, 0.89, 0.87, 0.86, 0.85, 0.86, 0.88, 0.90,
                              0.93, 0.96, 1.0, 1.02, 1.04)]  # fmt: skip
N = 40


def _crash(p: Params | None) -> dict:
    """N WETH-on-USDC borrowers (same chain: a vault can liquidate them) seeded at HF
    1.12..1.50 through a 15% crash and back, 3 hours a step. Each step: prices, recompute,
    a keeper that does every liquidatable account's plan, the risk history's points,
    and (with `p`) every account rescored and its multipliers installed: the replay's
    loop (its reputation job rescores every step). None: reputation off."""
    eng = engine()
    other = {"USDC": 1.0, "DAI": 1.0, "WBTC": 6e4, "wstETH": 3.5e3, "rETH": 3.3e3}
    vol = dict.fromkeys([*other, "WETH"], 0.01)
    e18 = 10**18
    rows = []
    for i in range(N):
        debt = 10 * 3_000.0 * 0.83 / (1.12 + 0.38 * i / (N - 1))
        rows += [
            PositionRow(ADDRS[i], "ethereum", "WETH", "collateral", 10 * e18, 10 * e18),
            PositionRow(ADDRS[i], "ethereum", "USDC", "debt", int(debt * 1e6), int(debt * 1e6)),
        ]
    eng.load_positions(rows)
    coll = {ADDRS[i]: 10.0 for i in range(N)}
    debts = {ADDRS[i]: float(rows[2 * i + 1].confirmed) / 1e6 for i in range(N)}
    t_start = 1_000 * DAY
    points: dict[str, list[tuple[float, int, int]]] = {ADDRS[i]: [] for i in range(N)}
    liqs: dict[str, list[Liquidation]] = {ADDRS[i]: [] for i in range(N)}
    out: dict = {"liquidations": 0, "maint": [], "mult": [], "hf": [], "tiers": [],
                 "healthy_to_negative": set(), "liq_by": {}}  # fmt: skip
    healthy_last: set[str] = set()
    for k, weth in enumerate(PATH):
        now = t_start + k * STEP
        eng.set_prices({s: PriceInput(v, "ok") for s, v in {**other, "WETH": weth}.items()})
        eng.set_volatility(vol, {})
        eng.recompute()
        for a in healthy_last:
            if coll[a] * weth < debts[a]:
                out["healthy_to_negative"].add(a)
        healthy_last = set()
        for i in range(N):
            a = ADDRS[i]
            hl = eng.health(a)
            if hl.tier == "healthy":
                healthy_last.add(a)
            t = TIERS.index(hl.tier)
            points[a].append((now, t, t))
            if hl.hf < 1.0:
                plan = eng.explain(a, now=now)["liquidation"]
                repay = plan["repay_usd"]
                seize = min(coll[a], plan.get("seize_usd", repay * 1.05) / weth)
                coll[a] -= seize
                debts[a] -= repay
                q, d = int(coll[a] * e18), int(max(debts[a], 0.0) * 1e6)
                eng.apply_position(PositionRow(a, "ethereum", "WETH", "collateral", q, q))
                eng.apply_position(PositionRow(a, "ethereum", "USDC", "debt", d, d))
                liqs[a].append(Liquidation(now, "ethereum", repay))
                out["liquidations"] += 1
                out["liq_by"][a] = out["liq_by"].get(a, 0) + 1
        if p is not None:
            reps = {}
            for i in range(N):
                a = ADDRS[i]
                # Accounts seeded a day before the crash, as the replay's book: young.
                hist = History(t_start - DAY, tuple(liqs[a]), episodes_from_points(points[a], now))
                reps[a] = score(a, hist, p, now)
            eng.set_reputation(p, {a: r.multiplier for a, r in reps.items()}, reps.__getitem__,
                               {a: r.maintenance_multiplier for a, r in reps.items()})  # fmt: skip
            eng.recompute()
            out["maint"].append([reps[ADDRS[i]].maintenance_multiplier for i in range(N)])
            out["mult"].append([reps[ADDRS[i]].multiplier for i in range(N)])
        out["hf"].append([eng.standard_health(ADDRS[i]).c_liq for i in range(N)])
        out["tiers"].append([eng.health(ADDRS[i]).tier for i in range(N)])
    out["points"], out["liqs"], out["end"] = points, liqs, t_start + (len(PATH) - 1) * STEP
    return out


def test_the_crash_cascade_with_penalties_at_once_and_none_phased() -> None:
    """The replays' shape: with every penalty on the maintenance side at once, a crash
    that makes many accounts liquidatable liquidates the same accounts again (a partial
    liquidation to target_hf, then the penalty drops them below HF 1 at once). Phased in,
    the maintenance multiplier does not move during the crash: the liquidations and
    every account's maintenance figures are the neutral model's, while each liquidated
    account's borrowing multiplier is raised at the step of its liquidation."""
    neutral = _crash(None)
    at_once = _crash(Params(maintenance_hold_days=0.0, maintenance_ramp_days=0.0))
    phased = _crash(P)
    assert neutral["liquidations"] > 0
    # The cascade: repeat liquidations of the same accounts.
    assert at_once["liquidations"] > neutral["liquidations"]
    assert max(at_once["liq_by"].values()) > max(neutral["liq_by"].values())
    # Phased: no maintenance jump mid-crash; the liquidations are the neutral ones.
    assert all(x == 1.0 for row in phased["maint"] for x in row)
    assert phased["liquidations"] == neutral["liquidations"]
    assert phased["liq_by"] == neutral["liq_by"]
    assert phased["hf"] == neutral["hf"]
    for k, row in enumerate(phased["mult"]):
        for i, x in enumerate(row):
            if any(liq.t <= 1_000 * DAY + k * STEP for liq in phased["liqs"][ADDRS[i]]):
                assert x == pytest.approx(P.upper, abs=0.01)  # borrowing side: at once
    # Per account: reputation never adds a healthy-rated-then-negative account.
    assert phased["healthy_to_negative"] <= neutral["healthy_to_negative"]
    assert at_once["healthy_to_negative"] <= neutral["healthy_to_negative"] | set(at_once["liq_by"])


def test_after_the_crash_the_penalty_reaches_maintenance_gradually() -> None:
    """Once the crash is over and the account is back out of warning, the maintenance
    side of its liquidation comes in after the hold, over the ramp: every day a small
    step, never a jump, and it ends at the borrowing side's level (both decay)."""
    phased = _crash(P)
    a = next(x for x in ADDRS[:N] if phased["liqs"][x])
    pts, end = phased["points"][a], phased["end"]
    # Back to healthy after the crash; say it stays there.
    later = [*pts, (end + STEP, 0, 0)]
    h = History(
        1_000 * DAY - DAY, tuple(phased["liqs"][a]), episodes_from_points(later, end + STEP)
    )
    prev = 1.0
    for d in range(0, 60):
        now = end + STEP + d * DAY
        r = score(
            a, History(h.first_seen, h.liquidations, episodes_from_points(later, now)), P, now
        )
        mm = r.maintenance_multiplier
        assert mm >= prev - 1e-3 * (1.0 / 180)  # decays slowly at most
        assert mm - prev <= 0.30 / P.maintenance_ramp_days + 0.10 / P.maintenance_ramp_days + 1e-12
        prev = mm
        if d < P.maintenance_hold_days - 1:
            assert mm == 1.0
    assert prev == pytest.approx(r.multiplier, abs=1e-9)
    assert prev > 1.2


def test_the_explanation_names_each_factors_side() -> None:
    h = History(
        NOW - 400 * DAY,
        (Liquidation(NOW - DAY, "base", 1.0),),
        (Episode(NOW - 2 * DAY, NOW - DAY, 2),),
    )
    d = score(A, h, P, NOW).as_dict(P)
    assert d["maintenance_multiplier"] == 1.0 and d["multiplier"] == pytest.approx(1.3, abs=0.01)
    assert d["neutral"] is False
    assert d["maintenance_phase_in"] == {"hold_days": 7.0, "ramp_days": 30.0}
    sides = {f["name"]: f["side"] for f in d["factors"]}
    assert sides["liquidations"] == sides["liquidatable_episodes"] == "both"
    assert sides["clean_days"] == "borrowing"
    assert sides["hf_volatility"] == sides["days_in_warning_or_worse"] == "none"
    assert all("maintenance_contribution" in f for f in d["factors"])
    assert "mm" in d["rule"]


def test_personalise_defaults_to_the_at_once_rule() -> None:
    """Without maintenance multipliers, `personalise` is the first step's rule (mm =
    max(m, 1)): the tests and callers of the single multiplier keep their meaning."""
    eng = engine()
    prices = {"USDC": 1.0, "DAI": 1.0, "WBTC": 6e4, "WETH": 3e3, "wstETH": 3.5e3, "rETH": 3.3e3}
    eng.set_prices({k: PriceInput(v, "ok") for k, v in prices.items()})
    eng.set_volatility(dict.fromkeys(prices, 0.02), {})
    eng.load_positions([
        PositionRow(ADDRS[0], "ethereum", "WETH", "collateral", 10**19, 10**19),
        PositionRow(ADDRS[0], "base", "USDC", "debt", 20_000 * 10**6, 20_000 * 10**6),
    ])  # fmt: skip
    eng.recompute()
    t = eng.totals(np.array([0], np.int64))
    m = np.array([1.2])
    a = personalise(t, m, eng.risk_cfg)
    b = personalise(t, m, eng.risk_cfg, np.array([1.2]))
    assert a.hf.tobytes() == b.hf.tobytes() and a.bp.tobytes() == b.bp.tobytes()
    c = personalise(t, m, eng.risk_cfg, np.array([1.0]))
    assert c.hf.tobytes() == t.hf.tobytes() and c.bp[0] < t.bp[0]


def test_an_account_left_out_of_the_maintenance_mapping_is_at_one() -> None:
    """The feed hands over only the multipliers != 1: an account missing from a given
    maintenance mapping is at 1 (its penalty not phased in yet); no mapping at all is
    the at-once rule, mm = max(m, 1)."""
    eng = engine()
    prices = {"USDC": 1.0, "DAI": 1.0, "WBTC": 6e4, "WETH": 3e3, "wstETH": 3.5e3, "rETH": 3.3e3}
    eng.set_prices({k: PriceInput(v, "ok") for k, v in prices.items()})
    eng.set_volatility(dict.fromkeys(prices, 0.02), {})
    eng.load_positions([
        PositionRow(ADDRS[0], "ethereum", "WETH", "collateral", 10**19, 10**19),
        PositionRow(ADDRS[0], "base", "USDC", "debt", 20_000 * 10**6, 20_000 * 10**6),
    ])  # fmt: skip
    eng.recompute()
    base = eng.health(ADDRS[0])
    eng.set_reputation(P, {ADDRS[0]: 1.3}, lambda a: _rep(a, 1.3, 1.0), {})
    eng.recompute()
    phased = eng.health(ADDRS[0])
    assert phased.hf == base.hf and phased.tier == base.tier and phased.bp < base.bp
    eng.set_reputation(P, {ADDRS[0]: 1.3}, lambda a: _rep(a, 1.3, 1.3))
    eng.recompute()
    assert eng.health(ADDRS[0]).hf < base.hf


def test_a_liquidation_in_a_crash_does_not_raise_maintenance_through_the_lost_reward() -> None:
    """A mature account with a reward (0.05) and an old liquidation fully phased in: mm =
    1 - 0.05 + the decayed penalty. A crash opens an episode and it is liquidated again:
    the clean clock restarts, so the borrowing side loses the reward at once, but on the
    maintenance side the lost reward is phased like the new penalty: mm does not move
    (found by the property test above)."""
    old = NOW - 300 * DAY
    crash = NOW
    h0 = History(NOW - 700 * DAY, (Liquidation(old, "base", 1.0),), (Episode(crash, None, 2),))
    h1 = History(h0.first_seen, (*h0.liquidations, Liquidation(crash + 3600, "base", 1.0)),
                 h0.episodes)  # fmt: skip
    before = score(A, h0, P, crash + 1800)
    after = score(A, h1, P, crash + 7200)
    assert {f.name: f for f in before.factors}["clean_days"].contribution > 0
    assert after.multiplier == pytest.approx(P.upper)  # borrowing: at once
    assert after.maintenance_multiplier <= before.maintenance_multiplier + 1e-12
    assert before.maintenance_multiplier > 1.0
