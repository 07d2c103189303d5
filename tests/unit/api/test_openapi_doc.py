"""The OpenAPI document: valid 3.1, exactly the served routes, and the same rules as the code."""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.api import MAX_LIMIT, TIERS, Api
from aggregator.openapi import OPENAPI
from tests.unit.api.api_fakes import KNOWN
from tests.unit.api.openapi_check import (
    documented_routes,
    openapi_problems,
    schema_accepts,
    served_routes,
)

TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=30)


def test_document_is_valid_openapi_3_1() -> None:
    assert openapi_problems(OPENAPI) == []


def test_documented_paths_are_exactly_the_served_routes(api: Api) -> None:
    served = served_routes(api.app)
    # aiohttp serves HEAD with every GET; OpenAPI documents GET (HEAD is implied).
    assert documented_routes(OPENAPI) == {p: m - {"head"} for p, m in served.items()}


def test_documented_enums_and_bounds_are_the_codes() -> None:
    params = {p["name"]: p["schema"] for p in OPENAPI["paths"]["/v1/accounts"]["get"]["parameters"]}
    assert params["tier"]["enum"] == list(TIERS)
    assert (params["limit"]["minimum"], params["limit"]["maximum"]) == (1, MAX_LIMIT)


def _mutations() -> dict[str, Any]:
    def drop_required(d: dict[str, Any]) -> None:
        d["paths"]["/v1/accounts/{address}"]["get"]["parameters"][0].pop("required")

    def bad_ref(d: dict[str, Any]) -> None:
        d["paths"]["/v1/accounts"]["get"]["responses"]["400"] = {"$ref": "#/components/x/Y"}

    def old_version(d: dict[str, Any]) -> None:
        d["openapi"] = "3.0.3"

    def undeclared_template(d: dict[str, Any]) -> None:
        d["paths"]["/v1/prices/{asset}"]["get"]["parameters"] = []

    def bad_status(d: dict[str, Any]) -> None:
        d["paths"]["/healthz"]["get"]["responses"]["2xx"] = {"description": "x"}

    def no_responses(d: dict[str, Any]) -> None:
        d["paths"]["/v1/chains"]["get"]["responses"] = {}

    def nan_in_doc(d: dict[str, Any]) -> None:
        d["info"]["x-nan"] = float("nan")

    return {
        f.__name__: f
        for f in (
            drop_required,
            bad_ref,
            old_version,
            undeclared_template,
            bad_status,
            no_responses,
            nan_in_doc,
        )
    }


@pytest.mark.parametrize("mutate", _mutations().values(), ids=_mutations().keys())
def test_checker_catches_broken_documents(mutate: Any) -> None:
    doc = copy.deepcopy(OPENAPI)
    mutate(doc)
    assert openapi_problems(doc) != []


def _schema(path: str, name: str) -> dict[str, Any]:
    for p in OPENAPI["paths"][path]["get"]["parameters"]:
        if p["name"] == name:
            schema: dict[str, Any] = p["schema"]
            return schema
    raise KeyError(name)


QUERY_VALUES = st.one_of(
    TEXT,
    st.integers(-5, 2 * MAX_LIMIT).map(str),
    st.from_regex(r"[0-9]{1,21}", fullmatch=True),
    st.sampled_from([*TIERS, "", "Healthy", " 1", "1 ", "+1", "0x10", "1e3", "²", "١٢"]),
)

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@FUZZ
@given(name=st.sampled_from(["tier", "limit", "cursor"]), value=QUERY_VALUES)
async def test_query_accepted_exactly_when_the_document_says(
    client: TestClient[Any, Any], name: str, value: str
) -> None:
    resp = await client.get(f"/v1/accounts?{name}={quote(value, safe='')}")
    body = await resp.json()
    accepted = schema_accepts(_schema("/v1/accounts", name), value)
    assert resp.status == (200 if accepted else 400), (name, value, body)
    if not accepted:
        assert body["error"]["field"] == name


ADDRESSES = st.one_of(
    TEXT,
    st.from_regex(r"0[xX][0-9a-fA-F]{38,42}", fullmatch=True),
    st.text(alphabet="0123456789abcdefABCDEFxX", min_size=38, max_size=44),
    st.just(KNOWN),
)


@FUZZ
@given(address=ADDRESSES, health=st.booleans())
async def test_address_accepted_exactly_when_the_document_says(
    client: TestClient[Any, Any], address: str, health: bool
) -> None:
    if address in ("", ".", ".."):
        return  # not a path segment: a different route (or none) answers
    path = f"/v1/accounts/{quote(address, safe='')}" + ("/health" if health else "")
    resp = await client.get(path)
    body = await resp.json()
    if not schema_accepts(_schema("/v1/accounts/{address}", "address"), address):
        assert (resp.status, body["error"]["field"]) == (400, "address"), (address, body)
    elif address.lower() == KNOWN.lower():
        assert resp.status == 200
    else:
        assert (resp.status, body["error"]["field"]) == (404, "address")
