"""MarketModel dynamics, without chains: seeded determinism, shocks, reversion, rates."""

from __future__ import annotations

import pytest

from devkit.simulator import YEAR_S, MarketModel


def path(seed: int, steps: int = 50) -> list[float]:
    m = MarketModel.initial(seed)
    out = []
    for _ in range(steps):
        m.step(3.0)
        out.append(m.prices["WETH"])
    return out


def test_same_seed_same_path_different_seed_different_path() -> None:
    assert path(7) == path(7)
    assert path(7) != path(8)


def test_shock_drops_eth_and_reversion_brings_it_back() -> None:
    m = MarketModel.initial(1, shock_probability=0.0, vol_per_tick={"WETH": 0.0})
    start = m.prices["WETH"]
    m.shock(0.2)
    assert m.prices["WETH"] == pytest.approx(start * 0.8)
    for _ in range(200):
        m.step(3.0)
    assert m.prices["WETH"] == pytest.approx(start, rel=0.01)


def test_forced_shock_is_reported() -> None:
    m = MarketModel.initial(2, shock_probability=1.0, shock_range=(0.15, 0.15))
    events = m.step(3.0)
    assert len(events) == 1 and "ETH shock -15.0%" in events[0]


def test_lst_rates_grow_at_their_apr_below_the_oracle_cap() -> None:
    m = MarketModel.initial(3)
    start = dict(m.rates)
    m.step(YEAR_S / 10)
    for symbol, rate in m.rates.items():
        growth = rate / start[symbol] - 1
        assert 0 < growth < 0.10 / 10  # under the configured 10 %/year CAPO cap
    assert m.lst_price("wstETH") == pytest.approx(m.prices["WETH"] * m.rates["wstETH"])


def test_per_chain_feed_dispersion_stays_within_oracle_deviation() -> None:
    m = MarketModel.initial(4)
    for symbol in ("USDC", "WBTC", "WETH", "wstETH", "rETH"):
        base = m.lst_price(symbol) if symbol in m.rates else m.prices[symbol]
        for _ in range(200):
            assert abs(m.feed_price(symbol) / base - 1) < 0.02, symbol
