"""LST pricing end to end on anvil: MockWstETH rate read by chains' LstRateReader,
Chainlink MockV3Aggregator feeds for ETH and the wstETH market."""

from __future__ import annotations

import time

import pytest
from eth_abi import encode
from eth_utils import function_signature_to_4byte_selector
from oracle_chain import deploy_feed, send, update_answer

from chains.contracts import install_multicall, load_artifact
from chains.lst import LstRateReader, LstSource
from chains.rpc import RpcClient
from chains.types import RateSample
from devkit.anvil import AnvilNode
from oracles import (
    AggregationRules,
    AssetPricing,
    MappingRateProvider,
    OracleService,
    PriceStatus,
    RateCap,
)
from oracles.config import ChainlinkSourceConfig

E18 = 10**18


def set_rate(node: AnvilNode, token: str, rate: int) -> None:
    send(
        node,
        token,
        function_signature_to_4byte_selector("setRate(uint256)") + encode(["uint256"], [rate]),
    )


async def test_lst_cap_and_market_on_chain(anvil: AnvilNode) -> None:
    install_multicall(anvil.url)
    wsteth = str(
        send(anvil, None, bytes.fromhex(load_artifact("MockWstETH").bytecode[2:]))[
            "contractAddress"
        ]
    )
    set_rate(anvil, wsteth, 1_170_000_000_000_000_000)
    eth_feed = deploy_feed(anvil, 8, 3000 * 10**8)
    mkt_feed = deploy_feed(anvil, 8, 3600 * 10**8)
    now = time.time()

    async with RpcClient("local", 31337, [anvil.url]) as rpc:
        # chains._BatchCaller declares `multicall: str` (mutable, so invariant) while
        # RpcClient has ChecksumAddress; a chains-side typing nit, reported.
        reader = LstRateReader("local", rpc)  # type: ignore[arg-type]
        samples: dict[str, RateSample] = {}

        async def latest_rates() -> dict[str, RateSample]:
            return samples

        async def read() -> None:
            for s in await reader.read([LstSource("wstETH", "wsteth", wsteth)]):
                samples[s.asset] = s

        eth = AssetPricing(
            "ETH", (ChainlinkSourceConfig(name="cl", chain="local", address=eth_feed),)
        )
        lst = AssetPricing(
            "wstETH",
            (ChainlinkSourceConfig(name="mkt", chain="local", address=mkt_feed),),
            AggregationRules(jump_threshold=0.5),
            underlying="ETH",
            rate=RateCap(0.10, snapshot_rate=1.16, snapshot_time=now - 86400 * 60),
        )
        async with OracleService(
            [eth, lst],
            batch_callers={"local": rpc},
            rate_provider=MappingRateProvider(latest_rates),
        ) as svc:
            # Within the cap: the rate leg (1.17 x 3000 = 3510) is below the market.
            await read()
            p = (await svc.refresh())["wstETH"]
            assert p.status is PriceStatus.OK, p.reason
            assert p.value == pytest.approx(3510.0)

            # Above the cap (a manipulated rate): capped at the 60-day allowance.
            set_rate(anvil, wsteth, 2 * E18)
            await read()
            p = (await svc.refresh())["wstETH"]
            assert p.status is PriceStatus.OK
            cap = 1.16 * (1 + 0.10 * 60 / 365)
            assert p.value == pytest.approx(cap * 3000, rel=1e-4)
            assert "capped to" in (p.sources[-1].reason or "")

            # The market trades below the (capped) rate: the market wins.
            update_answer(anvil, mkt_feed, 3300 * 10**8)
            p = (await svc.refresh())["wstETH"]
            assert p.value == pytest.approx(3300.0)
            assert "market leg is the lower" in p.reason
