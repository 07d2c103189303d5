"""One keeper key on one chain: nonces, fees, persisted records, replacement, receipts.

`ChainSender` is the composition; each part lives in a module named for it:
`nonces.py` (NonceManager, reconcile), `records.py` (the open records in memory),
`transitions.py` (persisted state changes, SenderHooks), `broadcast.py` (signing, fees,
broadcast, fee-bump replacement, rebroadcast), `follow.py` (one pass over the open
records: receipts, stuck, reorgs, finality), `gaps.py` (nonce gaps left by another
process: filled after a wait, under the lease), `chain_reads.py` (read-only RPC questions).

Life of an update batch (docs/pusher.md, "Crash safety"):

1. estimate gas (a batch that would revert is never signed), take EIP-1559 fees from
   eth_feeHistory, allocate the next nonce, sign (`estimate_batch` is read-only, so the
   batches of one cycle are estimated at once; `send_estimated` then signs, persists
   and broadcasts them one at a time, in nonce order, with one fee read per cycle);
2. persist the record (nonce, fees, payload hash, signed bytes, hash) - only then
3. broadcast. From here on the nonce belongs to this payload: it is only ever sent
   again as the same bytes, or as a replacement of the same payload with both fees
   bumped by >= fee_bump (up to the cap) when it is stuck for stuck_after_s;
4. follow receipts of every hash ever sent until `confirmations` blocks are on top of
   it (the indexer's confirmed view);
   a reorg that removes the block puts the record back to `sent` and rebroadcasts it,
   so its update is re-queued at its own nonce (no gap for later nonces).

After a restart `reconcile()` compares the open records with eth_getTransactionCount
(latest and pending): a record below the latest nonce is looked up by its hashes
(mined, or dropped when another transaction took the nonce), a record at or above it is
rebroadcast byte for byte. The next nonce is never below a nonce a record may hold.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from eth_utils import keccak, to_checksum_address

from chains.contracts import decode_error
from chains.pusher.broadcast import Broadcaster, update_calldata
from chains.pusher.chain_reads import KeyReads
from chains.pusher.errors import BatchReverts, BatchTooLarge, PushError
from chains.pusher.fees import Fees
from chains.pusher.follow import RecordFollower
from chains.pusher.gaps import GapFiller
from chains.pusher.keys import KeeperKey
from chains.pusher.nonces import NonceManager, reconcile
from chains.pusher.records import OpenRecords
from chains.pusher.store import PushStore
from chains.pusher.transitions import RecordStates, SenderHooks
from chains.pusher.types import PushChainSettings, SenderStatus, TxRecord
from chains.registry_codec import RegistryEntry, pack_batch
from chains.rpc import RpcClient, RpcResponseError

log = logging.getLogger(__name__)

__all__ = ["ChainSender", "EstimatedBatch", "NonceManager", "SenderHooks", "update_calldata"]


@dataclass(frozen=True)
class EstimatedBatch:
    """One packed update(bytes) batch and its eth_estimateGas: the input of
    `send_estimated`, made only by `estimate_batch` (the estimate is of these bytes)."""

    size: int  # entries
    payload: bytes
    data: bytes  # the calldata of update(payload)
    # Gas the batch ran within at the head: eth_estimateGas, or the caller's bound when
    # an eth_call at that limit ran through. The limit signed is this x gas_headroom.
    estimate: int


class ChainSender:
    def __init__(
        self,
        settings: PushChainSettings,
        client: RpcClient,
        store: PushStore,
        key: KeeperKey,
        *,
        hooks: SenderHooks | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.chain = settings.name
        self.client = client
        self.store = store
        self.key = key
        self.sender = key.address
        self.registry = to_checksum_address(settings.registry)
        self.hooks = hooks or SenderHooks()
        self.clock = clock
        self.nonces = NonceManager(self.chain, self.sender)
        self.open = OpenRecords()
        self.status = SenderStatus(chain=self.chain, sender=self.sender)
        self.reads = KeyReads(client, self.sender, settings.confirmations)
        self.states = RecordStates(
            self.chain, store, self.open, self.status, hooks=self.hooks, clock=clock
        )
        self.out = Broadcaster(
            settings,
            client,
            key,
            self.registry,
            states=self.states,
            reads=self.reads,
            nonces=self.nonces,
            status=self.status,
            clock=clock,
        )
        self.gaps = GapFiller(
            settings,
            client,
            key,
            reads=self.reads,
            store=store,
            status=self.status,
            fees=self.out.fees,
            states=self.states,
            broadcast=self.out.broadcast,
            clock=clock,
        )
        self.follower = RecordFollower(
            settings,
            client,
            records=self.open,
            reads=self.reads,
            states=self.states,
            out=self.out,
            clock=clock,
        )

    # ------------------------------------------------------------------ queries
    @property
    def records(self) -> dict[int, TxRecord]:
        """Open records by id (prepared, sent, mined)."""
        return self.open.records

    @property
    def on_unmined(self) -> Callable[[TxRecord], None] | None:
        """Called when a mined record left the chain (reorg) or a record was dropped."""
        return self.states.on_unmined

    @on_unmined.setter
    def on_unmined(self, fn: Callable[[TxRecord], None] | None) -> None:
        self.states.on_unmined = fn

    def open_records(self) -> list[TxRecord]:
        return self.open.ordered()

    def can_send(self) -> bool:
        return self.room() > 0

    def room(self) -> int:
        """How many more transactions may go out now (0 until nonces are reconciled)."""
        if not self.nonces.reconciled:
            return 0
        return max(0, self.settings.max_in_flight - len(self.open))

    def inflight_entries(self) -> dict[str, RegistryEntry]:
        """account (lower) -> newest entry in an open record (sent, not yet final)."""
        return self.open.inflight_entries()

    def payload_of(self, tx_hash: str) -> bytes | None:
        """The payload we sent under `tx_hash` (any attempt of an open or recently final
        record), else None."""
        return self.open.payload_of(tx_hash)

    def _refresh_status(self) -> None:
        self.status.pending_txs = len(self.open)
        self.status.next_nonce = self.nonces.next_nonce

    async def balance(self) -> int:
        return await self.reads.balance()

    async def fees(self) -> Fees:
        return await self.out.fees()

    # ------------------------------------------------------------------ reconcile
    async def reconcile(self) -> None:
        """Match stored open records with the chain; set the next nonce."""
        latest, pending = await reconcile(
            self.nonces, self.open, self.reads, self.store, self.states
        )
        self._refresh_status()
        log.info(
            "chain %s: pusher reconciled: latest nonce %d, pending %d, %d open record(s), "
            "next nonce %d",
            self.chain,
            latest,
            pending,
            len(self.open),
            self.nonces.next_nonce,
        )

    # ------------------------------------------------------------------ sending
    async def estimate_batch(
        self, entries: list[tuple[str, RegistryEntry]], gas_hint: int | None = None
    ) -> EstimatedBatch:
        """Pack one update(bytes) batch and find a gas limit it runs within at the head:
        a batch that would revert raises BatchReverts and is never signed. Read-only (no
        nonce, no record), so several batches of one cycle (disjoint accounts) may be
        priced at once.

        `gas_hint`: an upper bound of the batch's gas (the caller's gas model). One
        eth_call at that limit proves it (no revert, no out-of-gas: a transaction with
        at least that limit runs through at this state) at the cost of one execution;
        eth_estimateGas searches for the exact figure with ~10 (anvil: 85-100 ms vs
        5-9 ms for 3,200 entries, docs/performance.md). When the call fails for any
        reason (a revert, a model that is short on this chain, e.g. gas that includes
        an L1 data fee) eth_estimateGas prices the batch, or names the revert."""
        payload = pack_batch(entries)
        data = update_calldata(payload)
        if (
            gas_hint is not None
            and gas_hint <= self.settings.batch_gas_budget
            and await self._runs_within(data, gas_hint)
        ):
            return EstimatedBatch(len(entries), payload, data, gas_hint)
        return EstimatedBatch(len(entries), payload, data, await self.estimate_gas(data))

    async def _runs_within(self, data: bytes, gas: int) -> bool:
        try:
            await self.client.request(
                "eth_call",
                [
                    {
                        "from": self.sender,
                        "to": self.registry,
                        "data": "0x" + data.hex(),
                        "gas": hex(gas),
                    },
                    "latest",
                ],
            )
        except RpcResponseError:
            return False
        return True

    async def send_batch(self, entries: list[tuple[str, RegistryEntry]]) -> TxRecord:
        """Estimate, sign, persist, broadcast one update(bytes) batch."""
        if not self.nonces.reconciled:
            await self.reconcile()
        self._check_room()
        return await self.send_estimated(await self.estimate_batch(entries))

    async def send_estimated(self, batch: EstimatedBatch, fees: Fees | None = None) -> TxRecord:
        """Sign, persist, broadcast a batch priced by `estimate_batch`, with `fees` (one
        eth_feeHistory read for every batch of a cycle) or fresh ones. Nonces are
        allocated here, in call order: call it for one batch at a time."""
        if not self.nonces.reconciled:
            await self.reconcile()
        self._check_room()
        budget = self.settings.batch_gas_budget
        if batch.estimate > budget:
            raise BatchTooLarge(batch.estimate, budget)
        gas_limit = min(budget, math.ceil(batch.estimate * self.settings.gas_headroom))
        if fees is None:
            fees = await self.out.fees()
        self.out.note_cap(fees.capped)
        rec = await self._store_signed(batch.payload, batch.data, gas_limit, fees)
        self.open.add(rec)
        self._refresh_status()
        self.states.persisted(rec)
        await self.out.broadcast(rec)
        return rec

    async def send_estimated_many(
        self, batches: list[EstimatedBatch], fees: Fees
    ) -> list[TxRecord]:
        """`send_estimated` for the batches of one cycle with one store transaction for
        all their records and one for their `sent` state, instead of two per batch
        (each ~50-100 ms on a loaded SQLite, serialised across chains, the largest
        part of the sending path: docs/performance.md). The invariants are those of
        one batch: every batch is priced within the budget first (else BatchTooLarge,
        nothing signed); nonces are consecutive, in the order of `batches`; every
        record is stored (all or none: a failed insert gives the nonces back) before
        any of them is broadcast; they go out in nonce order. A broadcast that fails
        leaves its record and the later ones stored and open (the next step sends
        them, same bytes), and those a node took are persisted as sent before the
        error is raised."""
        if not batches:
            return []
        if not self.nonces.reconciled:
            await self.reconcile()
        budget = self.settings.batch_gas_budget
        for b in batches:
            if b.estimate > budget:
                raise BatchTooLarge(b.estimate, budget)
        if len(self.open) + len(batches) > self.settings.max_in_flight:
            raise PushError(
                f"chain {self.chain}: {len(self.open)} transactions in flight, "
                f"{len(batches)} more would exceed max_in_flight {self.settings.max_in_flight}"
            )
        self.out.note_cap(fees.capped)
        recs = await self._store_signed_many(batches, fees)
        for rec in recs:
            self.open.add(rec)
        self._refresh_status()
        for rec in recs:
            self.states.persisted(rec)
        held: list[TxRecord] = []
        try:
            for rec in recs:
                if await self.out.deliver(rec):
                    held.append(rec)
        finally:
            await self.states.mark_sent_many(held)
        return recs

    async def _store_signed_many(self, batches: list[EstimatedBatch], fees: Fees) -> list[TxRecord]:
        first = self.nonces.next_nonce
        nonces = [self.nonces.allocate() for _ in batches]
        try:
            recs = [
                self._signed(
                    n,
                    b.payload,
                    b.data,
                    min(
                        self.settings.batch_gas_budget,
                        math.ceil(b.estimate * self.settings.gas_headroom),
                    ),
                    fees,
                )
                for n, b in zip(nonces, batches, strict=True)
            ]
            await self.store.insert_txs(recs)
        except BaseException:
            # Nothing signed left the process and nothing was stored: the nonces are free.
            self.nonces.release_from(first, len(nonces))
            raise
        return recs

    def _check_room(self) -> None:
        if len(self.open) >= self.settings.max_in_flight:
            raise PushError(
                f"chain {self.chain}: {len(self.open)} transactions in flight "
                f"(max_in_flight {self.settings.max_in_flight})"
            )

    async def _store_signed(
        self, payload: bytes, data: bytes, gas_limit: int, fees: Fees
    ) -> TxRecord:
        """Allocate a nonce, sign, and store the record: only then may it be broadcast."""
        nonce = self.nonces.allocate()
        try:
            rec = self._signed(nonce, payload, data, gas_limit, fees)
            await self.store.insert_tx(rec)
        except BaseException:
            # Nothing signed left the process and nothing was stored: the nonce is free.
            self.nonces.release(nonce)
            raise
        assert rec.id is not None
        return rec

    def _signed(
        self, nonce: int, payload: bytes, data: bytes, gas_limit: int, fees: Fees
    ) -> TxRecord:
        raw, tx_hash = self.out.sign(nonce, data, gas_limit, fees.max_fee, fees.priority_fee)
        return TxRecord(
            chain=self.chain,
            sender=self.sender,
            nonce=nonce,
            to=self.registry,
            payload=payload,
            payload_hash="0x" + keccak(payload).hex(),
            gas_limit=gas_limit,
            max_fee=fees.max_fee,
            priority_fee=fees.priority_fee,
            raw_tx=raw,
            tx_hash=tx_hash,
            hashes=[tx_hash],
            created_at=self.clock(),
        )

    async def estimate_gas(self, data: bytes) -> int:
        try:
            got = await self.client.request(
                "eth_estimateGas",
                [{"from": self.sender, "to": self.registry, "data": "0x" + data.hex()}],
            )
        except RpcResponseError as exc:
            reason = exc.message
            if isinstance(exc.data, str) and exc.data.startswith("0x") and len(exc.data) >= 10:
                reason = decode_error(exc.data)
            raise BatchReverts(f"chain {self.chain}: update would revert: {reason}") from None
        return int(str(got), 16)

    # ------------------------------------------------------------------ following
    async def step(self) -> None:
        """Follow every open record once: broadcast, receipts, stuck, reorgs, finality.

        Records come in nonce order; only the lowest one still pending may be replaced
        for being stuck (a later nonce cannot be mined before it anyway)."""
        if not self.nonces.reconciled:
            await self.reconcile()
        await self.follower.follow_all()
        await self.gaps.repair(self.open)
        self._refresh_status()
