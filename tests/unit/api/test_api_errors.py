"""Bad input -> 4xx JSON naming the field; a failing backend -> JSON 500 with a logged id."""

from __future__ import annotations

import json
import logging
import re
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient

from tests.unit.api.api_fakes import KNOWN, FakeBackend

HEX40 = KNOWN[2:]

BAD_ADDRESSES = {
    "short": "0x1234",
    "39 hex": "0x" + HEX40[:-1],
    "41 hex": "0x" + HEX40 + "a",
    "non-hex": "0x" + "g" * 40,
    "no 0x": HEX40,
    "capital 0X": "0X" + HEX40,
    "0x only": "0x",
    "unicode digits": "0x" + "\u0663" * 40,  # ARABIC-INDIC DIGIT THREE
    "fullwidth": "0x" + "\uff41" * 40,  # FULLWIDTH LATIN SMALL LETTER A
    "emoji": "0x" + "\U0001f600" * 40,
    "very long": "0x" + "ab" * 2500,
    "space padded": " " + KNOWN,
    "trailing newline": KNOWN + "\n",
    "nul byte": KNOWN[:-1] + "\x00",
    "decimal": "1234567890" * 4,
}


def error_of(text: str, status: int) -> dict[str, Any]:
    body = json.loads(text)
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"field", "message"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "Traceback" not in text
    err: dict[str, Any] = body["error"]
    if status < 500:  # bad input always names what was bad
        assert isinstance(err["field"], str) and err["field"], body
    return err


async def fetch(client: TestClient[Any, Any], method: str, path: str, **kw: Any) -> Any:
    resp = await client.request(method, path, **kw)
    text = await resp.text()
    assert resp.content_type == "application/json", (path, resp.status, text[:200])
    return resp, text


@pytest.mark.parametrize("route", ["/v1/accounts/{}", "/v1/accounts/{}/health"])
@pytest.mark.parametrize("raw", BAD_ADDRESSES.values(), ids=BAD_ADDRESSES.keys())
async def test_bad_address_is_400_naming_address(
    client: TestClient[Any, Any], backend: FakeBackend, route: str, raw: str
) -> None:
    # Percent-encoded here (yarl would strip the whitespace): the server decodes it.
    resp, text = await fetch(client, "GET", route.format(quote(raw, safe="")))
    assert resp.status == 400
    err = error_of(text, 400)
    assert err["field"] == "address"
    assert "address" in err["message"]
    assert len(err["message"]) < 200  # the input is quoted cut short, not echoed whole
    assert not [c for c in backend.calls if c[0].startswith("account")]


QUERY_CASES = [
    ("tier=rich", "tier"),
    ("tier=", "tier"),
    ("tier=Healthy", "tier"),
    ("limit=0", "limit"),
    ("limit=-1", "limit"),
    ("limit=1001", "limit"),
    ("limit=abc", "limit"),
    ("limit=1e3", "limit"),
    ("limit=", "limit"),
    ("limit=1.5", "limit"),
    ("limit=%205", "limit"),
    ("limit=1_0", "limit"),
    ("limit=%D9%A5", "limit"),  # ARABIC-INDIC DIGIT FIVE: int() would take it
    ("limit=" + "9" * 5000, "limit"),
    ("limit=-" + "9" * 5000, "limit"),
    ("limit=1" + "0" * 5000, "limit"),
    ("cursor=abc", "cursor"),
    ("cursor=-1", "cursor"),
    ("cursor=1.0", "cursor"),
    ("cursor=", "cursor"),
    ("cursor=" + "1" * 19, "cursor"),
    ("cursor=%C2%B2", "cursor"),  # SUPERSCRIPT TWO: isdigit() but int() raises
    ("cursor=%E2%91%A0", "cursor"),  # CIRCLED DIGIT ONE
    ("order=asc", "order"),
    ("=", "query"),
    ("limit=5&=x", "query"),
    ("limit=10&page=2", "page"),
    ("tier=healthy&tier=warning", "tier"),
    ("limit=1&limit=2", "limit"),
]


@pytest.mark.parametrize(("query", "field"), QUERY_CASES, ids=[q[:40] for q, _ in QUERY_CASES])
async def test_bad_accounts_query_is_400_naming_the_field(
    client: TestClient[Any, Any], backend: FakeBackend, query: str, field: str
) -> None:
    resp, text = await fetch(client, "GET", f"/v1/accounts?{query}")
    assert resp.status == 400, text
    assert error_of(text, 400)["field"] == field
    assert not [c for c in backend.calls if c[0] == "list_accounts"]


async def test_limit_bounds_are_inclusive(
    client: TestClient[Any, Any], backend: FakeBackend
) -> None:
    for limit in ("1", "1000", "0001", "0" * 5000 + "7"):
        resp, _ = await fetch(client, "GET", f"/v1/accounts?limit={limit}")
        assert resp.status == 200
    assert [c[1][1] for c in backend.calls] == [1, 1000, 1, 7]


async def test_unknown_asset_is_404_naming_asset(client: TestClient[Any, Any]) -> None:
    resp, text = await fetch(client, "GET", "/v1/prices/%F0%9F%98%80")
    assert resp.status == 404
    assert error_of(text, 404)["field"] == "asset"


@pytest.mark.parametrize(
    "path",
    [
        "/nope",
        "/v1",
        "/v1/accounts/",
        f"/v1/accounts/{KNOWN}/health/x",
        "/v1/prices/",
        "/v2/chains",
    ],
)
async def test_unknown_route_is_json_404(client: TestClient[Any, Any], path: str) -> None:
    resp, text = await fetch(client, "GET", path)
    assert resp.status == 404
    err = error_of(text, 404)
    assert err["field"] == "path"
    assert path in err["message"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize(
    "path", ["/healthz", "/v1/accounts", f"/v1/accounts/{KNOWN}", "/v1/stream"]
)
async def test_wrong_method_is_json_405_with_allow(
    client: TestClient[Any, Any], method: str, path: str
) -> None:
    resp, text = await fetch(client, method, path, data=b"{}")
    assert resp.status == 405
    assert error_of(text, 405)["field"] == "method"
    assert set(resp.headers["Allow"].split(",")) == {"GET", "HEAD"}


BACKEND_ROUTES = {
    "readiness": "/readyz",
    "metrics_text": "/metrics",
    "account_detail": f"/v1/accounts/{KNOWN}",
    "account_health": f"/v1/accounts/{KNOWN}/health",
    "list_accounts": "/v1/accounts",
    "prices": "/v1/prices",
    "price": "/v1/prices/WETH",
    "chains": "/v1/chains",
    "subscribe": "/v1/stream",
}


@pytest.mark.parametrize(("method", "path"), BACKEND_ROUTES.items())
async def test_backend_failure_is_json_500_with_logged_id(
    client: TestClient[Any, Any],
    backend: FakeBackend,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
) -> None:
    backend.raise_in = method
    with caplog.at_level(logging.ERROR, logger="aggregator.api"):
        resp, text = await fetch(client, "GET", path)
    assert resp.status == 500
    err = error_of(text, 500)
    assert err["field"] is None
    assert f"backend exploded in {method}" not in text  # internals stay in the log
    m = re.search(r"id ([0-9a-f]{12})", err["message"])
    assert m, err
    logged = [r for r in caplog.records if m.group(1) in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].exc_info is not None
    assert f"backend exploded in {method}" in str(logged[0].exc_info[1])
    assert path.split("?", maxsplit=1)[0] in logged[0].getMessage()


async def test_error_ids_differ_per_failure(
    client: TestClient[Any, Any], backend: FakeBackend
) -> None:
    backend.raise_in = "chains"
    ids = set()
    for _ in range(3):
        _, text = await fetch(client, "GET", "/v1/chains")
        ids.add(json.loads(text)["error"]["message"])
    assert len(ids) == 3
