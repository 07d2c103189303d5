"""Pool liquidity for the risk model (docs/risk.md "Liquidity weighting from pools"): the
pool reader per chain (chains/pool_reader.py), kept fresh by supervised `pools:<chain>`
tasks, judged by the guards (risk/pool_guards.py) on every price round.

Invariants:
- At start every configured pool is validated on chain: a pool that does not trade the
  asset's token on that chain, whose other token is no configured asset there, whose
  token decimals differ from the asset's, or that is not its factory's pool is a start
  error naming `assets[i].liquidity[j]` (nothing runs on a wrong pool). A node that does
  not answer at start is not a config problem: that chain's task validates its pools
  once the node answers (a wrong pool found then fails the task, visibly), and its
  assets keep depth_usd until then.
- Each `pools:<chain>` task steps the chain's `PoolWatcher` (Swap/Mint/Burn logs at the
  confirmed head, a full re-read every `[liquidity] refresh_interval_s`) every
  `poll_interval_s`; a round that reads nothing still confirms the snapshots' block.
  A pool's previous snapshot is the reader's `PoolUpdate.previous` (its state before
  the round that read it again; none when it was not read again: nothing moved).
  A failing step crashes the task (the supervisor restarts it, `agg_task_up` shows it),
  and its snapshots age until the guards call them stale; an RPC failure is logged as
  one warning line naming the task (so the chain) and the error, its traceback at debug.
- `pools(prices, now)` is what the ledger hands the engine each price round: per asset
  the pools that pass the guards against the oracle prices, the ones set aside and why
  (also the `agg_pool_ignored` and `agg_liquidity_fallback` gauges); a liquidity jump
  is judged in the round that read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from aggregator.config import AppConfig
from aggregator.metrics import Metrics
from aggregator.risk.liquidity import AssetPools, PoolSale
from aggregator.risk.pool_guards import PoolObservation, judge_asset
from aggregator.startup import StartupError
from chains.pool_reader import PoolConfigError, PoolMeta, PoolReader, PoolSpec, PoolWatcher
from chains.pool_state import PoolSnapshot
from chains.rpc import RpcClient, RpcError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Ref:
    where: str  # assets[i].liquidity[j]
    symbol: str
    chain: str
    address: str  # lowercased


@dataclass(frozen=True)
class _Side:
    symbol: str
    sells_token0: bool
    quote: str


def pool_side(cfg: AppConfig, ref: _Ref, meta: PoolMeta) -> _Side:
    """Which side of the pool the asset is and which asset the other token is; a pool
    that does not fit the config is a PoolConfigError naming `ref.where`."""
    asset = cfg.asset(ref.symbol)
    mine = asset.tokens[ref.chain].lower()
    if mine not in (meta.token0, meta.token1):
        raise PoolConfigError(
            f"{ref.where}: chain {ref.chain!r} pool {ref.address} trades "
            f"{meta.token0}/{meta.token1}, not {ref.symbol} ({mine})"
        )
    sells0 = mine == meta.token0
    other = meta.token1 if sells0 else meta.token0
    dec = meta.decimals0 if sells0 else meta.decimals1
    if dec != asset.decimals:
        raise PoolConfigError(
            f"{ref.where}: {ref.symbol} has {asset.decimals} decimals, the pool's token {dec}"
        )
    quotes = [a.symbol for a in cfg.assets if a.tokens.get(ref.chain, "").lower() == other]
    if not quotes:
        raise PoolConfigError(
            f"{ref.where}: chain {ref.chain!r} pool {ref.address}: its other token {other} "
            f"is no configured asset on {ref.chain!r} (the oracle cannot value it)"
        )
    return _Side(ref.symbol, sells0, quotes[0])


class LiquidityFeed:
    """Pool snapshots per chain and their judgement per price round (docstring)."""

    def __init__(
        self,
        cfg: AppConfig,
        clients: Mapping[str, RpcClient],
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.limits = cfg.liquidity
        self.clients = clients
        self.metrics = metrics
        self.clock = clock
        self.refs = [
            _Ref(f"assets[{i}].liquidity[{j}]", a.symbol, r.chain, r.pool.lower())
            for i, a in enumerate(cfg.assets)
            for j, r in enumerate(a.liquidity)
        ]
        self.enabled = bool(self.refs)
        self.watchers: dict[str, PoolWatcher] = {}
        self.sides: dict[tuple[str, str], _Side] = {}
        self.current: dict[tuple[str, str], PoolSnapshot] = {}
        self.previous: dict[tuple[str, str], PoolSnapshot] = {}
        self.read_at: dict[str, float] = {}
        self.head: dict[str, int] = {}

    @property
    def chains(self) -> list[str]:
        """The chains with configured pools, in config order (one `pools:<chain>` task each)."""
        return list(dict.fromkeys(ref.chain for ref in self.refs))

    async def start(self) -> None:
        """Validate every chain's pools (a misfit stops the start, naming it) and read
        them once, before the first price round. A chain whose node fails here is left to
        its `pools:<chain>` task, which validates it when the node answers (a restart
        amid RPC faults must not stop the daemon: the chaos soak found it); until then its
        assets keep depth_usd."""
        for chain in self.chains:
            try:
                await self.prepare(chain)
                await self.step(chain)
            except PoolConfigError as exc:
                raise StartupError(f"liquidity: {exc}") from None
            except RpcError as exc:
                log.warning("pools %s: not read at start (%s); retrying in the task", chain, exc)

    async def prepare(self, chain: str) -> None:
        """Validate `chain`'s pools on chain and set up its watcher (once). Raises
        PoolConfigError for a pool that does not fit the config, RpcError when the node
        does not answer."""
        if chain in self.watchers:
            return
        refs = [r for r in self.refs if r.chain == chain]
        reader = PoolReader(self.clients[chain], band=self.limits.band)
        factory = self.limits.factories.get(chain)
        # The reader checks the asset's token is in the pool and the other one is a
        # configured asset's token on this chain (pool_side then names which).
        counter = frozenset(a.tokens[chain] for a in self.cfg.assets if chain in a.tokens)
        specs = [
            PoolSpec(chain, r.address, factory=factory, label=r.where,
                     token=self.cfg.asset(r.symbol).tokens[chain], counter_tokens=counter)
            for r in refs
        ]  # fmt: skip
        metas = await reader.validate(specs)
        sides = {(chain, r.address): pool_side(self.cfg, r, metas[r.address]) for r in refs}
        self.sides.update(sides)
        self.watchers[chain] = PoolWatcher(
            reader, metas.values(), confirmations=self.cfg.chain(chain).confirmations,
            full_refresh_s=self.limits.refresh_interval_s,
            max_log_range=self.cfg.chain(chain).max_log_range,
            min_block=self.cfg.chain(chain).start_block,
        )  # fmt: skip

    async def step(self, chain: str) -> None:
        """One watcher round of `chain`; records what it read (docstring)."""
        w = self.watchers[chain]
        update = await w.step()
        if update.dropped:
            log.info("pools %s: round dropped: %s", chain, update.dropped)
            return
        now = self.clock()
        for addr, snap in w.snapshots.items():
            key = (chain, addr)
            before = update.previous.get(addr)
            if before is not None:
                self.previous[key] = before
            else:  # not read again this round: nothing moved since the last one
                self.previous.pop(key, None)
            self.current[key] = snap
        self.read_at[chain] = now
        if w.cursor is not None:
            self.head[chain] = w.cursor.number

    def supervised(self, chain: str, stop: asyncio.Event) -> Callable[[], Awaitable[None]]:
        """The body of the supervised `pools:<chain>` task."""

        async def run() -> None:
            while not stop.is_set():
                # A chain not validated at start is validated here; a wrong pool found
                # now fails the task (agg_task_up) and its assets keep depth_usd.
                await self.prepare(chain)
                await self.step(chain)
                await self.note_head(chain)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.limits.poll_interval_s)

        return run

    async def note_head(self, chain: str) -> None:
        """The chain's confirmed head, for the guards' block staleness."""
        head = await self.clients[chain].block_number()
        self.head[chain] = max(0, head - self.cfg.chain(chain).confirmations)

    def pools(self, prices: Mapping[str, float | None], now: float) -> dict[str, AssetPools]:
        """Per configured asset this round's pools (module docstring), and the gauges."""
        obs: dict[str, list[PoolObservation]] = {}
        for ref in self.refs:
            key = (ref.chain, ref.address)
            snap = self.current.get(key)
            obs.setdefault(ref.symbol, [])
            if snap is None:
                continue
            side = self.sides[key]
            obs[ref.symbol].append(PoolObservation(
                PoolSale(snap, side.sells_token0, side.quote), self.previous.get(key),
                self.head.get(ref.chain, snap.block_number), self.read_at.get(ref.chain, 0.0),
            ))  # fmt: skip
        out = {s: judge_asset(s, o, prices, self.limits, now) for s, o in obs.items()}
        self._gauges(out)
        return out

    def _gauges(self, judged: Mapping[str, AssetPools]) -> None:
        self.metrics.pool_ignored.clear()
        for symbol, ap in judged.items():
            for i in ap.ignored:
                self.metrics.pool_ignored.labels(
                    asset=symbol, chain=i.chain, pool=i.pool, reason=i.reason
                ).set(1)
            self.metrics.liquidity_fallback.labels(asset=symbol).set(int(not ap.used))


__all__ = ["LiquidityFeed", "pool_side"]
