"""Median, quorum, outliers, jump guard; property tests for liars."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from oracles.aggregate import AggregationRules, JumpGuard, aggregate, robust_median
from oracles.types import NonPositive, Observation, PriceStatus, SourceOutcome, Stale

NOW = 1_700_000_000.0


def obs(*values: float) -> list[tuple[SourceOutcome, str]]:
    return [(Observation(f"s{i}", v, NOW - i), "http") for i, v in enumerate(values)]


def test_median_of_three_ok() -> None:
    p = aggregate("ETH", obs(100.0, 101.0, 100.5), AggregationRules(min_sources=2), NOW)
    assert p.status is PriceStatus.OK
    assert p.value == 100.5
    assert p.spread is not None and abs(p.spread - 1.0 / 100.5) < 1e-12
    assert p.timestamp == NOW - 2  # as old as its oldest input
    assert all(s.used for s in p.sources)


def test_failures_are_dropped_and_recorded() -> None:
    outcomes = [
        *obs(100.0, 100.2),
        (Stale("cl", "chainlink cl: updatedAt 5 is 9999s old"), "chainlink"),
        (NonPositive("cb", "http cb: value 0"), "http"),
    ]
    p = aggregate("ETH", outcomes, AggregationRules(min_sources=2), NOW)
    assert p.status is PriceStatus.OK
    assert p.value == 100.1
    by = {s.source: s for s in p.sources}
    assert by["cl"].failure == "stale" and "9999s old" in (by["cl"].reason or "")
    assert by["cb"].failure == "non_positive" and not by["cb"].used


def test_no_quorum_is_unavailable() -> None:
    outcomes = [*obs(100.0), (Stale("cl", "too old"), "chainlink")]
    p = aggregate("ETH", outcomes, AggregationRules(min_sources=2), NOW)
    assert p.status is PriceStatus.UNAVAILABLE
    assert p.value is None
    assert "1 valid of 2 sources, quorum 2" in p.reason
    assert "cl: stale" in p.reason


def test_outlier_dropped_and_median_retaken() -> None:
    p = aggregate("ETH", obs(100.0, 100.2, 100.4, 150.0), AggregationRules(min_sources=3), NOW)
    assert p.status is PriceStatus.OK
    assert p.value == 100.2
    by = {s.source: s for s in p.sources}
    assert not by["s3"].used
    assert "outliers dropped: s3=150" in p.reason


def test_too_few_agree_is_disputed() -> None:
    # Three sources, all far apart: nobody agrees with the median closely enough.
    p = aggregate(
        "ETH", obs(90.0, 100.0, 110.0), AggregationRules(min_sources=2, max_deviation=0.02), NOW
    )
    assert p.status is PriceStatus.DISPUTED
    assert p.value == 100.0
    assert "only 1 of 3 valid sources within 2.00%" in p.reason


def test_jump_needs_confirmation() -> None:
    rules = AggregationRules(jump_threshold=0.2, max_deviation=0.02)
    guard = JumpGuard(rules, last_accepted=100.0)
    first = guard.apply(aggregate("ETH", obs(130.0), rules, NOW))
    assert first.status is PriceStatus.DISPUTED
    assert first.pending_value == 130.0
    assert "pending confirmation" in first.reason
    second = guard.apply(aggregate("ETH", obs(130.5), rules, NOW + 10))
    assert second.status is PriceStatus.OK
    assert "confirmed" in second.reason
    assert guard.last_accepted == 130.5


def test_jump_not_confirmed_when_next_round_disagrees() -> None:
    rules = AggregationRules(jump_threshold=0.2)
    guard = JumpGuard(rules, last_accepted=100.0)
    assert guard.apply(aggregate("ETH", obs(130.0), rules, NOW)).status is PriceStatus.DISPUTED
    back = guard.apply(aggregate("ETH", obs(101.0), rules, NOW + 10))
    assert back.status is PriceStatus.OK
    assert guard.pending is None
    # A spike to 160 then 130 is two different jumps: neither is confirmed.
    assert guard.apply(aggregate("ETH", obs(160.0), rules, NOW)).status is PriceStatus.DISPUTED
    assert guard.apply(aggregate("ETH", obs(130.0), rules, NOW)).status is PriceStatus.DISPUTED


def test_jump_confirmation_must_be_the_very_next_round() -> None:
    rules = AggregationRules(jump_threshold=0.2, min_sources=1)
    guard = JumpGuard(rules, last_accepted=100.0)
    assert guard.apply(aggregate("ETH", obs(130.0), rules, NOW)).status is PriceStatus.DISPUTED
    gap = aggregate("ETH", [(Stale("s0", "old"), "http")], rules, NOW)
    assert guard.apply(gap).status is PriceStatus.UNAVAILABLE
    assert guard.apply(aggregate("ETH", obs(130.0), rules, NOW)).status is PriceStatus.DISPUTED


def test_first_price_has_no_jump_reference() -> None:
    guard = JumpGuard(AggregationRules())
    assert guard.apply(aggregate("ETH", obs(5.0), AggregationRules(), NOW)).usable


prices = st.floats(min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False)


@st.composite
def honest_and_liars(draw: st.DrawFn) -> tuple[list[float], list[float]]:
    f = draw(st.integers(min_value=0, max_value=5))
    honest = draw(st.lists(prices, min_size=f + 1, max_size=f + 3))
    liars = draw(st.lists(st.one_of(prices, st.sampled_from([1e-9, 1e18])), min_size=f, max_size=f))
    return honest, liars


@settings(max_examples=400, deadline=None)
@given(honest_and_liars(), st.floats(min_value=0.001, max_value=1.0), st.randoms())
def test_median_stays_within_honest_range(
    case: tuple[list[float], list[float]], deviation: float, rnd: object
) -> None:
    honest, liars = case
    values = honest + liars
    rnd.shuffle(values)  # type: ignore[attr-defined]
    value, _ = robust_median(values, deviation)
    assert min(honest) <= value <= max(honest)
    p = aggregate("X", obs(*values), AggregationRules(min_sources=1, max_deviation=deviation), NOW)
    assert p.value is not None and min(honest) <= p.value <= max(honest)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(prices, min_size=2, max_size=8),
    st.one_of(prices, st.sampled_from([1e-9, 1e18])),
    st.floats(min_value=0.001, max_value=1.0),
)
def test_one_source_cannot_move_the_price_alone(
    others: list[float], liar: float, deviation: float
) -> None:
    rules = AggregationRules(min_sources=2, max_deviation=deviation)
    p = aggregate("X", obs(*others, liar), rules, NOW)
    assert p.value is not None
    assert min(others) <= p.value <= max(others)


@settings(max_examples=200, deadline=None)
@given(st.lists(prices, min_size=1, max_size=9), st.floats(min_value=0.001, max_value=1.0))
def test_kept_sources_are_within_deviation(values: list[float], deviation: float) -> None:
    p = aggregate("X", obs(*values), AggregationRules(min_sources=1, max_deviation=deviation), NOW)
    assert p.value is not None
    ordered = sorted(values)
    first = (ordered[(len(values) - 1) // 2] + ordered[len(values) // 2]) / 2
    for s in p.sources:
        assert s.used == (abs((s.value or 0) - first) <= deviation * first)


def test_single_source_with_others_failing_has_no_quorum() -> None:
    outcomes = [*obs(1e9), (Stale("a", "old"), "http"), (Stale("b", "old"), "http")]
    p = aggregate("X", outcomes, AggregationRules(min_sources=2), NOW)
    assert p.status is PriceStatus.UNAVAILABLE and p.value is None


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 2**80 - 1),
    st.integers(-(2**255), 2**255 - 1),
    st.integers(0, 2**256 - 1),
    st.integers(0, 2**256 - 1),
)
def test_round_decoder_matches_eth_abi(r: int, a: int, s: int, u: int) -> None:
    from eth_abi import encode

    from oracles.sources.chainlink import RoundData, decode_decimals, decode_round

    raw = encode(["uint80", "int256", "uint256", "uint256", "uint80"], [r, a, s, u, r])
    assert decode_round(raw) == RoundData(r, a, s, u, r)
    assert decode_decimals(encode(["uint8"], [r % 256])) == r % 256


def test_round_decoder_rejects_bad_words() -> None:
    import pytest

    from oracles.sources.chainlink import decode_decimals, decode_round

    with pytest.raises(ValueError, match="uint80"):
        decode_round(b"\xff" * 160)
    with pytest.raises(ValueError, match="expected 160"):
        decode_round(b"\x00" * 32)
    with pytest.raises(ValueError, match="uint8"):
        decode_decimals((300).to_bytes(32, "big"))
