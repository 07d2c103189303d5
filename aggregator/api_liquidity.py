"""`GET /v1/liquidity`: per asset and chain, how much could be sold within 1/2/5% price
impact through the Uniswap v3 pools versus the collateral the tiers put at risk
(aggregator/risk/liquidity_view.py; docs/risk.md "Liquidity weighting from pools").

Invariants: read-only; 503 (error naming "prices") before the first price round, as
every ledger view; the body is the LedgerView's report unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

Respond = Callable[[Any, int], web.Response]


def liquidity_route(
    report: Callable[[], dict[str, Any] | None],
    respond: Respond,
    error: Callable[..., web.Response],
) -> web.RouteDef:
    """The route; `report()` is None until prices are computed. `respond`/`error` are
    the API's JSON writers (passed in: this module does not import aggregator.api)."""

    async def get(_: web.Request) -> web.Response:
        data = report()
        if data is None:
            return error(
                503, "prices", "no price round yet: the ledger is not computed; see /readyz"
            )
        return respond(data, 200)

    return web.get("/v1/liquidity", get)


__all__ = ["liquidity_route"]
