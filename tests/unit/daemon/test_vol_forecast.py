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
from aggregator.risk.apc import explain_steps
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


STETH = "0x" + "33" * 20
GROUP_CONFIG = CONFIG.replace(
    "[oracle]",
    f"""[[assets]]
symbol = "stETH"
decimals = 18
ltv = 0.7
lt = 0.75
tokens = {{ alpha = "{STETH}" }}

[[assets.sources]]
kind = "chainlink"
name = "cl-steth"
chain = "alpha"
address = "{FEED}"

[[correlation_groups]]
name = "eth"
assets = ["WETH", "stETH"]
reference = "WETH"
ltv = 0.9
lt = 0.93

[oracle]""",
)


class GroupHistory(History):
    """WETH on the GARCH path of `History`; stETH = WETH x a ratio with its own, much
    calmer GARCH path (a de-peg risk far below the USD risk)."""

    def __init__(self, days: int) -> None:
        super().__init__(days)
        rng = np.random.default_rng(2)
        r, v = [], 4e-6
        for _ in range(days):
            x = math.sqrt(v) * rng.standard_normal()
            r.append(x)
            v = 1e-7 + 0.12 * x * x + 0.85 * v
        self.ratio = np.exp(np.cumsum([0.0, *r]))
        weth = list(self.points)
        self.points += [
            PricePoint("stETH", p.value * float(self.ratio[i // 2]), p.at)
            for i, p in enumerate(weth)
        ]


async def test_relative_volatility_of_a_group_member_gets_its_own_forecast(
    tmp_path: Path,
) -> None:
    p = tmp_path / "g.toml"
    p.write_text(GROUP_CONFIG)
    cfg = load_config(p)
    history = GroupHistory(600)
    f = VolatilityForecaster(cfg, history, Metrics(), clock=lambda: NOW)  # type: ignore[arg-type]
    assert f.pairs == {"stETH/WETH": ("stETH", "WETH")}
    await f.refit()
    pair = f.fits["stETH/WETH"].forecast
    assert pair.reason is None and pair.sigma is not None
    # Fitted on the ratio of the daily closes, independently of either asset's own fit:
    # the same fit on the ratio series built here.
    closes = sorted({int(q.at // DAY): q for q in history.points if q.asset == "WETH"}.items())
    times = [q.at for _, q in closes]
    ratio = [float(history.ratio[day - int(closes[0][0])]) for day, _ in closes]
    want = fcmod.fit_forecast(fcmod.daily_returns(times, ratio), f.settings)
    assert pair.sigma == pytest.approx(want.sigma, rel=1e-6)
    usd = f.fits["stETH"].forecast.sigma
    assert usd is not None and pair.sigma < usd / 5  # the de-peg risk, not the USD risk
    # The forecast raises a lower EWMA, then the [apc] tools apply to it as to a USD
    # sigma (the default stressed weight mixes in the ratio's worst 30 days).
    f.apply({"stETH": 0.03}, NOW)
    used = f.apply_relative({"eth": {"stETH": pair.sigma / 2}}, NOW)["eth"]["stETH"]
    view = f.view("stETH")
    assert view is not None
    block = view["relative"]["WETH"]
    assert block["source"] == "forecast" and block["predictive"] == pair.sigma
    assert block["used"] == used >= pair.sigma
    assert block["apc"] == explain_steps(f.decisions["stETH/WETH"])
    assert f.view("WETH") is None  # no USD decision for WETH yet, and no pair of its own
    assert gauge(f, "agg_volatility_used", asset="stETH/WETH") == used
    # A relative EWMA above the forecast is what the tools start from (never lower).
    high = f.apply_relative({"eth": {"stETH": pair.sigma * 3}}, NOW + 1)["eth"]["stETH"]
    assert f.decisions["stETH/WETH"].predictive == pair.sigma * 3 and high >= pair.sigma * 3


async def test_the_ledger_hands_the_engine_the_relative_volatility_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = tmp_path / "g.toml"
    p.write_text(GROUP_CONFIG)
    d = Daemon(load_config(p))
    prices = {s: Price(s, PriceStatus.OK, 2000.0, NOW, NOW, 0.0, ()) for s in ("WETH", "stETH")}

    async def refresh() -> dict[str, Price]:
        return prices

    monkeypatch.setattr(d.oracle, "refresh", refresh)
    monkeypatch.setattr(d.oracle, "volatility", lambda _a: 0.04)
    monkeypatch.setattr(d.oracle, "relative_volatility", lambda _a, _r: 0.001)
    monkeypatch.setattr(d.volatility, "_decide", lambda name, e, now: 10 * e)
    await d.ledger.refresh_prices()
    m = d.engine.market
    g, t = 0, m.asset_index["stETH"]
    assert m.rel_sigma[g, t] == pytest.approx(0.01)  # the forecaster's, not the EWMA
    assert m.sigma[t] == pytest.approx(0.4)


async def test_forecasting_disabled_says_so_for_the_pairs_too(tmp_path: Path) -> None:
    p = tmp_path / "g.toml"
    p.write_text(GROUP_CONFIG.replace("[oracle]", "[forecast]\nenabled = false\n\n[oracle]"))
    f = VolatilityForecaster(load_config(p), GroupHistory(600), Metrics(), clock=lambda: NOW)  # type: ignore[arg-type]
    await f.refit()
    assert {n: fit.forecast.reason for n, fit in f.fits.items()} == {
        "WETH": "disabled",
        "stETH": "disabled",
        "stETH/WETH": "disabled",
    }
    f.apply({"stETH": 0.03}, NOW)
    assert f.apply_relative({"eth": {"stETH": 0.002}}, NOW) == {"eth": {"stETH": 0.002}}
    assert gauge(f, "agg_volatility_fallback", asset="stETH/WETH", reason="disabled") == 1


async def test_a_failing_pair_fit_falls_back_to_the_relative_ewma_alone(
    tmp_path: Path,
) -> None:
    """The pair's fit raising in the worker thread is the pair's fit_error: the USD
    fits are kept, and the relative EWMA applies (through the tools) for that pair."""
    p = tmp_path / "g.toml"
    p.write_text(GROUP_CONFIG)
    cfg = load_config(p)
    f = VolatilityForecaster(cfg, GroupHistory(600), Metrics(), clock=lambda: NOW)  # type: ignore[arg-type]
    real = fcmod._fit

    def boom_on_the_pair(scaled: np.ndarray, name: str) -> object:
        # The ratio's returns are the only series this calm (0.17% a day against 2%+
        # for the USD prices): the injected failure hits the pair's fit alone.
        if float(np.std(scaled)) / fcmod._SCALE < 0.005:
            raise ValueError("optimizer blew up")
        return real(scaled, name)

    mp = pytest.MonkeyPatch()
    mp.setattr(fcmod, "_fit", boom_on_the_pair)
    try:
        await f.refit()
    finally:
        mp.undo()
    assert f.fits["stETH/WETH"].forecast.reason == "fit_error"
    assert f.fits["stETH"].forecast.reason is None
    assert f.fits["WETH"].forecast.reason is None
    f.apply({"stETH": 0.03}, NOW)
    f.apply_relative({"eth": {"stETH": 0.004}}, NOW)
    decision = f.decisions["stETH/WETH"]
    assert decision.predictive == 0.004  # the EWMA: no forecast to raise it
    view = f.view("stETH")
    assert view is not None
    block = view["relative"]["WETH"]
    assert block["source"] == "ewma" and block["fallback_reason"] == "fit_error"
    assert gauge(f, "agg_volatility_fallback", asset="stETH/WETH", reason="fit_error") == 1
