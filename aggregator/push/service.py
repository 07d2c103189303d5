"""Per-chain push loops: listener -> controller -> sender, one independent task per chain.

Each chain has its own RPC client, listener, sender (nonce manager, records) and
status; one chain's failure (RPC down, keeper out of funds, reverts) is recorded in
that chain's status and never waits on, or stops, another chain's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from eth_utils import to_checksum_address

from aggregator.config import AppConfig
from aggregator.metrics import Metrics
from aggregator.push.controller import (
    RIDE_ALONG,
    Desired,
    GasModel,
    OnchainArrays,
    Planned,
    TriggerRules,
    candidates,
    hf_fixed_array,
    plan_chain,
    select_batch,
)
from aggregator.risk.engine import RiskEngine
from aggregator.risk.view import LedgerView
from chains.pusher.errors import BatchTooLarge, PushError
from chains.pusher.keys import KeeperKey
from chains.pusher.listener import RegistryListener
from chains.pusher.sender import ChainSender, SenderHooks
from chains.pusher.store import PushStore
from chains.pusher.types import PushChainSettings
from chains.registry_codec import RegistryEntry
from chains.rpc import RpcClient, RpcError
from chains.units import TIERS

log = logging.getLogger(__name__)

FAILING_AFTER = 3  # consecutive failed cycles before /readyz names the chain


@dataclass
class ChainPushState:
    """What /v1/chains, /readyz and metrics show for one chain's pusher."""

    chain: str
    cycles: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None
    last_ok_at: float | None = None
    last_push_at: float | None = None
    last_batch: dict[str, Any] | None = None
    pushes_sent: int = 0
    pushes_failed: int = 0
    entries_pushed: int = 0
    keeper_balance_wei: int | None = None
    keeper_low: bool = False
    triggered: int = 0
    ride_alongs: int = 0
    onchain_block: int = -1
    onchain_timestamp: int = 0
    dry_run_batches: list[dict[str, Any]] = field(default_factory=list)


class ChainPusher:
    def __init__(
        self,
        settings: PushChainSettings,
        client: RpcClient,
        store: PushStore,
        key: KeeperKey | None,
        *,
        dry_run: bool,
        hooks: SenderHooks | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.client = client
        self.sender = (
            None
            if key is None or dry_run
            else ChainSender(settings, client, store, key, hooks=hooks)
        )
        self.listener = RegistryListener(
            settings.name,
            client,
            settings.registry,
            store,
            payload_of=None if self.sender is None else self.sender.payload_of,
            recheck_depth=max(12, settings.confirmations),
        )
        if self.sender is not None:
            listener = self.listener
            self.sender.on_unmined = lambda rec: listener.invalidate(a for a, _ in rec.entries())
        # The listener's state as arrays by engine account index (vectorised triggers).
        self.onchain_arrays = OnchainArrays()
        self.known_accounts = 0  # book accounts already handed to the listener
        self.key_address = None if key is None else key.address
        self.state = ChainPushState(settings.name)
        self.wake = asyncio.Event()


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
        st = cp.state
        try:
            await self.cycle(name)
        except (RpcError, PushError, OSError, TimeoutError) as exc:
            st.consecutive_failures += 1
            st.last_error = f"{type(exc).__name__}: {exc}"
            if st.consecutive_failures in (1, FAILING_AFTER) or st.consecutive_failures % 20 == 0:
                log.warning(
                    "pusher %s: cycle failed (%d in a row): %s",
                    name,
                    st.consecutive_failures,
                    st.last_error,
                )
            self._metrics_failure(name)
            return False
        st.consecutive_failures = 0
        st.last_ok_at = time.time()
        return True

    # ------------------------------------------------------------------ one cycle
    async def cycle(self, name: str) -> list[Planned]:
        cp = self.chains[name]
        st = cp.state
        st.cycles += 1
        if not self.ready():
            return []
        ledger = self.ledger
        n = ledger.n_accounts
        addresses = ledger.addresses
        new = addresses[cp.known_accounts : n]
        snap = await cp.listener.refresh(new)
        cp.known_accounts = n
        st.onchain_block, st.onchain_timestamp = snap.block, snap.timestamp
        cp.onchain_arrays.sync(snap.entries, snap.changed, ledger.account_index, addresses, n)
        if cp.sender is not None:
            await cp.sender.step()
        if cp.key_address is not None:
            await self._check_balance(cp)
        self._metrics_sender(cp)
        if self.paused:
            return []
        inflight = cp.sender.inflight_entries() if cp.sender is not None else {}
        planned = self._plan(name, cp, snap.entries, snap.timestamp, inflight)
        budget = int(cp.settings.batch_gas_budget / cp.settings.gas_headroom)
        batch = select_batch(planned, budget, self.gas_model)
        if not batch:
            return []
        if cp.sender is None:
            self._dry_run(cp, batch)
            return batch
        # Several batches per cycle, up to max_in_flight transactions: a price move
        # that changes thousands of accounts goes out in one cycle (each batch sized
        # by the gas budget), not one batch per interval.
        sent: list[Planned] = []
        while batch and cp.sender.can_send():
            got = await self._send(cp, batch)
            if not got:
                break
            sent += got
            done = {p.account for p in got}
            planned = [p for p in planned if p.account not in done]
            batch = select_batch(planned, budget, self.gas_model)
        return sent

    async def _send(self, cp: ChainPusher, batch: list[Planned]) -> list[Planned]:
        assert cp.sender is not None
        st = cp.state
        while batch:
            try:
                rec = await cp.sender.send_batch([(p.account, p.entry) for p in batch])
            except BatchTooLarge as exc:
                # The model was optimistic: shrink in proportion and try again.
                keep = max(1, int(len(batch) * exc.budget / exc.estimate * 0.9))
                if keep >= len(batch):
                    keep = len(batch) - 1
                batch = batch[:keep]
                continue
            except PushError:
                st.pushes_failed += 1
                if self.metrics is not None:
                    self.metrics.pusher_failed.labels(chain=cp.name).inc()
                raise
            self._note_push(cp, batch, rec.summary())
            return batch
        return []

    def _plan(
        self,
        chain: str,
        cp: ChainPusher,
        onchain: Mapping[str, RegistryEntry | None],
        chain_ts: int,
        inflight: dict[str, RegistryEntry],
    ) -> list[Planned]:
        """The trigger rules for every account of the book: one vectorised pass over the
        engine's arrays finds the accounts that may need a push (against what is on
        chain), the per-account rules (plan_chain) run for those and for every account
        with an entry in flight (whose baseline is that entry)."""
        ledger = self.ledger
        n = ledger.n_accounts
        base = cp.onchain_arrays
        hf = hf_fixed_array(ledger.hf_array(n))
        tier = ledger.tier_array(n).astype(np.int64)
        credit = ledger.credit_array(chain, n).astype(np.int64)
        # Degraded prices: credit may go down, never up. What is on chain (after the
        # vault consumed some) is the ceiling, not the ledger's last value.
        cap = ledger.degraded_array(n) & base.present[:n]
        credit = np.where(cap, np.minimum(credit, base.credit[:n]), credit)
        has_debt = np.isfinite(ledger.hf_array(n))
        idx = candidates(
            base,
            credit=credit,
            hf=hf,
            tier=tier,
            has_debt=has_debt,
            chain_ts=chain_ts,
            rules=self.rules,
        )
        # An asset without any price counts as zero in these figures (a debt of it
        # would inflate HF and credit): push nothing for its holders; their entries
        # age and the vault fails closed.
        unpriced = ledger.unpriced_array(n)
        if unpriced.any():
            idx = idx[~unpriced[idx]]
        addresses = ledger.addresses
        picked = {addresses[i]: int(i) for i in idx.tolist()}
        index = ledger.account_index
        for a in inflight:
            i = index.get(a)
            if i is not None and i < n and not unpriced[i]:
                picked[a] = i
        desired = [
            Desired(a, int(credit[i]), int(hf[i]), int(tier[i]), bool(has_debt[i]))
            for a, i in picked.items()
        ]
        baseline = {a: inflight.get(a, onchain.get(a)) for a in picked}
        empty = {a: onchain.get(a) is None for a in picked}
        return plan_chain(desired, baseline, chain_ts, self.rules, empty)

    def _dry_run(self, cp: ChainPusher, batch: list[Planned]) -> None:
        gas = self.gas_model.cost(batch)
        summary = {
            "at": time.time(),
            "entries": len(batch),
            "triggered": sum(1 for p in batch if p.priority < RIDE_ALONG),
            "estimated_gas": gas,
            "accounts": [
                {
                    "account": to_checksum_address(p.account),
                    "reason": p.reason,
                    "entry": asdict(p.entry),
                }
                for p in batch[:20]
            ],
        }
        cp.state.dry_run_batches = [*cp.state.dry_run_batches[-9:], summary]
        cp.state.last_batch = summary
        log.info(
            "pusher %s [dry run]: would push %d entries (%d triggered: %s), ~%d gas",
            cp.name,
            len(batch),
            summary["triggered"],
            ", ".join(sorted({p.reason for p in batch})),
            gas,
        )

    def _note_push(self, cp: ChainPusher, batch: list[Planned], rec: dict[str, Any]) -> None:
        st = cp.state
        st.pushes_sent += 1
        st.entries_pushed += len(batch)
        st.triggered += sum(1 for p in batch if p.priority < RIDE_ALONG)
        st.ride_alongs += sum(1 for p in batch if p.priority == RIDE_ALONG)
        st.last_push_at = time.time()
        st.last_batch = {**rec, "reasons": sorted({p.reason for p in batch})}
        # The hash goes in its own field: in a message the log filter cannot tell a
        # 32-byte hash from a private key and scrubs it (aggregator/logging.py).
        log.info(
            "pusher %s: sent %d entries (%s) nonce %d",
            cp.name,
            len(batch),
            ", ".join(sorted({p.reason for p in batch})),
            rec["nonce"],
            extra={"chain": cp.name, "tx_hash": rec["tx_hash"], "nonce": rec["nonce"]},
        )
        if self.metrics is not None:
            self.metrics.pusher_sent.labels(chain=cp.name).inc()
            self.metrics.pusher_entries.labels(chain=cp.name).inc(len(batch))

    async def _check_balance(self, cp: ChainPusher) -> None:
        assert cp.key_address is not None
        raw = await cp.client.request("eth_getBalance", [cp.key_address, "latest"])
        bal = int(str(raw), 16)
        st = cp.state
        st.keeper_balance_wei = bal
        low = bal < self.min_balance_wei
        if low and not st.keeper_low:
            log.warning(
                "pusher %s: keeper %s balance %.6f ETH is below pusher.min_keeper_balance_eth "
                "(%.6f); fund it or updates will stop",
                cp.name,
                cp.key_address,
                bal / 1e18,
                self.min_balance_wei / 1e18,
            )
        st.keeper_low = low
        if self.metrics is not None:
            self.metrics.pusher_keeper_balance.labels(chain=cp.name).set(bal / 1e18)
            self.metrics.pusher_keeper_low.labels(chain=cp.name).set(1 if low else 0)

    def _metrics_sender(self, cp: ChainPusher) -> None:
        m = self.metrics
        if m is None or cp.sender is None:
            return
        s = cp.sender.status
        m.pusher_pending.labels(chain=cp.name).set(s.pending_txs)
        if s.next_nonce is not None:
            m.pusher_nonce.labels(chain=cp.name).set(s.next_nonce)
        m.advance(m.pusher_gas_used, s.gas_used_total, cp.name)
        m.advance(m.pusher_confirmed, s.confirmed_total, cp.name)
        m.advance(m.pusher_replacements, s.replacements_total, cp.name)
        m.advance(m.pusher_rebroadcasts, s.rebroadcasts_total, cp.name)
        m.advance(m.pusher_reorgs, s.reorgs_total, cp.name)

    def _metrics_failure(self, name: str) -> None:
        if self.metrics is not None:
            self.metrics.pusher_cycle_failures.labels(chain=name).inc()

    # ------------------------------------------------------------------ views
    def chain_status(self, name: str) -> dict[str, Any]:
        cp = self.chains.get(name)
        if cp is None:
            return {"enabled": False, "reason": self.skipped.get(name, "not configured")}
        st = cp.state
        out: dict[str, Any] = {
            "enabled": True,
            "dry_run": self.dry_run,
            "paused": self.paused,
            "keeper": cp.key_address,
            "keeper_balance_wei": None
            if st.keeper_balance_wei is None
            else str(st.keeper_balance_wei),
            "keeper_balance_eth": None
            if st.keeper_balance_wei is None
            else st.keeper_balance_wei / 1e18,
            "keeper_low": st.keeper_low,
            "registry": cp.settings.registry,
            "onchain_block": st.onchain_block,
            "cycles": st.cycles,
            "consecutive_failures": st.consecutive_failures,
            "last_error": st.last_error,
            "last_ok_at": st.last_ok_at,
            "last_push_at": st.last_push_at,
            "pushes_sent": st.pushes_sent,
            "pushes_failed": st.pushes_failed,
            "entries_pushed": st.entries_pushed,
            "last_batch": st.last_batch,
            "nonce": None,
            "pending_txs": 0,
        }
        if cp.sender is not None:
            s = cp.sender.status
            out["nonce"] = s.next_nonce
            out["pending_txs"] = s.pending_txs
            out["sender"] = {
                k: v for k, v in asdict(s).items() if k not in ("chain", "sender", "next_nonce")
            }
            out["pending"] = [r.summary() for r in cp.sender.open_records()]
        return out

    def onchain_view(self, address: str) -> dict[str, Any]:
        """Per chain: the registry entry last read for `address` (null: empty slot)."""
        key = address.lower()
        out: dict[str, Any] = {}
        for name, cp in self.chains.items():
            reading = cp.listener.onchain.get(key)
            if reading is None:
                out[name] = None
                continue
            e = reading.entry
            out[name] = {
                "block": reading.block,
                "read_at": reading.read_at,
                "entry": None
                if e is None
                else {
                    "credit_usd6": str(e.credit_usd6),
                    "hf_1e9": str(e.hf_1e9),
                    "hf": None if e.infinite_hf else e.hf_1e9 / 1e9,
                    "tier": TIERS[e.tier],
                    "as_of": e.as_of,
                },
            }
        return out

    def readiness_reasons(self) -> list[str]:
        out = []
        for name, cp in self.chains.items():
            st = cp.state
            if st.consecutive_failures >= FAILING_AFTER:
                out.append(
                    f"pusher {name}: {st.consecutive_failures} failed cycles in a row "
                    f"({st.last_error})"
                )
        return out
