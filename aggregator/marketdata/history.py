"""The shipped price history (`history/` at the repository root, provenance in
history/SOURCES.md) and how the loader treats the rows SOURCES.md §5 flags.

Invariants: every shipped file is listed once in FILES with its asset, frequency and
sha256 prefix; every flagged row of SOURCES.md §5 that falls in a shipped file is in
KNOWN_ROWS with the action taken and why. Files load with `load(name)`, which applies
exactly that file's known rows and nothing else (no defect kind is skipped).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aggregator.marketdata.loader import KnownRow, PriceSeries, SkipPolicy, load_csv

HISTORY_DIR = Path(__file__).resolve().parents[2] / "history"


@dataclass(frozen=True)
class HistoryFile:
    asset: str  # price of `asset` in `quote`
    quote: str
    frequency: str
    sha256_12: str
    source: str


FILES: dict[str, HistoryFile] = {
    "eth_usd_hourly_2020-03.csv": HistoryFile("ETH", "USD", "hourly", "0427faf0611a", "Bitstamp"),
    "eth_usd_hourly_2022-05_07.csv": HistoryFile("ETH", "USD", "hourly", "cfba9fc6fa2d", "Gemini"),
    "eth_usd_hourly_2022-11.csv": HistoryFile("ETH", "USD", "hourly", "a0e570c129c9", "Gemini"),
    "eth_usd_hourly_2023-03.csv": HistoryFile("ETH", "USD", "hourly", "a2c6de532d84", "Gemini"),
    "btc_usd_hourly_2020-03.csv": HistoryFile("BTC", "USD", "hourly", "ce61966feb3d", "Bitstamp"),
    "btc_usd_hourly_2022-05_07.csv": HistoryFile(
        "BTC", "USD", "hourly", "1cc0644b6c60", "Bitstamp"
    ),
    "btc_usd_hourly_2022-11.csv": HistoryFile("BTC", "USD", "hourly", "dd28a8e966c1", "Bitstamp"),
    "eth_usd_daily.csv": HistoryFile("ETH", "USD", "daily", "5f2e22330586", "Yahoo"),
    "btc_usd_daily.csv": HistoryFile("BTC", "USD", "daily", "f75f28d1c855", "Yahoo"),
    "steth_usd_daily.csv": HistoryFile("stETH", "USD", "daily", "da814a253a60", "Yahoo"),
    "wsteth_usd_daily.csv": HistoryFile("wstETH", "USD", "daily", "a75ae13976d6", "Yahoo"),
    "steth_eth_daily.csv": HistoryFile("stETH", "ETH", "daily", "66851e256081", "Yahoo ratio"),
    "usdc_usd_daily.csv": HistoryFile("USDC", "USD", "daily", "febf101f3e57", "Yahoo"),
}

_YAHOO_0528 = KnownRow(
    "drop",
    "SOURCES.md §5: incomplete Yahoo bar on 2022-05-28 (open = low, high = close; "
    "ETH close 1.9% off the hourly venues; stETH/ETH 0.998 against ~0.976 around it)",
)
_YAHOO_0318 = KnownRow(
    "drop",
    "SOURCES.md §5: Yahoo 2020-03-18 close ~3.3% below Bitstamp and Gemini "
    "(CoinMarketCap aggregation quirk)",
)


def _flat(day_hour: str, venue: str) -> KnownRow:
    return KnownRow("keep", f"SOURCES.md §5: {venue} flat no-trade bar {day_hour}, no price jump")


# file -> timestamp -> action. Yahoo stETH noise (±0.3-1% day to day, §5) is not a row
# defect: it is a documented tolerance of the series, left in (docs/var.md).
KNOWN_ROWS: dict[str, dict[str, KnownRow]] = {
    "btc_usd_hourly_2022-05_07.csv": {
        "2022-05-11T08:00:00Z": KnownRow(
            "drop",
            "SOURCES.md §5: incomplete Bitstamp bar, close ~3% below Gemini/Bitfinex, "
            "next bar opens 1.5% higher",
        ),
        "2022-07-13T11:00:00Z": _flat("2022-07-13 11:00", "Bitstamp"),
    },
    "eth_usd_hourly_2022-05_07.csv": {
        "2022-05-10T03:00:00Z": _flat("2022-05-10 03:00", "Gemini"),
        "2022-06-22T01:00:00Z": _flat("2022-06-22 01:00", "Gemini"),
    },
    "eth_usd_hourly_2023-03.csv": {
        "2023-03-06T23:00:00Z": _flat("2023-03-06 23:00", "Gemini"),
    },
    "eth_usd_daily.csv": {"2022-05-28": _YAHOO_0528, "2020-03-18": _YAHOO_0318},
    "btc_usd_daily.csv": {"2020-03-18": _YAHOO_0318},
    "steth_usd_daily.csv": {"2022-05-28": _YAHOO_0528},
    "wsteth_usd_daily.csv": {"2022-05-28": _YAHOO_0528},
    "steth_eth_daily.csv": {"2022-05-28": _YAHOO_0528},
}


# A window of the history given by its days: `START..END`, UTC, END exclusive (the
# replay's and the procyclicality report's `--episode`).
RANGE_SEP = ".."
RANGE_FORMAT = f"YYYY-MM-DD{RANGE_SEP}YYYY-MM-DD (UTC days, end exclusive)"


def date_range(text: str, min_days: int) -> tuple[int, int] | None:
    """(start, end) unix seconds of `START..END`; None when `text` is not a range at
    all (no separator: a name), ValueError naming it when malformed or shorter than
    `min_days`."""
    first, sep, last = text.partition(RANGE_SEP)
    if not sep:
        return None
    try:
        start, end = (
            int(datetime.strptime(d, "%Y-%m-%d").replace(tzinfo=UTC).timestamp())
            for d in (first, last)
        )
    except ValueError:
        raise ValueError(f"{text!r}: a date range is {RANGE_FORMAT}") from None
    if end - start < min_days * 86400:
        raise ValueError(f"{text!r}: a date range spans at least {min_days} days")
    return start, end


def policy(name: str) -> SkipPolicy:
    return SkipPolicy(known=KNOWN_ROWS.get(name, {}))


def load(name: str, directory: Path = HISTORY_DIR) -> PriceSeries:
    if name not in FILES:
        raise KeyError(f"{name!r} is not a shipped history file; known: {sorted(FILES)}")
    return load_csv(directory / name, policy(name))


def daily(asset: str, quote: str = "USD", directory: Path = HISTORY_DIR) -> PriceSeries:
    """The daily series of `asset` in `quote`."""
    for name, f in FILES.items():
        if f.asset == asset and f.quote == quote and f.frequency == "daily":
            return load(name, directory)
    raise KeyError(f"no daily {asset}/{quote} history shipped")
