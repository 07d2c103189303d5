"""LiquidityFeed without a chain: a watcher stand-in drives its steps; the previous
snapshot is the one before the last step, a liquidity jump is set aside for that round
and flagged in the gauges, a chain whose task stopped ages into stale."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from aggregator.config import load_config
from aggregator.liquidity_feed import LiquidityFeed, _Side
from aggregator.metrics import Metrics
from chains.pool_reader import PoolUpdate
from chains.types import BlockRef
from tests.unit.risk.uniswap_ref import make_pool

POOL = "0x" + "33" * 20
TICK = math.floor(math.log(3000 * 1e6 / 1e18) / math.log(1.0001))
CONFIG = f"""
[[chains]]
name = "alpha"
chain_id = 71001
rpc_urls = ["http://127.0.0.1:8545"]

[[assets]]
symbol = "USDC"
decimals = 6
ltv = 0.8
lt = 0.85
tokens = {{ alpha = "0x{"02" * 20}" }}
sources = [{{ kind = "chainlink", name = "cl", chain = "alpha", address = "0x{"22" * 20}" }}]

[[assets]]
symbol = "WETH"
decimals = 18
ltv = 0.8
lt = 0.83
depth_usd = 1000000
tokens = {{ alpha = "0x{"01" * 20}" }}
liquidity = [{{ chain = "alpha", pool = "{POOL}" }}]
sources = [{{ kind = "chainlink", name = "cl", chain = "alpha", address = "0x{"23" * 20}" }}]

[liquidity]
max_liquidity_move = 0.5
max_age_s = 60
"""


class Watcher:
    def __init__(self) -> None:
        self.snapshots: dict[str, Any] = {}
        self.cursor: BlockRef | None = None
        self.previous: dict[str, Any] = {}

    def set(self, liq: int, block: int) -> None:
        """The pool read again at `block` with in-range liquidity `liq`."""
        snap = make_pool([(TICK - 600, TICK + 600, liq)], TICK, address=POOL)
        self.previous = dict(self.snapshots)
        self.snapshots = {POOL: replace(snap, block_number=block)}
        self.cursor = BlockRef(block, "0x" + f"{block:064x}", "0x" + "00" * 32)

    async def step(self) -> PoolUpdate:
        out = PoolUpdate(self.cursor, frozenset(self.previous), previous=self.previous)
        self.previous = {}  # the next round reads nothing again unless set() says so
        return out


async def test_steps_previous_snapshot_guards_and_gauges(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(CONFIG)
    cfg = load_config(path)
    now = [1000.0]
    m = Metrics()
    feed = LiquidityFeed(cfg, {}, m, clock=lambda: now[0])
    w = Watcher()
    feed.watchers["alpha"] = w  # type: ignore[assignment]
    feed.sides[("alpha", POOL)] = _Side("WETH", True, "USDC")
    prices = {"WETH": 1.0001**TICK * 1e12, "USDC": 1.0}

    assert feed.pools(prices, now[0])["WETH"].fallback == "no pool read yet"
    w.set(10**18, 10)
    await feed.step("alpha")
    ap = feed.pools(prices, now[0])
    assert len(ap["WETH"].used) == 1 and ap["WETH"].ignored == ()
    assert m.liquidity_fallback.labels(asset="WETH")._value.get() == 0

    w.set(3 * 10**18, 11)  # liquidity tripled within one block
    await feed.step("alpha")
    ap = feed.pools(prices, now[0])
    assert ap["WETH"].used == () and ap["WETH"].ignored[0].reason == "liquidity_moved"
    labels = {"asset": "WETH", "chain": "alpha", "pool": POOL, "reason": "liquidity_moved"}
    assert m.pool_ignored.labels(**labels)._value.get() == 1
    assert m.liquidity_fallback.labels(asset="WETH")._value.get() == 1

    await feed.step("alpha")  # a quiet round: previous = current, used again
    assert len(feed.pools(prices, now[0])["WETH"].used) == 1

    now[0] += 61  # the task stopped stepping: stale
    ap = feed.pools(prices, now[0])
    assert ap["WETH"].fallback == "every pool is stale"
