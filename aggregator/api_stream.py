"""GET /v1/stream: the backend's health events fanned out to every open connection.

One subscription to the backend (ApiBackend.subscribe) serves all open streams: each
event is encoded once, and the events that arrive together (one publish cycle of the
ledger: aggregator/stream.py puts them on the queue in one go) are written to each
connection's transport as one shared frame: one write per stream per cycle, no task
wake-up, queue or encoding per stream (bench/api_hostile.py: with one task and one
queue per stream, 10k busy streams took the event loop and /healthz waited seconds).

Invariants:
- Every stream receives every frame flushed while it is attached, in the order the
  backend yielded the events; the frame bytes are those a per-stream writer would send
  (`event: <name>\\ndata: <json>\\n\\n`; HTTP/1.1 chunk framing added once per cycle).
- A client that does not read is bounded by bytes, not time: when its transport holds
  more than `max_buffer_bytes` unsent it gets `overflow` and its connection ends
  (the memory it can pin is that bound plus one frame).
- The subscription exists while at least one stream is open; the last stream leaving
  closes it. `shutdown` and `overflow` from the backend, a backend error (an `error`
  frame with the id in the log) and Api.stop() (`shutdown`) end every open stream.
- A gone client is noticed at the next write to it (an event or the keepalive comment
  every `keepalive_s` of silence), which bounds how long it holds its place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from aggregator.api_common import dumps

log = logging.getLogger("aggregator.api")

SHUTDOWN_FRAME = b'event: shutdown\ndata: {"event": "shutdown"}\n\n'
OVERFLOW_FRAME = b'event: overflow\ndata: {"event": "overflow"}\n\n'
KEEPALIVE_FRAME = b": keepalive\n\n"
# Unsent bytes one stream may hold before it is dropped: ~1,000 health frames (the
# stream's former per-subscriber queue bound, aggregator/stream.py SUBSCRIBER_QUEUE).
MAX_BUFFER_BYTES = 256 * 1024


def encode_event(event: Any) -> bytes:
    """One SSE frame. Control events ({"event": "shutdown"|"overflow"}) keep their own
    name so a client can tell "the stream ends" from a health change."""
    name = event.get("event", "health") if isinstance(event, dict) else "health"
    return f"event: {name}\ndata: {dumps(event)}\n\n".encode()


def chunk(data: bytes) -> bytes:
    """`data` as one HTTP/1.1 chunk (RFC 9112 7.1), as aiohttp frames a chunked body."""
    return b"%x\r\n%b\r\n" % (len(data), data)


class Sink:
    """One open stream as the hub sees it: its transport, whether its body is chunked,
    and the future its handler waits on (the reason the stream ended)."""

    __slots__ = ("backlog", "chunked", "done", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.chunked = False  # known once the response head is made (StreamHub.opened)
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        # Frames flushed before the response head went out (None once it has).
        self.backlog: list[bytes] | None = []

    def end(self, reason: str, last: bytes = b"") -> None:
        """Stop the stream with `reason` ("shutdown", "overflow", "error", "end",
        "gone"), after writing `last` if the client is still there."""
        if self.done.done():
            return
        if self.backlog is not None:
            # The head is not out yet: the handler writes this after it (opened).
            if last:
                self.backlog.append(last)
        elif last and not self.transport.is_closing():
            self.transport.write(chunk(last) if self.chunked else last)
        self.done.set_result(reason)


class StreamHub:
    def __init__(
        self,
        subscribe: Callable[[], AsyncIterator[dict[str, Any]]],
        *,
        keepalive_s: float,
        max_buffer_bytes: int = MAX_BUFFER_BYTES,
    ) -> None:
        self._subscribe = subscribe
        self.keepalive_s = keepalive_s
        self.max_buffer_bytes = max_buffer_bytes
        # Insertion-ordered sets of the attached streams, by body framing.
        self._chunked: dict[asyncio.Transport, Sink] = {}
        self._raw: dict[asyncio.Transport, Sink] = {}
        self._waiting: list[Sink] = []  # attached, response head not yet sent
        self._events: AsyncIterator[dict[str, Any]] | None = None
        self._pump: asyncio.Task[None] | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self._pending: list[bytes] = []
        self._flush_at: asyncio.Handle | None = None
        self._wrote = False  # since the last keepalive tick
        self._closed = False

    @property
    def streams(self) -> int:
        return len(self._chunked) + len(self._raw) + len(self._waiting)

    # -- a stream's life ------------------------------------------------------------
    def attach(self, transport: asyncio.Transport) -> Sink:
        """A new stream, before its response head is sent: it receives every frame
        flushed from now on (held until `opened`). Subscribes when it is the first;
        raises what the backend's subscribe() raised (the handler answers a 500)."""
        sink = Sink(transport)
        self._waiting.append(sink)
        if self._closed:
            sink.end("shutdown", SHUTDOWN_FRAME)
            return sink
        if self._events is None:
            try:
                self._events = self._subscribe()
            except BaseException:
                self._waiting.remove(sink)
                raise
            self._pump = asyncio.ensure_future(self._run(self._events))
        if self._keepalive is None:
            self._keepalive = asyncio.ensure_future(self._tick())
        return sink

    def opened(self, sink: Sink, chunked: bool) -> None:
        """The response head and `: connected` are on the wire (`chunked`: its body is
        in HTTP/1.1 chunks): write what was held, then take the stream's frames."""
        backlog, sink.backlog = sink.backlog, None
        sink.chunked = chunked
        with contextlib.suppress(ValueError):
            self._waiting.remove(sink)
        if backlog and not sink.transport.is_closing():
            data = b"".join(backlog)
            sink.transport.write(chunk(data) if chunked else data)
        if not sink.done.done():
            (self._chunked if chunked else self._raw)[sink.transport] = sink

    async def detach(self, sink: Sink) -> None:
        """The stream's handler is done with it; the last one out ends the subscription."""
        with contextlib.suppress(ValueError):
            self._waiting.remove(sink)
        self._chunked.pop(sink.transport, None)
        self._raw.pop(sink.transport, None)
        if not sink.done.done():
            sink.done.set_result("end")
        if self.streams == 0:
            await self._unsubscribe()

    async def close(self) -> None:
        """Api.stop(): every open stream ends with `shutdown`, and no new one starts."""
        self._closed = True
        self._flush()
        self._end_all("shutdown", SHUTDOWN_FRAME)
        await self._unsubscribe()

    # -- fan-out ----------------------------------------------------------------------
    async def _run(self, events: AsyncIterator[dict[str, Any]]) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for event in events:
                frame = encode_event(event)
                name = event.get("event") if isinstance(event, dict) else None
                if name in ("shutdown", "overflow"):
                    # Ends every stream: what is pending goes first, then this frame.
                    self._flush()
                    self._end_all(name, frame)
                    return
                self._pending.append(frame)
                # Events queued together arrive here without a suspension; the flush
                # runs once they are all taken: one write per stream per publish cycle.
                if self._flush_at is None:
                    self._flush_at = loop.call_soon(self._flush)
            self._flush()
            self._end_all("end")
        except asyncio.CancelledError:
            raise
        except Exception:
            # The heads are already on the wire, so no JSON 500 can be answered: end
            # every stream with an error frame carrying the id that is in the log.
            err_id = uuid.uuid4().hex[:12]
            log.exception("API stream error %s", err_id)
            body = {"error": {"field": None, "message": f"internal error (id {err_id})"}}
            self._flush()
            self._end_all("error", f"event: error\ndata: {dumps(body)}\n\n".encode())
        finally:
            if self._events is events:
                self._events, self._pump = None, None

    def _flush(self) -> None:
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        self._write(data)

    def _write(self, data: bytes) -> None:
        """`data` to every attached stream: the only per-stream work of a cycle is the
        transport's write (and its buffer check)."""
        self._wrote = True
        limit = self.max_buffer_bytes
        dropped: list[tuple[Sink, str]] = []
        for streams, frame in ((self._chunked, chunk(data)), (self._raw, data)):
            for transport, sink in streams.items():
                if transport.is_closing():
                    dropped.append((sink, "gone"))
                elif transport.get_write_buffer_size() > limit:
                    dropped.append((sink, "overflow"))
                else:
                    transport.write(frame)
        for sink in self._waiting:
            if sink.backlog is not None and not sink.done.done():
                sink.backlog.append(data)
                if sum(map(len, sink.backlog)) > limit:
                    sink.backlog.clear()
                    dropped.append((sink, "overflow"))
        for sink, reason in dropped:
            self._chunked.pop(sink.transport, None)
            self._raw.pop(sink.transport, None)
            sink.end(reason, OVERFLOW_FRAME if reason == "overflow" else b"")

    def _end_all(self, reason: str, last: bytes = b"") -> None:
        sinks = [*self._chunked.values(), *self._raw.values()]
        self._chunked.clear()
        self._raw.clear()
        # A stream whose head is not out yet gets `last` after what it holds (end).
        for sink in [*sinks, *self._waiting]:
            sink.end(reason, last)

    async def _tick(self) -> None:
        """The keepalive comment after `keepalive_s` without a frame: it also finds the
        clients that went away from an idle stream."""
        try:
            while self.streams:
                await asyncio.sleep(self.keepalive_s)
                if not self._wrote:
                    self._write(KEEPALIVE_FRAME)
                self._wrote = False
        finally:
            self._keepalive = None

    async def _unsubscribe(self) -> None:
        events, pump = self._events, self._pump
        self._events = self._pump = None
        keepalive, self._keepalive = self._keepalive, None
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        self._pending.clear()
        for task in (pump, keepalive):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                # asyncio.wait, not await: the caller's own cancellation must not be
                # swallowed.
                await asyncio.wait({task})
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
