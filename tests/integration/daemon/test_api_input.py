"""The live daemon's API under bad input: never a 5xx, every 4xx a JSON error naming the
field, and /openapi.json a valid OpenAPI 3.1 document of exactly the routes it serves.

Runs on SQLite and PostgreSQL (the `daemon` fixture). Each test starts one daemon and
throws many requests at it; hypothesis examples share that daemon.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from aiohttp import ClientSession, ClientTimeout
from daemon_helpers import wait_ready
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from yarl import URL

from aggregator.api import MAX_LIMIT, TIERS
from aggregator.daemon import Daemon
from aggregator.openapi import OPENAPI
from tests.unit.api.openapi_check import (
    documented_codes,
    documented_routes,
    matching_template,
    openapi_problems,
    served_routes,
)

TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
SEGMENT = TEXT.map(lambda s: quote(s, safe=""))
HEX = "0123456789abcdefABCDEF"
PARAM_VALUES = st.one_of(
    TEXT,
    st.from_regex(r"0[xX][0-9a-fA-F]{38,42}", fullmatch=True),
    st.text(alphabet=HEX + "xX", min_size=38, max_size=44),
    st.sampled_from(["WETH", "wstETH", "USDC", "weth", "ETH", "0x" + "0" * 40]),
)
QUERY_KEYS = st.one_of(st.sampled_from(["tier", "limit", "cursor"]), TEXT)
QUERY_VALUES = st.one_of(
    TEXT,
    st.integers(-5, 2 * MAX_LIMIT).map(str),
    st.from_regex(r"[0-9]{1,21}", fullmatch=True),
    st.sampled_from([*TIERS, "", "1e3", "²", "١٢", " 7", "1_0", "0x10"]),
)
QUERY = st.one_of(
    st.lists(st.tuples(QUERY_KEYS, QUERY_VALUES), max_size=4).map(
        lambda kv: "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in kv)
    ),
    # Raw, not percent-encoded by us: stray "%", "&&", "=" without a name, ";", "+".
    st.from_regex(r"[A-Za-z0-9=&%;+._~\-]{0,40}", fullmatch=True),
)
STREAM = "/v1/stream"  # a GET there never ends: it is exercised in tests/unit/api


def _template_path(template: str, values: list[str]) -> str:
    out = template
    for v in values:
        out = out.replace(out[out.index("{") : out.index("}") + 1], quote(v, safe=""), 1)
    return out


TEMPLATED = st.sampled_from(sorted(OPENAPI["paths"])).flatmap(
    lambda t: st.lists(PARAM_VALUES, min_size=t.count("{"), max_size=t.count("{")).map(
        lambda vs: _template_path(t, vs)
    )
)
PATHS = st.one_of(
    TEMPLATED,
    st.lists(SEGMENT, max_size=5).map(lambda segs: "/" + "/".join(segs)),
    st.lists(st.sampled_from(["v1", "accounts", "prices", "chains", "health", ""]), max_size=4).map(
        lambda segs: "/" + "/".join(segs)
    ),
)
METHODS = st.sampled_from(["GET"] * 6 + ["HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])


async def aget(d: Daemon, path: str) -> tuple[int, Any]:
    """GET `path` (already percent-encoded) from the daemon; JSON bodies parsed strictly."""
    url = URL(f"http://127.0.0.1:{d.api.port}{path}", encoded=True)
    async with (
        ClientSession(timeout=ClientTimeout(total=10)) as session,
        session.get(url) as resp,
    ):
        text = await resp.text()
        is_json = resp.content_type == "application/json"
        return resp.status, strict_json(text) if is_json else text


NOT_READY_503 = {
    "/v1/accounts",
    "/v1/accounts/{address}",
    "/v1/accounts/{address}/health",
    "/v1/liquidity",
}


def strict_json(text: str) -> Any:
    def refuse(token: str) -> Any:
        raise AssertionError(f"non-JSON constant {token}: {text[:200]}")

    return json.loads(text, parse_constant=refuse)


def check_error_body(status: int, ctype: str, text: str, where: str) -> dict[str, Any]:
    assert ctype == "application/json", f"{where}: {status} with {ctype}: {text[:200]}"
    body = strict_json(text)
    assert isinstance(body, dict) and set(body) == {"error"}, f"{where}: {body}"
    err = body["error"]
    assert set(err) == {"field", "message"}, f"{where}: {body}"
    assert isinstance(err["field"], str) and err["field"], f"{where}: no field named: {body}"
    assert isinstance(err["message"], str) and err["message"], f"{where}: {body}"
    assert "Traceback" not in text
    return dict(err)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(method=METHODS, path=PATHS, query=QUERY)
# Pinned: the daemon answered this with a 500 before cursors were parsed as ASCII digits.
@example(method="GET", path="/v1/accounts", query="cursor=%C2%B2")
async def test_fuzzed_requests_never_5xx_and_4xx_name_the_field(
    daemon: Daemon, method: str, path: str, query: str
) -> None:
    raw = path + ("?" + query if query else "")
    url = URL(f"http://127.0.0.1:{daemon.api.port}{raw}", encoded=True)
    # aiohttp routes on path_safe (decoded except %2F/%25): match templates the same way.
    template = matching_template(OPENAPI, url.path_safe)
    if template == STREAM and method in ("GET", "HEAD"):
        return
    async with (
        ClientSession(timeout=ClientTimeout(total=10)) as session,
        session.request(method, url, allow_redirects=False) as resp,
    ):
        text = await resp.text(errors="replace")
        status, ctype = resp.status, resp.content_type
    where = f"{method} {raw[:300]}"
    if (template, status) == ("/readyz", 503):
        # Its documented answer while syncing (the daemon is fuzzed from its first second).
        assert method == "HEAD" or strict_json(text)["reasons"], f"{where}: {text[:300]}"
        return
    if status == 503 and template in NOT_READY_503:
        # Documented: no price refresh has completed yet, so no risk to show.
        if method != "HEAD":
            check_error_body(status, ctype, text, where)
        assert not daemon.ledger.prices_ready or method == "HEAD", f"{where}: 503 while ready"
        return
    assert status < 500, f"{where}: {status} {text[:300]}"
    if status >= 400 and method == "HEAD":
        assert ctype == "application/json", f"{where}: {status} with {ctype}"  # no body
    elif status >= 400:
        err = check_error_body(status, ctype, text, where)
        if status == 405:
            assert err["field"] == "method"
    elif ctype == "application/json" and method != "HEAD":
        strict_json(text)
    if template is None:
        assert status in (404, 405) or url.path_safe != url.path, f"{where}: {status}"
        return
    # HEAD is served wherever GET is; any other undocumented method is a 405.
    op = "get" if method == "HEAD" else method.lower()
    if op not in OPENAPI["paths"][template]:
        assert status == 405, f"{where}: {status}"
        return
    assert status in documented_codes(OPENAPI, template, op), (
        f"{where}: {status} not documented for {method} {template}: {text[:200]}"
    )


async def test_openapi_document_matches_the_live_app(daemon: Daemon) -> None:
    status, doc = await aget(daemon, "/openapi.json")
    assert status == 200
    assert doc == json.loads(json.dumps(OPENAPI))
    assert openapi_problems(doc) == []
    served = served_routes(daemon.api.app)
    assert documented_routes(doc) == {p: m - {"head"} for p, m in served.items()}

    await wait_ready(daemon)
    symbols = sorted(daemon.engine.symbols)
    accounts = list(daemon.engine.book.account_address)
    assert symbols and accounts, "the seeded devnet has priced assets and accounts"
    # Every documented route answered with a code it documents, on good input...
    good = [
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/v1/accounts",
        *(f"/v1/accounts?tier={t}&limit=1" for t in TIERS),
        *(f"/v1/accounts/{a}" for a in accounts),
        *(f"/v1/accounts/{a.lower()}/health" for a in accounts),
        f"/v1/accounts/0x{'0' * 40}",
        "/v1/prices",
        *(f"/v1/prices/{s}" for s in symbols),
        "/v1/prices/NOPE",
        "/v1/chains",
    ]
    for path in good:
        status, body = await aget(daemon, path)
        template = matching_template(doc, path.split("?")[0])
        assert template is not None, path
        assert status in documented_codes(doc, template), (path, status, body)
        assert status < 400 or path.endswith(("NOPE", "0" * 40)), (path, status, body)

    # ...and paging with next_cursor visits every account exactly once.
    seen: list[str] = []
    cursor: str | None = None
    while True:
        status, page = await aget(
            daemon, "/v1/accounts?limit=2" + (f"&cursor={cursor}" if cursor else "")
        )
        assert status == 200, page
        seen += [a["account"] for a in page["accounts"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(a.lower() for a in seen) == sorted(a.lower() for a in accounts)


# Requests that reached a 5xx or a lenient 200 before the fixes in aggregator/api.py.
REGRESSIONS = {
    "/v1/accounts?cursor=%C2%B2": "cursor",  # "²".isdigit(), int("²") raised in the daemon
    "/v1/accounts?cursor=%E2%91%A0": "cursor",
    "/v1/accounts?limit=%D9%A5": "limit",
    "/v1/accounts?limit=1_0": "limit",
    "/v1/accounts?tier=healthy&tier=warning": "tier",
    "/v1/accounts/" + "ab" * 20: "address",  # no 0x
    "/v1/accounts/0X" + "ab" * 20 + "/health": "address",
    "/v1/accounts/%7B": "address",  # "{" fell through to an unknown-route 404
    "/v1/nope": "path",
}


async def test_known_bad_requests_on_the_live_daemon(daemon: Daemon) -> None:
    for path, field in REGRESSIONS.items():
        status, body = await aget(daemon, path)
        assert 400 <= status < 500, (path, status, body)
        assert body["error"]["field"] == field, (path, body)
