"""Persisted state changes of one key's transaction records.

Invariants:
- Every change of a record is written to the store (`update_tx`, one committed
  transaction; `update_txs` for a cycle's batches marked sent together) before anything
  that depends on it happens: the hook after a persist, the broadcast that follows,
  forgetting a final record.
- A record leaves the open set only once its final state (confirmed, failed, dropped) is
  persisted.
- A mined record that left the chain (reorg) or a dropped one is reported through
  `on_unmined`: whatever was inferred from it about on-chain state must be read again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chains.pusher.records import OpenRecords
from chains.pusher.store import PushStore
from chains.pusher.types import SenderStatus, TxRecord

# The sender's own logger: its records keep the name they had before the split.
log = logging.getLogger("chains.pusher.sender")


@dataclass
class SenderHooks:
    """Test seams: called right after the record is persisted and right after the node
    accepted the broadcast. An exception raised here models a crash at that point."""

    after_persist: Callable[[TxRecord], None] | None = None
    after_broadcast: Callable[[TxRecord], None] | None = None


class RecordStates:
    def __init__(
        self,
        chain: str,
        store: PushStore,
        records: OpenRecords,
        status: SenderStatus,
        *,
        hooks: SenderHooks,
        clock: Callable[[], float],
    ) -> None:
        self.chain = chain
        self.store = store
        self.records = records
        self.status = status
        self.hooks = hooks
        self.clock = clock
        # Called when a mined record left the chain (reorg) or a record was dropped:
        # whatever was inferred from it about on-chain state must be read again.
        self.on_unmined: Callable[[TxRecord], None] | None = None

    async def persist(self, rec: TxRecord) -> None:
        await self.store.update_tx(rec)

    def persisted(self, rec: TxRecord) -> None:
        """The record (and so every hash it may be sent under) is stored."""
        if self.hooks.after_persist is not None:
            self.hooks.after_persist(rec)

    async def mark_sent(self, rec: TxRecord) -> None:
        """A node holds the record's bytes: persist that (first send counts once)."""
        first = rec.status == "prepared"
        if first:
            rec.status = "sent"
        rec.last_sent_at = self.clock()
        rec.error = None
        await self.persist(rec)
        if first:
            self.status.sent_total += 1
        if self.hooks.after_broadcast is not None:
            self.hooks.after_broadcast(rec)

    async def mark_sent_many(self, recs: list[TxRecord]) -> None:
        """`mark_sent` of several records in one store transaction (a cycle's batches)."""
        if not recs:
            return
        first = [rec.status == "prepared" for rec in recs]
        now = self.clock()
        for rec in recs:
            rec.status = "sent"
            rec.last_sent_at = now
            rec.error = None
        await self.store.update_txs(recs)
        self.status.sent_total += sum(first)
        if self.hooks.after_broadcast is not None:
            for rec in recs:
                self.hooks.after_broadcast(rec)

    async def mark_mined(self, rec: TxRecord, receipt: dict[str, Any]) -> None:
        rec.status = "mined"
        rec.mined_hash = str(receipt["transactionHash"])
        rec.mined_block = int(str(receipt["blockNumber"]), 16)
        rec.mined_block_hash = str(receipt["blockHash"])
        rec.gas_used = int(str(receipt.get("gasUsed", "0x0")), 16)
        await self.persist(rec)

    async def mark_unmined(self, rec: TxRecord) -> None:
        """Reorged out: back to `sent` at the same nonce (our later nonces need it)."""
        await self._requeue(rec, "left the chain in a reorg; re-queued")

    async def reopen(self, rec: TxRecord) -> None:
        """A final record whose nonce the chain no longer counts as used: its block left
        the chain after all (a reorg deeper than the confirmation window, or a head that
        a node overstated). Open again as `sent`, the same bytes, so that its nonce is
        filled by its own payload and the updates above it can be mined."""
        await self._requeue(rec, "was final but is no longer on chain; re-opened")

    async def _requeue(self, rec: TxRecord, why: str) -> None:
        rec.reorgs += 1
        self.status.reorgs_total += 1
        log.warning(
            "chain %s: update (nonce %d) %s",
            self.chain,
            rec.nonce,
            why,
            extra={"chain": self.chain, "tx_hash": rec.mined_hash, "nonce": rec.nonce},
        )
        rec.status = "sent"
        rec.mined_hash = rec.mined_block = rec.mined_block_hash = None
        rec.gas_used = None
        rec.last_sent_at = self.clock()
        await self.persist(rec)
        self.records.add(rec)  # a re-opened record was forgotten when it became final
        if self.on_unmined is not None:
            self.on_unmined(rec)

    async def mark_final(self, rec: TxRecord, receipt: dict[str, Any]) -> None:
        """Deep enough to be final: confirmed or failed by the receipt's status."""
        ok = int(str(receipt.get("status", "0x1")), 16) == 1
        rec.status = "confirmed" if ok else "failed"
        rec.gas_used = int(str(receipt.get("gasUsed", "0x0")), 16)
        if not ok:
            rec.error = "reverted on chain"
            self.status.failed_total += 1
            self.status.last_error = f"nonce {rec.nonce}: update reverted on chain"
            log.error(
                "chain %s: update reverted on chain",
                self.chain,
                extra={"chain": self.chain, "tx_hash": rec.mined_hash},
            )
        else:
            self.status.confirmed_total += 1
            self.status.gas_used_total += rec.gas_used
        await self.persist(rec)
        self.records.forget(rec)

    async def drop(self, rec: TxRecord, reason: str) -> None:
        rec.status = "dropped"
        rec.error = reason
        self.status.dropped_total += 1
        self.status.last_error = reason
        log.warning("chain %s: record %s dropped: %s", self.chain, rec.id, reason)
        await self.persist(rec)
        self.records.forget(rec)
        if self.on_unmined is not None:
            self.on_unmined(rec)
