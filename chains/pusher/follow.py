"""One pass over a key's open records: broadcast, receipts, stuck, reorgs, finality.

Invariants:
- Records are followed in nonce order; only the lowest one still pending may be
  replaced for being stuck (a later nonce cannot be mined before it anyway).
- A record is final only like the indexer's confirmed view (head - confirmations); a
  mined record whose block left the chain goes back to `sent` at its own nonce and is
  rebroadcast, so later nonces get no gap.
- A sent record is dropped only when its nonce is used below the reorg window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from chains.pusher.broadcast import Broadcaster
from chains.pusher.chain_reads import KeyReads
from chains.pusher.records import OpenRecords
from chains.pusher.transitions import RecordStates
from chains.pusher.types import PushChainSettings, TxRecord
from chains.rpc import RpcClient


@dataclass
class _StepPass:
    """What one pass learns once and shares across its records."""

    head: int | None = None
    latest: int | None = None  # the account's mined nonce count ("latest" tx count)
    lowest_pending: bool = True


class RecordFollower:
    def __init__(
        self,
        settings: PushChainSettings,
        client: RpcClient,
        *,
        records: OpenRecords,
        reads: KeyReads,
        states: RecordStates,
        out: Broadcaster,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.client = client
        self.records = records
        self.reads = reads
        self.states = states
        self.out = out
        self.clock = clock

    async def follow_all(self) -> None:
        p = _StepPass()
        for rec in self.records.ordered():
            if rec.id not in self.records:
                continue
            if rec.status == "prepared":
                await self._follow_prepared(rec, p.lowest_pending)
                p.lowest_pending = False
                continue
            if rec.status == "sent" and not await self._follow_sent(rec, p):
                continue
            if rec.status == "mined":
                if p.head is None:
                    p.head = await self.client.block_number()
                await self._follow_mined(rec, p.head)

    def _waited(self, rec: TxRecord) -> float:
        return self.clock() - (rec.last_sent_at or rec.created_at)

    async def _follow_prepared(self, rec: TxRecord, lowest_pending: bool) -> None:
        waited = self._waited(rec)
        if rec.error is not None and lowest_pending and waited >= self.settings.stuck_after_s:
            # Refused for its fees before (below the base fee, underpriced): a
            # replacement of the same payload at the same nonce, fees bumped.
            await self.out.replace(rec)
        else:
            await self.out.broadcast(rec)

    async def _follow_sent(self, rec: TxRecord, p: _StepPass) -> bool:
        """A sent record: True when it is now mined (the caller follows it on as such),
        False while it is pending, or when it was dropped."""
        receipt = await self.reads.find_receipt(rec)
        if receipt is None:
            if p.latest is None:
                p.latest = await self.reads.tx_count("latest")
            if p.latest <= rec.nonce:
                await self._chase_pending(rec, p.lowest_pending)
                p.lowest_pending = False
                return False
            # Re-check once: a node may have had the block before the receipt.
            receipt = await self.reads.find_receipt(rec)
            if receipt is None:
                if await self.reads.nonce_used_for_good(rec.nonce):
                    await self.states.drop(
                        rec, f"nonce {rec.nonce} was used by another transaction"
                    )
                else:
                    # The other transaction's block may still be reorged away, and this
                    # record's bytes then fill the nonce. Dropped on a glimpse mid-reorg,
                    # it left a nonce gap that stalled every later update (the soak).
                    p.lowest_pending = False
                return False
        await self.states.mark_mined(rec, receipt)
        return True

    async def _chase_pending(self, rec: TxRecord, lowest_pending: bool) -> None:
        """Its nonce is not used yet: replace it when stuck, resend it when lost."""
        waited = self._waited(rec)
        if lowest_pending and waited >= self.settings.stuck_after_s:
            await self.out.replace(rec)
        elif waited >= self.settings.rebroadcast_after_s and not (await self.reads.known(rec)):
            await self.out.resend_lost(rec, waited)

    async def _follow_mined(self, rec: TxRecord, head: int) -> None:
        assert rec.mined_hash is not None and rec.mined_block is not None
        receipt = await self.reads.receipt(rec.mined_hash)
        if receipt is None or not receipt.get("blockHash"):
            # Reorged out: back to the pool at the same nonce (our later nonces need it).
            await self.states.mark_unmined(rec)
            await self.out.broadcast(rec)
            return
        block = int(str(receipt["blockNumber"]), 16)
        if block != rec.mined_block or receipt["blockHash"] != rec.mined_block_hash:
            await self.states.mark_mined(rec, receipt)
        # Final like the indexer's confirmed view (head - confirmations): the reorg
        # window is `confirmations` deep, so a block with only that many blocks on it,
        # itself included, can still be replaced (the soak lost a "confirmed" nonce so).
        if block > head - max(1, self.settings.confirmations):
            return
        await self.states.mark_final(rec, receipt)
