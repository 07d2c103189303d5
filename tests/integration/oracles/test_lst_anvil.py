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
from oracles.cap_guard import CapGuardRules
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

            # Far above the cap (a manipulated rate): the cap fails its guard, and the
            # market median holds the price down; credit may not rise on it.
            set_rate(anvil, wsteth, 2 * E18)
            await read()
            p = (await svc.refresh())["wstETH"]
            assert p.status is PriceStatus.CAPPED
            assert p.value == pytest.approx(3600.0)
            assert "cap guard: cap_below_rate" in p.reason

            # The market trades lower still: the market wins, still capped.
            update_answer(anvil, mkt_feed, 3300 * 10**8)
            p = (await svc.refresh())["wstETH"]
            assert p.value == pytest.approx(3300.0)
            assert "market leg is the lower" in p.reason


@pytest.mark.parametrize("guarded", [True, False])
async def test_a_cap_whose_snapshot_ratio_and_time_are_out_of_step(
    anvil: AnvilNode, guarded: bool
) -> None:
    """The shape of Aave's wstETH CAPO incident (2025): the cap's snapshot pairs the
    ratio of one day with the time of the next, so the cap sits 2.85% under the real
    rate while the market trades at the rate. Unguarded (tolerances wide open), the
    price follows the broken cap 2.85% under the market, which liquidates; guarded,
    the guard reads the chain's rate at the snapshot time (a binary search of block
    timestamps), marks the asset `capped` and prices it at the market/live rate."""
    install_multicall(anvil.url)
    art = load_artifact("MockWstETH")
    wsteth = str(send(anvil, None, bytes.fromhex(art.bytecode[2:]))["contractAddress"])
    set_rate(anvil, wsteth, 1_150_000_000_000_000_000)
    anvil.rpc("evm_increaseTime", [86400])
    set_rate(anvil, wsteth, 1_183_800_000_000_000_000)  # a day of rewards, compressed
    step_time = int(anvil.rpc("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)
    eth_feed = deploy_feed(anvil, 8, 3000 * 10**8)
    mkt_feed = deploy_feed(anvil, 8, int(1.1838 * 3000 * 10**8))  # the market at the rate
    chain_now = float(int(anvil.rpc("eth_getBlockByNumber", ["latest", False])["timestamp"], 16))
    tolerance = 0.001 if guarded else 0.5
    async with RpcClient("local", 31337, [anvil.url]) as rpc:
        reader = LstRateReader("local", rpc)  # type: ignore[arg-type]
        src = LstSource("wstETH", "wsteth", wsteth)
        samples = {s.asset: s for s in await reader.read([src])}

        class Rates:
            async def latest(self, asset: str) -> RateSample | None:
                return samples.get(asset)

            async def rate_at(self, asset: str, ts: float) -> RateSample | None:
                return await reader.read_at_time(src, ts)

        eth = AssetPricing(
            "ETH", (ChainlinkSourceConfig(name="cl", chain="local", address=eth_feed),)
        )
        lst = AssetPricing(
            "wstETH",
            (ChainlinkSourceConfig(name="mkt", chain="local", address=mkt_feed),),
            AggregationRules(jump_threshold=0.5),
            underlying="ETH",
            rate=RateCap(
                0.10,
                snapshot_rate=1.15,  # yesterday's ratio ...
                snapshot_time=float(step_time),  # ... with today's time
                guard=CapGuardRules(cap_tolerance=tolerance, snapshot_tolerance=tolerance),
            ),
        )
        async with OracleService(
            [eth, lst],
            batch_callers={"local": rpc},
            rate_provider=Rates(),
            clock=lambda: chain_now + 5,
        ) as svc:
            p = (await svc.refresh())["wstETH"]
    broken_cap_price = 1.15 * 3000
    if not guarded:
        assert p.status is PriceStatus.OK
        assert p.value == pytest.approx(broken_cap_price, rel=1e-4)
        assert p.value / (1.1838 * 3000) - 1 == pytest.approx(-0.0285, abs=5e-4)
        return
    assert p.status is PriceStatus.CAPPED, p.reason
    assert p.value == pytest.approx(1.1838 * 3000, rel=1e-4)
    assert "cap_below_rate" in p.reason and "snapshot_mismatch" in p.reason
    assert "chain's rate 1.1838" in p.reason
