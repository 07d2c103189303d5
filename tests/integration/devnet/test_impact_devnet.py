"""The impact kernel against the devnet's real Uniswap v3 pools: QuoterV2's
quoteExactInputSingle agrees with the sale curve within 0.1% for single-pool sales in
both directions on every chain; the liquidity feed validates the devnet config's pools,
reads them and hands the risk model pools that pass the guards; a pool of the wrong
asset is a start error naming its config field; the large account's explanation shows
its pool-based impact."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aggregator.config import load_config
from aggregator.liquidity_feed import LiquidityFeed
from aggregator.metrics import Metrics
from aggregator.risk import PositionRow, PriceInput, RiskEngine
from aggregator.risk.impact import SaleLeg, build_curve
from aggregator.startup import StartupError
from chains.pool_reader import PoolReader, PoolSpec
from chains.rpc import RpcClient
from devkit import manager, pools

CHAINS = manager.INDEXED_CHAINS


def uni(devnet: manager.DevnetState, chain: str) -> pools.UniswapDeployment:
    raw = devnet.deployments[chain].uniswap
    assert raw is not None
    return pools.UniswapDeployment.from_json(raw)


@pytest.fixture
async def clients(devnet: manager.DevnetState) -> AsyncIterator[dict[str, RpcClient]]:
    out = {c: RpcClient(c, devnet.nodes[c].chain_id, [devnet.url(c)]) for c in CHAINS}
    yield out
    for c in out.values():
        await c.close()


async def test_quoter_agrees_with_the_sale_curve_within_0_1_percent(
    devnet: manager.DevnetState, clients: dict[str, RpcClient]
) -> None:
    checked, worst = 0, 0.0
    for chain in CHAINS:
        u = uni(devnet, chain)
        reader = PoolReader(clients[chain], band=0.5)
        specs = [PoolSpec(chain, p.address, label=p.label) for p in u.pools.values()]
        metas = await reader.validate(specs)
        at = await reader.pin()
        snaps = await reader.read(metas.values(), at)
        for rec in u.pools.values():
            snap = snaps[rec.address.lower()]
            for sells0 in (True, False):
                dec_in = snap.decimals0 if sells0 else snap.decimals1
                dec_out = snap.decimals1 if sells0 else snap.decimals0
                sym_in = rec.symbol0 if sells0 else rec.symbol1
                curve = build_curve([SaleLeg(snap, sells0, 1.0)], 1.0, dec_in)
                # From a dust sale to a quarter of what the band holds.
                for usd in (100.0, 10_000.0, 1_000_000.0, 0.25 * curve.capacity *
                            pools.start_price_usd(sym_in)):  # fmt: skip
                    x = usd / pools.start_price_usd(sym_in)
                    if x >= curve.capacity:
                        continue
                    raw_in = int(x * 10**dec_in)
                    token_in = snap.token0 if sells0 else snap.token1
                    q = pools.quote_pool(devnet, chain, rec.address, token_in, raw_in,
                                         block=at.number)  # fmt: skip
                    want = q.amount_out / 10**dec_out
                    got = float(curve.output(raw_in / 10**dec_in)[0])
                    assert got == pytest.approx(want, rel=1e-3), (chain, rec.label, sells0, usd)
                    worst = max(worst, abs(got / want - 1))
                    checked += 1
    assert checked >= 3 * 5 * 2 * 3
    print(f"QuoterV2 vs sale curve: {checked} quotes, worst relative difference {worst:.2e}")


def devnet_config(devnet: manager.DevnetState) -> Path:
    """The devnet's copy of config.toml (it includes data/devnet/pools.toml)."""
    return Path(devnet.root) / "config.toml"


async def confirmed_past_setup(cfg, clients: dict[str, RpcClient]) -> None:  # type: ignore[no-untyped-def]
    """Wait until each chain's confirmed block is past the setup (on the forked alpha a
    block before the fork answers as the origin chain, whose chain id differs)."""
    start = {c: await clients[c].block_number() for c in CHAINS}
    for _ in range(60):
        heads = {c: await clients[c].block_number() for c in CHAINS}
        if all(heads[c] > start[c] + cfg.chain(c).confirmations for c in CHAINS):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"chains do not advance: {start} -> {heads}")


def prices(devnet_cfg) -> dict[str, float | None]:  # type: ignore[no-untyped-def]
    return {a.symbol: pools.start_price_usd(a.symbol) for a in devnet_cfg.assets}


async def test_feed_reads_the_configured_pools_and_the_explanation_uses_them(
    devnet: manager.DevnetState, clients: dict[str, RpcClient], tmp_path: Path
) -> None:
    cfg = load_config(devnet_config(devnet))
    assert cfg.asset("WETH").liquidity, "config.toml should include data/devnet/pools.toml"
    await confirmed_past_setup(cfg, clients)
    feed = LiquidityFeed(cfg, clients, Metrics())
    await feed.start()
    assert set(feed.watchers) == set(CHAINS)
    judged = feed.pools(prices(cfg), time.time())
    weth = judged["WETH"]
    assert {s.pool.chain for s in weth.used} == set(CHAINS) and not weth.ignored
    assert all(s.quote == "USDC" for s in weth.used)
    assert {s.quote for s in judged["wstETH"].used} == {"WETH"}

    eng = RiskEngine.from_config(cfg)
    eng.set_prices({s: PriceInput(p, "ok") for s, p in prices(cfg).items()})
    eng.set_volatility({s: 0.03 for s in eng.symbols})
    eng.set_pools(judged)
    big = "0x" + "b1" * 20
    eng.load_positions([
        PositionRow(big, "alpha", "WETH", "collateral", 3_000 * 10**18, 3_000 * 10**18),
        PositionRow(big, "beta", "USDC", "debt", 2_000_000 * 10**6, 2_000_000 * 10**6),
    ])  # fmt: skip
    eng.recompute()
    hc = eng.explain(big, now=0.0)["assets"]["WETH"]["collateral"]["haircut"]
    liq = hc["liquidity"]
    assert liq["source"] == "pools" and len(liq["pools"]) == 3
    assert 0.0 < liq["impact"] < 1.0
    assert hc["concentration_term"] == pytest.approx(cfg.risk.impact * liq["impact"])
    pooled = eng.explain(big, now=0.0)
    eng.set_pools({})
    static = eng.explain(big, now=0.0)
    eng.set_pools(judged)
    for name, ex in (("pools", pooled), ("static depth_usd", static)):
        c = ex["assets"]["WETH"]["collateral"]
        conc = c["haircut"]["concentration_term"]
        print(f"3,000 WETH under {name}: conc {conc:.5f} lt_eff {c['lt_eff']:.5f} "
              f"C_liq {ex['c_liq_usd']:,.0f} HF {ex['hf']:.4f}")  # fmt: skip
    assert static["assets"]["WETH"]["collateral"]["haircut"]["liquidity"]["source"] == "depth_usd"

    # A deviating oracle sets the pools aside and the asset falls back to depth_usd.
    off = prices(cfg) | {"WETH": pools.start_price_usd("WETH") * 1.2}
    judged = feed.pools(off, time.time())
    assert judged["WETH"].used == () and {i.reason for i in judged["WETH"].ignored} == {
        "price_deviation"
    }
    eng.set_pools(judged)
    hc = eng.explain(big, now=0.0)["assets"]["WETH"]["collateral"]["haircut"]
    assert hc["liquidity"]["source"] == "depth_usd"
    assert "price_deviation" in hc["liquidity"]["fallback_reason"]


async def test_a_pool_of_another_asset_is_a_start_error_naming_the_field(
    devnet: manager.DevnetState, clients: dict[str, RpcClient], tmp_path: Path
) -> None:
    wbtc_pool = uni(devnet, "alpha").pools["WBTC/USDC"].address
    cfg = load_config(devnet_config(devnet))
    i = cfg.asset_symbols.index("WETH")
    bad = cfg.model_copy(update={"assets": [
        a.model_copy(update={"liquidity": [a.liquidity[0].model_copy(update={"pool": wbtc_pool})]})
        if a.symbol == "WETH" else a
        for a in cfg.assets
    ]})  # fmt: skip
    await confirmed_past_setup(cfg, clients)
    with pytest.raises(StartupError, match=rf"assets\[{i}\]\.liquidity\[0\].*lacks"):
        await LiquidityFeed(bad, clients, Metrics()).start()
