"""GET /v1/accounts/{address}/health below the application (aggregator/api_fast.py):
every request gets the same status, headers and body from Api.start()'s server (which
takes the hot path) as from the application alone (aiohttp's TestServer over Api.app),
errors included; the hot path answers only the 200s and observes them like the
middleware does."""

from __future__ import annotations

import asyncio
import email.utils
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry, Histogram

from aggregator.api import Api
from aggregator.api_fast import HotHealthRoute
from tests.unit.api.test_health_body import Backend

Raw = tuple[str, list[tuple[str, str]], bytes]


async def exchange(port: int, requests: list[bytes]) -> list[Raw]:
    """Send `requests` pipelined on one connection; the answers in order as (status
    line, header list, body). A HEAD answer has no body; a `Connection: close` one ends
    the reading."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"".join(requests))
        out: list[Raw] = []
        for req in requests:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            status, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
            headers = [(k, v.strip()) for k, _, v in (line.partition(":") for line in lines)]
            length = int(dict((k.lower(), v) for k, v in headers).get("content-length", "0"))
            body = b"" if req.startswith(b"HEAD") else await reader.readexactly(length)
            out.append((status, headers, body))
        return out
    finally:
        writer.close()
        await writer.wait_closed()


def comparable(answer: Raw) -> Raw:
    """The Date value differs by the second it was sent in: checked for its form,
    compared by name only. A 500's error id is random: compared without it."""
    status, headers, body = answer
    out = []
    for k, v in headers:
        if k == "Date":
            assert email.utils.parsedate_to_datetime(v).tzname() == "UTC", v
            assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", v), v
        out.append((k, "<date>" if k == "Date" else v))
    return status, out, re.sub(rb"id [0-9a-f]{12}", b"id <id>", body)


def req(path: str, *, method: str = "GET", version: str = "1.1", extra: str = "") -> bytes:
    return f"{method} {path} HTTP/{version}\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()


class Servers:
    """The same backend behind Api.start() (hot path) and a TestServer (application)."""

    def __init__(self, hot: int, general: int, hits: list[str]) -> None:
        self.hot, self.general, self.hits = hot, general, hits

    async def both(self, requests: list[bytes]) -> tuple[list[Raw], list[Raw]]:
        return await exchange(self.hot, requests), await exchange(self.general, requests)


@pytest.fixture(scope="module")
def backend() -> Backend:
    return Backend(300)


@pytest.fixture
async def servers(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Servers]:
    hits: list[str] = []
    answer = HotHealthRoute.answer

    def spy(self: HotHealthRoute, request: Any) -> Any:
        written = answer(self, request)
        if written is not None:
            hits.append(request.raw_path)
        return written

    monkeypatch.setattr(HotHealthRoute, "answer", spy)
    hot_api = Api(backend)  # type: ignore[arg-type]
    port = await hot_api.start("127.0.0.1", 0)
    general = TestServer(Api(backend).app, host="127.0.0.1")  # type: ignore[arg-type]
    await general.start_server()
    try:
        assert general.port is not None
        yield Servers(port, general.port, hits)
    finally:
        await general.close()
        await hot_api.stop()


async def test_known_accounts_answer_identically_from_the_hot_path(
    servers: Servers, backend: Backend
) -> None:
    addrs = list(backend.engine.book.account_address[:20])
    forms = [*addrs, *(("0x" + a[2:].upper()) for a in addrs[:5])]
    hot, general = await servers.both([req(f"/v1/accounts/{a}/health") for a in forms])
    assert [comparable(a) for a in hot] == [comparable(a) for a in general]
    assert {s for s, _, _ in hot} == {"HTTP/1.1 200 OK"}
    assert [k for k, _ in hot[0][1]] == ["Content-Type", "Content-Length", "Date", "Server"]
    assert json.loads(hot[0][2])["account"].lower() == addrs[0].lower()
    assert len(servers.hits) == len(forms)  # every one of them took the hot path


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(req("/v1/accounts/0x" + "ee" * 20 + "/health"), id="unknown-404"),
        pytest.param(req("/v1/accounts/0x12/health"), id="short-400"),
        pytest.param(req("/v1/accounts/0x" + "zz" * 20 + "/health"), id="not-hex-400"),
        pytest.param(req("/v1/accounts/" + "ab" * 20 + "/health"), id="no-0x-400"),
        pytest.param(req("/v1/accounts/0X" + "ab" * 20 + "/health"), id="0X-400"),
        pytest.param(req("/v1/accounts/0x" + "ab" * 21 + "/health"), id="too-long-400"),
        pytest.param(req("/v1/accounts/%7B%7D/health"), id="escaped-braces-400"),
        pytest.param(req("/v1/accounts//health"), id="empty-404"),
        pytest.param(req("/v1/accounts/0x" + "ab" * 20 + "/health/"), id="trailing-slash"),
        pytest.param(req("/v1/accounts/0x" + "ab" * 20 + "/health", method="POST"), id="405"),
    ],
)
async def test_errors_come_from_the_application_with_the_same_bytes(
    servers: Servers, request_bytes: bytes
) -> None:
    hot, general = await servers.both([request_bytes])
    assert comparable(hot[0]) == comparable(general[0])
    assert hot[0][0].split()[1] in {"400", "404", "405"}
    error = json.loads(hot[0][2])["error"]
    assert error["field"] in {"address", "path", "method"} and error["message"]
    assert servers.hits == []


async def test_other_forms_of_a_known_account_go_to_the_application(
    servers: Servers, backend: Backend
) -> None:
    a = backend.engine.book.account_address[3]
    escaped = "%30x" + a[2:]  # "%30" is "0": the same address once decoded
    requests = [
        req(f"/v1/accounts/{a}/health?verbose=1"),
        req(f"/v1/accounts/{escaped}/health"),
        req(f"/v1/accounts/{a}/health", method="HEAD"),
        req(f"/v1/accounts/{a}/health", extra="X-Other: 1\r\n"),  # hot, for contrast
        req(f"/v1/accounts/{a}/health", extra="Connection: close\r\n"),
    ]
    hot, general = await servers.both(requests)
    assert [comparable(x) for x in hot] == [comparable(x) for x in general]
    assert [s for s, _, _ in hot] == ["HTTP/1.1 200 OK"] * 5
    assert hot[0][2] == hot[1][2] == hot[3][2] == hot[4][2]
    assert ("Connection", "close") in hot[4][1]
    assert servers.hits == [f"/v1/accounts/{a}/health"]  # the plain request only
    http10 = req(f"/v1/accounts/{a}/health", version="1.0")
    hot10, general10 = await servers.both([http10])
    assert comparable(hot10[0]) == comparable(general10[0])
    assert len(servers.hits) == 1


async def test_pipelined_requests_are_answered_in_order(servers: Servers, backend: Backend) -> None:
    a, b = backend.engine.book.account_address[5:7]
    requests = [
        req(f"/v1/accounts/{a}/health"),
        req("/v1/accounts/0x" + "ee" * 20 + "/health"),
        req(f"/v1/accounts/{b}/health"),
        req("/healthz"),
        req(f"/v1/accounts/{a}/health"),
    ]
    hot, general = await servers.both(requests)
    assert [comparable(x) for x in hot] == [comparable(x) for x in general]
    assert [s.split()[1] for s, _, _ in hot] == ["200", "404", "200", "200", "200"]
    assert json.loads(hot[2][2])["account"].lower() == b.lower()


async def test_not_ready_and_a_failing_backend_answer_the_general_errors(
    servers: Servers, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = backend.engine.book.account_address[0]
    backend.prices_ready = False
    try:
        hot, general = await servers.both([req(f"/v1/accounts/{a}/health")])
    finally:
        backend.prices_ready = True
    assert comparable(hot[0]) == comparable(general[0])
    assert hot[0][0] == "HTTP/1.1 503 Service Unavailable"
    assert json.loads(hot[0][2])["error"]["field"] == "prices"

    def explode(address: str) -> bytes | None:
        raise RuntimeError("backend exploded")

    monkeypatch.setattr(backend, "account_health_body", explode)
    hot, general = await servers.both([req(f"/v1/accounts/{a}/health")])
    assert comparable(hot[0]) == comparable(general[0])
    assert hot[0][0] == "HTTP/1.1 500 Internal Server Error"
    assert "see the daemon log" in json.loads(hot[0][2])["error"]["message"]
    assert servers.hits == []


async def test_hot_answers_are_observed_like_the_middleware_does(backend: Backend) -> None:
    histograms = []
    answers = []
    for hot in (True, False):
        registry = CollectorRegistry()
        h = Histogram("req_seconds", "latency", ["route", "method", "status"], registry=registry)
        api = Api(backend, request_seconds=h)  # type: ignore[arg-type]
        a = backend.engine.book.account_address[1]
        requests = [req(f"/v1/accounts/{a}/health")] * 3 + [req("/v1/accounts/0x1/health")]
        if hot:
            port = await api.start("127.0.0.1", 0)
            try:
                answers.append(await exchange(port, requests))
            finally:
                await api.stop()
        else:
            server = TestServer(api.app, host="127.0.0.1")
            await server.start_server()
            try:
                assert server.port is not None
                answers.append(await exchange(server.port, requests))
            finally:
                await server.close()
        histograms.append(
            {
                (s.labels["route"], s.labels["status"]): s.value
                for m in registry.collect()
                for s in m.samples
                if s.name == "req_seconds_count"
            }
        )
    assert (
        histograms[0]
        == histograms[1]
        == {
            ("/v1/accounts/{address}/health", "200"): 3.0,
            ("/v1/accounts/{address}/health", "400"): 1.0,
        }
    )
