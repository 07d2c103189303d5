"""The API's own EIP-55 checksum against eth_utils, and the latency histogram middleware."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer
from eth_utils import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.api import Api, checksum_address
from aggregator.metrics import Metrics
from tests.unit.api.api_fakes import KNOWN, FakeBackend


@settings(max_examples=500, deadline=None)
@given(raw=st.binary(min_size=20, max_size=20), upper=st.booleans())
def test_checksum_matches_eth_utils(raw: bytes, upper: bool) -> None:
    address = "0x" + (raw.hex().upper() if upper else raw.hex())
    assert checksum_address(address) == to_checksum_address(address)


def test_checksum_of_eip55_vectors() -> None:
    for vector in (
        KNOWN,
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
    ):
        assert checksum_address(vector.lower()) == vector


def sample(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


async def test_latency_histogram_by_route_template_method_and_status() -> None:
    m = Metrics()
    backend = FakeBackend()
    api = Api(backend, request_seconds=m.api_request_seconds)
    async with TestClient(TestServer(api.app, host="127.0.0.1")) as c:
        for _ in range(3):
            assert (await c.get(f"/v1/accounts/{KNOWN.lower()}/health")).status == 200
        assert (await c.get("/v1/accounts/0x12/health")).status == 400
        assert (await c.get("/nope/x")).status == 404
        assert (await c.post("/v1/chains")).status == 405
        backend.raise_in = "chains"
        assert (await c.get("/v1/chains")).status == 500
    health = "/v1/accounts/{address}/health"
    count = "agg_api_request_seconds_count"
    assert sample(m, count, route=health, method="GET", status="200") == 3
    assert sample(m, count, route=health, method="GET", status="400") == 1
    assert sample(m, count, route="unmatched", method="GET", status="404") == 1
    assert sample(m, count, route="/v1/chains", method="GET", status="500") == 1
    # Raw paths never become labels: cardinality stays bounded whatever clients send.
    text = m.render().decode()
    assert "0x12" not in text and "/nope" not in text
    s = sample(m, "agg_api_request_seconds_sum", route=health, method="GET", status="200")
    assert s is not None and 0 < s < 5


async def test_no_histogram_no_middleware() -> None:
    api = Api(FakeBackend())
    assert len(api.app.middlewares) == 1
