"""/v1/stream: SSE framing, control events, keepalive, and subscriptions closed on disconnect."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import socket
from typing import Any

import pytest
from aiohttp import ClientResponse

from tests.unit.api.api_fakes import KNOWN, FakeBackend


async def until(predicate: Any, what: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def read_frame(resp: ClientResponse, skip_comments: bool = True) -> list[str]:
    """One SSE frame (lines up to the blank line); keepalive comment frames skipped."""
    while True:
        lines: list[str] = []
        while True:
            raw = await asyncio.wait_for(resp.content.readline(), 5.0)
            if raw == b"":
                return lines  # end of stream
            line = raw.decode().rstrip("\n")
            if line == "":
                break
            lines.append(line)
        if skip_comments and all(x.startswith(":") for x in lines):
            continue
        return lines


async def open_stream(client: Any, backend: FakeBackend) -> ClientResponse:
    resp = await client.get("/v1/stream")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert resp.headers["Cache-Control"] == "no-cache"
    assert await read_frame(resp, skip_comments=False) == [": connected"]
    await until(lambda: len(backend.subscribers) == 1, "subscription")
    return resp


async def test_health_events_are_framed_with_json_data(
    stream_client: Any, backend: FakeBackend
) -> None:
    resp = await open_stream(stream_client, backend)
    backend.publish({"account": KNOWN, "hf": math.inf, "tier": "healthy", "prev": math.nan})
    backend.publish({"account": KNOWN, "hf": 0.97, "tier": "liquidatable", "prev": "healthy"})
    first = await read_frame(resp)
    assert first[0] == "event: health"
    assert first[1].startswith("data: ") and len(first) == 2
    assert json.loads(first[1][6:]) == {
        "account": KNOWN,
        "hf": None,
        "tier": "healthy",
        "prev": None,
    }
    second = await read_frame(resp)
    assert second[0] == "event: health"
    assert json.loads(second[1][6:])["hf"] == 0.97
    resp.close()


async def test_shutdown_is_its_own_event_and_ends_the_stream(
    stream_client: Any, backend: FakeBackend
) -> None:
    resp = await open_stream(stream_client, backend)
    backend.publish({"event": "shutdown"})
    assert await read_frame(resp) == ["event: shutdown", 'data: {"event": "shutdown"}']
    assert await read_frame(resp) == []  # server ended the response
    await until(lambda: backend.closed == 1, "subscription closed")
    resp.close()


async def test_idle_stream_sends_keepalive_comments(
    stream_client: Any, backend: FakeBackend
) -> None:
    resp = await open_stream(stream_client, backend)
    assert await read_frame(resp, skip_comments=False) == [": keepalive"]
    resp.close()


async def test_client_disconnect_closes_an_idle_subscription(
    stream_client: Any, backend: FakeBackend
) -> None:
    resp = await open_stream(stream_client, backend)
    assert backend.opened == 1 and backend.closed == 0
    resp.close()  # drop the TCP connection without any event flowing
    await until(lambda: backend.closed == 1, "subscription closed after disconnect")
    assert backend.subscribers == []


async def test_client_disconnect_while_events_flow(
    stream_client: Any, backend: FakeBackend
) -> None:
    resp = await open_stream(stream_client, backend)
    backend.publish({"account": KNOWN, "hf": 2.0})
    assert (await read_frame(resp))[0] == "event: health"
    resp.close()
    for _ in range(50):
        backend.publish({"account": KNOWN, "hf": 2.0, "pad": "x" * 10_000})
        await asyncio.sleep(0.005)
    await until(lambda: backend.closed == 1, "subscription closed")


async def test_streams_share_one_subscription_and_get_every_frame_in_order(
    stream_client: Any, backend: FakeBackend
) -> None:
    """One backend subscription for all streams (aggregator/api_stream.py); each stream
    receives every event, in order, whether events come one per cycle or many at once;
    the last stream out closes the subscription."""
    streams = [await stream_client.get("/v1/stream") for _ in range(5)]
    for s in streams:
        assert await read_frame(s, skip_comments=False) == [": connected"]
    await until(lambda: len(backend.subscribers) == 1, "one shared subscription")
    sent = 0
    for burst in (1, 7, 1, 30, 3):
        for _ in range(burst):
            backend.publish({"account": KNOWN, "hf": 1.0 + sent, "seq": sent})
            sent += 1
        await asyncio.sleep(0.01)
    for s in streams:
        got = [json.loads((await read_frame(s))[1][6:])["seq"] for _ in range(sent)]
        assert got == list(range(sent))
    assert backend.opened == 1 and backend.closed == 0
    for s in streams[:4]:
        s.close()
    backend.publish({"account": KNOWN, "hf": 9.0, "seq": sent})
    assert json.loads((await read_frame(streams[4]))[1][6:])["seq"] == sent
    assert backend.closed == 0
    streams[4].close()
    await until(lambda: backend.closed == 1, "the shared subscription closed")
    # A new stream subscribes again.
    again = await open_stream(stream_client, backend)
    assert backend.opened == 2
    again.close()


async def test_events_of_one_cycle_are_one_write_per_stream(backend: FakeBackend, api: Any) -> None:
    """The events a publish cycle queues together reach a stream as one HTTP chunk."""
    port = await api.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /v1/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"Transfer-Encoding: chunked" in head
        assert await reader.readuntil(b": connected\n\n\r\n")
        await until(lambda: len(backend.subscribers) == 1, "subscription")
        for i in range(10):
            backend.publish({"account": KNOWN, "hf": 1.5, "seq": i})
        size = int((await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)).strip(), 16)
        data = await reader.readexactly(size + 2)
        frames = data[:-2].decode().split("\n\n")[:-1]
        assert [json.loads(f.split("\ndata: ")[1])["seq"] for f in frames] == list(range(10))
        assert all(f.startswith("event: health\n") for f in frames)
        writer.close()
    finally:
        await api.stop()


async def test_a_client_that_does_not_read_is_dropped_with_overflow(
    backend: FakeBackend, api: Any
) -> None:
    """A stream whose client stops reading is bounded by bytes held for it: past
    api_stream.MAX_BUFFER_BYTES it gets `overflow` and its connection ends, while a
    reading stream keeps receiving every frame."""
    from aiohttp import ClientSession, ClientTimeout

    from aggregator.api_stream import MAX_BUFFER_BYTES

    port = await api.start("127.0.0.1", 0)
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        slow_reader, slow_writer = await asyncio.open_connection(sock=sock)
        slow_writer.write(b"GET /v1/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        async with ClientSession(timeout=ClientTimeout(total=60)) as session:
            fast = await session.get(f"http://127.0.0.1:{port}/v1/stream")
            assert await read_frame(fast, skip_comments=False) == [": connected"]
            await until(lambda: api.open_streams == 2, "two streams")
            pad = "x" * 60_000
            n = 0
            received: list[int] = []

            async def read_all() -> None:
                while True:
                    event = json.loads((await read_frame(fast))[1][6:])
                    received.append(event["seq"])
                    if event.get("last"):
                        return

            reading = asyncio.create_task(read_all())
            # Far more than the kernel buffers of a loopback socket and the bound.
            while api.open_streams == 2 and n < 2000:
                backend.publish({"account": KNOWN, "seq": n, "pad": pad})
                n += 1
                await asyncio.sleep(0.002)
            assert api.open_streams == 1, "the slow stream was not dropped"
            assert n * 60_000 > MAX_BUFFER_BYTES
            for i in range(5):
                backend.publish({"account": KNOWN, "seq": n, "pad": pad, "last": i == 4})
                n += 1
            await asyncio.wait_for(reading, 30)
            assert received == list(range(n))  # the reading stream lost nothing
            fast.close()
        # The slow client, once it reads, finds the frames up to the drop, `overflow`
        # and the end of the connection.
        tail = b""
        while chunk := await asyncio.wait_for(slow_reader.read(1 << 20), 30):
            tail = (tail + chunk)[-2000:]
        assert b'event: overflow\ndata: {"event": "overflow"}\n\n' in tail
        slow_writer.close()
    finally:
        await api.stop()


async def test_head_answers_the_stream_head_only(stream_client: Any, backend: FakeBackend) -> None:
    resp = await stream_client.head("/v1/stream")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert backend.opened == 0
    assert (await stream_client.get("/healthz")).status == 200


async def test_backend_stream_failure_ends_with_error_frame_and_logged_id(
    stream_client: Any, backend: FakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    resp = await open_stream(stream_client, backend)
    with caplog.at_level(logging.ERROR, logger="aggregator.api"):
        backend.publish(None)  # the fake's generator raises
        frame = await read_frame(resp)
        assert frame[0] == "event: error"
        err = json.loads(frame[1][6:])["error"]
        assert await read_frame(resp) == []
    err_id = err["message"].split("id ")[1].rstrip(")")
    assert any(err_id in r.getMessage() for r in caplog.records)
    assert backend.closed == 1
    resp.close()


async def test_api_stop_ends_open_streams_with_a_shutdown_event(
    stream_client: Any, backend: FakeBackend, api: Any
) -> None:
    resp = await open_stream(stream_client, backend)
    stop = asyncio.create_task(api.stop())
    assert await read_frame(resp) == ["event: shutdown", 'data: {"event": "shutdown"}']
    assert await read_frame(resp) == []
    await stop
    assert backend.closed == 1
    resp.close()


async def test_streams_beyond_the_limit_are_refused_and_others_served(
    backend: FakeBackend,
) -> None:
    """api.max_streams bounds the memory hostile clients can pin with open streams: the
    next one is a 503 naming "stream", plain requests are still served, and a closed
    stream frees its place."""
    from aiohttp import ClientSession

    from aggregator.api import Api

    api = Api(backend, sse_keepalive_s=0.05, max_streams=20)
    port = await api.start("127.0.0.1", 0)
    try:
        async with ClientSession(base_url=f"http://127.0.0.1:{port}") as s:
            open_ = [await s.get("/v1/stream") for _ in range(20)]
            await until(lambda: api.open_streams == 20, "20 streams")
            refused = await s.get("/v1/stream")
            assert refused.status == 503
            assert (await refused.json())["error"]["field"] == "stream"
            assert (await s.get("/healthz")).status == 200
            open_[0].close()
            await until(lambda: api.open_streams == 19, "a stream closed")
            again = await s.get("/v1/stream")
            assert again.status == 200
            again.close()
            for r in open_[1:]:
                r.close()
            await until(lambda: api.open_streams == 0, "every stream closed")
    finally:
        await api.stop()


async def test_a_body_over_the_limit_is_a_413_naming_the_body(backend: FakeBackend) -> None:
    """Any route that reads its body (POST /v1/whatif does) is bounded by
    api.max_body_bytes; shown on a route that only reads it."""
    from aiohttp import ClientSession, web

    from aggregator.api import Api

    async def reads_body(request: web.Request) -> web.Response:
        return web.json_response({"bytes": len(await request.read())})

    api = Api(backend, max_body_bytes=4096)
    api.app.router.add_post("/test/body", reads_body)
    port = await api.start("127.0.0.1", 0)
    try:
        async with ClientSession(base_url=f"http://127.0.0.1:{port}") as s:
            ok = await s.post("/test/body", data=b"x" * 4000)
            assert ok.status == 200 and (await ok.json())["bytes"] == 4000
            r = await s.post("/test/body", data=b"x" * 10_000)
            body = await r.json()
            assert r.status == 413 and body["error"]["field"] == "body", body
            assert "api.max_body_bytes" in body["error"]["message"]
    finally:
        await api.stop()


async def test_health_stream_cycles_reach_every_stream_in_order_and_shutdown_ends_them() -> None:
    """The daemon's own HealthStream behind the API: each publish cycle's events reach
    every open stream in publish order, and HealthStream.close() ends them all."""
    from aiohttp import ClientSession

    from aggregator.api import Api, checksum_address
    from aggregator.risk.engine import AccountHealth
    from aggregator.stream import HealthStream

    addresses = [f"0x{i + 1:040x}" for i in range(30)]
    hf = dict.fromkeys(addresses, 2.0)

    class Source:
        def find(self, address: str) -> int | None:
            return addresses.index(address) if address in hf else None

        def accounts(self) -> list[str]:
            return addresses

        def health(self, address: str) -> AccountHealth:
            return AccountHealth(
                account=address, collateral_usd=1e4, c_liq=8e3, c_borrow=7e3,
                debt_usd=8e3 / hf[address], hf=hf[address], bp=1e3, tier="healthy",
                degraded=False, close_factor=0.5,
            )  # fmt: skip

    stream = HealthStream(Source())

    class Backend:
        def subscribe(self) -> Any:
            return stream.subscribe()

    api = Api(Backend(), sse_keepalive_s=5.0)  # type: ignore[arg-type]
    port = await api.start("127.0.0.1", 0)
    try:
        async with ClientSession(base_url=f"http://127.0.0.1:{port}") as session:
            clients = [await session.get("/v1/stream") for _ in range(3)]
            for c in clients:
                assert await read_frame(c, skip_comments=False) == [": connected"]
            expected: list[tuple[str, float]] = []
            for cycle in range(4):
                moved = addresses[cycle * 5 : cycle * 5 + 10]  # overlapping cycles
                for a in moved:
                    hf[a] *= 1.1
                stream.publish(moved)
                expected += [(checksum_address(a), hf[a]) for a in moved]
                await asyncio.sleep(0.01)
            for c in clients:
                got = []
                for _ in expected:
                    frame = await read_frame(c)
                    assert frame[0] == "event: health"
                    event = json.loads(frame[1][6:])
                    got.append((event["account"], event["hf"]))
                assert got == expected
            stream.close()
            for c in clients:
                assert await read_frame(c) == ["event: shutdown", 'data: {"event": "shutdown"}']
                assert await read_frame(c) == []
    finally:
        await api.stop()
