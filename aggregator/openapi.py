"""The OpenAPI 3.1 document served at /openapi.json (kept next to the routes it describes)."""

from __future__ import annotations

from typing import Any

_ERR = {"$ref": "#/components/responses/Error"}
_ADDR = {
    "name": "address",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$"},
}


def _get(
    summary: str,
    params: list[dict[str, Any]] | None = None,
    media: str = "application/json",
    **codes: Any,
) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": {"description": "OK", "content": {media: {}}}}
    for code, desc in codes.items():
        responses[code.lstrip("_")] = _ERR if desc == "err" else {"description": desc}
    # Any handler can hit an unexpected error: a JSON body with an error id (see the log).
    responses["500"] = _ERR
    return {"get": {"summary": summary, "parameters": params or [], "responses": responses}}


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Multi-chain collateral aggregator",
        "version": "1",
        "description": "One account's collateral on several EVM chains as a single margin account.",
    },
    "paths": {
        "/healthz": _get("Process is alive"),
        "/readyz": _get("Synced and prices fresh", _503="not ready, with reasons (JSON)"),
        "/metrics": _get("Prometheus metrics", media="text/plain"),
        "/openapi.json": _get("This OpenAPI 3.1 document"),
        "/v1/accounts": _get(
            "Accounts, optionally by tier",
            [
                {
                    "name": "tier",
                    "in": "query",
                    "schema": {
                        "type": "string",
                        "enum": ["healthy", "warning", "liquidatable", "insolvent"],
                    },
                },
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                },
                {
                    "name": "cursor",
                    "in": "query",
                    "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
                },
            ],
            _400="err",
            _503="err",
        ),
        "/v1/accounts/{address}": _get(
            "Full breakdown of one account", [_ADDR], _400="err", _404="err", _503="err"
        ),
        "/v1/accounts/{address}/health": _get(
            "Compact health", [_ADDR], _400="err", _404="err", _503="err"
        ),
        "/v1/prices": _get("All prices with every source"),
        "/v1/prices/{asset}": _get(
            "One asset's price",
            [{"name": "asset", "in": "path", "required": True, "schema": {"type": "string"}}],
            _404="err",
        ),
        "/v1/chains": _get("Per chain sync, RPC endpoints and pusher state"),
        "/v1/stream": {
            "get": {
                "summary": "Server-sent events of health changes",
                "responses": {
                    "200": {
                        "description": "`event: health` frames (JSON data); "
                        "`event: shutdown` or `overflow` ends the stream",
                        "content": {"text/event-stream": {}},
                    },
                    "500": _ERR,
                },
            }
        },
    },
    "components": {
        "responses": {
            "Error": {
                "description": "Error naming the offending field",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "error": {
                                    "type": "object",
                                    "properties": {
                                        "field": {"type": ["string", "null"]},
                                        "message": {"type": "string"},
                                    },
                                }
                            },
                        }
                    }
                },
            }
        },
    },
}
