"""Which accounts a history run writes (aggregator/history/select.py): the vectorised
rule against a plain-loop reference written from the documented rule, on random books."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.history.select import BP_FLOOR_USD, NEVER, LastWritten, choose

HF_VALUES = st.one_of(
    st.floats(0.0, 5.0), st.just(math.inf), st.just(-math.inf), st.just(1.0), st.just(1.01)
)


def rel(now: float, last: float, floor: float) -> float:
    if now == last:
        return 0.0
    if math.isinf(now) or math.isinf(last) or math.isnan(now) or math.isnan(last):
        return math.inf
    return abs(now - last) / max(abs(last), floor)


def reference(hf, bp, tier, last_hf, last_bp, last_tier, hf_db, bp_db, cap):  # type: ignore[no-untyped-def]  # noqa: PLR0917
    """The rule of the module docstring, one account at a time."""
    must, rest = [], []
    for i in range(len(tier)):
        new = last_tier[i] == NEVER
        if not new and tier[i] != last_tier[i]:
            must.append(i)
        elif (
            new
            or rel(hf[i], last_hf[i], 1e-12) > hf_db
            or rel(bp[i], last_bp[i], BP_FLOOR_USD) > bp_db
        ):
            rest.append(i)
    room = max(0, cap - len(must))
    # Lowest HF first, NaN after everything (after +inf too), ties by index.
    key = lambda i: (1, 0.0, i) if math.isnan(hf[i]) else (0, hf[i], i)  # noqa: E731
    chosen = sorted(rest, key=key)[:room]
    return sorted(must + chosen), len(rest) - len(chosen)


@st.composite
def books(draw: st.DrawFn) -> dict[str, object]:
    n = draw(st.integers(0, 40))
    acct = st.tuples(HF_VALUES, st.floats(0, 1e6), st.integers(0, 3))
    now = draw(st.lists(acct, min_size=n, max_size=n))
    known = draw(st.integers(0, n))
    # Last points: some equal to now, some moved slightly, some moved a lot.
    last = []
    for hf, bp, tier in now[:known]:
        kind = draw(st.sampled_from(["same", "small", "big", "tier"]))
        if kind == "same":
            last.append((hf, bp, tier))
        elif kind == "small":
            last.append((hf * 1.001 if math.isfinite(hf) else hf, bp * 1.001, tier))
        elif kind == "big":
            last.append((draw(HF_VALUES), draw(st.floats(0, 1e6)), tier))
        else:
            last.append((hf, bp, (tier + 1) % 4))
    return {
        "now": now,
        "last": last,
        "cap": draw(st.integers(1, 50)),
        "hf_db": draw(st.sampled_from([0.0, 0.01, 0.1])),
        "bp_db": draw(st.sampled_from([0.0, 0.01, 0.1])),
    }


@settings(max_examples=300, deadline=None)
@given(books())
def test_choose_matches_the_reference(b: dict) -> None:  # type: ignore[type-arg]
    now, last = b["now"], b["last"]
    n = len(now)
    hf = np.array([a[0] for a in now], np.float64)
    bp = np.array([a[1] for a in now], np.float64)
    tier = np.array([a[2] for a in now], np.int8)
    lw = LastWritten.empty(len(last))
    for i, (h, p, t) in enumerate(last):
        lw.hf[i], lw.bp[i], lw.tier[i] = h, p, t
    lw = lw.grown(n)
    got, deferred = choose(
        hf, bp, tier, lw, hf_deadband=b["hf_db"], bp_deadband=b["bp_db"], cap=b["cap"]
    )
    want, want_deferred = reference(
        hf.tolist(), bp.tolist(), tier.tolist(), lw.hf.tolist(), lw.bp.tolist(),
        lw.tier.tolist(), b["hf_db"], b["bp_db"], b["cap"],
    )  # fmt: skip
    assert got.tolist() == want
    assert deferred == want_deferred
    # After writing them, a second run with nothing changed writes only the deferred.
    lw.update(got, hf, bp, tier)
    again, _ = choose(hf, bp, tier, lw, hf_deadband=b["hf_db"], bp_deadband=b["bp_db"], cap=10**6)
    assert len(again) == deferred


def test_tier_changes_are_written_beyond_the_cap_and_riskiest_first() -> None:
    last = LastWritten.empty(5)
    last.hf[:] = [2.0, 2.0, 2.0, 2.0, 2.0]
    last.bp[:] = 100.0
    last.tier[:] = 0
    hf = np.array([1.05, 1.5, 1.2, 0.9, 1.6])
    bp = np.full(5, 100.0)
    tier = np.array([1, 0, 0, 2, 0], np.int8)  # accounts 0 and 3 changed tier
    got, deferred = choose(hf, bp, tier, last, hf_deadband=0.01, bp_deadband=0.01, cap=1)
    assert got.tolist() == [0, 3] and deferred == 3
    got, deferred = choose(hf, bp, tier, last, hf_deadband=0.01, bp_deadband=0.01, cap=3)
    assert got.tolist() == [0, 2, 3] and deferred == 2  # 1.2 is the riskiest of the rest


def test_within_the_deadband_nothing_is_written() -> None:
    last = LastWritten.empty(2)
    last.hf[:] = [1.5, math.inf]
    last.bp[:] = [1000.0, 0.5]
    last.tier[:] = 0
    hf = np.array([1.5 * 1.009, math.inf])
    bp = np.array([1000.0 * 0.995, 0.9])  # 0.4 USD on a 1 USD floor: 40%
    got, _ = choose(hf, bp, np.zeros(2, np.int8), last, hf_deadband=0.01, bp_deadband=0.5, cap=9)
    assert got.tolist() == []


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(40, 600), st.sampled_from([0.0, 0.01, 0.1]))
def test_a_steady_book_with_few_differences_matches_the_reference(
    seed: int, n: int, db: float
) -> None:
    # Most last points equal the ledger's figures (a run between price moves): choose
    # then applies the rule to the differing accounts only (fewer than a quarter here);
    # the result must be the rule's over every account.
    rng = np.random.default_rng(seed)
    hf = rng.uniform(0.5, 3.0, n)
    hf[rng.random(n) < 0.1] = math.inf
    bp = rng.uniform(0, 1e6, n)
    tier = rng.integers(0, 4, n).astype(np.int8)
    lw = LastWritten(hf.copy(), bp.copy(), tier.copy())
    few = rng.choice(n, int(rng.integers(0, n // 4)), replace=False)
    for i in few:
        kind = rng.integers(0, 6)
        if kind == 0:  # within or beyond the deadband
            lw.hf[i] = hf[i] * (1 + rng.choice([1e-3, 0.05, 0.5]))
        elif kind == 1:
            lw.bp[i] = bp[i] * (1 + rng.choice([1e-3, 0.05, 0.5])) + 0.5
        elif kind == 2:
            lw.tier[i] = (tier[i] + 1) % 4
        elif kind == 3:  # no point yet
            lw.hf[i], lw.bp[i], lw.tier[i] = math.nan, math.nan, NEVER
        elif kind == 4:
            hf[i] = math.nan  # a NaN HF never equals its last point
        else:
            bp[i] = bp[i]  # unchanged: stays out
    cap = int(rng.integers(1, 40))
    got, deferred = choose(hf, bp, tier, lw, hf_deadband=db, bp_deadband=db, cap=cap)
    want, want_deferred = reference(
        hf.tolist(), bp.tolist(), tier.tolist(), lw.hf.tolist(), lw.bp.tolist(),
        lw.tier.tolist(), db, db, cap,
    )  # fmt: skip
    assert got.tolist() == want
    assert deferred == want_deferred
