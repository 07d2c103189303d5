"""HTTP sources against a real loopback server that misbehaves on purpose."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from oracle_http_server import HostileApi

from oracles.config import HttpSourceConfig
from oracles.sources import HttpClient, SourceConfigError, SourceContext
from oracles.sources.http import HttpSource, build_http
from oracles.types import (
    BadPayload,
    HttpStatus,
    NonPositive,
    Observation,
    SourceFailure,
    Stale,
    Timeout,
    TooLarge,
    Unreachable,
)

NOW = time.time()

COINBASE = {"data": {"amount": "3012.55", "base": "ETH", "currency": "USD"}}
BINANCE = {"symbol": "ETHUSDT", "price": "3011.90000000"}
KRAKEN = {
    "error": [],
    "result": {"XETHZUSD": {"a": ["3013.1", "1", "1.0"], "c": ["3012.80000", "0.01"]}},
}
COINGECKO = {"ethereum": {"usd": 3012.1, "last_updated_at": int(NOW) - 20}}


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    c = HttpClient()
    yield c
    await c.close()


def make(client: HttpClient, env: dict[str, str] | None = None, **cfg: Any) -> HttpSource:
    cfg.setdefault("name", "src")
    return build_http(HttpSourceConfig(**cfg), SourceContext(http=client, env=env or {}))


@pytest.mark.parametrize(
    ("payload", "path", "ts_path", "expected"),
    [
        (COINBASE, "data.amount", None, 3012.55),
        (BINANCE, "price", None, 3011.9),
        (KRAKEN, "result.*.c[0]", None, 3012.8),
        (COINGECKO, "ethereum.usd", "ethereum.last_updated_at", 3012.1),
    ],
    ids=["coinbase", "binance", "kraken", "coingecko"],
)
async def test_exchange_shapes(
    api: HostileApi,
    client: HttpClient,
    *,
    payload: Any,
    path: str,
    ts_path: str | None,
    expected: float,
) -> None:
    if ts_path:
        # Stamped now, not at import: a long suite would otherwise age it past max_age_s.
        payload = {"ethereum": {**payload["ethereum"], "last_updated_at": int(time.time()) - 20}}
    src = make(client, url=api.set("p", payload), path=path, timestamp_path=ts_path)
    got = await src.fetch(time.time())
    assert isinstance(got, Observation), got
    assert got.value == pytest.approx(expected)
    if ts_path:
        assert got.timestamp == payload["ethereum"]["last_updated_at"]


async def test_scale_and_invert(api: HostileApi, client: HttpClient) -> None:
    # A quote of ETH per 1000 USD, inverted and scaled back to USD per ETH.
    src = make(client, url=api.set("p", {"v": 0.25}), path="v", invert=True, scale=1000)
    got = await src.fetch(time.time())
    assert isinstance(got, Observation)
    assert got.value == pytest.approx(4000.0)


@pytest.mark.parametrize(
    ("ts", "unit"),
    [
        (NOW - 5, "auto"),
        ((NOW - 5) * 1000, "auto"),
        ((NOW - 5) * 1000, "ms"),
        (str(int(NOW - 5)), "s"),
        ("__iso__", "auto"),
    ],
)
async def test_timestamp_formats(api: HostileApi, client: HttpClient, ts: Any, unit: str) -> None:
    if ts == "__iso__":
        from datetime import UTC, datetime

        ts = datetime.fromtimestamp(NOW - 5, UTC).isoformat().replace("+00:00", "Z")
    url = api.set("p", {"p": 10, "t": ts})
    src = make(client, url=url, path="p", timestamp_path="t", timestamp_unit=unit)
    got = await src.fetch(NOW)
    assert isinstance(got, Observation), got
    assert got.timestamp == pytest.approx(NOW - 5, abs=1)


HOSTILE: list[tuple[str, Any, dict[str, Any], type[SourceFailure], str]] = [
    ("zero", {"p": 0}, {}, NonPositive, "value 0"),
    ("negative", {"p": "-5"}, {}, NonPositive, "value -5"),
    ("nan-string", {"p": "NaN"}, {}, BadPayload, "not finite"),
    ("infinity", None, {"raw": b'{"p": Infinity}'}, BadPayload, "not finite"),
    ("nan-literal", None, {"raw": b'{"p": NaN}'}, BadPayload, "not finite"),
    ("word", {"p": "three thousand"}, {}, BadPayload, "'three thousand' is not a number"),
    ("bool", {"p": True}, {}, BadPayload, "true, not a number"),
    ("null", {"p": None}, {}, BadPayload, "null, not a number"),
    ("object", {"p": {"x": 1}}, {}, BadPayload, "dict, not a number"),
    ("missing-key", {"q": 1}, {}, BadPayload, "key 'p' missing"),
    ("not-json", None, {"raw": b"<html>oops</html>"}, BadPayload, "not JSON"),
    ("http-500", {"p": 1}, {"status": 500}, HttpStatus, "HTTP 500"),
    ("http-429", {"p": 1}, {"status": 429}, HttpStatus, "HTTP 429"),
]


@pytest.mark.parametrize(
    ("label", "payload", "kw", "failure", "needle"), HOSTILE, ids=[h[0] for h in HOSTILE]
)
async def test_hostile_payloads(
    api: HostileApi,
    client: HttpClient,
    *,
    label: str,
    payload: Any,
    kw: dict[str, Any],
    failure: type[SourceFailure],
    needle: str,
) -> None:
    src = make(client, name=f"ex-{label}", url=api.set(label, payload, **kw), path="p")
    got = await src.fetch(time.time())
    assert isinstance(got, failure), got
    # The reason names the source and the offending value.
    assert f"ex-{label}" in got.reason
    assert needle in got.reason


async def test_stale_timestamp(api: HostileApi, client: HttpClient) -> None:
    url = api.set("p", {"p": 10, "t": NOW - 3600})
    src = make(client, url=url, path="p", timestamp_path="t", max_age_s=300)
    got = await src.fetch(NOW)
    assert isinstance(got, Stale)
    assert "3600s old" in got.reason


async def test_future_timestamp(api: HostileApi, client: HttpClient) -> None:
    url = api.set("p", {"p": 10, "t": NOW + 3600})
    got = await make(client, url=url, path="p", timestamp_path="t").fetch(NOW)
    assert isinstance(got, BadPayload)
    assert "in the future" in got.reason


async def test_bad_timestamp_string(api: HostileApi, client: HttpClient) -> None:
    url = api.set("p", {"p": 10, "t": "yesterday-ish"})
    got = await make(client, url=url, path="p", timestamp_path="t").fetch(NOW)
    assert isinstance(got, BadPayload)
    assert "not ISO 8601" in got.reason


async def test_timeout(api: HostileApi, client: HttpClient) -> None:
    src = make(client, url=api.set("slow", {"p": 1}, delay=2.0), path="p", timeout_s=0.2)
    t0 = time.monotonic()
    got = await src.fetch(time.time())
    assert isinstance(got, Timeout)
    assert time.monotonic() - t0 < 1.5
    assert "0.2s" in got.reason


async def test_huge_payload_with_content_length(api: HostileApi, client: HttpClient) -> None:
    big = b'{"p": 1, "pad": "' + b"x" * 200_000 + b'"}'
    src = make(client, url=api.set("big", raw=big), path="p", max_bytes=10_000)
    got = await src.fetch(time.time())
    assert isinstance(got, TooLarge)
    assert "Content-Length" in got.reason


async def test_huge_streamed_payload(api: HostileApi, client: HttpClient) -> None:
    url = api.set("stream", raw=b"", stream_bytes=5_000_000)
    src = make(client, url=url, path="p", max_bytes=100_000)
    got = await src.fetch(time.time())
    assert isinstance(got, TooLarge)
    assert "max_bytes 100000" in got.reason


async def test_connection_refused(client: HttpClient) -> None:
    from devkit.anvil import free_port

    src = make(client, url=f"http://127.0.0.1:{free_port()}/x", path="p")
    got = await src.fetch(time.time())
    assert isinstance(got, Unreachable)


async def test_headers_from_env(api: HostileApi, client: HttpClient) -> None:
    url = api.set("auth", {"p": 5})
    src = make(
        client,
        env={"CG_KEY": "secret-123"},
        url=url,
        path="p",
        headers={"Accept": "application/json"},
        headers_from_env={"x-cg-pro-api-key": "CG_KEY"},
    )
    assert isinstance(await src.fetch(time.time()), Observation)
    assert api.last_headers["auth"]["x-cg-pro-api-key"] == "secret-123"
    assert api.last_headers["auth"]["Accept"] == "application/json"


def test_missing_env_var_is_a_clear_error(client: HttpClient) -> None:
    with pytest.raises(SourceConfigError, match=r"'cg'.*'x-key'.*'CG_KEY'.*not set"):
        make(
            client,
            env={},
            name="cg",
            url="http://x/",
            path="p",
            headers_from_env={"x-key": "CG_KEY"},
        )


async def test_rate_limit_reuses_last_answer(api: HostileApi, client: HttpClient) -> None:
    url = api.set("rl", {"p": 7})
    src = make(client, url=url, path="p", min_interval_s=60)
    first = await src.fetch(time.time())
    second = await src.fetch(time.time())
    assert isinstance(first, Observation)
    assert second == first
    assert api.hits["rl"] == 1


async def test_rate_limited_cached_value_goes_stale(api: HostileApi, client: HttpClient) -> None:
    url = api.set("rl", {"p": 7})
    src = make(client, url=url, path="p", min_interval_s=60, max_age_s=30)
    now = time.time()
    assert isinstance(await src.fetch(now), Observation)
    later = await src.fetch(now + 45)
    assert isinstance(later, Stale)
    assert "cached value 7" in later.reason
    assert api.hits["rl"] == 1


@pytest.mark.parametrize("bad", ["", "a..b", "a[x]", "a.[", " a"])
def test_bad_paths_rejected_at_config(bad: str) -> None:
    with pytest.raises(ValueError, match="JSON path"):
        HttpSourceConfig(name="s", url="http://x/", path=bad)


def test_wildcard_on_empty_object() -> None:
    from oracles.jsonpath import PathError, parse_path, resolve

    with pytest.raises(PathError, match="empty object"):
        resolve({"result": {}}, parse_path("result.*.c[0]"), "result.*.c[0]")
    with pytest.raises(PathError, match="index 3 out of range"):
        resolve({"c": [1]}, parse_path("c[3]"), "c[3]")
    assert resolve([{"price": 2}], parse_path("[0].price"), "[0].price") == 2
