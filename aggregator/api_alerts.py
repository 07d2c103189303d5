"""Route of the alerts: `GET /v1/alerts` (docs/operations.md "Alerts").

Input parsing here (a bad `limit` is a 400 naming it); the answer from an `AlertsApi`
(aggregator/alerts/service.py). Without one (alerts disabled) the route answers 503
naming `alerts`.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from aiohttp import web

from aggregator.api_common import ApiError, json_response
from aggregator.api_history import check_query

MAX_ALERTS_LIMIT = 1000
_LIMIT_RE = re.compile(r"[0-9]{1,6}")


class AlertsApi(Protocol):
    def view(self, limit: int) -> dict[str, Any]: ...


class AlertRoutes:
    def __init__(self, backend: AlertsApi | None) -> None:
        self.backend = backend

    async def alerts(self, request: web.Request) -> web.Response:
        q = request.query
        check_query(q, ("limit",), q.getall)
        raw = q.get("limit", "100")
        if _LIMIT_RE.fullmatch(raw) is None or not 1 <= int(raw) <= MAX_ALERTS_LIMIT:
            raise ApiError(400, "limit", f"must be an integer between 1 and {MAX_ALERTS_LIMIT}")
        if self.backend is None:
            raise ApiError(503, "alerts", "alerts are disabled ([alerts] enabled = false)")
        return json_response(self.backend.view(int(raw)))


def alert_routes(backend: AlertsApi | None) -> list[web.RouteDef]:
    return [web.get("/v1/alerts", AlertRoutes(backend).alerts)]
