"""Per-chain push loops: listener -> controller -> sender, one independent task per chain.

Each chain has its own RPC client, listener, sender (nonce manager, records) and
status; one chain's failure (RPC down, keeper out of funds, reverts) is recorded in
that chain's status and never waits on, or stops, another chain's loop.

The parts: `chain_pusher.py` (one chain's listener, sender, state), `planning.py` (which
accounts need a push: pure), `controller.py` (trigger rules, batch selection: pure),
`push_status.py` (state, metrics, API and /readyz views). This module is the I/O of a
cycle: read the chain, step the sender, send the selected batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from aggregator.config import AppConfig
from aggregator.metrics import Metrics
from aggregator.push import push_status
from aggregator.push.chain_pusher import ChainPusher
from aggregator.push.controller import (
    GasModel,
    Planned,
    TriggerRules,
    as_of_limit,
    plan_batches,
    select_batch,
)
from aggregator.push.planning import plan_accounts
from aggregator.push.push_status import PushRecorder
from aggregator.risk.engine import RiskEngine
from aggregator.risk.view import LedgerView
from chains.pusher.errors import BatchTooLarge, PushError
from chains.pusher.fees import Fees
from chains.pusher.keys import KeeperKey
from chains.pusher.listener import Snapshot
from chains.pusher.sender import EstimatedBatch, SenderHooks
from chains.pusher.store import PushStore
from chains.pusher.types import PushChainSettings
from chains.rpc import RpcClient, RpcError

log = logging.getLogger(__name__)

__all__ = ["ChainPusher", "PushService"]


class PushService:
    def __init__(
        self,
        cfg: AppConfig,
        engine: RiskEngine,
        store: PushStore,
        clients: dict[str, RpcClient],
        *,
        metrics: Metrics | None,
        key: KeeperKey | None,
        ready: Callable[[], bool] = lambda: True,
        hooks: SenderHooks | None = None,
        gas_model: GasModel | None = None,
    ) -> None:
        p = cfg.pusher
        self.cfg = cfg
        self.pcfg = p
        self.engine = engine
        self.ledger = LedgerView(engine)
        self.metrics = metrics
        self.ready = ready
        self.rules = TriggerRules.from_config(p)
        self.gas_model = gas_model or GasModel()
        self.dry_run = p.dry_run
        self.paused = False
        self.key_address = None if key is None else key.address
        self.min_balance_wei = int(p.min_keeper_balance_eth * 10**18)
        self.record = PushRecorder(metrics, self.min_balance_wei)
        self.chains: dict[str, ChainPusher] = {}
        self.skipped: dict[str, str] = {}
        for c in cfg.chains:
            if c.contracts.registry is None:
                self.skipped[c.name] = "no contracts.registry configured"
                continue
            self.chains[c.name] = ChainPusher(
                PushChainSettings.from_config(c, p),
                clients[c.name],
                store,
                key,
                dry_run=p.dry_run,
                hooks=hooks,
            )

    # ------------------------------------------------------------------ lifecycle
    async def load(self) -> None:
        for cp in self.chains.values():
            await cp.listener.load()

    def wake(self) -> None:
        """New ledger results: run every chain's cycle now instead of at its interval."""
        for cp in self.chains.values():
            cp.wake.set()

    def set_paused(self, paused: bool) -> dict[str, Any]:
        if paused != self.paused:
            log.warning("pusher %s by admin request", "paused" if paused else "resumed")
        self.paused = paused
        if not paused:
            self.wake()
        return {"paused": self.paused}

    async def run_chain(self, name: str, stop: asyncio.Event) -> None:
        """The supervised loop of one chain. RPC and push failures are counted and
        retried at the next interval; anything else crashes the task (supervisor
        restarts it with backoff, /readyz shows it)."""
        cp = self.chains[name]
        interval = self.pcfg.interval_s
        while not stop.is_set():
            cp.wake.clear()
            await self.cycle_safe(name)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await cp.wake.wait()

    async def cycle_safe(self, name: str) -> bool:
        cp = self.chains[name]
        try:
            await self.cycle(name)
        except (RpcError, PushError, OSError, TimeoutError) as exc:
            self.record.cycle_failed(cp, exc)
            return False
        cp.state.consecutive_failures = 0
        cp.state.last_ok_at = time.time()
        return True

    # ------------------------------------------------------------------ one cycle
    async def cycle(self, name: str) -> list[Planned]:
        cp = self.chains[name]
        cp.state.cycles += 1
        if not self.ready():
            return []
        snap = await self._read_chain(cp)
        if cp.sender is not None:
            await cp.sender.step()
        if cp.key_address is not None:
            bal = await cp.client.request("eth_getBalance", [cp.key_address, "latest"])
            self.record.balance(cp, int(str(bal), 16))
        self.record.sender(cp)
        if self.paused:
            return []
        inflight = cp.sender.inflight_entries() if cp.sender is not None else {}
        planned = plan_accounts(
            self.ledger,
            name,
            base=cp.onchain_arrays,
            onchain=snap.entries,
            chain_ts=snap.timestamp,
            inflight=inflight,
            rules=self.rules,
            limit=as_of_limit(snap.timestamp, time.time()),
        )
        return await self._send_planned(cp, planned)

    async def _read_chain(self, cp: ChainPusher) -> Snapshot:
        """The listener's view of the registry, with the book's new accounts added."""
        ledger = self.ledger
        n = ledger.n_accounts
        addresses = ledger.addresses
        snap = await cp.listener.refresh(addresses[cp.known_accounts : n])
        cp.known_accounts = n
        cp.state.onchain_block, cp.state.onchain_timestamp = snap.block, snap.timestamp
        cp.onchain_arrays.sync(snap.entries, snap.changed, ledger.account_index, addresses, n)
        return snap

    async def _send_planned(self, cp: ChainPusher, planned: list[Planned]) -> list[Planned]:
        budget = int(cp.settings.batch_gas_budget / cp.settings.gas_headroom)
        batch = select_batch(planned, budget, self.gas_model)
        if not batch:
            return []
        if cp.sender is None:
            self.record.dry_run(cp, batch, self.gas_model.cost(batch))
            return batch
        # Several batches per cycle, up to max_in_flight transactions: a price move
        # that changes thousands of accounts goes out in one cycle (each batch sized
        # by the gas budget), not one batch per interval. The batches that fit are
        # chosen first and priced at once (read-only RPC: one round trip instead of
        # one per batch; one eth_call each at the gas model's bound), with one fee
        # read for all of them; they are then signed at consecutive nonces, stored in
        # one transaction and broadcast in nonce order, the most urgent first
        # (docs/performance.md, "Push latency: where the time goes").
        sender = cp.sender
        sent: list[Planned] = []
        fees: Fees | None = None
        while sender.can_send():
            batches = plan_batches(planned, budget, self.gas_model, sender.room())
            if not batches:
                break
            if fees is None:
                fees = await sender.fees()
            got = await self._send_batches(cp, batches, fees)
            if not got:
                break
            sent += got
            done = {p.account for p in got}
            planned = [p for p in planned if p.account not in done]
        return sent

    async def _send_batches(
        self, cp: ChainPusher, batches: list[list[Planned]], fees: Fees
    ) -> list[Planned]:
        """Price every batch at once, then sign, store and broadcast the ones priced
        within the budget, in order, with one store transaction for their records and
        one for their `sent` state (ChainSender.send_estimated_many). A batch priced
        above the budget (the model was optimistic) is shrunk and sent alone, and what
        it and the batches after it leave is chosen again from the plan; a batch that
        would revert fails the cycle after the ones before it are sent."""
        sender = cp.sender
        assert sender is not None
        priced = await asyncio.gather(
            *(
                sender.estimate_batch([(p.account, p.entry) for p in b], self.gas_model.cost(b))
                for b in batches
            ),
            return_exceptions=True,
        )
        budget = sender.settings.batch_gas_budget
        ok: list[EstimatedBatch] = []
        for got in priced:
            if isinstance(got, BaseException) or got.estimate > budget:
                break
            ok.append(got)
        sent: list[Planned] = []
        if ok:
            try:
                recs = await sender.send_estimated_many(ok, fees)
            except PushError:
                self.record.push_failed(cp)
                raise
            for batch, rec in zip(batches, recs, strict=False):
                self.record.push_sent(cp, batch, rec.summary())
                sent += batch
        if len(ok) == len(batches):
            return sent
        failed = priced[len(ok)]
        if isinstance(failed, PushError):
            self.record.push_failed(cp)
            raise failed
        if isinstance(failed, BaseException):
            raise failed
        return sent + await self._send(cp, batches[len(ok)], failed, fees)

    async def _send(
        self, cp: ChainPusher, batch: list[Planned], priced: EstimatedBatch, fees: Fees
    ) -> list[Planned]:
        """One batch priced above the budget: shrink in proportion until it fits."""
        assert cp.sender is not None
        got: EstimatedBatch | None = priced
        while batch:
            try:
                if got is None:
                    got = await cp.sender.estimate_batch(
                        [(p.account, p.entry) for p in batch], self.gas_model.cost(batch)
                    )
                rec = await cp.sender.send_estimated(got, fees)
            except BatchTooLarge as exc:
                # The model was optimistic: shrink in proportion and try again.
                keep = max(1, int(len(batch) * exc.budget / exc.estimate * 0.9))
                if keep >= len(batch):
                    keep = len(batch) - 1
                batch, got = batch[:keep], None
                continue
            except PushError:
                self.record.push_failed(cp)
                raise
            self.record.push_sent(cp, batch, rec.summary())
            return batch
        return []

    # ------------------------------------------------------------------ views
    def chain_status(self, name: str) -> dict[str, Any]:
        cp = self.chains.get(name)
        if cp is None:
            return {"enabled": False, "reason": self.skipped.get(name, "not configured")}
        return push_status.chain_status(cp, dry_run=self.dry_run, paused=self.paused)

    def onchain_view(self, address: str) -> dict[str, Any]:
        """Per chain: the registry entry last read for `address` (null: empty slot)."""
        return push_status.onchain_view(self.chains, address)

    def readiness_reasons(self) -> list[str]:
        return push_status.readiness_reasons(self.chains)
