"""GET /v1/history/system, /v1/history/accounts/{address} and /v1/alerts over a real
aiohttp server: bad parameters are 400s naming the field, disabled features 503s naming
theirs, and the answers have the documented shapes (checked against /openapi.json)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import jsonschema_rs
import pytest
from aiohttp.test_utils import TestClient, TestServer

from aggregator.api import Api
from aggregator.api_common import ApiError
from aggregator.api_history import MAX_BUCKETS, Window, parse_window
from aggregator.history.config import HistoryConfig
from aggregator.history.queries import HistoryQueries
from aggregator.openapi import OPENAPI
from aggregator.store import Store
from aggregator.store.history_repo import AccountPoint, HistoryRepo
from tests.unit.api.api_fakes import FakeBackend

T0 = 1_765_000_800
ADDR = "0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc"
CHECKSUMMED = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
OTHER = "0x00000000000000000000000000000000000000ff"
LEVELS = [(60, 86400), (3600, 90 * 86400)]


class FakeAlerts:
    def __init__(self) -> None:
        self.limits: list[int] = []

    def view(self, limit: int) -> dict[str, Any]:
        self.limits.append(limit)
        return {"active": [], "recent": [], "webhooks": [], "rules": []}


@pytest.fixture
async def history_client(store: Store) -> AsyncIterator[tuple[TestClient[Any, Any], HistoryRepo]]:
    repo = HistoryRepo(store)
    queries = HistoryQueries(
        HistoryConfig(), repo, in_book=lambda a: a.lower() == OTHER, model="standard"
    )
    api = Api(FakeBackend(), history=queries, alerts=FakeAlerts())
    async with TestClient(TestServer(api.app, host="127.0.0.1")) as c:
        yield c, repo


def documented(path: str, body: Any) -> bool:
    """Does `body` match the 200 schema /openapi.json gives for `path`?"""
    ref = OPENAPI["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
    schema = {**ref["schema"], "components": OPENAPI["components"]}
    jsonschema_rs.Draft202012Validator(schema).validate(body)
    return True


async def test_disabled_features_answer_503_naming_them(client: TestClient[Any, Any]) -> None:
    for path, field in (
        ("/v1/history/system", "history"),
        (f"/v1/history/accounts/{ADDR}", "history"),
        ("/v1/alerts", "alerts"),
    ):
        resp = await client.get(path)
        assert resp.status == 503
        assert (await resp.json())["error"]["field"] == field


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("from=abc", "from"),
        ("from=-5", "from"),
        ("to=1.5", "to"),
        (f"from={T0}&to={T0}", "from"),
        (f"from={T0 + 10}&to={T0}", "from"),
        ("resolution=1m", "resolution"),
        ("resolution=-60", "resolution"),
        ("bogus=1", "bogus"),
        ("from=1&from=2", "from"),
        ("=x", "query"),
    ],
)
async def test_bad_parameters_are_400_naming_the_field(
    history_client: tuple[TestClient[Any, Any], HistoryRepo], query: str, field: str
) -> None:
    client, _ = history_client
    for path in ("/v1/history/system", f"/v1/history/accounts/{ADDR}"):
        resp = await client.get(f"{path}?{query}")
        assert resp.status == 400, (path, query)
        assert (await resp.json())["error"]["field"] == field


async def test_bad_address_and_unknown_account(
    history_client: tuple[TestClient[Any, Any], HistoryRepo],
) -> None:
    client, _ = history_client
    resp = await client.get("/v1/history/accounts/0x1234")
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "address"
    resp = await client.get(f"/v1/history/accounts/{ADDR}")
    assert resp.status == 404 and (await resp.json())["error"]["field"] == "address"
    # In the book but nothing recorded yet: an empty series, not a 404.
    resp = await client.get(f"/v1/history/accounts/{OTHER}")
    assert resp.status == 200 and (await resp.json())["points"] == []


async def test_account_and_system_answers(
    history_client: tuple[TestClient[Any, Any], HistoryRepo],
) -> None:
    client, repo = history_client
    system = {
        "total": {"accounts": 1, "collateral_usd": 10.0, "debt_usd": 5.0, "bp_usd": 1.0},
        "tiers": {
            t: {"accounts": 0, "accounts_max": 0, "collateral_usd": 0.0, "debt_usd": 0.0,
                "bp_usd": 0.0}
            for t in ("healthy", "warning", "liquidatable", "insolvent")
        },
        "chains": {"alpha": {"collateral_usd": 10.0, "debt_usd": 5.0, "credit_usd": 0.5}},
    }  # fmt: skip
    for k, hf in enumerate([math.inf, 1.05, 0.98]):
        tier = 0 if hf > 1.1 else (1 if hf >= 1 else 2)
        p = AccountPoint(ADDR, hf, 1.0, tier, 10.0, 5.0, req_standard=5.0)
        await repo.write(T0 + 60 * k, [60, 3600], system, [p])
    q = f"from={T0 + 30}&to={T0 + 600}"
    # (`auto` would pick hours: T0 is older than the minute level's day.)
    resp = await client.get(
        f"/v1/history/accounts/{ADDR.upper().replace('0X', '0x')}?{q}&resolution=60"
    )
    body = await resp.json()
    assert resp.status == 200, body
    assert documented("/v1/history/accounts/{address}", body)
    assert body["account"] == CHECKSUMMED and body["resolution_s"] == 60
    pts = body["points"]
    # The point in force at `from` (T0, no debt) first, then the two later ones.
    assert [p["t"] for p in pts] == [T0, T0 + 60, T0 + 120]
    assert (pts[0]["hf"], pts[0]["hf_text"]) == (None, "inf")
    assert (pts[2]["hf"], pts[2]["tier"]) == (0.98, "liquidatable")
    assert pts[2]["requirement_usd"] == {"standard": 5.0, "portfolio": None, "var": None}

    resp = await client.get(f"/v1/history/accounts/{ADDR}?{q}")
    (hour,) = (await resp.json())["points"]
    assert (hour["hf"], hour["hf_min"], hour["tier"], hour["tier_worst"]) == (
        0.98, 0.98, "liquidatable", "liquidatable",
    )  # fmt: skip
    assert hour["samples"] == 3

    resp = await client.get(f"/v1/history/system?{q}&resolution=60")
    body = await resp.json()
    assert documented("/v1/history/system", body)
    assert [p["t"] for p in body["points"]] == [T0, T0 + 60, T0 + 120]


async def test_alerts_limit(history_client: tuple[TestClient[Any, Any], HistoryRepo]) -> None:
    client, _ = history_client
    for bad in ("0", "1001", "x", "-1", "1.5"):
        resp = await client.get(f"/v1/alerts?limit={bad}")
        assert resp.status == 400 and (await resp.json())["error"]["field"] == "limit"
    resp = await client.get("/v1/alerts?limit=7")
    body = await resp.json()
    assert documented("/v1/alerts", body)


def test_auto_resolution_picks_the_finest_level_holding_from() -> None:
    now = T0 + 10 * 86400
    assert parse_window({"from": str(now - 3600)}, LEVELS, now) == Window(now - 3600, now, 60)
    # Older than the minute level keeps: hours.
    assert parse_window({"from": str(now - 2 * 86400)}, LEVELS, now).step_s == 3600
    # Default window: the last day.
    assert parse_window({}, LEVELS, now) == Window(now - 86400, now, 60)
    # A number: the finest level at least that coarse, else the coarsest.
    assert parse_window({"resolution": "7"}, LEVELS, now).step_s == 60
    assert parse_window({"resolution": "61"}, LEVELS, now).step_s == 3600
    assert parse_window({"resolution": "999999"}, LEVELS, now).step_s == 3600
    # Too many buckets: the window is shortened at its start.
    w = parse_window({"from": "0", "resolution": "60"}, LEVELS, now)
    assert (w.start, w.end, w.step_s) == (now - 60 * MAX_BUCKETS, now, 60)
    with pytest.raises(ApiError) as err:
        parse_window({"resolution": "1h"}, LEVELS, now)
    assert err.value.field == "resolution"
