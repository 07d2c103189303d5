"""The attestation factor (aggregator/risk/attestation.py and its one use in
aggregator/risk/reputation.py): allow-list, superseding, revocation, expiry by block
time, several attesters (the minimum), untrusted chains, the bounds and the sybil rule,
against a scalar reference written from docs/reputation.md "Attestations"."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.risk.attestation import (
    Attestation,
    AttestationParams,
    combined_score,
    statuses,
)
from aggregator.risk.reputation import DAY, History, Liquidation, Params, score

from .test_properties import SETTINGS
from .test_reputation import histories, ref_multiplier

GOOD, BAD, ROGUE = "0x" + "a" * 40, "0x" + "b" * 40, "0x" + "c" * 40
AP = AttestationParams(frozenset({GOOD, BAD}), bonus=0.05, penalty=0.30)
P = Params(attestation=AP)
NOW = 1_000 * DAY
A = "0x00000000000000000000000000000000000000a1"
OLD = NOW - 400 * DAY  # mature, at the behaviour floor 0.90
MID = NOW - 200 * DAY  # mature, 0.963 from behaviour alone


def att(  # noqa: PLR0917
        score_bps: int, attester: str = GOOD, uid: int = 1, chain: str = "alpha",
        expiry: float = NOW + DAY, revoked: bool = False, trusted: bool = True,
        as_of: float = NOW) -> Attestation:  # fmt: skip
    return Attestation(chain, uid, attester, score_bps, int(expiry), revoked, as_of, trusted)


def m(h: History, p: Params = P, now: float = NOW) -> float:
    return score(A, h, p, now).multiplier


def ref_attested(h: History, p: Params, now: float) -> float:
    """Scalar reference with plain loops: the behaviour multiplier's score, then the
    attestation rule of docs/reputation.md, then the clip."""
    ap = p.attestation
    first = h.first_seen
    if first is None or first > now:
        if not h.attestations:
            return 1.0
        first = now
    base = ref_multiplier(replace(h, first_seen=first, attestations=()), p, now)
    # Un-clip the behaviour score: recompute it the long way for the positive check.
    behaviour = _behaviour_score(replace(h, first_seen=first), p, now)
    latest: dict[tuple[str, str], int] = {}
    for a in h.attestations:
        k = (a.chain, a.attester)
        if a.uid > latest.get(k, 0):
            latest[k] = a.uid
    best: int | None = None
    for a in h.attestations:
        ok = (a.attester in ap.attesters and a.uid == latest[(a.chain, a.attester)]
              and not a.revoked and a.as_of < a.expiry
              and (a.trusted or a.score_bps < 0))  # fmt: skip
        if ok and (best is None or a.score_bps < best):
            best = a.score_bps
    if best is None:
        return base
    mature = now - first >= p.min_age_days * DAY
    x = best / 10_000
    if x <= 0:
        c = ap.penalty * x
    elif mature and behaviour >= 0:
        c = ap.bonus * x
    else:
        c = 0.0
    mult = min(max(1.0 - (behaviour + c), p.lower), p.upper)
    if not mature and mult < 1.0:
        mult = 1.0
    return mult


def _behaviour_score(h: History, p: Params, now: float) -> float:
    """The unclipped behaviour score (reward - penalties), as the reference needs it."""
    assert h.first_seen is not None
    last = -math.inf
    for liq in h.liquidations:
        if liq.t <= now and liq.t > last:
            last = liq.t
    start = max(h.first_seen, last)
    bad = 0.0
    for e in h.episodes or ():
        end = now if e.end is None else e.end
        lo, hi = max(e.start, start), min(end, now)
        bad += max(0.0, hi - lo)
    clean = max(0.0, now - start - bad) / DAY
    mature = now - h.first_seen >= p.min_age_days * DAY
    reward = min(p.reward_per_30d * max(0.0, clean - p.min_age_days) / 30, 1 - p.lower)
    s = reward if mature else 0.0
    for liq in h.liquidations:
        if liq.t <= now:
            s -= p.liquidation_penalty * 0.5 ** ((now - liq.t) / (p.half_life_days * DAY))
    for e in h.episodes or ():
        if e.worst_tier >= 2:
            end = now if e.end is None else e.end
            s -= p.liquidatable_penalty * 0.5 ** ((now - end) / (p.half_life_days * DAY))
    return s


def test_off_without_attesters_and_the_factor_is_shown_with_its_weight() -> None:
    h = History(MID, attestations=(att(10_000),))
    off = score(A, h, Params(), NOW)
    assert "attestation" not in {f.name for f in off.factors}
    assert off.multiplier == m(History(MID), Params())
    r = score(A, h, P, NOW)
    f = {x.name: x for x in r.factors}["attestation"]
    assert (f.value, f.weight, f.contribution) == (1.0, 0.05, pytest.approx(0.05))
    assert r.multiplier == pytest.approx(m(History(MID)) - 0.05)


def test_only_allow_listed_latest_live_attestations_count() -> None:
    live = att(-5000)
    cases = {
        "attester not allow-listed": att(-5000, attester=ROGUE),
        "revoked": att(-5000, revoked=True),
        "expired (block time)": att(-5000, expiry=NOW),  # as_of == expiry: expired
    }
    for why, a in cases.items():
        assert statuses([a], AP) == [why]
        assert m(History(MID, attestations=(a,))) == m(History(MID))
    assert statuses([live], AP) == ["counted"]
    assert m(History(MID, attestations=(live,))) > 1.0
    # Expiry is judged by the block time of the read, not by `now`.
    assert statuses([att(-5000, expiry=NOW - 10, as_of=NOW - 20)], AP) == ["counted"]
    # A later attestation of the same attester on the same chain supersedes; revoking
    # it does not bring the older one back. Another chain's uid space is its own.
    older, newer = att(-9000, uid=1), att(2000, uid=7)
    assert statuses([older, newer], AP)[0].startswith("superseded")
    assert combined_score([older, newer], AP) == 2000
    assert combined_score([older, replace(newer, revoked=True)], AP) is None
    assert combined_score([older, replace(newer, chain="beta")], AP) == -9000


def test_several_attesters_the_most_conservative_counts() -> None:
    atts = (att(8000, GOOD), att(-1000, BAD, uid=2))
    assert combined_score(atts, AP) == -1000
    r = score(A, History(OLD, attestations=atts), P, NOW)
    assert r.multiplier == pytest.approx(0.90 + 0.03)
    assert {f.name: f for f in r.factors}["attestation"].weight == 0.30


def test_a_bad_word_raises_at_once_a_good_one_is_bounded() -> None:
    worst = m(History(OLD, attestations=(att(-10_000),)))
    assert worst == pytest.approx(0.90 + 0.30)  # the full penalty, at once
    assert m(History(OLD, attestations=(att(10_000),))) == P.lower  # floor is the bound
    assert m(History(MID, attestations=(att(10_000),))) == pytest.approx(m(History(MID)) - 0.05)
    # The upper bound holds with a liquidation on top.
    h = History(OLD, (Liquidation(NOW, "beta", 1.0),), attestations=(att(-10_000),))
    assert m(h) == P.upper


def test_a_fresh_address_is_never_better_than_neutral_with_a_friendly_attester() -> None:
    friendly = (att(10_000),)
    assert m(History(None, attestations=friendly)) == 1.0  # never seen
    assert m(History(NOW - DAY, attestations=friendly)) == 1.0  # a day old (a sybil)
    f = {x.name: x for x in score(A, History(NOW - DAY, attestations=friendly), P, NOW).factors}
    assert f["attestation"].contribution == 0.0 and "fresh" in f["attestation"].note
    # ...but a bad word counts on a fresh or never-seen address at once.
    assert m(History(None, attestations=(att(-5000),))) == pytest.approx(1.15)
    assert m(History(NOW - DAY, attestations=(att(-5000),))) == pytest.approx(1.15)


def test_a_good_word_does_not_offset_a_liquidation() -> None:
    h = History(OLD, (Liquidation(NOW - 10 * DAY, "beta", 1.0),))
    assert m(replace(h, attestations=(att(10_000),))) == m(h)


def test_an_unreadable_chain_keeps_only_its_bad_words() -> None:
    good, bad = att(9000, trusted=False), att(-4000, uid=2, attester=BAD, trusted=False)
    assert m(History(MID, attestations=(good,))) == m(History(MID))
    assert m(History(MID, attestations=(good, bad))) == pytest.approx(m(History(MID)) + 0.12)


def test_bad_parameters_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"reputation\.attestation"):
        AttestationParams(frozenset(), bonus=2.0)
    with pytest.raises(ValueError, match="lowercase"):
        AttestationParams(frozenset({"0x" + "A" * 40}))


attestations = st.lists(
    st.builds(
        Attestation,
        chain=st.sampled_from(["alpha", "beta"]),
        uid=st.integers(1, 5),
        attester=st.sampled_from([GOOD, BAD, ROGUE]),
        score_bps=st.integers(-10_000, 10_000),
        expiry=st.integers(int(NOW - 5 * DAY), int(NOW + 5 * DAY)),
        revoked=st.booleans(),
        as_of=st.floats(NOW - 3 * DAY, NOW),
        trusted=st.booleans(),
    ),
    max_size=6,
)


@SETTINGS
@given(histories(), attestations, st.floats(0.0, 5 * DAY))
def test_matches_the_scalar_reference_within_the_bounds(
    h: History, atts: list[Attestation], dt: float
) -> None:
    h = replace(h, attestations=tuple(atts))
    now = NOW + dt
    got = m(h, P, now)
    assert got == pytest.approx(ref_attested(h, P, now), abs=1e-12)
    assert P.lower <= got <= P.upper
    first = h.first_seen
    if first is None or first > now or now - first < P.min_age_days * DAY:
        assert got >= 1.0  # a young or unknown account: never better than neutral
    # Attestations lower the multiplier by at most `bonus` from the behaviour one.
    assert got >= m(replace(h, attestations=()), P, now) - AP.bonus - 1e-12


@SETTINGS
@given(attestations, st.integers(-10_000, 10_000))
def test_one_more_counted_attestation_never_raises_the_combined_score(
    atts: list[Attestation], s: int
) -> None:
    before = combined_score(atts, AP)
    extra = att(s, attester=BAD, chain="gamma", uid=1)
    after = combined_score([*atts, extra], AP)
    assert after is not None and after <= s
    if before is not None:
        assert after <= before
    assert combined_score(list(reversed(atts)), AP) == before
