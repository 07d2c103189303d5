"""The guard of an LST growth cap (oracles/cap_guard.py) and what the rate source does
while a finding stands."""

from __future__ import annotations

import pytest

from chains.types import RateSample
from oracles.cap_guard import CapGuardRules, check_cap
from oracles.sources.rate import YEAR_S, ExchangeRateSource, RateCap
from oracles.types import Observation

T0 = 1_700_000_000.0
E18 = 10**18
RULES = CapGuardRules()


def kinds(**kw: float | None) -> list[str]:
    args: dict[str, object] = {
        "live_rate": 1.17,
        "cap": 1.18,
        "snapshot_rate": 1.16,
        "snapshot_time": T0,
        "now": T0 + 86400,
        "chain_rate_at_snapshot": None,
        "rules": RULES,
    }
    args.update(kw)
    return [f.kind for f in check_cap(**args)]  # type: ignore[arg-type]


def test_a_sound_cap_has_no_finding() -> None:
    assert kinds() == []
    assert kinds(cap=1.17 * (1 - 0.0009)) == []  # within the 0.1% tolerance
    assert kinds(chain_rate_at_snapshot=1.16 * 1.0009) == []


def test_each_finding() -> None:
    assert kinds(cap=1.17 * 0.9715) == ["cap_below_rate"]  # the incident's 2.85%
    assert kinds(chain_rate_at_snapshot=1.13) == ["snapshot_mismatch"]
    stale = CapGuardRules(max_snapshot_age_s=30 * 86400)
    assert kinds(now=T0 + 31 * 86400, rules=stale) == ["snapshot_stale"]
    assert kinds(now=T0 + 29 * 86400, rules=stale) == []
    # No age limit configured: an anchored-at-start snapshot may grow old.
    assert kinds(now=T0 + 3 * YEAR_S) == []


def test_rules_are_validated() -> None:
    with pytest.raises(ValueError, match="cap_tolerance"):
        CapGuardRules(cap_tolerance=1.5)
    with pytest.raises(ValueError, match="max_snapshot_age_s"):
        CapGuardRules(max_snapshot_age_s=0)


class _Chain:
    """Rate provider: the latest sample and the chain's rate at any earlier time."""

    def __init__(self, history: list[tuple[float, float]]) -> None:
        self.history = history  # (timestamp, rate), ascending
        self.asked: list[float] = []

    def latest(self, asset: str) -> RateSample:
        ts, rate = self.history[-1]
        return RateSample(asset, "c", len(self.history), int(ts), int(rate * E18), E18)

    async def rate_at(self, asset: str, ts: float) -> RateSample | None:
        self.asked.append(ts)
        before = [(t, r) for t, r in self.history if t <= ts]
        if not before:
            return None
        t, r = before[-1]
        return RateSample(asset, "c", 1, int(t), int(r * E18), E18)


async def test_snapshot_ratio_and_time_out_of_step_use_the_live_rate() -> None:
    """The incident's shape: the configured snapshot pairs the ratio of one day (1.1500)
    with the time of the next, when the chain's rate was already 1.1828. The cap sits
    2.85% under the live rate; the source hands on the live rate and says why."""
    chain = _Chain([(T0, 1.15), (T0 + 86400, 1.1828), (T0 + 2 * 86400, 1.1829)])
    cap = RateCap(0.10, snapshot_rate=1.15, snapshot_time=T0 + 86400)
    src = ExchangeRateSource("wstETH", cap, chain, rate_at=chain.rate_at)
    got = await src.fetch(T0 + 2 * 86400 + 5)
    assert isinstance(got, Observation) and got.value == pytest.approx(1.1829)
    assert [f.kind for f in src.findings] == ["cap_below_rate", "snapshot_mismatch"]
    assert "used uncapped" in got.detail and "snapshot_mismatch" in got.detail
    assert chain.asked == [T0 + 86400]
    await src.fetch(T0 + 2 * 86400 + 6)
    assert chain.asked == [T0 + 86400]  # the past does not change: read once


async def test_an_observed_anchor_is_not_checked_against_the_past() -> None:
    chain = _Chain([(T0, 1.15), (T0 + 3600, 1.1501)])
    src = ExchangeRateSource("rETH", RateCap(0.10), chain, rate_at=chain.rate_at)
    got = await src.fetch(T0 + 3605)
    assert isinstance(got, Observation) and src.findings == ()
    assert chain.asked == []


async def test_a_failing_past_read_does_not_stop_pricing_and_is_retried() -> None:
    chain = _Chain([(T0, 1.15)])
    calls = 0

    async def broken(asset: str, ts: float) -> RateSample | None:
        nonlocal calls
        calls += 1
        raise TimeoutError("archive read timed out")

    cap = RateCap(0.10, snapshot_rate=1.15, snapshot_time=T0 - 10)
    src = ExchangeRateSource("wstETH", cap, chain, rate_at=broken)
    assert isinstance(await src.fetch(T0 + 5), Observation)
    assert isinstance(await src.fetch(T0 + 6), Observation)
    assert calls == 2 and src.findings == ()
