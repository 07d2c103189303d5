"""The /health fast path: Daemon.account_health_body must be, byte for byte, what the
general path (api.dumps of Daemon.account_health) sends, over every kind of account."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from eth_hash.auto import keccak

from aggregator.api import Api, ApiError, _keccak256, dumps
from aggregator.api_views import AccountViews, LedgerReader, _credit_template
from aggregator.risk import PriceInput
from bench.risk_engine import ASSETS, build_engine, set_market, synth_rows


class Backend:
    """The daemon's own view methods over a synthetic book (no chains, no store)."""

    def __init__(self, n: int) -> None:
        eng = build_engine()
        eng.load_positions(synth_rows(n, seed=3))
        set_market(eng)
        # A disputed price: its holders are degraded (status "degraded").
        eng.set_prices({"LINK": PriceInput(ASSETS[-1][5], status="disputed")})
        eng.recompute()
        eng.allocate_credit()
        self.engine = eng
        self.prices_ready = True
        views = AccountViews(
            LedgerReader(eng),
            prices_ready=lambda: self.prices_ready,
            decimals={},
            indexers={},
            onchain=lambda address: None,
            margin=lambda address: None,
        )
        self.account_health = views.account_health
        self.account_health_body = views.account_health_body


class GeneralOnly:
    """The same backend without the fast path: the API's general route."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner

    def account_health(self, address: str) -> dict[str, Any] | None:
        return self.inner.account_health(address)

    def account_health_body(self, address: str) -> bytes | None:
        return None  # the general route: account_health, then the API's encoder


@pytest.fixture(scope="module")
def backend() -> Backend:
    return Backend(3000)


def test_body_equals_the_encoded_view_for_every_account(backend: Backend) -> None:
    eng = backend.engine
    kinds: set[tuple[str, bool, str]] = set()
    for addr in eng.book.account_address:
        for form in (addr, addr.upper().replace("0X", "0x")):
            body = backend.account_health_body(form)
            view = backend.account_health(form)
            assert body == dumps(view).encode(), addr
        kinds.add((view["tier"], view["hf"] is None, view["status"]))
    # The book covers what the formatter branches on: infinite HF, each tier, degraded.
    assert {k[0] for k in kinds} >= {"healthy", "warning", "liquidatable"}
    assert any(k[1] for k in kinds) and any(k[2] == "degraded" for k in kinds)


def test_unknown_account_and_prices_not_ready(backend: Backend) -> None:
    assert backend.account_health_body("0x" + "ee" * 20) is None
    backend.prices_ready = False
    try:
        with pytest.raises(ApiError) as info:
            backend.account_health_body(backend.engine.book.account_address[0])
        assert info.value.status == 503
    finally:
        backend.prices_ready = True


def test_credit_template_encodes_names_like_the_encoder() -> None:
    chains = ("ethereum", 'we"ird', "100%", "zürich", "")
    values = tuple(str(i) for i in range(len(chains)))
    got = _credit_template(chains) % values
    assert got == dumps(dict(zip(chains, values, strict=True)))
    assert _credit_template(()) % () == dumps({})


async def test_route_sends_the_same_bytes_and_headers_both_ways(backend: Backend) -> None:
    addrs = backend.engine.book.account_address[:50]
    bodies: dict[str, list[tuple[int, str, bytes]]] = {}
    for name, b in (("fast", backend), ("general", GeneralOnly(backend))):
        async with TestClient(TestServer(Api(b).app, host="127.0.0.1")) as c:
            got = []
            for a in [*addrs, "0x" + "ee" * 20, "0x12"]:
                resp = await c.get(f"/v1/accounts/{a}/health")
                got.append((resp.status, resp.headers["Content-Type"], await resp.read()))
            bodies[name] = got
    assert bodies["fast"] == bodies["general"]
    assert [s for s, _, _ in bodies["fast"][-2:]] == [404, 400]
    assert (
        json.loads(bodies["fast"][0][2])["account"]
        == json.loads(bodies["general"][0][2])["account"]
    )


def test_keccak_fast_path_matches_and_other_threads_fall_back() -> None:
    data = [bytes(range(i % 256)) * (i % 3 + 1) for i in range(300)]
    assert [_keccak256(d) for d in data] == [keccak(d) for d in data]
    out: list[bytes] = []
    t = threading.Thread(target=lambda: out.extend(_keccak256(d) for d in data))
    t.start()
    t.join()
    assert out == [keccak(d) for d in data]
