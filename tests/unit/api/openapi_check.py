"""Checks of the OpenAPI 3.1 document against itself and against what the aiohttp app serves.

No validator package is installed (and none is to be added), so the rules an OpenAPI 3.1
document must follow and that this project's document can break are checked here.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
PATH_ITEM_KEYS = HTTP_METHODS | {"$ref", "summary", "description", "servers", "parameters"}
STATUS_KEY = re.compile(r"[1-5](?:[0-9]{2}|XX)|default")
MEDIA_TYPE = re.compile(r"[a-z]+/[a-z0-9.+-]+")


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    if not ref.startswith("#/"):
        raise KeyError(f"only local refs are used here, got {ref}")
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        out = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        for v in node.values():
            out += _refs(v)
        return out
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def response_of(doc: dict[str, Any], resp: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = _resolve(doc, resp["$ref"]) if "$ref" in resp else resp
    return out


def openapi_problems(doc: dict[str, Any]) -> list[str]:
    """Every way `doc` is not a valid OpenAPI 3.1 document (of the kinds checked)."""
    problems: list[str] = []
    try:
        json.dumps(doc, allow_nan=False)
    except (TypeError, ValueError) as exc:
        problems.append(f"not strict JSON: {exc}")
    if not re.fullmatch(r"3\.1\.[0-9]+", str(doc.get("openapi"))):
        problems.append(f"openapi must be 3.1.x, got {doc.get('openapi')!r}")
    info = doc.get("info", {})
    for key in ("title", "version"):
        if not isinstance(info.get(key), str):
            problems.append(f"info.{key} must be a string")
    for ref in _refs(doc):
        try:
            _resolve(doc, ref)
        except (KeyError, TypeError):
            problems.append(f"unresolvable $ref {ref}")
    for name, resp in doc.get("components", {}).get("responses", {}).items():
        if not isinstance(resp.get("description"), str):
            problems.append(f"components.responses.{name}: description missing")
    paths = doc.get("paths")
    if not isinstance(paths, dict) or not paths:
        return [*problems, "paths missing or empty"]
    op_ids: list[str] = []
    for path, item in paths.items():
        where = f"paths[{path}]"
        if not path.startswith("/"):
            problems.append(f"{where}: must start with /")
        templated = re.findall(r"{([^{}/]+)}", path)
        if len(set(templated)) != len(templated):
            problems.append(f"{where}: repeated template name")
        if extra := set(item) - PATH_ITEM_KEYS:
            problems.append(f"{where}: unknown keys {sorted(extra)}")
        for method in set(item) & HTTP_METHODS:
            op = item[method]
            w = f"{where}.{method}"
            if "operationId" in op:
                op_ids.append(op["operationId"])
            seen: set[tuple[str, str]] = set()
            for raw in [*item.get("parameters", []), *op.get("parameters", [])]:
                p = response_of(doc, raw)
                if p.get("in") not in {"path", "query", "header", "cookie"}:
                    problems.append(f"{w}: parameter {p.get('name')!r} has bad 'in'")
                if not isinstance(p.get("name"), str):
                    problems.append(f"{w}: parameter without a name")
                if ("schema" in p) == ("content" in p):
                    problems.append(f"{w}: parameter {p.get('name')} needs schema xor content")
                if p.get("in") == "path" and p.get("required") is not True:
                    problems.append(f"{w}: path parameter {p.get('name')} must be required")
                ident = (str(p.get("name")), str(p.get("in")))
                if ident in seen:
                    problems.append(f"{w}: duplicate parameter {ident}")
                seen.add(ident)
            declared = {n for n, loc in seen if loc == "path"}
            if declared != set(templated):
                problems.append(
                    f"{w}: path parameters {sorted(declared)} != template {sorted(templated)}"
                )
            responses = op.get("responses")
            if not isinstance(responses, dict) or not responses:
                problems.append(f"{w}: responses missing")
                continue
            for code, resp in responses.items():
                if not STATUS_KEY.fullmatch(code):
                    problems.append(f"{w}: bad response key {code!r}")
                try:
                    r = response_of(doc, resp)
                except (KeyError, TypeError):
                    continue  # reported as an unresolvable $ref
                if not isinstance(r.get("description"), str):
                    problems.append(f"{w}: response {code} has no description")
                for media in r.get("content", {}):
                    if not MEDIA_TYPE.fullmatch(media):
                        problems.append(f"{w}: response {code} bad media type {media!r}")
    if len(set(op_ids)) != len(op_ids):
        problems.append("duplicate operationId")
    return problems


def served_routes(app: web.Application) -> dict[str, set[str]]:
    """{path template: methods} the app's router serves (HEAD comes with every GET)."""
    out: dict[str, set[str]] = {}
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        assert path is not None, info
        out.setdefault(path, set()).add(route.method.lower())
    return out


def documented_routes(doc: dict[str, Any]) -> dict[str, set[str]]:
    return {p: set(item) & HTTP_METHODS for p, item in doc["paths"].items()}


def documented_codes(doc: dict[str, Any], path: str, method: str = "get") -> set[int]:
    return {int(c) for c in doc["paths"][path][method]["responses"]}


def template_regex(path: str) -> re.Pattern[str]:
    """The path template as the app matches it (a {name} is one non-empty segment)."""
    parts = re.split(r"({[^{}/]+})", path)
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts))


def matching_template(doc: dict[str, Any], path: str) -> str | None:
    for template in doc["paths"]:
        if template_regex(template).fullmatch(path):
            return template
    return None


def schema_accepts(schema: dict[str, Any], raw: str) -> bool:
    """Does a query/path string satisfy a documented parameter schema (the kinds used)?"""
    if schema.get("type") == "integer":
        if re.fullmatch(r"-?[0-9]+", raw) is None:
            return False
        value = int(raw)
        return schema.get("minimum", value) <= value <= schema.get("maximum", value)
    if "enum" in schema and raw not in schema["enum"]:
        return False
    pattern = schema.get("pattern")
    # ECMA-262 "$" is end of input; Python's also matches before a final "\n": fullmatch.
    return pattern is None or re.fullmatch(pattern.strip("^$"), raw) is not None
