"""The VaR calibration job (aggregator/var_feed.py): the daemon's price rounds sampled
to daily closes, the shipped history as fallback and stressed period, and an asset with
too little history in both sources stopping the start with its name."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime

import numpy as np
import pytest

from aggregator import var_feed
from aggregator.config import AppConfig, VarConfig
from aggregator.marketdata.factors import InsufficientHistory
from aggregator.marketdata.loader import PriceSeries
from aggregator.startup import StartupError
from aggregator.var_feed import VarFeed, build_calibration, daily_series
from oracles.protocols import PricePoint

DAY = 86400


def config(**var: object) -> AppConfig:
    return AppConfig(
        chains=[{"name": "alpha", "chain_id": 1, "rpc_urls": ["http://127.0.0.1:1"],
                 "contracts": {"vault": f"0x{1:040x}"}}],
        assets=[
            {"symbol": "USDC", "decimals": 6, "ltv": 0.85, "lt": 0.88},
            {"symbol": "WETH", "decimals": 18, "ltv": 0.8, "lt": 0.825},
        ],
        portfolio={"mode": "var"},
        var=var,
    )  # type: ignore[arg-type]  # fmt: skip


def test_daily_series_takes_each_days_last_price_and_leaves_holes() -> None:
    pts = [PricePoint("WETH", 100.0, 10 * DAY + 5), PricePoint("WETH", 101.0, 10 * DAY + 600),
           PricePoint("WETH", 103.0, 12 * DAY + 1)]  # fmt: skip
    s = daily_series(pts, ["WETH", "USDC"], now=13 * DAY + 7)["WETH"]
    assert s.start == 10 * DAY and s.step == DAY
    assert s.close[0] == 101.0 and math.isnan(s.close[1]) and s.close[2] == 103.0
    assert np.isnan(daily_series(pts, ["USDC"], 13 * DAY)["USDC"].close).all()


def test_short_daemon_history_falls_back_to_the_shipped_history() -> None:
    pts = [PricePoint(a, p, 1.7e9 + d * DAY) for d in range(30) for a, p in
           (("USDC", 1.0), ("WETH", 3000.0 + d))]  # fmt: skip
    cal = build_calibration(config(), pts, 1.7e9 + 31 * DAY)
    assert cal.source == "shipped" and cal.stressed_source == "shipped"
    assert cal.assets == ("USDC", "WETH") and cal.scenarios.shape == (500, 2)
    assert cal.stressed is not None and cal.stressed.shape == (250, 2)
    assert cal.vol[1] > 0.01 and np.all(np.linalg.eigvalsh(cal.cov) >= -1e-12)


async def test_an_asset_without_history_stops_the_start_naming_it() -> None:
    class NoPrices:
        async def ok_prices_since(self, since: float) -> list[PricePoint]:
            return []

    feed = VarFeed(config(history={"USDC": "USDC"}), NoPrices())
    with pytest.raises(StartupError, match=r"asset 'WETH'.*\[var\] history"):
        await feed.start()
    assert feed.calibration is None


# -- [var] history_end: no look-ahead -------------------------------------------------------
START = 1_500_000_000 // DAY * DAY  # 2017-07-14
N_DAYS = 1400


def synthetic(seed: int, crash_from: int | None = None) -> dict[str, PriceSeries]:
    """Daily GBM closes for ETH and a flat-ish USDC; from day `crash_from` on, ETH
    moves 30% a day (what a look-ahead would pick up)."""
    rng = np.random.default_rng(seed)
    r = rng.normal(0.0, 0.04, N_DAYS)
    if crash_from is not None:
        r[crash_from:] = np.where(np.arange(N_DAYS - crash_from) % 2, 0.3, -0.3)
    eth = 2000.0 * np.exp(np.cumsum(r))
    usdc = 1.0 + rng.normal(0.0, 0.0005, N_DAYS)
    return {n: PriceSeries(f"synthetic/{n}", "daily", START, {"close": c}, {})
            for n, c in (("ETH", eth), ("USDC", usdc))}  # fmt: skip


def calibrated(monkeypatch: pytest.MonkeyPatch, series: dict[str, PriceSeries], **var: object):
    monkeypatch.setattr(var_feed, "_shipped", lambda name: series[name])
    return build_calibration(config(history={"USDC": "USDC", "WETH": "ETH"}, **var), [], 2e9)


def test_a_row_after_history_end_cannot_change_the_calibration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    end_day = 1000
    end = datetime.fromtimestamp(START + end_day * DAY, UTC)
    base = calibrated(monkeypatch, synthetic(3), history_end=end)
    # Every close observed after `end` replaced by a crash path: nothing moves.
    later = calibrated(monkeypatch, synthetic(3, crash_from=end_day), history_end=end)
    assert base.n_returns == later.n_returns
    for a, b in ((base.cov, later.cov), (base.scenarios, later.scenarios), (base.vol, later.vol),
                 (base.stressed, later.stressed)):  # fmt: skip
        np.testing.assert_array_equal(a, b)
    # The close observed exactly at `end` (the bar of day end_day - 1) is still used.
    moved = synthetic(3)
    moved["ETH"].close[end_day - 1] *= 1.5
    assert not np.array_equal(calibrated(monkeypatch, moved, history_end=end).cov, base.cov)
    # Without the end, the same later rows change it (the test can fail).
    free = calibrated(monkeypatch, synthetic(3))
    crashed = calibrated(monkeypatch, synthetic(3, crash_from=end_day))
    assert crashed.vol[1] > 2 * free.vol[1]


def test_too_little_history_before_the_end_names_the_asset_and_date(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(InsufficientHistory, match=r"asset 'USDC'.*history_end 2018-09-01"):
        calibrated(monkeypatch, synthetic(3), history_end="2018-09-01")


@pytest.mark.parametrize(
    ("given", "expected"),
    [("2022-05-01", datetime(2022, 5, 1, tzinfo=UTC)),
     (date(2022, 5, 1), datetime(2022, 5, 1, tzinfo=UTC)),
     ("2022-05-01T06:00:00+02:00", datetime(2022, 5, 1, 4, tzinfo=UTC))],
)  # fmt: skip
def test_history_end_parses_to_utc(given: object, expected: datetime) -> None:
    assert VarConfig(history_end=given).history_end == expected  # type: ignore[arg-type]


def test_a_bad_history_end_names_the_field() -> None:
    with pytest.raises(ValueError, match="history_end"):
        VarConfig(history_end="May 2022")  # type: ignore[arg-type]


def test_backfill_splices_the_proxy_returns_before_the_series_starts() -> None:
    """Written from the definition: before the asset's first day every daily return is
    the proxy's (the seam day's too), from it on the asset's own; its closes unchanged."""
    rng = np.random.default_rng(11)
    proxy_close = 1000.0 * np.exp(np.cumsum(rng.normal(0.0, 0.05, 300)))
    own_close = 1.2 * proxy_close[120:] * np.exp(rng.normal(0.0, 0.01, 180))
    own_close[40] = np.nan  # a hole in the asset's own series stays a hole
    proxy = PriceSeries("p", "daily", START, {"close": proxy_close}, {})
    own = PriceSeries("o", "daily", START + 120 * DAY, {"close": own_close}, {})
    out = var_feed.backfilled(own, proxy)
    assert out.start == START and len(out) == 300 and "p" in out.path
    np.testing.assert_array_equal(out.close[120:], own_close)
    r = np.diff(np.log(out.close))
    for i in range(120):  # returns of days 1..120: the proxy's (day 120 is the seam)
        assert math.isclose(r[i], math.log(proxy_close[i + 1] / proxy_close[i]), rel_tol=1e-9)
    assert math.isclose(r[120], math.log(own_close[1] / own_close[0]), rel_tol=1e-12)
    # A proxy that starts no earlier, or a series of another frequency, changes nothing / fails.
    assert var_feed.backfilled(own, replace_start(proxy, START + 130 * DAY)) is own
    with pytest.raises(ValueError, match="daily series only"):
        var_feed.backfilled(own, PriceSeries("h", "hourly", START, {"close": proxy_close}, {}))


def replace_start(s: PriceSeries, start: int) -> PriceSeries:
    return PriceSeries(s.path, s.frequency, start, s.columns, s.skipped)


def test_backfill_gives_an_lst_launched_later_a_history_before_march_2020() -> None:
    """The shipped wstETH series starts 2021-10: alone it has no return before the 2020-03
    crash; backfilled by ETH it has ETH's, and its own from its first day."""
    end = datetime(2020, 3, 1, tzinfo=UTC)
    names = {"USDC": "USDC", "WETH": "ETH", "wstETH": "wstETH"}
    base = config(history=names, history_end=end, min_history_days=400, scenarios=300)
    base = base.model_copy(update={"assets": [*base.assets, base.assets[1].model_copy(
        update={"symbol": "wstETH"})]})  # fmt: skip
    with pytest.raises(InsufficientHistory, match="wstETH"):
        var_feed.shipped_series(base, {})
    filled = base.model_copy(
        update={"var": base.var.model_copy(update={"backfill": {"wstETH": "ETH"}})}
    )
    series = var_feed.shipped_series(filled, {})
    assert len(series["wstETH"]) == len(series["WETH"]) > 800  # ETH: from 2017-11
    np.testing.assert_allclose(
        np.diff(np.log(series["wstETH"].close)), np.diff(np.log(series["WETH"].close))
    )
    # Unbounded, its own closes win where they exist.
    own = var_feed.shipped(
        filled.model_copy(update={"var": filled.var.model_copy(update={"history_end": None})}),
        "wstETH",
    )
    np.testing.assert_array_equal(own.close[-len(var_feed._shipped("wstETH")) :],
                                  var_feed._shipped("wstETH").close)  # fmt: skip


def test_backfill_names_only_configured_assets() -> None:
    from aggregator.config import ConfigError, parse_config

    raw = config(backfill={"stETH": "ETH"}).model_dump(mode="json", exclude_defaults=True)
    with pytest.raises(ConfigError, match=r"var\.backfill\.stETH"):
        parse_config(raw, "test.toml")
