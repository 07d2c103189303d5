"""LiquidityFeed without a chain: a watcher stand-in drives its steps; the previous
snapshot is the one before the last step, a liquidity jump is set aside for that round
and flagged in the gauges, a chain whose task stopped ages into stale."""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from aggregator.config import load_config
from aggregator.liquidity_feed import LiquidityFeed, _Side
from aggregator.metrics import Metrics
from aggregator.startup import StartupError
from chains.pool_reader import PoolMeta, PoolReader, PoolUpdate, PoolWatcher
from chains.rpc_errors import RpcUnavailable
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


async def test_a_node_down_at_start_is_validated_by_the_chain_task(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Start amid RPC faults: the start goes on without the chain's pools (depth_usd),
    the pools:<chain> task fails while the node is down (visible to the supervisor) and
    validates and reads them once it answers; a wrong pool still stops the start."""
    path = tmp_path / "c.toml"
    path.write_text(CONFIG)
    cfg = load_config(path)
    meta = PoolMeta("alpha", POOL, "0x" + "01" * 20, "0x" + "02" * 20, 18, 6, 500, 10)
    down = RpcUnavailable("alpha", "eth_call", ["connection refused"], timed_out=False)
    answers: list[Exception | None] = [down, down, None]
    steps: list[int] = []

    async def validate(self: Any, specs: Any) -> dict[str, PoolMeta]:
        err = answers.pop(0)
        if err is not None:
            raise err
        return {POOL: meta}

    async def step(self: Any) -> PoolUpdate:
        steps.append(1)
        stop.set()
        return PoolUpdate(None, dropped="test: nothing read")

    monkeypatch.setattr(PoolReader, "validate", validate)
    monkeypatch.setattr(PoolWatcher, "step", step)
    feed = LiquidityFeed(cfg, {"alpha": _Client()}, Metrics())  # type: ignore[dict-item]
    stop = asyncio.Event()

    await feed.start()  # the node is down: no StartupError, no watcher yet
    assert feed.chains == ["alpha"] and feed.watchers == {}
    assert feed.pools({"WETH": 3000.0, "USDC": 1.0}, 0.0)["WETH"].fallback == "no pool read yet"

    run = feed.supervised("alpha", stop)
    with pytest.raises(RpcUnavailable):  # the supervisor restarts it with backoff
        await run()
    await run()  # the node answers: validated, a watcher, one round
    assert feed.sides[("alpha", POOL)] == _Side("WETH", True, "USDC") and steps == [1]
    assert feed.head["alpha"] == 12 - cfg.chain("alpha").confirmations

    wrong = replace(meta, token0="0x" + "09" * 20)
    answers[:] = [None]
    monkeypatch.setattr(PoolReader, "validate", lambda self, specs: _const({POOL: wrong}))
    with pytest.raises(StartupError, match=r"assets\[1\]\.liquidity\[0\]"):
        await LiquidityFeed(cfg, {"alpha": _Client()}, Metrics()).start()  # type: ignore[dict-item]


class _Client:
    """What PoolReader keeps of its client here (validate and step are replaced)."""

    chain = "alpha"

    async def block_number(self) -> int:
        return 12


async def _const(value: Any) -> Any:
    return value
