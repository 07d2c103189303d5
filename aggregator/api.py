"""Local HTTP API (aiohttp): accounts, prices, chains, SSE stream, metrics, probes, admin.

Every bad input is a 4xx JSON error naming the field; handler bugs become a 500
JSON body with an error id, never an HTML traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web
from eth_utils import is_hex_address, to_checksum_address

log = logging.getLogger(__name__)

TIERS = ("healthy", "warning", "liquidatable", "insolvent")
MAX_LIMIT = 1000


class ApiBackend(Protocol):
    """What the API needs from the daemon (kept narrow so the API is testable alone)."""

    def readiness(self) -> tuple[bool, list[str]]: ...
    def account_detail(self, address: str) -> dict[str, Any] | None: ...
    def account_health(self, address: str) -> dict[str, Any] | None: ...
    def list_accounts(
        self, tier: str | None, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]: ...
    def prices(self) -> dict[str, Any]: ...
    def price(self, asset: str) -> dict[str, Any] | None: ...
    def chains(self) -> list[dict[str, Any]]: ...
    def subscribe(self) -> AsyncIterator[dict[str, Any]]: ...
    def metrics_text(self) -> bytes: ...


class ApiError(Exception):
    def __init__(self, status: int, field: str | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.field = field
        self.message = message


def _json_default(obj: Any) -> Any:
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    return str(obj)


def _clean(obj: Any) -> Any:
    # JSON has no Infinity: an infinite health factor (no debt) is sent as null
    # with the string form next to it where the view provides one.
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(_clean(data), default=_json_default),
        status=status,
        content_type="application/json",
    )


def error_body(status: int, field: str | None, message: str) -> web.Response:
    return json_response({"error": {"field": field, "message": message}}, status=status)


def parse_address(raw: str, field: str = "address") -> str:
    if not is_hex_address(raw):
        raise ApiError(400, field, f"not a 20-byte hex address: {raw[:64]!r}")
    return to_checksum_address(raw)


@web.middleware
async def errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_body(exc.status, exc.field, exc.message)
    except web.HTTPException as exc:
        if exc.status >= 400:
            return error_body(exc.status, None, exc.reason)
        raise
    except asyncio.CancelledError:
        raise
    except Exception:
        err_id = uuid.uuid4().hex[:12]
        log.exception("API handler error %s on %s %s", err_id, request.method, request.path)
        return error_body(500, None, f"internal error (id {err_id}); see the daemon log")


class Api:
    def __init__(self, backend: ApiBackend) -> None:
        self.backend = backend
        self.app = web.Application(middlewares=[errors_middleware])
        self.app.add_routes(
            [
                web.get("/healthz", self.healthz),
                web.get("/readyz", self.readyz),
                web.get("/metrics", self.metrics),
                web.get("/openapi.json", self.openapi),
                web.get("/v1/accounts", self.accounts),
                web.get("/v1/accounts/{address}", self.account),
                web.get("/v1/accounts/{address}/health", self.account_health),
                web.get("/v1/prices", self.prices),
                web.get("/v1/prices/{asset}", self.price),
                web.get("/v1/chains", self.chains),
                web.get("/v1/stream", self.stream),
            ]
        )
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, host: str, port: int) -> int:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        return self.port

    async def stop(self) -> None:
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
        from aggregator.openapi import OPENAPI

        return json_response(OPENAPI)

    # -- accounts -----------------------------------------------------------
    async def account(self, request: web.Request) -> web.Response:
        address = parse_address(request.match_info["address"])
        view = self.backend.account_detail(address)
        if view is None:
            raise ApiError(404, "address", f"no positions known for {address}")
        return json_response(view)

    async def account_health(self, request: web.Request) -> web.Response:
        address = parse_address(request.match_info["address"])
        view = self.backend.account_health(address)
        if view is None:
            raise ApiError(404, "address", f"no positions known for {address}")
        return json_response(view)

    async def accounts(self, request: web.Request) -> web.Response:
        q = request.query
        unknown = set(q) - {"tier", "limit", "cursor"}
        if unknown:
            name = sorted(unknown)[0]
            raise ApiError(400, name, f"unknown query parameter {name!r}")
        tier = q.get("tier")
        if tier is not None and tier not in TIERS:
            raise ApiError(400, "tier", f"must be one of {', '.join(TIERS)}")
        try:
            limit = int(q.get("limit", "100"))
        except ValueError:
            raise ApiError(400, "limit", "must be an integer") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise ApiError(400, "limit", f"must be between 1 and {MAX_LIMIT}")
        cursor = q.get("cursor")
        if cursor is not None and not (cursor.isdigit() and len(cursor) < 19):
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

    async def chains(self, _: web.Request) -> web.Response:
        return json_response({"chains": self.backend.chains()})

    async def stream(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        await resp.write(b": connected\n\n")
        events = self.backend.subscribe()
        try:
            async for event in events:
                payload = json.dumps(_clean(event), default=_json_default)
                await resp.write(f"event: health\ndata: {payload}\n\n".encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                await events.aclose()  # type: ignore[attr-defined]
        return resp
