"""Routes of the risk history: `GET /v1/history/system` and
`GET /v1/history/accounts/{address}` (docs/operations.md "History").

Input parsing lives here (every bad parameter a 400 naming it); the answers come from
a `HistoryApi` (aggregator/history/queries.py). Without one (history disabled) the
routes answer 503 naming `history`, so the served routes never depend on config.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from aggregator.api_common import ApiError, json_response
from chains.events import HEX_ADDRESS

HISTORY_QUERY = ("from", "to", "resolution")
MAX_BUCKETS = 10_000
DEFAULT_WINDOW_S = 86_400
_TIME_RE = re.compile(r"[0-9]{1,12}")
_STEP_RE = re.compile(r"[0-9]{1,9}")


@dataclass(frozen=True)
class Window:
    start: int
    end: int
    step_s: int


class HistoryApi(Protocol):
    """What the history routes read (the daemon's: aggregator/history/queries.py)."""

    def levels(self) -> Sequence[tuple[int, int]]:
        """(step_s, keep_s) of every level, finest first."""
        ...

    async def system(self, window: Window) -> dict[str, Any]: ...
    async def account(self, address: str, window: Window) -> dict[str, Any] | None:
        """None: neither in the book nor in the history (404)."""
        ...


def check_query(query: Mapping[str, str], allowed: Sequence[str], getall: Any) -> None:
    """Unknown or repeated parameters are a 400 naming them."""
    unknown = set(query) - set(allowed)
    if unknown:
        name = sorted(unknown)[0]
        if not name:
            raise ApiError(400, "query", "query parameter without a name")
        raise ApiError(400, name[:64], f"unknown query parameter {name[:64]!r}")
    for name in allowed:
        if len(getall(name, ())) > 1:
            raise ApiError(400, name, "given more than once")


def _time(raw: str | None, name: str, default: int) -> int:
    if raw is None:
        return default
    if _TIME_RE.fullmatch(raw) is None:
        raise ApiError(400, name, "must be unix seconds (a non-negative integer)")
    return int(raw)


def parse_window(query: Mapping[str, str], levels: Sequence[tuple[int, int]], now: float) -> Window:
    """from/to/resolution -> the window and the level to read.

    `resolution`: `auto` (default) is the finest level whose retention still holds
    `from`; a number of seconds is the finest level at least that coarse (the coarsest
    if none is). A window of more than MAX_BUCKETS buckets of that level is shortened
    at its start (the answer's `from` says where it starts). Only `from >= to` and
    malformed values are errors.
    """
    end = _time(query.get("to"), "to", int(now))
    start = _time(query.get("from"), "from", max(0, end - DEFAULT_WINDOW_S))
    if start >= end:
        raise ApiError(400, "from", f"must be below to ({start} >= {end})")
    raw = query.get("resolution", "auto")
    steps = [s for s, _ in levels]
    if raw == "auto":
        step = next((s for s, keep in levels if start >= now - keep), steps[-1])
    elif _STEP_RE.fullmatch(raw) is not None:
        step = next((s for s in steps if s >= int(raw)), steps[-1])
    else:
        raise ApiError(400, "resolution", "must be auto or a bucket length in seconds")
    return Window(max(start, end - MAX_BUCKETS * step), end, step)


class HistoryRoutes:
    def __init__(self, backend: HistoryApi | None, clock: Callable[[], float] = time.time):
        self.backend = backend
        self.clock = clock

    def _window(self, request: web.Request) -> tuple[HistoryApi, Window]:
        q = request.query
        check_query(q, HISTORY_QUERY, q.getall)
        if self.backend is None:
            raise ApiError(503, "history", "risk history is disabled ([history] enabled = false)")
        return self.backend, parse_window(q, self.backend.levels(), self.clock())

    async def system(self, request: web.Request) -> web.Response:
        backend, window = self._window(request)
        return json_response(await backend.system(window))

    async def account(self, request: web.Request) -> web.Response:
        raw = request.match_info["address"]
        if HEX_ADDRESS.fullmatch(raw) is None:
            raise ApiError(400, "address", f"not a 0x-prefixed 20-byte hex address: {raw[:64]!r}")
        backend, window = self._window(request)
        view = await backend.account(raw, window)
        if view is None:
            raise ApiError(404, "address", f"no positions or history known for {raw}")
        return json_response(view)


def history_routes(backend: HistoryApi | None) -> list[web.RouteDef]:
    r = HistoryRoutes(backend)
    return [
        web.get("/v1/history/system", r.system),
        web.get("/v1/history/accounts/{address:[^/]+}", r.account),
    ]
