"""One keeper key on one chain: nonces, fees, persisted records, replacement, receipts.

Life of an update batch (docs/pusher.md, "Crash safety"):

1. estimate gas (a batch that would revert is never signed), take EIP-1559 fees from
   eth_feeHistory, allocate the next nonce, sign;
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
from typing import Any

from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

from chains.contracts import decode_error
from chains.pusher.errors import (
    BatchReverts,
    BatchTooLarge,
    PushError,
    SendErrorKind,
    classify_send_error,
)
from chains.pusher.fees import Fees, replacement_fees, suggest_fees
from chains.pusher.keys import KeeperKey
from chains.pusher.store import PushStore
from chains.pusher.types import PushChainSettings, SenderStatus, TxRecord
from chains.registry_codec import RegistryEntry, pack_batch, unpack_slot
from chains.rpc import RpcClient, RpcResponseError, RpcUnavailable, selector

log = logging.getLogger(__name__)

SEL_UPDATE = selector("update(bytes)")


def update_calldata(payload: bytes) -> bytes:
    return SEL_UPDATE + abi_encode(["bytes"], [payload])


@dataclass
class SenderHooks:
    """Test seams: called right after the record is persisted and right after the node
    accepted the broadcast. An exception raised here models a crash at that point."""

    after_persist: Callable[[TxRecord], None] | None = None
    after_broadcast: Callable[[TxRecord], None] | None = None


@dataclass
class _StepPass:
    """What one `ChainSender.step` learns once and shares across its records."""

    head: int | None = None
    latest: int | None = None  # the account's mined nonce count ("latest" tx count)
    lowest_pending: bool = True


class NonceManager:
    """The next nonce of one key on one chain. Only reconcile() may move it backwards
    (to what the chain and the open records allow)."""

    def __init__(self, chain: str, sender: str) -> None:
        self.chain, self.sender = chain, sender
        self.next_nonce: int | None = None

    def reset(self, value: int) -> None:
        self.next_nonce = value

    def allocate(self) -> int:
        if self.next_nonce is None:
            raise PushError(f"chain {self.chain}: nonce manager not reconciled")
        n = self.next_nonce
        self.next_nonce += 1
        return n

    def release(self, nonce: int) -> None:
        """Give back a nonce that never left the process (nothing signed was stored)."""
        if self.next_nonce == nonce + 1:
            self.next_nonce = nonce


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
        self.records: dict[int, TxRecord] = {}  # open records by id
        self.status = SenderStatus(chain=self.chain, sender=self.sender)
        self._reconciled = False
        self._cap_warned = False
        # Payloads of records that became final lately, by every hash they were sent
        # under: the listener may see a batch's log after the record left `records`.
        self._recent_payloads: dict[str, bytes] = {}
        # Parsed entries of open records (a payload never changes), by record id.
        self._entries_cache: dict[int, list[tuple[str, RegistryEntry]]] = {}
        # Called when a mined record left the chain (reorg) or a record was dropped:
        # whatever was inferred from it about on-chain state must be read again.
        self.on_unmined: Callable[[TxRecord], None] | None = None

    # ------------------------------------------------------------------ queries
    def open_records(self) -> list[TxRecord]:
        return sorted(self.records.values(), key=lambda r: (r.nonce, r.id or 0))

    def can_send(self) -> bool:
        return self._reconciled and len(self.records) < self.settings.max_in_flight

    def inflight_entries(self) -> dict[str, RegistryEntry]:
        """account (lower) -> newest entry in an open record (sent, not yet final)."""
        out: dict[str, RegistryEntry] = {}
        for rec in self.open_records():
            for key, entry in self._record_entries(rec):
                if key not in out or out[key].as_of < entry.as_of:
                    out[key] = entry
        return out

    def _record_entries(self, rec: TxRecord) -> list[tuple[str, RegistryEntry]]:
        """(lower-case account, entry) of a record's payload, parsed once per record."""
        rid = rec.id if rec.id is not None else -1
        got = self._entries_cache.get(rid)
        if got is None:
            p = rec.payload
            got = [
                ("0x" + p[i : i + 20].hex(), unpack_slot(int.from_bytes(p[i + 20 : i + 52], "big")))
                for i in range(0, len(p), 52)
            ]
            self._entries_cache[rid] = got
        return got

    def payload_of(self, tx_hash: str) -> bytes | None:
        """The payload we sent under `tx_hash` (any attempt of an open or recently final
        record), else None."""
        h = tx_hash.lower()
        for rec in self.records.values():
            if h in (x.lower() for x in rec.hashes):
                return rec.payload
        return self._recent_payloads.get(h)

    def _forget(self, rec: TxRecord) -> None:
        """A record became final: keep its payload findable by hash for a while."""
        self.records.pop(rec.id or -1, None)
        self._entries_cache.pop(rec.id or -1, None)
        for h in rec.hashes:
            self._recent_payloads[h.lower()] = rec.payload
        while len(self._recent_payloads) > 512:
            del self._recent_payloads[next(iter(self._recent_payloads))]

    def _refresh_status(self) -> None:
        self.status.pending_txs = len(self.records)
        self.status.next_nonce = self.nonces.next_nonce

    # ------------------------------------------------------------------ rpc helpers
    async def _tx_count(self, tag: str) -> int:
        return int(
            str(await self.client.request("eth_getTransactionCount", [self.sender, tag])), 16
        )

    async def balance(self) -> int:
        return int(str(await self.client.request("eth_getBalance", [self.sender, "latest"])), 16)

    async def _receipt(self, tx_hash: str) -> dict[str, Any] | None:
        r = await self.client.request("eth_getTransactionReceipt", [tx_hash])
        return r if isinstance(r, dict) else None

    async def _find_receipt(self, rec: TxRecord) -> dict[str, Any] | None:
        for h in reversed(rec.hashes):
            r = await self._receipt(h)
            if r is not None and r.get("blockHash"):
                return r
        return None

    async def fees(self) -> Fees:
        s = self.settings
        return await suggest_fees(
            self.client,
            min_priority=s.min_priority_fee_wei,
            cap=s.max_fee_wei,
            blocks=s.fee_history_blocks,
            percentile=s.fee_percentile,
        )

    async def _persist(self, rec: TxRecord) -> None:
        await self.store.update_tx(rec)

    # ------------------------------------------------------------------ reconcile
    async def reconcile(self) -> None:
        """Match stored open records with the chain; set the next nonce."""
        latest = await self._tx_count("latest")
        pending = await self._tx_count("pending")
        stored = await self.store.open_txs(self.chain, self.sender)
        self.records = {r.id: r for r in stored if r.id is not None}
        for rec in self.open_records():
            if rec.nonce < latest and rec.status in ("prepared", "sent"):
                receipt = await self._find_receipt(rec)
                if receipt is not None:
                    await self._mark_mined(rec, receipt)
                elif await self._nonce_used_for_good(rec.nonce):
                    await self._drop(rec, f"nonce {rec.nonce} was used by another transaction")
                # else: kept open for step(), which drops it once that is final
        open_max = max((r.nonce for r in self.records.values()), default=-1)
        nxt = max(latest, open_max + 1)
        if pending > nxt:
            # Transactions from this key that we have no record of (another process
            # using the same key?): never reuse their nonces.
            log.warning(
                "chain %s: keeper %s has %d pending transaction(s) not sent by this "
                "daemon (pending nonce %d); continuing above them",
                self.chain,
                self.sender,
                pending - nxt,
                pending,
            )
            nxt = pending
        self.nonces.reset(nxt)
        self._reconciled = True
        self._refresh_status()
        log.info(
            "chain %s: pusher reconciled: latest nonce %d, pending %d, %d open record(s), "
            "next nonce %d",
            self.chain,
            latest,
            pending,
            len(self.records),
            nxt,
        )

    # ------------------------------------------------------------------ sending
    async def send_batch(self, entries: list[tuple[str, RegistryEntry]]) -> TxRecord:
        """Estimate, sign, persist, broadcast one update(bytes) batch."""
        if not self._reconciled:
            await self.reconcile()
        if len(self.records) >= self.settings.max_in_flight:
            raise PushError(
                f"chain {self.chain}: {len(self.records)} transactions in flight "
                f"(max_in_flight {self.settings.max_in_flight})"
            )
        payload = pack_batch(entries)
        data = update_calldata(payload)
        estimate = await self.estimate_gas(data)
        budget = self.settings.batch_gas_budget
        if estimate > budget:
            raise BatchTooLarge(estimate, budget)
        gas_limit = min(budget, math.ceil(estimate * self.settings.gas_headroom))
        fees = await self.fees()
        self._note_cap(fees.capped)
        nonce = self.nonces.allocate()
        try:
            raw, tx_hash = self._sign(nonce, data, gas_limit, fees.max_fee, fees.priority_fee)
            rec = TxRecord(
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
            await self.store.insert_tx(rec)
        except BaseException:
            # Nothing signed left the process and nothing was stored: the nonce is free.
            self.nonces.release(nonce)
            raise
        assert rec.id is not None
        self.records[rec.id] = rec
        self._refresh_status()
        if self.hooks.after_persist is not None:
            self.hooks.after_persist(rec)
        await self._broadcast(rec)
        return rec

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

    def _sign(
        self, nonce: int, data: bytes, gas: int, max_fee: int, priority: int
    ) -> tuple[bytes, str]:
        return self.key.sign(
            {
                "type": 2,
                "chainId": self.settings.chain_id,
                "nonce": nonce,
                "to": self.registry,
                "value": 0,
                "data": data,
                "gas": gas,
                "maxFeePerGas": max_fee,
                "maxPriorityFeePerGas": priority,
            }
        )

    def _note_cap(self, capped: bool) -> None:
        self.status.at_fee_cap = capped
        if capped and not self._cap_warned:
            log.warning(
                "chain %s: fees are at the configured cap (pusher.max_fee_gwei = %.3f); "
                "transactions may not be included",
                self.chain,
                self.settings.max_fee_wei / 1e9,
            )
        self._cap_warned = capped

    async def _broadcast(self, rec: TxRecord) -> bool:
        """Send the record's current bytes once. True when a node holds them."""
        try:
            await self.client.send_raw_transaction(rec.raw_tx)
        except RpcResponseError as exc:
            if not await self._on_refusal(rec, exc):
                return False
        except RpcUnavailable as exc:
            # Unknown whether a node got it: the record stays as it is and the next step
            # sends the same bytes again (idempotent), never a new nonce.
            rec.error = f"broadcast: {exc}"
            self.status.last_error = rec.error
            raise PushError(str(exc)) from None
        await self._mark_sent(rec)
        return True

    async def _on_refusal(self, rec: TxRecord, exc: RpcResponseError) -> bool:
        """A node answered the broadcast with an error. True when it holds the bytes
        anyway (already known); False when the nonce turned out used (the record is
        mined or dropped); raises PushError for every other refusal."""
        kind = classify_send_error(exc.message)
        if kind is SendErrorKind.ALREADY_KNOWN:
            return True
        if kind is SendErrorKind.NONCE_TOO_LOW:
            receipt = await self._find_receipt(rec)
            if receipt is not None:
                await self._mark_mined(rec, receipt)
            else:
                await self._drop(rec, f"nonce {rec.nonce} too low: used by another transaction")
                self._reconciled = False
            return False
        if kind is SendErrorKind.NONCE_TOO_HIGH or kind is SendErrorKind.INVALID:
            # Refused outright: it cannot be in any pool. Resync nonces from chain.
            await self._drop(rec, f"refused by the node ({kind.value}): {exc.message}")
            self._reconciled = False
            raise PushError(f"chain {self.chain}: transaction refused: {exc.message}") from None
        # UNDERPRICED, FEE_TOO_LOW, INSUFFICIENT_FUNDS: keep the record (same nonce,
        # same payload); a later replacement or funding lets it through.
        rec.error = f"{kind.value}: {exc.message}"
        self.status.last_error = rec.error
        if rec.last_sent_at is None:
            rec.last_sent_at = self.clock()
        await self._persist(rec)
        raise PushError(f"chain {self.chain}: broadcast refused: {rec.error}") from None

    async def _mark_sent(self, rec: TxRecord) -> None:
        """A node holds the record's bytes: persist that (first send counts once)."""
        first = rec.status == "prepared"
        if first:
            rec.status = "sent"
        rec.last_sent_at = self.clock()
        rec.error = None
        await self._persist(rec)
        if first:
            self.status.sent_total += 1
        if self.hooks.after_broadcast is not None:
            self.hooks.after_broadcast(rec)

    async def _replace(self, rec: TxRecord) -> None:
        current = await self.fees()
        s = self.settings
        rep = replacement_fees(
            rec.max_fee, rec.priority_fee, current, fee_bump=s.fee_bump, cap=s.max_fee_wei
        )
        if not rep.valid:
            self._note_cap(True)
            # Keep it in the pools; a replacement at the cap would be refused anyway.
            rec.last_sent_at = self.clock()
            await self._broadcast(rec)
            return
        data = update_calldata(rec.payload)
        raw, tx_hash = self._sign(rec.nonce, data, rec.gas_limit, rep.max_fee, rep.priority_fee)
        log.info(
            "chain %s: nonce %d stuck for %.0fs; replacing %s with %s (max fee %d -> %d, "
            "priority %d -> %d)",
            self.chain,
            rec.nonce,
            self.clock() - (rec.last_sent_at or rec.created_at),
            rec.tx_hash,
            tx_hash,
            rec.max_fee,
            rep.max_fee,
            rec.priority_fee,
            rep.priority_fee,
        )
        rec.raw_tx, rec.tx_hash = raw, tx_hash
        rec.max_fee, rec.priority_fee = rep.max_fee, rep.priority_fee
        rec.hashes.append(tx_hash)
        rec.replacements += 1
        self.status.replacements_total += 1
        await self._persist(rec)  # every hash is stored before it can be out there
        if self.hooks.after_persist is not None:
            self.hooks.after_persist(rec)
        await self._broadcast(rec)

    # ------------------------------------------------------------------ following
    async def step(self) -> None:
        """Follow every open record once: broadcast, receipts, stuck, reorgs, finality.

        Records come in nonce order; only the lowest one still pending may be replaced
        for being stuck (a later nonce cannot be mined before it anyway)."""
        if not self._reconciled:
            await self.reconcile()
        p = _StepPass()
        for rec in self.open_records():
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
        self._refresh_status()

    async def _follow_prepared(self, rec: TxRecord, lowest_pending: bool) -> None:
        waited = self.clock() - (rec.last_sent_at or rec.created_at)
        if rec.error is not None and lowest_pending and waited >= self.settings.stuck_after_s:
            # Refused for its fees before (below the base fee, underpriced): a
            # replacement of the same payload at the same nonce, fees bumped.
            await self._replace(rec)
        else:
            await self._broadcast(rec)

    async def _follow_sent(self, rec: TxRecord, p: _StepPass) -> bool:
        """A sent record: True when it is now mined (the caller follows it on as such),
        False while it is pending, or when it was dropped."""
        receipt = await self._find_receipt(rec)
        if receipt is None:
            if p.latest is None:
                p.latest = await self._tx_count("latest")
            if p.latest <= rec.nonce:
                await self._chase_pending(rec, p.lowest_pending)
                p.lowest_pending = False
                return False
            # Re-check once: a node may have had the block before the receipt.
            receipt = await self._find_receipt(rec)
            if receipt is None:
                if await self._nonce_used_for_good(rec.nonce):
                    await self._drop(rec, f"nonce {rec.nonce} was used by another transaction")
                else:
                    # The other transaction's block may still be reorged away, and this
                    # record's bytes then fill the nonce. Dropped on a glimpse mid-reorg,
                    # it left a nonce gap that stalled every later update (the soak).
                    p.lowest_pending = False
                return False
        await self._mark_mined(rec, receipt)
        return True

    async def _chase_pending(self, rec: TxRecord, lowest_pending: bool) -> None:
        """Its nonce is not used yet: replace it when stuck, resend it when lost."""
        waited = self.clock() - (rec.last_sent_at or rec.created_at)
        if lowest_pending and waited >= self.settings.stuck_after_s:
            await self._replace(rec)
        elif waited >= self.settings.rebroadcast_after_s and not (await self._known(rec)):
            await self._resend_lost(rec, waited)

    async def _nonce_used_for_good(self, nonce: int) -> bool:
        """Is `nonce` used in a block below the reorg window (head - confirmations, as
        final as _follow_mined counts a block)?"""
        final = await self.client.block_number() - max(1, self.settings.confirmations)
        return final >= 0 and await self._tx_count(hex(final)) > nonce

    async def _known(self, rec: TxRecord) -> bool:
        """Does the node hold any of the record's attempts (pool or chain)?"""
        for h in reversed(rec.hashes):
            if await self.client.request("eth_getTransactionByHash", [h]) is not None:
                return True
        return False

    async def _resend_lost(self, rec: TxRecord, waited: float) -> None:
        """Nobody holds the transaction: its block was reorged away before we saw a
        receipt (a reorg drops what it does not re-include), or the broadcast was lost
        on the way. Waiting for stuck_after_s would hold this nonce and every later one;
        the same signed bytes cannot execute twice, so send them again now."""
        log.info(
            "chain %s: nonce %d unknown to the node %.0fs after it was sent; sending the "
            "same transaction again",
            self.chain,
            rec.nonce,
            waited,
            extra={"chain": self.chain, "tx_hash": rec.tx_hash, "nonce": rec.nonce},
        )
        self.status.rebroadcasts_total += 1
        await self._broadcast(rec)

    async def _mark_mined(self, rec: TxRecord, receipt: dict[str, Any]) -> None:
        rec.status = "mined"
        rec.mined_hash = str(receipt["transactionHash"])
        rec.mined_block = int(str(receipt["blockNumber"]), 16)
        rec.mined_block_hash = str(receipt["blockHash"])
        rec.gas_used = int(str(receipt.get("gasUsed", "0x0")), 16)
        await self._persist(rec)

    async def _follow_mined(self, rec: TxRecord, head: int) -> None:
        assert rec.mined_hash is not None and rec.mined_block is not None
        receipt = await self._receipt(rec.mined_hash)
        if receipt is None or not receipt.get("blockHash"):
            # Reorged out: back to the pool at the same nonce (our later nonces need it).
            rec.reorgs += 1
            self.status.reorgs_total += 1
            log.warning(
                "chain %s: update (nonce %d) left the chain in a reorg; re-queued",
                self.chain,
                rec.nonce,
                extra={"chain": self.chain, "tx_hash": rec.mined_hash, "nonce": rec.nonce},
            )
            rec.status = "sent"
            rec.mined_hash = rec.mined_block = rec.mined_block_hash = None
            rec.gas_used = None
            rec.last_sent_at = self.clock()
            await self._persist(rec)
            if self.on_unmined is not None:
                self.on_unmined(rec)
            await self._broadcast(rec)
            return
        block = int(str(receipt["blockNumber"]), 16)
        if block != rec.mined_block or receipt["blockHash"] != rec.mined_block_hash:
            await self._mark_mined(rec, receipt)
        # Final like the indexer's confirmed view (head - confirmations): the reorg
        # window is `confirmations` deep, so a block with only that many blocks on it,
        # itself included, can still be replaced (the soak lost a "confirmed" nonce so).
        if block > head - max(1, self.settings.confirmations):
            return
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
        await self._persist(rec)
        self._forget(rec)

    async def _drop(self, rec: TxRecord, reason: str) -> None:
        rec.status = "dropped"
        rec.error = reason
        self.status.dropped_total += 1
        self.status.last_error = reason
        log.warning("chain %s: record %s dropped: %s", self.chain, rec.id, reason)
        await self._persist(rec)
        self._forget(rec)
        if self.on_unmined is not None:
            self.on_unmined(rec)
