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
        "/v1/accounts/{address}/reputation": _get(
            "Reputation: score, every factor with its weight, the multiplier on the "
            "requirement (docs/reputation.md); 404 while [reputation] is disabled",
            [_ADDR],
            _400="err",
            _404="err",
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
                    "503": _ERR,
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
_PRICE_STATUS = {"type": "string", "enum": ["ok", "disputed", "unavailable", "capped"]}


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


# A liquidation plan (risk/explain.py `plan`, risk/model_plans.py `plan_view`).
_PLAN = _obj(
    ["model", "kind"],
    model={"type": "string"},
    kind={"enum": ["partial", "full", "unavailable"]},
    repay_usd=_NUM,
    chain={"type": "string"},
    asset={"type": "string"},
    seize_usd=_NUM,
    target_hf={"type": "number"},
    hf_before={"type": ["number", "null"]},
    hf_after={"type": ["number", "null"]},
    reason={"type": "string"},
)

# Every factor of a reputation score (aggregator/risk/reputation.py `Reputation.as_dict`):
# `contribution` to the borrowing score (at once), `maintenance_contribution` to the
# maintenance score (a penalty phased in), `side` where it acts.
_REP_FACTORS = {
    "type": "array",
    "items": _obj(
        ["name", "value", "weight", "side", "contribution", "maintenance_contribution"],
        name={"type": "string"},
        value={"type": ["number", "null"]},
        unit={"type": "string"},
        weight={"type": "number"},
        side={"enum": ["both", "borrowing", "none"]},
        contribution={"type": "number"},
        maintenance_contribution={"type": "number"},
        note={"type": "string"},
    ),
}

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
        reputation={
            **_obj(
                ["score", "multiplier", "maintenance_multiplier", "bounds", "factors"],
                score={"type": "number"},
                multiplier={"type": "number"},
                maintenance_score={"type": "number"},
                maintenance_multiplier={"type": "number"},
                bounds={"type": "array", "items": {"type": "number"}},
                factors=_REP_FACTORS,
            ),
            "description": "only with [reputation] enabled (docs/reputation.md): the "
            "multipliers already applied, `multiplier` to c_borrow_usd (the borrowing "
            "side), `maintenance_multiplier` to c_liq_usd, hf and the tier",
        },
        liquidation={
            "oneOf": [{"type": "null"}, _PLAN],
            "description": "the plan under the pushed model ([portfolio] mode, named by "
            "`model`); null when that model rates the account at or above HF 1",
        },
        standard_liquidation={
            "oneOf": [{"type": "null"}, _PLAN],
            "description": "portfolio / var mode only: the standard model's plan, beside",
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
    # GET /v1/accounts/{address}/reputation (aggregator/reputation_feed.py `view`)
    "Reputation": _obj(
        [
            "account",
            "score",
            "multiplier",
            "maintenance_multiplier",
            "bounds",
            "factors",
            "history",
        ],
        account={"type": "string"},
        scored_at={"type": "number"},
        score={"type": "number"},
        multiplier={"type": "number", "description": "the borrowing side (BP, credit)"},
        maintenance_score={"type": "number"},
        maintenance_multiplier={
            "type": "number",
            "description": "the maintenance side (HF, tier, liquidation): >= 1, each "
            "penalty phased in ([reputation.maintenance])",
        },
        maintenance_phase_in={
            "type": "object",
            "properties": {"hold_days": _NUM, "ramp_days": _NUM},
        },
        bounds={"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
        age_days={"type": "number"},
        neutral={"type": "boolean"},
        rule={"type": "string"},
        factors=_REP_FACTORS,
        history=_obj(
            ["first_seen", "liquidations", "risk_history"],
            first_seen={"type": ["number", "null"]},
            liquidations={"type": "array"},
            risk_history={"type": "boolean"},
            # Only with [reputation.attestation] on (docs/reputation.md "Attestations").
            attestations={
                "type": "array",
                "items": _obj(
                    ["chain", "uid", "attester", "score_bps", "expiry", "revoked", "status"],
                    chain={"type": "string"},
                    uid={"type": "integer"},
                    attester={"type": "string"},
                    score_bps={"type": "integer"},
                    expiry={"type": "integer"},
                    revoked={"type": "boolean"},
                    block_time={"type": "number"},
                    status={"type": "string"},
                ),
            },
            attestation_inputs={
                "type": "object",
                "description": "chain -> {snapshot: {block, hash, timestamp, count, "
                "records} or null, error: string or null}",
            },
        ),
    ),
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
    "/v1/accounts/{address}/reputation": {"200": "Reputation"},
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


# -- the dashboard's static files (aggregator/dashboard.py, docs/dashboard.md) --------
def _attach_dashboard(doc: dict[str, Any]) -> None:
    page = {"200": {"description": "The dashboard page", "content": {"text/html": {}}}}
    for path in ("/ui", "/ui/"):
        doc["paths"][path] = {
            "get": {"summary": "The dashboard (HTML)", "parameters": [], "responses": page}
        }
    files: dict[str, Any] = {
        t: {} for t in ("text/html", "text/javascript", "text/css", "text/plain")
    }
    doc["paths"]["/ui/{file}"] = {
        "get": {
            "summary": "One of the dashboard's files (scripts, styles, vendored uPlot)",
            "parameters": [
                {"name": "file", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {"description": "The file", "content": files},
                "404": _ERR,
                "500": _ERR,
            },
        }
    }


_attach_dashboard(OPENAPI)


# -- risk history and alerts (docs/operations.md "History", "Alerts") -----------------
def _history_params() -> list[dict[str, Any]]:
    t = {"type": "string", "pattern": "^[0-9]{1,12}$"}
    return [
        {"name": "from", "in": "query", "schema": t, "description": "unix seconds"},
        {"name": "to", "in": "query", "schema": t, "description": "unix seconds"},
        {
            "name": "resolution",
            "in": "query",
            "schema": {"type": "string", "pattern": "^(auto|[0-9]{1,9})$"},
            "description": "auto, or a configured level's step in seconds",
        },
    ]


def _json_ok(summary: str, params: list[dict[str, Any]], schema: str, **codes: Any) -> Any:
    op = _get(summary, params, **codes)
    op["get"]["responses"]["200"] = {
        "description": "OK",
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }
    return op


_USD_BLOCK = {"collateral_usd": _NUM, "debt_usd": _NUM}
_HISTORY_SCHEMAS: dict[str, Any] = {
    "SystemHistory": _obj(
        ["resolution_s", "from", "to", "points"],
        resolution_s={"type": "integer"},
        to={"type": "integer"},
        points={
            "type": "array",
            "items": _obj(
                ["t", "samples", "total", "tiers", "chains"],
                t={"type": "integer"},
                samples={"type": "integer"},
                total=_obj(["accounts"], accounts={"type": "integer"}, bp_usd=_NUM, **_USD_BLOCK),
                tiers={
                    "type": "object",
                    "additionalProperties": _obj(
                        ["accounts", "accounts_max"],
                        accounts={"type": "integer"},
                        accounts_max={"type": "integer"},
                        bp_usd=_NUM,
                        **_USD_BLOCK,
                    ),
                },
                chains={
                    "type": "object",
                    "additionalProperties": _obj([], credit_usd=_NUM, **_USD_BLOCK),
                },
            ),
        },
        **{"from": {"type": "integer"}},
    ),
    "AccountHistory": _obj(
        ["account", "resolution_s", "from", "to", "model", "points"],
        account=_CHECKSUMMED,
        resolution_s={"type": "integer"},
        to={"type": "integer"},
        model={"type": "string"},
        points={
            "type": "array",
            "items": _obj(
                ["t", "hf", "hf_text", "hf_min", "bp_usd", "tier", "tier_worst", "requirement_usd"],
                t={"type": "integer"},
                samples={"type": "integer"},
                hf=_NUM,
                hf_text={"type": "string"},
                hf_min=_NUM,
                hf_min_text={"type": "string"},
                bp_usd=_NUM,
                tier=_TIER,
                tier_worst=_TIER,
                requirement_usd=_obj(
                    ["standard", "portfolio", "var"], standard=_NUM, portfolio=_NUM, var=_NUM
                ),
                **_USD_BLOCK,
            ),
        },
        **{"from": {"type": "integer"}},
    ),
    "Alert": _obj(
        ["key", "rule", "kind", "severity", "subject", "message", "details", "started_at"],
        key={"type": "string"},
        rule={"type": "string"},
        kind={"type": "string"},
        severity={"enum": ["info", "warning", "critical"]},
        subject={"type": "string"},
        message={"type": "string"},
        details={"type": "object"},
        started_at={"type": "number"},
        status={"enum": ["firing", "resolved"]},
        resolved_at=_NUM,
        at={"type": "number"},
    ),
    "Alerts": _obj(
        ["active", "recent", "webhooks", "rules"],
        active={"type": "array", "items": {"$ref": "#/components/schemas/Alert"}},
        recent={"type": "array", "items": {"$ref": "#/components/schemas/Alert"}},
        webhooks={
            "type": "array",
            "items": _obj(
                ["name", "format", "state"],
                name={"type": "string"},
                format={"enum": ["json", "slack"]},
                state={"enum": ["ok", "failing"]},
                queued={"type": "integer"},
                last_error=_STR_OR_NULL,
            ),
        },
        rules={"type": "array", "items": {"type": "object"}},
    ),
}


def _attach_history_alerts(doc: dict[str, Any]) -> None:
    doc["components"]["schemas"].update(_HISTORY_SCHEMAS)
    paths = doc["paths"]
    paths["/v1/history/system"] = _json_ok(
        "System time series: per tier and per chain totals",
        _history_params(),
        "SystemHistory",
        _400="err",
        _503="err",
    )
    paths["/v1/history/accounts/{address}"] = _json_ok(
        "One account's HF, BP, tier and requirement over time",
        [_ADDR, *_history_params()],
        "AccountHistory",
        _400="err",
        _404="err",
        _503="err",
    )
    limit = {"type": "integer", "minimum": 1, "maximum": 1000}
    paths["/v1/alerts"] = _json_ok(
        "Active alerts, recent events, webhook delivery state",
        [{"name": "limit", "in": "query", "schema": limit}],
        "Alerts",
        _400="err",
        _503="err",
    )


_attach_history_alerts(OPENAPI)


# -- what-if on the live book (docs/whatif.md) ------------------------------------------
# Bounds here are the code's (aggregator/whatif.py, risk/whatif.py MAX_RISE): a body
# inside the schema is answered 200, or 404 when it names an asset, LST, chain or model
# that is not configured; outside it, 400 naming the field.
_RISE = 1000.0
# Every field may be null or left out: its default (docs/whatif.md).
_SHOCKS = {
    "type": ["object", "null"],
    "description": "asset -> relative change (-0.3: a 30% fall)",
    "additionalProperties": {"type": "number", "minimum": -1, "maximum": _RISE},
}
_NAMES = {"type": ["array", "null"], "items": {"type": "string"}}
_CELL = _obj(
    ["accounts", "collateral_usd", "debt_usd"],
    accounts={"type": "integer", "minimum": 0},
    collateral_usd=_NUM,
    debt_usd=_NUM,
)
_TIER_COUNTS = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}
_WHATIF_SCHEMAS: dict[str, Any] = {
    "WhatIfRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "shocks": _SHOCKS,
            "depegs": {**_SHOCKS, "description": "LST -> relative change against its underlying"},
            "vol": {"type": ["number", "null"], "exclusiveMinimum": -1, "maximum": _RISE},
            "chains_down": _NAMES,
            "models": _NAMES,
            "limit": {"type": ["integer", "null"], "minimum": 1, "maximum": 1000},
            "cursor": {"type": ["string", "null"], "pattern": "^[0-9]{1,18}$"},
            "max_slippage": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1},
        },
    },
    "WhatIfPrice": _obj(
        ["before_usd", "after_usd", "factor", "status_before", "status_after"],
        before_usd=_NUM,
        after_usd=_NUM,
        factor=_NUM,
        status_before=_PRICE_STATUS,
        status_after=_PRICE_STATUS,
        reason=_STR_OR_NULL,
        sigma_before=_NUM,
        sigma_after=_NUM,
    ),
    "WhatIfAccount": _obj(
        ["account", "hf_before", "hf_after", "tier_before", "tier_after", "plan", "repay_usd"],
        account=_CHECKSUMMED,
        hf_before={"type": ["number", "null"], "description": "null when infinite"},
        hf_after={"type": ["number", "null"], "description": "null when infinite"},
        tier_before=_TIER,
        tier_after=_TIER,
        collateral_usd=_NUM,
        debt_usd=_NUM,
        plan={"enum": ["partial", "full", "none"]},
        repay_usd=_NUM,
        seize_usd=_NUM,
        seize={
            "type": "array",
            "items": _obj(
                ["chain", "asset", "usd"],
                chain={"type": "string"},
                asset={"type": "string"},
                usd=_NUM,
            ),
        },
        seize_by_chain={"type": "object", "additionalProperties": _NUM},
        bad_debt_usd=_NUM,
    ),
    "WhatIfModel": _obj(
        [
            "pushed",
            "tiers_before",
            "tiers_after",
            "transitions",
            "bad_debt_usd",
            "liquidations",
            "accounts",
        ],
        pushed={"type": "boolean"},
        tiers_before=_TIER_COUNTS,
        tiers_after=_TIER_COUNTS,
        transitions={
            "type": "object",
            "description": "tier before -> tier after -> accounts, collateral and debt (after)",
            "additionalProperties": {"type": "object", "additionalProperties": _CELL},
        },
        degraded_after={"type": "integer", "minimum": 0},
        bad_debt_usd=_NUM,
        bad_debt_accounts={"type": "integer", "minimum": 0},
        liquidations=_obj(
            ["newly_liquidatable", "liquidatable_after", "repay_usd", "seize_usd", "volume"],
            newly_liquidatable={"type": "integer", "minimum": 0},
            liquidatable_after={"type": "integer", "minimum": 0},
            repay_usd=_NUM,
            seize_usd=_NUM,
            volume={
                "type": "array",
                "items": _obj(
                    ["asset", "chain", "seize_usd", "accounts"],
                    asset={"type": "string"},
                    chain={"type": "string"},
                    seize_usd=_NUM,
                    accounts={"type": "integer", "minimum": 0},
                    depth_usd=_NUM,
                    impact=_NUM,
                    sellable_usd=_NUM,
                    liquidity_source={"type": "string"},
                ),
            },
        ),
        accounts=_obj(
            ["total", "items", "next_cursor"],
            total={"type": "integer", "minimum": 0},
            items={"type": "array", "items": {"$ref": "#/components/schemas/WhatIfAccount"}},
            next_cursor={"type": ["string", "null"], "pattern": "^[0-9]{1,18}$"},
        ),
    ),
    "WhatIf": _obj(
        ["computed_at", "accounts", "scenario", "prices", "models", "unavailable"],
        computed_at={"type": "number"},
        accounts={"type": "integer", "minimum": 0},
        scenario={"type": "object"},
        prices={
            "type": "object",
            "additionalProperties": {"$ref": "#/components/schemas/WhatIfPrice"},
        },
        models={
            "type": "object",
            "additionalProperties": {"$ref": "#/components/schemas/WhatIfModel"},
        },
        unavailable={"type": "object", "additionalProperties": {"type": "string"}},
    ),
}


def _attach_whatif(doc: dict[str, Any]) -> None:
    doc["components"]["schemas"].update(_WHATIF_SCHEMAS)
    doc["paths"]["/v1/whatif"] = {
        "post": {
            "summary": "What-if on the live book: price shocks, LST de-pegs, a volatility "
            "shift, chains down; tier transitions, liquidations, volume and bad debt per model",
            "requestBody": {
                "required": False,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/WhatIfRequest"}}
                },
            },
            "responses": {
                "200": {
                    "description": "The what-if's figures (docs/whatif.md)",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/WhatIf"}}
                    },
                },
                "400": _ERR,
                "404": _ERR,
                "503": _ERR,
                "500": _ERR,
            },
        }
    }


_attach_whatif(OPENAPI)


# -- cross-chain seize vouchers (aggregator/claims.py, docs/contracts.md) -------------
_WORD32 = {"type": "string", "pattern": "^0x[0-9a-f]{64}$"}
_CLAIM_SCHEMAS = {
    "SeizeVoucher": _obj(
        ["claimId", "account", "liquidator", "collateralToken", "debtToken", "repaid"],
        claimId=_WORD32,
        account=_CHECKSUMMED,
        liquidator=_CHECKSUMMED,
        collateralToken=_CHECKSUMMED,
        debtToken=_CHECKSUMMED,
        repaid=_RAW_AMOUNT,
    ),
    "ClaimVouchers": _obj(
        ["claims"],
        claims={
            "type": "array",
            "items": _obj(
                [
                    "claim_id",
                    "source_chain",
                    "target_chain",
                    "block_number",
                    "vault",
                    "voucher",
                    "signature",
                ],
                claim_id=_WORD32,
                source_chain={"type": "string"},
                target_chain={"type": "string"},
                block_number={"type": "integer", "minimum": 0},
                vault=_CHECKSUMMED,
                voucher={"$ref": "#/components/schemas/SeizeVoucher"},
                signature={"type": "string", "pattern": "^0x[0-9a-f]{130}$"},
            ),
        },
    ),
    "ClaimNotFinal": _obj(
        ["error", "confirmations", "needed"],
        error={"const": "claim not final"},
        confirmations={"type": "integer", "minimum": 0},
        needed={"type": "integer", "minimum": 0},
        reorged={"type": "boolean"},
        message={"type": "string"},
    ),
}


def _attach_claims(doc: dict[str, Any]) -> None:
    doc["components"]["schemas"].update(_CLAIM_SCHEMAS)

    def body(desc: str, schema: str) -> dict[str, Any]:
        return {
            "description": desc,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
        }

    doc["paths"]["/v1/claims/{chain}/{tx_hash}"] = {
        "post": {
            "summary": "Seize vouchers (EIP-712, signed by the keeper key) for the final "
            "RemoteSeizeClaimed logs of a transaction on `chain`, to submit to the target "
            "chain's CollateralVault.settleRemoteSeize (docs/contracts.md)",
            "parameters": [
                {
                    "name": "chain",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,31}$"},
                    "description": "the configured name of the chain the debt was repaid on",
                },
                {
                    "name": "tx_hash",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^0x[0-9a-fA-F]{64}$"},
                },
            ],
            "responses": {
                "200": body("One voucher per claim of the transaction", "ClaimVouchers"),
                "400": _ERR,
                "404": _ERR,
                "409": body(
                    "Not final yet (or its block was reorged out): confirmations so far and needed",
                    "ClaimNotFinal",
                ),
                "422": _ERR,
                "503": _ERR,
                "500": _ERR,
            },
        }
    }


_attach_claims(OPENAPI)
