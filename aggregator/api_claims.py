"""`POST /v1/claims/{chain}/{tx_hash}`: seize vouchers for the cross-chain liquidation
claims of one transaction on chain `chain` (aggregator/claims.py, docs/contracts.md
"Cross-chain seize").

Invariants: a malformed chain name or transaction hash is a 400 naming `chain` or
`tx_hash` before any RPC; a claim not final yet is a 409 whose body says how many
confirmations it has and needs (and whether its block was reorged out); without a
claim service (tests' backends) the route answers 503 naming `claims`, so the served
routes never depend on config. No request body is read; no authentication: a voucher
is only signed for a final on-chain claim and pays only the liquidator it names.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from aiohttp import web

from aggregator.api_common import ApiError, json_response
from aggregator.claims import ClaimNotFinal

# The config's chain name pattern (aggregator/config.py ChainConfig.name).
CHAIN_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
TX_HASH_RE = re.compile(r"0x[0-9a-fA-F]{64}")


class ClaimsApi(Protocol):
    async def vouchers(self, chain: str, tx_hash: str) -> dict[str, Any]: ...


def claim_routes(claims: ClaimsApi | None) -> list[web.RouteDef]:
    async def post(request: web.Request) -> web.Response:
        chain = request.match_info["chain"]
        tx_hash = request.match_info["tx_hash"]
        if CHAIN_RE.fullmatch(chain) is None:
            raise ApiError(400, "chain", f"not a chain name: {chain[:64]!r}")
        if TX_HASH_RE.fullmatch(tx_hash) is None:
            raise ApiError(
                400, "tx_hash", f"not a 0x-prefixed 32-byte hex transaction hash: {tx_hash[:80]!r}"
            )
        if claims is None:
            raise ApiError(503, "claims", "no claim service in this process")
        try:
            body = await claims.vouchers(chain, tx_hash.lower())
        except ClaimNotFinal as exc:
            return json_response(exc.body(), 409)
        return json_response(body)

    return [web.post("/v1/claims/{chain:[^/]+}/{tx_hash:[^/]+}", post)]


__all__ = ["CHAIN_RE", "TX_HASH_RE", "ClaimsApi", "claim_routes"]
