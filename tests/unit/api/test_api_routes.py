"""Every route of aggregator.api.Api over real HTTP, against an in-test backend."""

from __future__ import annotations

import json
from typing import Any

from aiohttp.test_utils import TestClient

from aggregator.openapi import OPENAPI
from tests.unit.api.api_fakes import DEBT_FREE, KNOWN, FakeBackend

CHECKSUMMED_DEBT_FREE = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


def strict_json(text: str) -> Any:
    """json.loads that refuses NaN/Infinity (Python's default accepts them)."""

    def refuse(token: str) -> Any:
        raise AssertionError(f"non-JSON constant {token} in body: {text[:200]}")

    return json.loads(text, parse_constant=refuse)


async def get(client: TestClient[Any, Any], path: str) -> tuple[int, Any]:
    resp = await client.get(path)
    text = await resp.text()
    assert resp.content_type == "application/json", (path, resp.content_type, text[:200])
    return resp.status, strict_json(text)


async def test_healthz(client: TestClient[Any, Any]) -> None:
    assert await get(client, "/healthz") == (200, {"status": "alive"})


async def test_readyz_ready_and_not_ready(
    client: TestClient[Any, Any], backend: FakeBackend
) -> None:
    assert await get(client, "/readyz") == (200, {"status": "ready", "reasons": []})
    backend.ready = (False, ["chain a: syncing (indexed 1, head 9)"])
    assert await get(client, "/readyz") == (
        503,
        {"status": "not ready", "reasons": ["chain a: syncing (indexed 1, head 9)"]},
    )


async def test_metrics_is_prometheus_text(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    assert await resp.text() == "# HELP agg_up test\nagg_up 1\n"


async def test_openapi_json_is_the_document(client: TestClient[Any, Any]) -> None:
    assert await get(client, "/openapi.json") == (200, OPENAPI)


async def test_account_detail_any_case_in_checksummed_to_backend(
    client: TestClient[Any, Any], backend: FakeBackend
) -> None:
    for spelling in (KNOWN, KNOWN.lower(), "0x" + KNOWN[2:].upper()):
        status, body = await get(client, f"/v1/accounts/{spelling}")
        assert status == 200
        assert body["account"] == KNOWN
    assert [c for c in backend.calls if c[0] == "account_detail"] == [
        ("account_detail", (KNOWN,))
    ] * 3


async def test_account_detail_non_finite_numbers_become_null(
    client: TestClient[Any, Any],
) -> None:
    status, body = await get(client, f"/v1/accounts/{DEBT_FREE}")
    assert status == 200
    assert body["hf"] is None and body["hf_text"] == "inf"
    # numpy scalars: inf -> null, int64 -> a JSON number (not the string "7")
    assert body["chains"] == [{"chain": "a", "value": None, "blocks": 7}]
    assert body["weights"] == [0.8, None]


async def test_account_health_compact(client: TestClient[Any, Any]) -> None:
    status, body = await get(client, f"/v1/accounts/{DEBT_FREE}/health")
    assert status == 200
    assert body["account"] == CHECKSUMMED_DEBT_FREE
    assert body["hf"] is None and body["hf_text"] == "inf"
    assert (await get(client, f"/v1/accounts/{KNOWN}/health"))[1]["hf"] == 1.5


async def test_unknown_account_is_404_naming_address(client: TestClient[Any, Any]) -> None:
    other = "0x" + "11" * 20
    for path in (f"/v1/accounts/{other}", f"/v1/accounts/{other}/health"):
        status, body = await get(client, path)
        assert status == 404
        assert body["error"]["field"] == "address"
        assert "0x1111111111111111111111111111111111111111" in body["error"]["message"]


async def test_accounts_list_passes_parsed_query_and_pages(
    client: TestClient[Any, Any], backend: FakeBackend
) -> None:
    status, body = await get(client, "/v1/accounts?limit=1")
    assert status == 200
    assert [a["account"] for a in body["accounts"]] == [KNOWN]
    assert body["next_cursor"] == "1"
    status, body = await get(client, f"/v1/accounts?limit=1&cursor={body['next_cursor']}")
    assert [a["account"] for a in body["accounts"]] == [CHECKSUMMED_DEBT_FREE]
    assert body["accounts"][0]["hf"] is None
    assert body["next_cursor"] is None
    status, body = await get(client, "/v1/accounts?tier=liquidatable&limit=1000&cursor=0")
    assert (status, body) == (200, {"accounts": [], "next_cursor": None})
    assert [c for c in backend.calls if c[0] == "list_accounts"] == [
        ("list_accounts", (None, 1, None)),
        ("list_accounts", (None, 1, "1")),
        ("list_accounts", ("liquidatable", 1000, "0")),
    ]
    await get(client, "/v1/accounts")
    assert backend.calls[-1] == ("list_accounts", (None, 100, None))


async def test_prices_never_emit_nan(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/v1/prices")
    text = await resp.text()
    assert resp.status == 200
    assert "NaN" not in text and "Infinity" not in text
    weth = strict_json(text)["prices"]["WETH"]
    assert weth["value"] == 3000.0 and weth["spread"] is None
    assert weth["sources"] == [{"source": "a", "value": None, "failure": "stale"}]


async def test_price_of_one_asset_and_unknown_asset(client: TestClient[Any, Any]) -> None:
    status, body = await get(client, "/v1/prices/WETH")
    assert status == 200 and body["asset"] == "WETH"
    status, body = await get(client, "/v1/prices/NOPE")
    assert status == 404
    assert body["error"] == {"field": "asset", "message": "unknown asset 'NOPE'"}
    # An absurd asset name is echoed cut short, never whole.
    status, body = await get(client, "/v1/prices/" + "A" * 3000)
    assert status == 404 and len(body["error"]["message"]) < 80


async def test_chains(client: TestClient[Any, Any]) -> None:
    assert await get(client, "/v1/chains") == (
        200,
        {"chains": [{"name": "a", "head_block": 10, "lag": 0}]},
    )


async def test_head_is_served_for_every_get_route(client: TestClient[Any, Any]) -> None:
    resp = await client.head("/healthz")
    assert resp.status == 200
