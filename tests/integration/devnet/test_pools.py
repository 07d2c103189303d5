"""Uniswap v3 on the devnet and the pool reader against it: the pools exist on every
chain at the devnet's prices with depth that differs per chain, the reader validates
them and reads snapshots that QuoterV2 quotes against, the watcher follows swaps and
LP moves (the simulator's) and survives a reorg, and hostile RPC answers are errors
that name the pool."""

from __future__ import annotations

import asyncio
import math
import tomllib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from eth_abi import decode, encode

from chains.pool_reader import (
    PoolConfigError,
    PoolReader,
    PoolReadError,
    PoolSpec,
    PoolWatcher,
)
from chains.rpc import RpcClient, RpcUnavailable
from devkit import manager, pools
from devkit.anvil import rpc_call
from devkit.pool_market import PoolMarket, arbitrage_limit, swap_tx, target_sqrt_price
from devkit.simulator import MarketModel, SimulatorStats, run_simulator
from devkit.testing.faultproxy import FaultProxy

CHAINS = manager.INDEXED_CHAINS


def uni(devnet: manager.DevnetState, chain: str) -> pools.UniswapDeployment:
    raw = devnet.deployments[chain].uniswap
    assert raw is not None
    return pools.UniswapDeployment.from_json(raw)


def specs(devnet: manager.DevnetState, chain: str) -> list[PoolSpec]:
    u = uni(devnet, chain)
    return [
        PoolSpec(chain, p.address, (p.token0, p.token1), p.fee, u.factory, p.label)
        for p in u.pools.values()
    ]


def client_for(devnet: manager.DevnetState, chain: str, url: str | None = None) -> RpcClient:
    return RpcClient(chain, devnet.nodes[chain].chain_id, [url or devnet.url(chain)])


@pytest.fixture
async def clients(devnet: manager.DevnetState) -> AsyncIterator[dict[str, RpcClient]]:
    out = {c: client_for(devnet, c) for c in CHAINS}
    yield out
    for c in out.values():
        await c.close()


def start_price(rec: pools.PoolRecord) -> float:
    return pools.start_price_usd(rec.symbol0) / pools.start_price_usd(rec.symbol1)


async def test_snapshots_at_the_devnet_prices_and_quoter_agrees_on_every_chain(
    devnet: manager.DevnetState, clients: dict[str, RpcClient]
) -> None:
    impact: dict[str, float] = {}
    for chain in CHAINS:
        reader = PoolReader(clients[chain], band=0.2)
        metas = await reader.validate(specs(devnet, chain))
        at = await reader.pin()
        snaps = await reader.read(metas.values(), at)
        u = uni(devnet, chain)
        assert len(snaps) == 5
        for rec in u.pools.values():
            snap = snaps[rec.address.lower()]
            assert snap.price1_per_0() == pytest.approx(start_price(rec), rel=1e-4), rec.label
            assert snap.block_hash == at.hash and snap.liquidity > 0
            # Narrow positions around the price: initialised ticks on both sides.
            assert any(t.index <= snap.tick for t in snap.ticks), rec.label
            assert any(t.index > snap.tick for t in snap.ticks), rec.label
            # A small sale quoted by QuoterV2 at the snapshot's block: spot less the fee.
            small = int(1_000 / pools.start_price_usd(rec.symbol0) * 10**snap.decimals0)
            q = pools.quote_pool(devnet, chain, rec.address, snap.token0, small, block=at.number)
            got = q.amount_out / 10**snap.decimals1 / (small / 10**snap.decimals0)
            assert got == pytest.approx(snap.price1_per_0() * (1 - snap.fee / 1e6), rel=1e-4)
        weth = u.pools["WETH/USDC"]
        q = pools.quote_pool(
            devnet, chain, weth.address, u.tokens["WETH"], 2_000 * 10**18, block=at.number
        )
        impact[chain] = 1 - (q.amount_out / 1e6) / (2_000 * 3_000)
    # The same sale moves the thinner chains' pools further: depth differs per chain.
    assert 0 < impact["alpha"] < impact["beta"] < impact["gamma"], impact


def test_pools_include_lists_each_asset_pool_per_chain(devnet: manager.DevnetState) -> None:
    path = manager.DevnetPaths(Path(devnet.root)).pools_include_file
    data = tomllib.loads(path.read_text())
    by_asset = {a["symbol"]: a["liquidity"] for a in data["assets"]}
    assert set(by_asset) == {"WETH", "WBTC", "wstETH", "rETH"}  # USDC: quote only; no cbETH
    for symbol, entries in by_asset.items():
        assert [e["chain"] for e in entries] == list(CHAINS)
        for e in entries:
            rec = uni(devnet, e["chain"]).pool_for(e["pool"])
            assert rec.base == symbol


def test_base_book_ids_are_the_documented_ones(devnet: manager.DevnetState) -> None:
    u = uni(devnet, "beta")
    npm = u.position_manager
    for rec in u.pools.values():
        for token_id in (rec.position_ids[0], rec.position_ids[-1]):
            data = "0x99fbab88" + encode(["uint256"], [token_id]).hex()  # positions(uint256)
            raw = bytes.fromhex(
                str(
                    rpc_call(devnet.url("beta"), "eth_call", [{"to": npm, "data": data}, "latest"])
                )[2:]
            )
            _, _, t0, t1, fee, *_ = decode(
                ["uint96", "address", "address", "address", "uint24", "int24", "int24", "uint128"],
                raw[: 8 * 32],
            )
            assert (t0.lower(), t1.lower(), fee) == (
                rec.token0.lower(),
                rec.token1.lower(),
                rec.fee,
            )
    assert u.base_positions == 5 * len(pools.POSITION_SHAPE)


async def test_wrong_pools_are_config_errors_naming_them(
    devnet: manager.DevnetState, clients: dict[str, RpcClient]
) -> None:
    u = uni(devnet, "gamma")
    weth, wbtc = u.pools["WETH/USDC"], u.pools["WBTC/USDC"]
    reader = PoolReader(clients["gamma"])
    cases = [
        (PoolSpec("gamma", weth.address, fee=3000, label="WETH"), "has fee 500, expected 3000"),
        (PoolSpec("gamma", weth.address, (wbtc.token0, wbtc.token1)), "trades"),
        (PoolSpec("gamma", u.tokens["WETH"]), "does not answer like a Uniswap v3 pool"),
        (PoolSpec("gamma", weth.address, factory=u.router), "was created by"),
        # alpha's pool address on gamma: nothing there.
        (PoolSpec("gamma", uni(devnet, "alpha").pools["WETH/USDC"].address), "does not answer"),
    ]
    for spec, message in cases:
        with pytest.raises(PoolConfigError, match=message) as exc:
            await reader.validate([spec])
        assert spec.address in str(exc.value) and "'gamma'" in str(exc.value)


async def mine(devnet: manager.DevnetState, chain: str, blocks: int) -> None:
    await asyncio.to_thread(rpc_call, devnet.url(chain), "anvil_mine", [hex(blocks)])


async def test_watcher_follows_the_simulated_market_like_a_full_read(
    devnet: manager.DevnetState, clients: dict[str, RpcClient]
) -> None:
    client = clients["beta"]
    reader = PoolReader(client)
    metas = await reader.validate(specs(devnet, "beta"))
    watcher = PoolWatcher(reader, metas.values(), confirmations=1)
    first = await watcher.step()
    assert first.full and first.changed == frozenset(metas)
    u = uni(devnet, "beta")
    weth = u.pools["WETH/USDC"].address.lower()
    npm_supply_before = int(
        str(
            rpc_call(
                devnet.url("beta"),
                "eth_call",
                [{"to": u.position_manager, "data": "0x18160ddd"}, "latest"],
            )
        ),
        16,
    )
    model = MarketModel.initial(seed=11, shock_probability=1.0, shock_range=(0.1, 0.1))
    market = PoolMarket.for_state(devnet, ("beta",), seed=11, move_probability=1.0)
    assert market is not None
    stats = SimulatorStats()
    await asyncio.wait_for(
        run_simulator(
            devnet,
            asyncio.Event(),
            0.2,
            model=model,
            stats=stats,
            chains=("beta",),
            max_ticks=2,
            pools=market,
        ),
        30,
    )
    assert stats.errors == {}
    await mine(devnet, "beta", 2)
    update = await watcher.step()
    for _ in range(10):  # interval mining may have confirmed only part of the ticks yet
        if weth in update.changed:
            break
        await mine(devnet, "beta", 1)
        update = await watcher.step()
    assert not update.full and not update.reorg and weth in update.changed
    # What the watcher holds equals a full read at its block, changed pools or not.
    assert watcher.cursor is not None
    full = await reader.read(metas.values(), watcher.cursor)
    assert watcher.snapshots == full
    # The pool follows the market price to within its fee.
    for rec in u.pools.values():
        snap = watcher.snapshots[rec.address.lower()]
        gap = 2 * math.log(target_sqrt_price(rec, model) / snap.sqrt_price_x96)
        assert abs(gap) <= rec.fee / 1e6 + 1e-6, (rec.label, gap)
    supply = int(
        str(
            rpc_call(
                devnet.url("beta"),
                "eth_call",
                [{"to": u.position_manager, "data": "0x18160ddd"}, "latest"],
            )
        ),
        16,
    )
    assert supply > npm_supply_before  # the LP minted (move probability 1)


async def test_watcher_reads_everything_again_after_a_reorg(
    devnet: manager.DevnetState, clients: dict[str, RpcClient]
) -> None:
    url = devnet.url("gamma")
    reader = PoolReader(clients["gamma"])
    metas = await reader.validate(specs(devnet, "gamma"))
    watcher = PoolWatcher(reader, metas.values(), confirmations=2)
    await watcher.step()
    u = uni(devnet, "gamma")
    rec = u.pools["WETH/USDC"]
    before = watcher.snapshots[rec.address.lower()]
    snapshot_id = await asyncio.to_thread(rpc_call, url, "evm_snapshot")
    # A 3% sale of WETH on the branch that will be dropped.
    limit = arbitrage_limit(before.sqrt_price_x96, before.sqrt_price_x96 * math.sqrt(0.97), 0)
    assert limit is not None
    await asyncio.to_thread(rpc_call, url, "eth_sendTransaction", [swap_tx(u, rec, *limit)])
    await mine(devnet, "gamma", 3)
    moved = await watcher.step()
    assert rec.address.lower() in moved.changed
    on_branch = watcher.snapshots[rec.address.lower()]
    assert on_branch.price1_per_0() < before.price1_per_0() * 0.98 or (
        on_branch.price1_per_0() > before.price1_per_0() * 1.02
    )
    await asyncio.to_thread(rpc_call, url, "evm_revert", [snapshot_id])
    await mine(devnet, "gamma", 8)
    update = await watcher.step()
    assert update.reorg and update.full
    after = watcher.snapshots[rec.address.lower()]
    assert after.block_hash != on_branch.block_hash
    assert replace(after, block_number=0, block_hash="") == replace(
        before, block_number=0, block_hash=""
    )


def forge_slot0_tick(items: list[tuple[bool, bytes]]) -> list[tuple[bool, bytes]]:
    """A node that answers every slot0 with a tick far from its price, sentinel intact."""
    out = []
    for ok, ret in items:
        words = bytearray(ret)
        if ok and len(ret) == 7 * 32:
            tick = decode(["int24"], ret[32:64])[0]
            words[32:64] = encode(["int24"], [tick + 5000])
        out.append((ok, bytes(words)))
    return out


async def test_hostile_answers_are_errors_naming_the_pool(devnet: manager.DevnetState) -> None:
    metas_client = client_for(devnet, "gamma")
    try:
        metas = await PoolReader(metas_client).validate(specs(devnet, "gamma"))
    finally:
        await metas_client.close()
    async with FaultProxy(devnet.url("gamma"), forge_call=forge_slot0_tick) as proxy:
        client = client_for(devnet, "gamma", proxy.url)
        try:
            reader = PoolReader(client)
            at = await reader.pin()
            with pytest.raises(PoolReadError, match=r"chain 'gamma' pool 0x.*does not match"):
                await reader.read(metas.values(), at)
            # A node whose eth_call answers are garbage fails the sentinel: a clear
            # RpcUnavailable, never a snapshot.
            proxy.set(forge_call=None, wrong_call=True)
            with pytest.raises(RpcUnavailable, match="sentinel"):
                await reader.read(metas.values(), at)
        finally:
            await client.close()


def position_liquidity(devnet: manager.DevnetState, chain: str, token_id: int) -> int:
    npm = uni(devnet, chain).position_manager
    data = "0x99fbab88" + encode(["uint256"], [token_id]).hex()  # positions(uint256)
    raw = str(rpc_call(devnet.url(chain), "eth_call", [{"to": npm, "data": data}, "latest"]))
    return int(raw[2 + 7 * 64 : 2 + 8 * 64], 16)


async def test_lp_moves_mint_and_burn_only_the_simulators_positions(
    devnet: manager.DevnetState,
) -> None:
    u = uni(devnet, "gamma")
    supply = "0x18160ddd"  # totalSupply()
    call = [{"to": u.position_manager, "data": supply}, "latest"]
    before = int(str(rpc_call(devnet.url("gamma"), "eth_call", call)), 16)
    # Six moves over five pools with at most one open position each: one pool is
    # chosen twice, so at least one minted position is burned again.
    market = PoolMarket.for_state(devnet, ("gamma",), seed=5, move_probability=1.0, max_positions=1)
    assert market is not None
    stats = SimulatorStats()
    await asyncio.wait_for(
        run_simulator(
            devnet,
            asyncio.Event(),
            0.2,
            seed=5,
            stats=stats,
            chains=("gamma",),
            max_ticks=6,
            pools=market,
        ),
        45,
    )
    assert stats.errors == {}
    after = int(str(rpc_call(devnet.url("gamma"), "eth_call", call)), 16)
    minted = range(before + 1, after + 1)
    assert len(minted) >= 2
    emptied = [i for i in minted if position_liquidity(devnet, "gamma", i) == 0]
    assert emptied, "no simulator position was burned"
    assert all(position_liquidity(devnet, "gamma", i) > 0 for i in range(1, u.base_positions + 1))
