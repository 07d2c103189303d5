"""`GET /v1/accounts/{address}/reputation`: the account's reputation score, every factor
with its weight and contribution, and the multiplier on its requirement
(aggregator/reputation_feed.py, docs/reputation.md).

Invariants: read-only; a malformed address is a 400 naming `address`; with
[reputation] disabled the route answers 404 naming `reputation` (nothing is scored;
not a 5xx: the server is fine, the resource does not exist in this configuration);
any well-formed address has a reputation (one never seen is neutral, 1.0).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from aggregator.api_common import ApiError, json_response


def reputation_route(
    view: Callable[[str], dict[str, Any] | None], parse_address: Callable[[str], str]
) -> web.RouteDef:
    """The route; `view(address)` is None when reputation is disabled. `parse_address`
    is the API's own (passed in: this module does not import aggregator.api)."""

    async def get(request: web.Request) -> web.Response:
        address = parse_address(request.match_info["address"])
        body = view(address)
        if body is None:
            raise ApiError(404, "reputation", "reputation is disabled ([reputation] enabled)")
        return json_response(body)

    return web.get("/v1/accounts/{address:[^/]+}/reputation", get)


__all__ = ["reputation_route"]
