"""The hottest route, GET /v1/accounts/{address}/health, answered below aiohttp's
application layer (route resolution, middleware, the Response object): on a book of
1M accounts those were most of the route's CPU (bench/api_load.py, docs/performance.md).

Invariants:
- Answers only what the application would answer 200 to, with the same bytes: the
  status line, the headers (Content-Type, Content-Length, Date, Server, in aiohttp's
  order) and the body (the backend's account_health_body, which is byte-equal to the
  encoded view: tests/unit/api/test_health_body.py). Everything else (a bad address
  400, an unknown account 404, risk not computed 503, HEAD, HTTP/1.0, `Connection:
  close`, a query string, a percent-escape, any other path) goes to the application
  unchanged: error bodies and their headers are made in one place
  (tests/unit/api/test_api_fast.py sends every such request both ways).
- Every answer is observed in the API's latency histogram under the labels the
  middleware gives the same request (route template, method, status).
- Only the production runner (Api.start, through `HotHealthRoute.install` on the public
  `web.AppRunner.server`: no private aiohttp method is overridden) takes this path; an
  aiohttp TestServer over `Api.app` serves the route through the application, which the
  tests compare against.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from typing import cast

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11
from prometheus_client import Histogram

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

# The one path shape answered here: exactly what the route's _ADDRESS_RE takes, raw
# (no escapes to decode, no query to ignore).
_HOT_PATH = re.compile(r"/v1/accounts/(0x[0-9a-fA-F]{40})/health")
_HEAD = (
    "HTTP/1.1 200 OK\r\n"
    "Content-Type: application/json; charset=utf-8\r\n"
    "Content-Length: %d\r\n"
    "Date: %s\r\n"
    f"Server: {SERVER_SOFTWARE}\r\n"
    "\r\n"
)


class _HttpDate:
    """The Date header's value (RFC 9110 IMF-fixdate), formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def __call__(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second, self._text = now, formatdate(now, usegmt=True)
        return self._text


class _Written:
    """What aiohttp's connection handler finishes a request with (prepare, write_eof,
    keep_alive), for an answer already formatted: one transport write, no header
    object. Only keep-alive HTTP/1.1 requests come here, so the connection stays open."""

    __slots__ = ("_data", "body_length")

    keep_alive = True
    status = 200

    def __init__(self, data: bytes, body_length: int) -> None:
        self._data = data
        self.body_length = body_length

    async def prepare(self, request: web.BaseRequest) -> None:
        transport = request.transport
        if transport is None or transport.is_closing():
            # The client went away: aiohttp treats this as a premature disconnect.
            raise ConnectionResetError("client disconnected")
        transport.write(self._data)

    async def write_eof(self, data: bytes = b"") -> None:
        return None


class HotHealthRoute:
    """Wraps the application's request handler (aiohttp's low-level Server handler):
    the /health answers it can give itself, the rest to `general`."""

    def __init__(
        self,
        body: Callable[[str], bytes | None],
        route_template: str,
        histogram: Histogram | None,
    ) -> None:
        self._body = body
        self._date = _HttpDate()
        # The middleware's labels for a 200 of this route (api.api_middleware).
        self._observe = (
            histogram.labels(route_template, "GET", "200").observe
            if histogram is not None
            else None
        )

    def answer(self, request: web.BaseRequest) -> _Written | None:
        """The formatted 200 for `request`, or None: the application answers it."""
        if request.method != "GET" or request.version != HttpVersion11 or not request.keep_alive:
            return None
        match = _HOT_PATH.fullmatch(request.raw_path)
        if match is None:
            return None
        body = self._body(match.group(1))
        if body is None:
            return None
        return _Written((_HEAD % (len(body), self._date())).encode() + body, len(body))

    def wrap(self, general: Handler) -> Handler:
        answer, observe = self.answer, self._observe

        async def handler(request: web.BaseRequest) -> web.StreamResponse:
            started = time.perf_counter()
            try:
                written = answer(request)
            except Exception:
                # Whatever failed here fails again on the general route, whose
                # middleware turns it into the JSON error (and logs it once).
                written = None
            if written is None:
                return await general(request)
            if observe is not None:
                observe(time.perf_counter() - started)
            return cast(web.StreamResponse, written)

        return handler

    def install(self, server: web.Server) -> None:
        """Hand each request of `server` (a set-up `web.AppRunner`'s public `server`) to
        this route first. Every connection takes the server's `request_handler` when it
        opens, so this goes between `runner.setup()` and the first site's start."""
        server.request_handler = self.wrap(server.request_handler)
