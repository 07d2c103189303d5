"""Market simulator for the devnet: moves feed prices and LST rates on every indexed chain.

    state = manager.up(root)
    stop = asyncio.Event()
    task = asyncio.create_task(run_simulator(state, stop, interval_s=3.0, seed=7))
    ...
    stop.set(); await task

Each tick: WETH and WBTC take a random-walk step with mild mean reversion toward their
starting price; USDC wobbles around 1.00; with probability `shock_probability` ETH drops
sharply (15-22%), which pushes demo account 5 (WETH collateral, USDC debt) to warning or
liquidatable until the price drifts back. LST exchange rates grow at a realistic APR
(well under the oracles' 10%/year cap) and LST feeds follow WETH x rate. Every chain's
feed gets its own small dispersion so the oracle median has something to do. Updates are
sent from the deployer (account 0, owner of the LST mocks); the keeper account is left to
the daemon's pusher. A chain that fails a tick is logged and retried next tick; it never
stops the others.

On a devnet with Uniswap v3 pools (devkit/pools.py), `devkit.pool_market.PoolMarket`
adds each tick's arbitrage swaps (pool prices follow the market) and LP moves to the
same chain's batch; a failure there is reported for that chain like any other, after
the feed updates went out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from eth_abi import encode
from eth_utils import function_signature_to_4byte_selector

from devkit.deploy import ASSETS, FEED_DECIMALS
from devkit.manager import INDEXED_CHAINS, DevnetState
from devkit.pool_market import PoolMarket

log = logging.getLogger("devkit.simulator")

YEAR_S = 365 * 24 * 3600
UPDATE_ANSWER = function_signature_to_4byte_selector("updateAnswer(int256)")
SET_RATE = function_signature_to_4byte_selector("setRate(uint256)")
TX_GAS = 200_000
LST_SYMBOLS = tuple(a.symbol for a in ASSETS if a.rate is not None)


@dataclass
class MarketModel:
    """Pure price/rate dynamics (no chain access), deterministic for a given rng seed."""

    rng: random.Random
    prices: dict[str, float] = field(default_factory=dict)
    rates: dict[str, float] = field(default_factory=dict)
    anchors: dict[str, float] = field(default_factory=dict)
    vol_per_tick: dict[str, float] = field(
        default_factory=lambda: {"WETH": 0.004, "WBTC": 0.003, "USDC": 0.0003}
    )
    apr: dict[str, float] = field(default_factory=lambda: {"wstETH": 0.035, "rETH": 0.03})
    shock_probability: float = 0.03
    shock_range: tuple[float, float] = (0.15, 0.22)
    reversion: float = 0.02
    dispersion: float = 0.0005
    lst_premium_vol: float = 0.001

    @classmethod
    def initial(cls, seed: int | None = None, **kwargs: Any) -> MarketModel:
        m = cls(rng=random.Random(seed), **kwargs)
        for spec in ASSETS:
            if spec.rate is None:
                m.prices[spec.symbol] = spec.price_usd
                m.anchors[spec.symbol] = spec.price_usd
            else:
                m.rates[spec.symbol] = spec.rate
        return m

    def shock(self, fraction: float) -> None:
        """ETH drops by `fraction` at once (the anchor stays, so it drifts back)."""
        self.prices["WETH"] *= 1 - fraction

    def step(self, dt_s: float) -> list[str]:
        """Advance one tick of `dt_s` seconds; returns notable events (for logs)."""
        events: list[str] = []
        for symbol, price in self.prices.items():
            sigma = self.vol_per_tick.get(symbol, 0.003)
            gap = math.log(self.anchors[symbol] / price)
            self.prices[symbol] = price * math.exp(self.reversion * gap + self.rng.gauss(0, sigma))
        if self.rng.random() < self.shock_probability:
            fraction = self.rng.uniform(*self.shock_range)
            self.shock(fraction)
            events.append(f"ETH shock -{fraction:.1%} to {self.prices['WETH']:,.2f}")
        for symbol in self.rates:
            self.rates[symbol] *= 1 + self.apr.get(symbol, 0.03) * dt_s / YEAR_S
        return events

    def lst_price(self, symbol: str) -> float:
        return self.prices["WETH"] * self.rates[symbol]

    def feed_price(self, symbol: str) -> float:
        """One chain's feed: the market price with a little independent dispersion."""
        base = self.lst_price(symbol) if symbol in self.rates else self.prices[symbol]
        noise = self.rng.gauss(0, self.dispersion)
        if symbol in self.rates:
            noise += self.rng.gauss(0, self.lst_premium_vol)
        return base * (1 + noise)


@dataclass
class SimulatorStats:
    ticks: int = 0
    transactions: int = 0
    events: list[str] = field(default_factory=list)
    errors: dict[str, list[str]] = field(default_factory=dict)


async def _rpc(session: aiohttp.ClientSession, url: str, method: str, params: list[Any]) -> Any:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=10)) as resp:
        answer = await resp.json(content_type=None)
    if "error" in answer:
        raise RuntimeError(f"{method}: {answer['error']}")
    return answer["result"]


class PoolTickError(RuntimeError):
    """The pools' part of a chain's tick failed (its feed updates went out)."""


async def _update_chain(
    session: aiohttp.ClientSession,
    state: DevnetState,
    chain: str,
    calls: list[tuple[str, bytes]],
    pools: tuple[PoolMarket, MarketModel] | None = None,
) -> int:
    url = state.url(chain)
    sender = state.deployments[chain].deployer or state.accounts["deployer"]
    # A fixed gas limit: anvil estimates against the latest block's timestamp, where
    # MockV3Aggregator's timestamp stores cost less than in the next block, and the
    # estimate then runs out of gas.
    txs = [
        {"from": sender, "to": to, "data": "0x" + data.hex(), "gas": hex(TX_GAS)}
        for to, data in calls
    ]
    pool_error: Exception | None = None
    if pools is not None:
        market, model = pools
        try:
            txs += await market.transactions(
                lambda method, params: _rpc(session, url, method, params), chain, model
            )
        except Exception as exc:
            pool_error = exc
    sent = await _send_and_wait(session, url, txs)
    if pool_error is not None:
        raise PoolTickError(f"pools: {type(pool_error).__name__}: {pool_error}") from pool_error
    return sent


async def _send_and_wait(
    session: aiohttp.ClientSession, url: str, txs: list[dict[str, Any]]
) -> int:
    hashes = []
    # Sent back to back, then awaited together: anvil numbers the pending nonces itself.
    for tx in txs:
        hashes.append(await _rpc(session, url, "eth_sendTransaction", [tx]))
    deadline = asyncio.get_running_loop().time() + 15
    pending = list(hashes)
    while pending:
        receipt = await _rpc(session, url, "eth_getTransactionReceipt", [pending[0]])
        if receipt is None:
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"transaction {pending[0]} not mined within 15 s")
            await asyncio.sleep(0.1)
            continue
        if int(receipt["status"], 16) != 1:
            raise RuntimeError(f"transaction {pending[0]} reverted")
        pending.pop(0)
    return len(hashes)


def _calls_for(model: MarketModel, state: DevnetState, chain: str) -> list[tuple[str, bytes]]:
    dep = state.deployments[chain]
    calls: list[tuple[str, bytes]] = []
    for spec in ASSETS:
        answer = round(model.feed_price(spec.symbol) * 10**FEED_DECIMALS)
        calls.append((dep.feeds[spec.symbol], UPDATE_ANSWER + encode(["int256"], [answer])))
    for symbol in LST_SYMBOLS:
        rate = round(model.rates[symbol] * 10**18)
        calls.append((dep.tokens[symbol], SET_RATE + encode(["uint256"], [rate])))
    return calls


async def run_simulator(
    state: DevnetState,
    stop: asyncio.Event,
    interval_s: float = 3.0,
    *,
    seed: int | None = None,
    model: MarketModel | None = None,
    stats: SimulatorStats | None = None,
    chains: tuple[str, ...] = INDEXED_CHAINS,
    max_ticks: int | None = None,
    pools: bool | PoolMarket = True,
) -> None:
    """Tick every `interval_s` until `stop` is set (or after `max_ticks` ticks). `seed`
    makes the path reproducible; pass `model` to control the dynamics (tests) and
    `stats` to observe progress; `pools=False` leaves the Uniswap pools alone, a
    `PoolMarket` replaces the default one (tests: its move probability)."""
    if interval_s <= 0:
        raise ValueError(f"interval_s must be > 0, got {interval_s}")
    unknown = [c for c in chains if c not in state.nodes]
    if unknown:
        raise ValueError(f"chains not in the devnet state: {', '.join(unknown)}")
    model = model or MarketModel.initial(seed)
    stats = stats if stats is not None else SimulatorStats()
    market = pools if isinstance(pools, PoolMarket) else None
    if pools is True:
        market = PoolMarket.for_state(state, chains, seed)
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            events = model.step(interval_s)
            for e in events:
                log.info("simulator: %s", e)
            stats.events.extend(events)
            per_chain = {c: _calls_for(model, state, c) for c in chains}
            with_pools = (market, model) if market is not None else None
            results = await asyncio.gather(
                *(
                    _update_chain(session, state, c, calls, with_pools)
                    for c, calls in per_chain.items()
                ),
                return_exceptions=True,
            )
            for chain, result in zip(per_chain, results, strict=True):
                if isinstance(result, BaseException):
                    if isinstance(result, asyncio.CancelledError):
                        raise result
                    msg = f"{type(result).__name__}: {result}"
                    log.warning("simulator: chain %s update failed: %s", chain, msg)
                    stats.errors.setdefault(chain, []).append(msg)
                else:
                    stats.transactions += result
            stats.ticks += 1
            if max_ticks is not None and stats.ticks >= max_ticks:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
