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
        "/v1/accounts/{address}/margin": _get(
            "Standard, portfolio and VaR margin side by side, greeks per underlying",
            [_ADDR],
            _400="err",
            _404="err",
            _503="err",
        ),
        "/v1/margin/report": _get(
            "Reference book under isolated, standard, portfolio and VaR margin"
        ),
        "/v1/prices": _get("All prices with every source"),
        "/v1/prices/{asset}": _get(
            "One asset's price",
            [{"name": "asset", "in": "path", "required": True, "schema": {"type": "string"}}],
            _404="err",
        ),
        "/v1/chains": _get("Per chain sync, RPC endpoints and pusher state"),
        "/v1/liquidity": _get(
            "Per asset and chain: sellable within 1/2/5% impact through the pools vs the "
            "collateral the tiers put at risk",
            _503="err",
        ),
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


# -- Response bodies ----------------------------------------------------------------
# What each route answers with, so clients (and the schemathesis tests) can check every
# response. Objects stay open (additional properties allowed): a new field is not a
# breaking change; a renamed or retyped one is. Any float the engine produces may be
# non-finite in a corner (no price yet), which the API sends as null.
_NUM = {"type": ["number", "null"]}
_STR_OR_NULL = {"type": ["string", "null"]}
_CHECKSUMMED = {"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$"}
_DECIMAL = {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$"}
_RAW_AMOUNT = {"type": "string", "pattern": "^[0-9]+$"}
_TIER = {"type": "string", "enum": ["healthy", "warning", "liquidatable", "insolvent"]}
_PRICE_STATUS = {"type": "string", "enum": ["ok", "disputed", "unavailable"]}


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


_SCHEMAS: dict[str, Any] = {
    "Alive": _obj(["status"], status={"const": "alive"}),
    "Readiness": _obj(
        ["status", "reasons"],
        status={"enum": ["ready", "not ready"]},
        reasons={"type": "array", "items": {"type": "string"}},
    ),
    "AccountHealth": _obj(
        ["account", "hf", "hf_text", "borrowing_power_usd", "tier", "credit_usd", "status"],
        account=_CHECKSUMMED,
        hf={"type": ["number", "null"], "description": "null when infinite (no debt)"},
        hf_text={"type": "string"},
        borrowing_power_usd=_NUM,
        tier=_TIER,
        credit_usd={
            "type": "object",
            "description": "chain -> credit in USD, an exact decimal string",
            "additionalProperties": _DECIMAL,
        },
        status={"enum": ["ok", "degraded"]},
    ),
    "AccountPage": _obj(
        ["accounts", "next_cursor"],
        accounts={"type": "array", "items": {"$ref": "#/components/schemas/AccountHealth"}},
        next_cursor={"type": ["string", "null"], "pattern": "^[0-9]{1,18}$"},
    ),
    "Position": _obj(
        ["asset", "side", "head", "confirmed", "counted", "amount", "value_usd"],
        asset={"type": "string"},
        side={"enum": ["collateral", "debt"]},
        head=_RAW_AMOUNT,
        confirmed=_RAW_AMOUNT,
        counted=_RAW_AMOUNT,
        amount=_DECIMAL,
        value_usd=_NUM,
    ),
    "AccountDetail": _obj(
        [
            "account",
            "positions",
            "assets",
            "collateral_value_usd",
            "c_liq_usd",
            "c_borrow_usd",
            "debt_usd",
            "hf",
            "hf_text",
            "borrowing_power_usd",
            "tier",
            "degraded",
            "liquidation",
            "credit",
            "as_of",
        ],
        account=_CHECKSUMMED,
        positions={
            "type": "object",
            "additionalProperties": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/Position"},
            },
        },
        assets={
            "type": "object",
            "additionalProperties": _obj(
                ["price", "collateral_amount", "debt_amount"],
                price=_obj(["used_usd", "status"], used_usd=_NUM, status=_PRICE_STATUS),
                collateral_amount=_DECIMAL,
                debt_amount=_DECIMAL,
                debt_value_usd=_NUM,
            ),
        },
        collateral_value_usd=_NUM,
        c_liq_usd=_NUM,
        c_borrow_usd=_NUM,
        debt_usd=_NUM,
        hf={"type": ["number", "null"], "description": "null when infinite (no debt)"},
        hf_text={"type": "string"},
        borrowing_power_usd=_NUM,
        tier=_TIER,
        degraded={"type": "boolean"},
        liquidation={
            "oneOf": [
                {"type": "null"},
                _obj(["kind", "repay_usd"], kind={"enum": ["partial", "full"]}, repay_usd=_NUM),
            ]
        },
        credit=_obj(
            ["chains"],
            chains={
                "type": "object",
                "additionalProperties": _obj(
                    ["credit_usd", "credit_usd6"],
                    credit_usd=_DECIMAL,
                    credit_usd6={"type": "integer", "minimum": 0},
                ),
            },
        ),
        as_of={
            "type": "object",
            "additionalProperties": _obj(
                ["indexed_block", "confirmed_block", "head_block"],
                indexed_block={"type": "integer"},
                confirmed_block={"type": "integer"},
                head_block={"type": "integer"},
            ),
        },
    ),
    "Price": _obj(
        ["asset", "status"],
        asset={"type": "string"},
        value=_NUM,
        status=_PRICE_STATUS,
        timestamp=_NUM,
        computed_at=_NUM,
        spread=_NUM,
        reason=_STR_OR_NULL,
        sources={"type": "array", "items": {"type": "object"}},
        # aggregator/vol_forecast.py view(); null before the first price refresh.
        volatility={"type": ["object", "null"]},
    ),
    "Prices": _obj(
        ["prices"],
        prices={"type": "object", "additionalProperties": {"$ref": "#/components/schemas/Price"}},
    ),
    "Chains": _obj(
        ["chains"],
        chains={
            "type": "array",
            "items": _obj(
                ["chain", "chain_id", "confirmations", "endpoints"],
                chain={"type": "string"},
                chain_id={"type": "integer"},
                confirmations={"type": "integer"},
                head_block={"type": "integer"},
                indexed_block={"type": "integer"},
                confirmed_block={"type": "integer"},
                lag={"type": "integer"},
                caught_up={"type": "boolean"},
                fatal={"type": "boolean"},
                endpoints={
                    "type": "array",
                    "items": _obj(
                        ["url", "state"], url={"type": "string"}, state={"type": "string"}
                    ),
                },
                # Multi-instance leases (docs/deployment.md); null on SQLite.
                cluster={
                    "oneOf": [
                        {"type": "null"},
                        _obj(
                            ["instance_id", "index", "push"],
                            instance_id={"type": "string"},
                            index={"$ref": "#/components/schemas/Lease"},
                            push={"$ref": "#/components/schemas/Lease"},
                        ),
                    ]
                },
            ),
        },
    ),
    "Lease": _obj(
        ["lease", "holder", "token", "live", "held_here"],
        lease={"type": "string"},
        holder=_STR_OR_NULL,
        token={"type": ["integer", "null"]},
        live={"type": "boolean"},
        held_here={"type": "boolean"},
        local_token={"type": ["integer", "null"]},
        acquired_at={"type": ["number", "null"]},
        expires_at={"type": ["number", "null"]},
        previous_holder=_STR_OR_NULL,
    ),
    "OpenApiDocument": _obj(["openapi", "info", "paths"], openapi={"type": "string"}),
    # GET /v1/liquidity (aggregator/risk/liquidity_view.py)
    "Liquidity": _obj(
        ["slippages", "assets", "ignored"],
        slippages={"type": "array", "items": {"type": "number"}},
        assets={
            "type": "object",
            "additionalProperties": _obj(
                ["chains", "fallback"],
                chains={
                    "type": "object",
                    "description": "chain (or `all`: every chain, optimal split) -> row",
                    "additionalProperties": _obj(
                        ["at_risk", "source"],
                        at_risk=_obj(
                            ["liquidatable", "liquidatable_usd", "warning", "warning_usd"],
                            liquidatable=_NUM,
                            liquidatable_usd=_NUM,
                            warning=_NUM,
                            warning_usd=_NUM,
                        ),
                        source={"enum": ["pools", "fallback"]},
                        depth_within_band=_NUM,
                        sellable={"type": "object", "additionalProperties": _NUM},
                        sellable_usd={"type": "object", "additionalProperties": _NUM},
                        liquidatable_impact=_NUM,
                        covered={"type": "object", "additionalProperties": {"type": "boolean"}},
                    ),
                },
                fallback=_STR_OR_NULL,
            ),
        },
        ignored={
            "type": "object",
            "additionalProperties": {
                "type": "array",
                "items": _obj(
                    ["chain", "pool", "reason"],
                    chain={"type": "string"},
                    pool={"type": "string"},
                    reason={"type": "string"},
                ),
            },
        },
    ),
}

_BODIES = {
    "/healthz": {"200": "Alive"},
    "/readyz": {"200": "Readiness", "503": "Readiness"},
    "/openapi.json": {"200": "OpenApiDocument"},
    "/v1/accounts": {"200": "AccountPage"},
    "/v1/accounts/{address}": {"200": "AccountDetail"},
    "/v1/accounts/{address}/health": {"200": "AccountHealth"},
    "/v1/prices": {"200": "Prices"},
    "/v1/prices/{asset}": {"200": "Price"},
    "/v1/chains": {"200": "Chains"},
    "/v1/liquidity": {"200": "Liquidity"},
}


def _attach_bodies(doc: dict[str, Any]) -> None:
    doc["components"].setdefault("schemas", {}).update(_SCHEMAS)
    for path, codes in _BODIES.items():
        responses = doc["paths"][path]["get"]["responses"]
        for code, name in codes.items():
            desc = responses.get(code, {}).get("description", "OK")
            responses[code] = {
                "description": desc,
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}
                },
            }


_attach_bodies(OPENAPI)


# -- admin: pause / resume pushing (docs/pusher.md) -----------------------------------
def _admin_post(summary: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "description": "Needs `Authorization: Bearer <AGG_ADMIN_TOKEN>`. While no token "
            "is configured the admin API is disabled and answers 403.",
            "security": [{"adminBearer": []}],
            "responses": {
                "200": {
                    "description": "The pusher's pause state after the call",
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/PushPauseState"}
                        }
                    },
                },
                "401": _ERR,
                "403": _ERR,
                "503": _ERR,
                "500": _ERR,
            },
        }
    }


def _attach_admin(doc: dict[str, Any]) -> None:
    doc["paths"]["/v1/admin/pause"] = _admin_post("Pause pushing to every HealthRegistry")
    doc["paths"]["/v1/admin/resume"] = _admin_post("Resume pushing")
    components = doc["components"]
    components.setdefault("securitySchemes", {})["adminBearer"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "the value of AGG_ADMIN_TOKEN",
    }
    components.setdefault("schemas", {})["PushPauseState"] = {
        "type": "object",
        "required": ["paused"],
        "properties": {
            "paused": {"type": "boolean"},
            "enabled": {"type": "boolean", "description": "false when the pusher is not running"},
            "reason": {"type": ["string", "null"]},
        },
    }


_attach_admin(OPENAPI)
