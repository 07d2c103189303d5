"""Local HTTP API (aiohttp): accounts, prices, chains, SSE stream, metrics, probes, admin.

Every bad input is a 4xx JSON error naming the field; handler bugs become a 500
JSON body with an error id, never an HTML traceback.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web
from eth_hash.auto import keccak
from prometheus_client import Histogram

from aggregator.api_alerts import AlertsApi, alert_routes
from aggregator.api_claims import ClaimsApi, claim_routes
from aggregator.api_common import (  # dumps: re-exported, as api_common's docstring says
    ApiError,
    dumps,  # noqa: F401
    error_body,
    json_response,
)
from aggregator.api_fast import HotHealthRoute
from aggregator.api_history import HistoryApi, history_routes
from aggregator.api_liquidity import liquidity_route
from aggregator.api_reputation import reputation_route
from aggregator.api_stream import StreamHub
from aggregator.dashboard import dashboard_routes
from aggregator.openapi import OPENAPI
from chains.events import HEX_ADDRESS
from chains.units import TIERS

log = logging.getLogger(__name__)

MAX_LIMIT = 1000
ACCOUNTS_QUERY = ("tier", "limit", "cursor")
# ASCII only and explicit: eth_utils.is_hex_address also takes a bare 40-hex string
# and "0X", and str.isdigit()/int() take Unicode digits ("²", "٣") that later code
# cannot parse. The API accepts exactly what /openapi.json documents.
_LIMIT_RE = re.compile(r"-?[0-9]+")
_CURSOR_RE = re.compile(r"[0-9]{1,18}")
SSE_KEEPALIVE_S = 15.0


class ApiBackend(Protocol):
    """Everything the API serves comes through here (the daemon's is
    aggregator/api_views.py:ApiViews); the API is testable alone with any implementation.
    A view that returns None is a 404 for the path's subject."""

    def readiness(self) -> tuple[bool, list[str]]: ...
    def account_detail(self, address: str) -> dict[str, Any] | None: ...
    def account_health(self, address: str) -> dict[str, Any] | None: ...
    def account_health_body(self, address: str) -> bytes | None:
        """dumps(account_health(address)) encoded, for an address matching HEX_ADDRESS in
        any case; None: answer through account_health instead (the 404 comes from there)."""
        ...

    def account_margin(self, address: str) -> dict[str, Any] | None: ...
    async def margin_report(self) -> dict[str, Any]: ...
    def list_accounts(
        self, tier: str | None, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]: ...
    def prices(self) -> dict[str, Any]: ...
    def price(self, asset: str) -> dict[str, Any] | None: ...
    def chains(self) -> list[dict[str, Any]]: ...
    def subscribe(self) -> AsyncIterator[dict[str, Any]]: ...
    def metrics_text(self) -> bytes: ...
    def set_push_paused(self, paused: bool) -> dict[str, Any]:
        """Admin: stop or restart sending new update batches."""
        ...

    async def whatif(self, body: Any) -> dict[str, Any]:
        """POST /v1/whatif (docs/whatif.md): the parsed JSON body ({} when empty);
        ApiError naming the field on bad input. Computed off the event loop."""
        ...

    def liquidity(self) -> dict[str, Any] | None:
        """GET /v1/liquidity (aggregator/api_liquidity.py); None before prices."""
        ...

    def reputation(self, address: str) -> dict[str, Any] | None:
        """GET /v1/accounts/{address}/reputation (aggregator/api_reputation.py); None
        when [reputation] is disabled."""
        ...


def parse_address(raw: str, field: str = "address") -> str:
    if HEX_ADDRESS.fullmatch(raw) is None:
        raise ApiError(400, field, f"not a 0x-prefixed 20-byte hex address: {raw[:64]!r}")
    return checksum_address(raw)


@functools.lru_cache(maxsize=1 << 16)
def checksum_address(address: str) -> str:
    """EIP-55 form of an address already matched by HEX_ADDRESS.

    eth_utils.to_checksum_address re-validates its input through several layers and
    was half of the /health route's CPU under load (bench/api_load.py); this is the
    same hash rule (tests compare the two) and clients poll the same accounts, so
    the cache keeps the answer for the hot ones. A miss (a book of 1M accounts) is
    whole-string C operations, not a loop over 40 characters: a letter is upper-cased
    (its 0x20 bit cleared) where the hash's nibble at its position is >= 8.
    """
    body = address[2:].lower().encode("ascii")
    marks = _keccak256(body)[:20].hex().encode("ascii").translate(_NIBBLE_HIGH)
    value = int.from_bytes(body, "big")
    flip = int.from_bytes(marks, "big") & (value >> 1) & _LETTER_CASE_BITS
    return "0x" + (value ^ flip).to_bytes(40, "big").decode("ascii")


def _make_keccak256() -> Callable[[bytes], bytes]:
    """keccak256 for the checksum of a cache miss (every request, on a book of 1M).

    eth_hash's pycryptodome backend builds a hash object per call (3.4 us for 40
    bytes); the same C functions on one reused state take ~1.1 us. The state is not
    thread-safe, so only the thread that made it uses it (the event loop's: the
    module is imported there first) and any other thread gets eth_hash. Anything
    unexpected about pycryptodome (absent, changed, wrong answer on a known vector)
    falls back to eth_hash for good.
    """
    try:
        import ctypes
        import threading

        from Crypto.Hash.keccak import _raw_keccak_lib as lib  # type: ignore[attr-defined]
        from Crypto.Util._raw_api import (  # type: ignore[attr-defined]
            VoidPointer,
            c_size_t,
            c_ubyte,
        )

        holder = VoidPointer()
        if lib.keccak_init(holder.address_of(), c_size_t(64), c_ubyte(24)) != 0:
            return keccak
        state = holder.get()
        out = ctypes.create_string_buffer(32)
        reset, absorb, digest = lib.keccak_reset, lib.keccak_absorb, lib.keccak_digest
        n32, pad = c_size_t(32), c_ubyte(1)
        owner = threading.get_ident()
        get_ident = threading.get_ident

        def keccak256(data: bytes) -> bytes:
            if get_ident() != owner:
                return keccak(data)
            reset(state)
            absorb(state, data, len(data))
            digest(state, out, n32, pad)
            return out.raw

        probe = b"0123456789abcdef0123456789abcdef01234567"
        if keccak256(probe) != keccak(probe) or keccak256(b"") != keccak(b""):
            return keccak
        return keccak256
    except Exception:  # any surprise in a private API: the public one is right
        return keccak


_keccak256 = _make_keccak256()

# Hex digit of the hash -> 0x20 when it is >= 8 (upper-case the address character
# there); 0 otherwise.
_NIBBLE_HIGH = bytes(0x20 if chr(i) in "89abcdef" else 0 for i in range(256))
# A lower-case hex letter has the 0x40 bit, a digit has not: shifted right by one it
# selects the case bit (0x20) of letters only.
_LETTER_CASE_BITS = int.from_bytes(b"\x20" * 40, "big")


def error_response(request: web.Request, exc: Exception) -> web.StreamResponse | None:
    """The JSON error answer for what a handler raised; None: re-raise it (a redirect or
    other non-error HTTPException)."""
    if isinstance(exc, ApiError):
        return error_body(exc.status, exc.field, exc.message)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            return None
        if isinstance(exc, web.HTTPMethodNotAllowed):
            resp = error_body(
                exc.status,
                "method",
                f"{request.method} not allowed on {request.path[:128]}; "
                f"allowed: {', '.join(sorted(exc.allowed_methods))}",
            )
            # RFC 9110: a 405 must say what is allowed.
            resp.headers["Allow"] = exc.headers.get("Allow", "")
            return resp
        if isinstance(exc, web.HTTPNotFound):
            return error_body(exc.status, "path", f"no such route: {request.path[:128]!r}")
        if isinstance(exc, web.HTTPRequestEntityTooLarge):
            return error_body(exc.status, "body", f"{exc.text} (api.max_body_bytes)")
        return error_body(exc.status, None, exc.reason)
    err_id = uuid.uuid4().hex[:12]
    log.error("API handler error %s on %s %s", err_id, request.method, request.path, exc_info=exc)
    return error_body(500, None, f"internal error (id {err_id}); see the daemon log")


def api_middleware(histogram: Histogram | None) -> Any:
    """Every error as a JSON body (error_response), and every request's latency by route
    template (not raw path: bounded label cardinality whatever clients send), method
    and the final status. One middleware, not two: each layer is a coroutine frame on
    every request of the hottest route (bench/api_load.py)."""
    children: dict[tuple[str, str, int], Any] = {}

    def observe(request: web.Request, status: int, started: float) -> None:
        assert histogram is not None
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        method = request.method if request.method in _METHODS else "other"
        key = (route, method, status)
        # Bound children cached: labels() costs more than the observation itself.
        child = children.get(key)
        if child is None:
            child = children[key] = histogram.labels(route, method, str(status))
        child.observe(time.perf_counter() - started)

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500  # cancelled: the client went away before an answer
        try:
            try:
                resp = await handler(request)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                answer = error_response(request, exc)
                if answer is None:
                    status = getattr(exc, "status", 500)
                    raise
                resp = answer
            status = resp.status
            return resp
        finally:
            if histogram is not None:
                observe(request, status, started)

    return middleware


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


class Api:
    def __init__(
        self,
        backend: ApiBackend,
        *,
        sse_keepalive_s: float = SSE_KEEPALIVE_S,
        request_seconds: Histogram | None = None,
        max_streams: int = 10_000,
        max_body_bytes: int = 1 << 20,
        history: HistoryApi | None = None,
        alerts: AlertsApi | None = None,
        claims: ClaimsApi | None = None,
    ) -> None:
        self.backend = backend
        # Every open event stream holds a connection and up to the hub's byte bound of
        # unsent frames: beyond this many a new one is refused (503), so hostile clients
        # cannot grow memory without bound (docs/reliability.md, "Hostile API clients").
        self.max_streams = max_streams
        self.open_streams = 0
        # An idle stream only notices a gone client when it writes: the keepalive
        # comment bounds how long a disconnected client keeps its subscription.
        self.sse_keepalive_s = sse_keepalive_s
        # One subscription fanned out to every open stream (aggregator/api_stream.py).
        self._hub = StreamHub(lambda: backend.subscribe(), keepalive_s=sse_keepalive_s)  # noqa: PLW0108
        self.app = web.Application(
            middlewares=[api_middleware(request_seconds)], client_max_size=max_body_bytes
        )
        # Path variables take any segment (aiohttp's default refuses "{" and "}"), so a
        # malformed address is a 400 naming "address", not a 404 for an unknown route.
        # The hottest route first: the resolver tries routes in this order. Api.start()
        # serves its 200s below the application (aggregator/api_fast.py).
        hot = self.app.router.add_get("/v1/accounts/{address:[^/]+}/health", self.account_health)
        assert hot.resource is not None
        self._hot = HotHealthRoute(
            lambda a: backend.account_health_body(a),  # noqa: PLW0108 (late-bound, as below)
            hot.resource.canonical,
            request_seconds,
        )
        self.app.add_routes(
            [
                web.get("/healthz", self.healthz),
                web.get("/readyz", self.readyz),
                web.get("/metrics", self.metrics),
                web.get("/openapi.json", self.openapi),
                web.get("/v1/accounts", self.accounts),
                web.get("/v1/accounts/{address:[^/]+}", self.account),
                web.get("/v1/accounts/{address:[^/]+}/margin", self.account_margin),
                web.get("/v1/margin/report", self.margin_report),
                web.get("/v1/prices", self.prices),
                web.get("/v1/prices/{asset:[^/]+}", self.price),
                web.get("/v1/chains", self.chains),
                web.get("/v1/stream", self.stream),
                web.post("/v1/admin/pause", self.admin_pause),
                web.post("/v1/admin/resume", self.admin_resume),
                *history_routes(history),  # aggregator/api_history.py
                *alert_routes(alerts),  # aggregator/api_alerts.py
                web.post("/v1/whatif", self.whatif),
                *claim_routes(claims),  # aggregator/api_claims.py (cross-chain seize)
                # Late-bound: test backends without the view still build the app.
                liquidity_route(lambda: backend.liquidity(), json_response, error_body),  # noqa: PLW0108
                reputation_route(lambda a: backend.reputation(a), parse_address),  # noqa: PLW0108
            ]
        )
        self.app.add_routes(dashboard_routes())  # /ui: docs/dashboard.md
        self._runner: web.AppRunner | None = None
        # Bearer token of the admin routes (AGG_ADMIN_TOKEN); None disables them (403).
        self.admin_token: str | None = None
        self.port: int | None = None

    async def start(self, host: str, port: int) -> int:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        server = self._runner.server
        assert server is not None  # set by setup()
        self._hot.install(server)  # before any connection opens (api_fast.py)
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        addresses = self._runner.addresses
        self.port = addresses[0][1] if addresses else port
        return self.port

    async def stop(self) -> None:
        # Before the runner closes connections, so open streams end with `event:
        # shutdown` instead of being cut off after the runner's shutdown timeout.
        await self._hub.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- probes -------------------------------------------------------------
    async def healthz(self, _: web.Request) -> web.Response:
        return json_response({"status": "alive"})

    async def readyz(self, _: web.Request) -> web.Response:
        ok, reasons = self.backend.readiness()
        return json_response(
            {"status": "ready" if ok else "not ready", "reasons": reasons}, 200 if ok else 503
        )

    async def metrics(self, _: web.Request) -> web.Response:
        return web.Response(
            body=self.backend.metrics_text(), content_type="text/plain", charset="utf-8"
        )

    async def openapi(self, _: web.Request) -> web.Response:
        return json_response(OPENAPI)

    # -- accounts -----------------------------------------------------------
    async def account(self, request: web.Request) -> web.Response:
        address = parse_address(request.match_info["address"])
        view = self.backend.account_detail(address)
        if view is None:
            raise ApiError(404, "address", f"no positions known for {address}")
        return json_response(view)

    async def account_health(self, request: web.Request) -> web.Response:
        raw = request.match_info["address"]
        # The hottest route: the backend formats the body itself, skipping the view dict
        # and the encoder; anything else (bad address, unknown account) takes the
        # general path below, which answers the error.
        if HEX_ADDRESS.fullmatch(raw) is not None:
            body = self.backend.account_health_body(raw)
            if body is not None:
                return web.Response(body=body, content_type="application/json", charset="utf-8")
        address = parse_address(raw)
        view = self.backend.account_health(address)
        if view is None:
            raise ApiError(404, "address", f"no positions known for {address}")
        return json_response(view)

    # -- portfolio margin (docs/portfolio-margin.md) ----------------------------
    async def account_margin(self, request: web.Request) -> web.Response:
        address = parse_address(request.match_info["address"])
        view = self.backend.account_margin(address)
        if view is None:
            raise ApiError(404, "address", f"no positions known for {address}")
        return json_response(view)

    async def margin_report(self, _: web.Request) -> web.Response:
        return json_response(await self.backend.margin_report())

    async def accounts(self, request: web.Request) -> web.Response:
        q = request.query
        unknown = set(q) - set(ACCOUNTS_QUERY)
        if unknown:
            name = sorted(unknown)[0]
            if not name:  # "?=x": there is no name to report, so name the query itself
                raise ApiError(400, "query", "query parameter without a name")
            raise ApiError(400, name[:64], f"unknown query parameter {name[:64]!r}")
        for name in ACCOUNTS_QUERY:
            if len(q.getall(name, ())) > 1:
                raise ApiError(400, name, "given more than once")
        tier = q.get("tier")
        if tier is not None and tier not in TIERS:
            raise ApiError(400, "tier", f"must be one of {', '.join(TIERS)}")
        raw_limit = q.get("limit", "100")
        if _LIMIT_RE.fullmatch(raw_limit) is None:
            raise ApiError(400, "limit", f"must be an integer between 1 and {MAX_LIMIT}")
        # Leading zeros are fine ("0010"); a huge number is only out of range (int() of
        # 4300+ characters raises, which must not become a 500).
        digits = raw_limit.lstrip("-").lstrip("0") or "0"
        limit = int(digits) if len(digits) <= 6 else MAX_LIMIT + 1
        if raw_limit.startswith("-"):
            limit = -limit
        if not 1 <= limit <= MAX_LIMIT:
            raise ApiError(400, "limit", f"must be between 1 and {MAX_LIMIT}")
        cursor = q.get("cursor")
        if cursor is not None and _CURSOR_RE.fullmatch(cursor) is None:
            raise ApiError(400, "cursor", "must be a next_cursor value from a previous page")
        items, next_cursor = self.backend.list_accounts(tier, limit, cursor)
        return json_response({"accounts": items, "next_cursor": next_cursor})

    # -- prices / chains ------------------------------------------------------
    async def prices(self, _: web.Request) -> web.Response:
        return json_response(self.backend.prices())

    async def price(self, request: web.Request) -> web.Response:
        asset = request.match_info["asset"]
        view = self.backend.price(asset)
        if view is None:
            raise ApiError(404, "asset", f"unknown asset {asset[:32]!r}")
        return json_response(view)

    # -- what-if on the live book (docs/whatif.md; aggregator/whatif.py) --------
    async def whatif(self, request: web.Request) -> web.Response:
        try:
            text = await request.text()
            body = json.loads(text) if text.strip() else {}
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "body", "not valid JSON (docs/whatif.md)") from None
        return json_response(await self.backend.whatif(body))

    # -- admin (bearer token from AGG_ADMIN_TOKEN) ----------------------------
    async def admin_pause(self, request: web.Request) -> web.Response:
        return self._admin(request, paused=True)

    async def admin_resume(self, request: web.Request) -> web.Response:
        return self._admin(request, paused=False)

    def _admin(self, request: web.Request, *, paused: bool) -> web.Response:
        if not self.admin_token:
            raise ApiError(
                403, "authorization", "admin API disabled: set AGG_ADMIN_TOKEN to enable it"
            )
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # Constant-time comparison; the token itself never appears in a response or log.
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self.admin_token.encode()
        ):
            resp = error_body(401, "authorization", "missing or wrong bearer token")
            resp.headers["WWW-Authenticate"] = 'Bearer realm="aggregator-admin"'
            return resp
        return json_response(self.backend.set_push_paused(paused))

    async def chains(self, _: web.Request) -> web.Response:
        return json_response({"chains": self.backend.chains()})

    async def stream(self, request: web.Request) -> web.StreamResponse:
        if self.open_streams >= self.max_streams:
            raise ApiError(
                503,
                "stream",
                f"{self.open_streams} event streams open, the most this daemon serves "
                "(api.max_streams); retry later",
            )
        self.open_streams += 1
        try:
            return await self._stream(request)
        finally:
            self.open_streams -= 1

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        """Frames come from the hub (aggregator/api_stream.py); this handler only waits
        for the reason its stream ended."""
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        transport = request.transport
        if request.method == "HEAD" or transport is None:
            return resp  # the head only (or the client is already gone)
        # Attach (and subscribe) before the 200 goes out: a failing backend is then
        # still a JSON 500, and no frame flushed meanwhile is missed.
        sink = self._hub.attach(transport)
        try:
            await resp.prepare(request)
            await resp.write(b": connected\n\n")
            # aiohttp chunks the body of an HTTP/1.1 answer of unknown length by itself
            # (resp.chunked only tells of an explicit request for it): the head says.
            self._hub.opened(sink, resp.headers.get("Transfer-Encoding") == "chunked")
            reason = await sink.done
            if reason == "overflow":
                # What it could not take stays unsent: the connection ends.
                resp.force_close()
        except ConnectionResetError:
            pass
        finally:
            await self._hub.detach(sink)
        return resp
