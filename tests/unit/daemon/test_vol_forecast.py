"""The vol_forecast job and the volatility the ledger hands the engine: forecast used
when it fits, EWMA with a logged, visible reason when it does not; the daemon's
/v1/prices (ApiViews as wired by Daemon) carries the volatility block."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest

import oracles.forecast as fcmod
from aggregator.config import AppConfig, load_config
from aggregator.daemon import Daemon
from aggregator.metrics import Metrics
from aggregator.vol_forecast import VolatilityForecaster
from oracles.protocols import PricePoint
from oracles.types import Price, PriceStatus

ADDR = "0x" + "11" * 20
FEED = "0x" + "22" * 20
DAY = 86400.0
NOW = 2_000 * DAY
CONFIG = f"""
[[chains]]
name = "alpha"
chain_id = 71001
rpc_urls = ["http://127.0.0.1:8545"]

[[assets]]
symbol = "WETH"
decimals = 18
ltv = 0.8
lt = 0.85
tokens = {{ alpha = "{ADDR}" }}

[[assets.sources]]
kind = "chainlink"
name = "cl-alpha"
chain = "alpha"
address = "{FEED}"

[oracle]
history_days = 1000

[store]
url = "sqlite+aiosqlite:///:memory:"
"""


@pytest.fixture
def cfg(tmp_path: Path) -> AppConfig:
    p = tmp_path / "c.toml"
    p.write_text(CONFIG)
    return load_config(p)


class History:
    def __init__(self, days: int, seed: int = 1) -> None:
        rng = np.random.default_rng(seed)
        # GARCH(1,1) daily returns, sampled twice a day.
        r, v = [], 4e-4
        for _ in range(days):
            x = math.sqrt(v) * rng.standard_normal()
            r.append(x)
            v = 1e-5 + 0.1 * x * x + 0.875 * v
        logp = np.cumsum([0.0, *r]) + math.log(2000)
        start = NOW - (days + 1) * DAY
        self.points = [
            PricePoint("WETH", float(math.exp(lp)), start + i * DAY + h)
            for i, lp in enumerate(logp)
            for h in (3600.0, 7200.0)
        ]

        self.calls: list[float] = []

    async def ok_prices_since(self, since: float) -> list[PricePoint]:
        self.calls.append(since)
        return [p for p in self.points if p.at >= since]


def forecaster(cfg: AppConfig, days: int, **kw: object) -> VolatilityForecaster:
    return VolatilityForecaster(cfg, History(days), Metrics(), clock=lambda: NOW, **kw)  # type: ignore[arg-type]


def gauge(f: VolatilityForecaster, name: str, **labels: str) -> float | None:
    return f.metrics.registry.get_sample_value(name, labels)


async def test_fitted_forecast_raises_the_volatility_used(cfg: AppConfig) -> None:
    f = forecaster(cfg, 600)
    await f.refit()
    fc = f.fits["WETH"].forecast
    assert fc.reason is None and fc.sigma is not None
    used = f.apply({"WETH": fc.sigma / 2}, NOW)
    assert used["WETH"] == fc.sigma
    view = f.view("WETH")
    assert view is not None
    assert view["source"] == "forecast" and view["model"] == "garch"
    assert view["fallback_reason"] is None and view["fitted_at"] == NOW
    assert gauge(f, "agg_volatility_used", asset="WETH") == fc.sigma
    assert gauge(f, "agg_volatility_fits_total", asset="WETH", outcome="ok") == 1


async def test_short_history_keeps_ewma_logs_and_shows_the_reason(
    cfg: AppConfig, caplog: pytest.LogCaptureFixture
) -> None:
    f = forecaster(cfg, 100)
    with caplog.at_level(logging.WARNING):
        await f.refit()
    assert "short_history" in caplog.text and "EWMA applies" in caplog.text
    assert f.apply({"WETH": 0.03}, NOW) == {"WETH": 0.03}
    view = f.view("WETH")
    assert view is not None and view["fallback_reason"] == "short_history"
    # No fit in use: nothing to date (an account view must not move with the attempt).
    assert view["fitted_at"] is None
    assert view["forecast"] is None and view["used"] == 0.03 and view["source"] == "ewma"
    assert gauge(f, "agg_volatility_fallback", asset="WETH", reason="short_history") == 1


async def test_a_failing_fit_falls_back_to_ewma(cfg: AppConfig) -> None:
    # The failure is injected inside the worker-thread fit (oracles.forecast._fit).
    def boom(_r: object, _name: str) -> object:
        raise ValueError("optimizer blew up")

    f = forecaster(cfg, 600)
    mp = pytest.MonkeyPatch()
    mp.setattr(fcmod, "_fit", boom)
    try:
        await f.refit()
    finally:
        mp.undo()
    assert f.fits["WETH"].forecast.reason == "fit_error"
    assert f.apply({"WETH": 0.02}, NOW) == {"WETH": 0.02}


async def test_before_any_fit_the_ewma_applies(cfg: AppConfig) -> None:
    f = forecaster(cfg, 600)
    assert f.apply({"WETH": 0.02}, NOW) == {"WETH": 0.02}
    assert f.view("WETH")["fallback_reason"] == "not_fitted_yet"  # type: ignore[index]


async def test_daemon_prices_view_carries_the_volatility_block(
    cfg: AppConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = Daemon(cfg)
    price = Price("WETH", PriceStatus.OK, 2000.0, NOW, NOW, 0.0, ())
    monkeypatch.setattr(d.oracle, "prices", lambda: {"WETH": price})
    monkeypatch.setattr(d.oracle, "price", lambda _a: price)
    d.volatility.apply({"WETH": 0.021}, NOW)
    body = d.views.prices()["prices"]["WETH"]
    assert body["volatility"]["ewma"] == 0.021
    assert body["volatility"]["used"] == 0.021
    assert body["volatility"]["fallback_reason"] == "not_fitted_yet"
    one = d.views.price("WETH")
    assert one is not None and one["volatility"]["source"] == "ewma"


async def test_a_refit_reads_only_new_rounds_and_gives_the_same_fit(cfg: AppConfig) -> None:
    f = forecaster(cfg, 600)
    await f.refit()
    first = f.fits["WETH"].forecast
    await f.refit()
    calls = f.history.calls  # type: ignore[attr-defined]
    assert calls[0] == NOW - 1000 * DAY
    assert calls[1] == max(p.at for p in f.history.points)  # type: ignore[attr-defined]
    assert f.fits["WETH"].forecast.sigma == first.sigma
