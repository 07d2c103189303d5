"""The CAPO-style cap on LST exchange rates."""

from __future__ import annotations

import pytest

from chains.types import RateSample
from oracles.protocols import RateSnapshot
from oracles.sources.rate import YEAR_S, ExchangeRateSource, RateCap, cap_at
from oracles.types import BadPayload, NoData, NonPositive, Observation, Stale

T0 = 1_700_000_000
E18 = 10**18


def sample(rate: int, scale: int, block: int, timestamp: int) -> RateSample:
    return RateSample(
        asset="lst", chain="test", block=block, timestamp=timestamp, rate=rate, scale=scale
    )


class Samples:
    """A RateProvider backed by a dict (what chains/ keeps in memory)."""

    def __init__(self) -> None:
        self.by_asset: dict[str, RateSample] = {}

    def latest(self, asset: str) -> RateSample | None:
        return self.by_asset.get(asset)


class AsyncSamples(Samples):
    async def latest(self, asset: str) -> RateSample | None:  # type: ignore[override]
        return self.by_asset.get(asset)


def test_cap_formula() -> None:
    assert cap_at(1.10, T0, 0.10, T0) == 1.10
    assert cap_at(1.10, T0, 0.10, T0 + YEAR_S) == pytest.approx(1.21)
    assert cap_at(1.10, T0, 0.10, T0 + YEAR_S / 2) == pytest.approx(1.155)
    assert cap_at(1.10, T0, 0.10, T0 - 1000) == 1.10


@pytest.mark.parametrize("provider_cls", [Samples, AsyncSamples])
async def test_rate_within_cap_passes(provider_cls: type[Samples]) -> None:
    p = provider_cls()
    cap = RateCap(max_yearly_growth=0.10, snapshot_rate=1.10, snapshot_time=T0)
    src = ExchangeRateSource("wstETH", cap, p)
    p.by_asset["wstETH"] = sample(1_150_000_000_000_000_000, E18, 10, T0 + int(YEAR_S))
    got = await src.fetch(T0 + YEAR_S + 5)
    assert isinstance(got, Observation)
    assert got.value == pytest.approx(1.15)
    assert "capped" not in got.detail


async def test_rate_above_cap_within_the_guard_tolerance_is_capped() -> None:
    p = Samples()
    cap = RateCap(max_yearly_growth=0.05, snapshot_rate=1.10, snapshot_time=T0)
    src = ExchangeRateSource("wstETH", cap, p)
    allowed = 1.10 * (1 + 0.05 / 365)
    p.by_asset["wstETH"] = sample(int(allowed * 1.0005 * E18), E18, 11, T0 + 86400)
    got = await src.fetch(T0 + 86400 + 5)
    assert isinstance(got, Observation) and src.findings == ()
    assert got.value == pytest.approx(allowed)
    assert "(block 11) capped to" in got.detail


async def test_rate_far_above_cap_is_a_finding_and_handed_on_live() -> None:
    """A donation attack doubles the vault's rate within a day: the cap is 50% under
    the live rate, a finding. The live rate goes on to the service, where the market
    median holds the price down (tests/integration/oracles/test_lst_anvil.py)."""
    p = Samples()
    cap = RateCap(max_yearly_growth=0.05, snapshot_rate=1.10, snapshot_time=T0)
    src = ExchangeRateSource("wstETH", cap, p)
    p.by_asset["wstETH"] = sample(2 * E18, E18, 11, T0 + 86400)
    got = await src.fetch(T0 + 86400 + 5)
    assert isinstance(got, Observation) and got.value == 2.0
    assert [f.kind for f in src.findings] == ["cap_below_rate"]


async def test_first_rate_becomes_the_snapshot() -> None:
    p = Samples()
    src = ExchangeRateSource("rETH", RateCap(max_yearly_growth=0.10), p)
    p.by_asset["rETH"] = sample(1_080_000, 1_000_000, 1, T0)
    assert isinstance(await src.fetch(T0), Observation)
    assert src.snapshot == RateSnapshot("rETH", 1.08, float(T0))
    p.by_asset["rETH"] = sample(1_080_500, 1_000_000, 2, T0 + 3600)
    got = await src.fetch(T0 + 3600)
    assert isinstance(got, Observation) and src.findings == ()
    assert got.value == pytest.approx(1.08 * (1 + 0.10 * 3600 / YEAR_S))
    # Far above the anchored cap: a finding, measured against the first rate.
    p.by_asset["rETH"] = sample(1_500_000, 1_000_000, 3, T0 + 7200)
    got = await src.fetch(T0 + 7200)
    assert isinstance(got, Observation) and got.value == 1.5
    assert src.findings[0].detail.startswith("cap 1.08")


async def test_rate_failures() -> None:
    p = Samples()
    src = ExchangeRateSource("cbETH", RateCap(max_age_s=600), p)
    got = await src.fetch(T0)
    assert isinstance(got, NoData) and "cbETH" in got.reason
    p.by_asset["cbETH"] = sample(0, E18, 5, T0)
    got = await src.fetch(T0)
    assert isinstance(got, NonPositive) and "rate 0 (block 5)" in got.reason
    p.by_asset["cbETH"] = sample(E18, 0, 5, T0)
    assert isinstance(await src.fetch(T0), BadPayload)
    p.by_asset["cbETH"] = sample(E18, E18, 5, T0 - 3600)
    got = await src.fetch(T0)
    assert isinstance(got, Stale) and "3600s old" in got.reason


def test_cap_config_validation() -> None:
    with pytest.raises(ValueError, match="together"):
        RateCap(snapshot_rate=1.0)
    with pytest.raises(ValueError, match="snapshot_rate must be > 0"):
        RateCap(snapshot_rate=0.0, snapshot_time=1.0)
