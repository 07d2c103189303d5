"""Signing, fees, broadcasting and fee-bump replacement of one key's records.

Invariants (docs/pusher.md, "Crash safety"):
- A transaction is stored before it is broadcast: `replace` persists the new hash
  (every hash ever signed is kept on the record) before sending it.
- A nonce belongs to its payload once stored: it is only ever sent again as the same
  bytes, or as a replacement of the same payload with both fees bumped by >= fee_bump
  (up to the cap).
- A broadcast whose outcome is unknown (RPC unavailable) leaves the record as it is;
  the next step sends the same bytes again (idempotent), never a new nonce.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from eth_abi import encode as abi_encode

from chains.pusher.chain_reads import KeyReads
from chains.pusher.errors import PushError, SendErrorKind, classify_send_error
from chains.pusher.fees import Fees, replacement_fees, suggest_fees
from chains.pusher.keys import KeeperKey
from chains.pusher.nonces import NonceManager
from chains.pusher.transitions import RecordStates
from chains.pusher.types import PushChainSettings, SenderStatus, TxRecord
from chains.rpc import RpcClient, RpcResponseError, RpcUnavailable, selector

# The sender's own logger: its records keep the name they had before the split.
log = logging.getLogger("chains.pusher.sender")

SEL_UPDATE = selector("update(bytes)")


def update_calldata(payload: bytes) -> bytes:
    return SEL_UPDATE + abi_encode(["bytes"], [payload])


class Broadcaster:
    def __init__(
        self,
        settings: PushChainSettings,
        client: RpcClient,
        key: KeeperKey,
        registry: str,
        *,
        states: RecordStates,
        reads: KeyReads,
        nonces: NonceManager,
        status: SenderStatus,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.chain = settings.name
        self.client = client
        self.key = key
        self.registry = registry
        self.states = states
        self.reads = reads
        self.nonces = nonces
        self.status = status
        self.clock = clock
        self._cap_warned = False

    async def fees(self) -> Fees:
        s = self.settings
        return await suggest_fees(
            self.client,
            min_priority=s.min_priority_fee_wei,
            cap=s.max_fee_wei,
            blocks=s.fee_history_blocks,
            percentile=s.fee_percentile,
        )

    def sign(
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

    def note_cap(self, capped: bool) -> None:
        self.status.at_fee_cap = capped
        if capped and not self._cap_warned:
            log.warning(
                "chain %s: fees are at the configured cap (pusher.max_fee_gwei = %.3f); "
                "transactions may not be included",
                self.chain,
                self.settings.max_fee_wei / 1e9,
            )
        self._cap_warned = capped

    async def broadcast(self, rec: TxRecord) -> bool:
        """Send the record's current bytes once. True when a node holds them."""
        if not await self.deliver(rec):
            return False
        await self.states.mark_sent(rec)
        return True

    async def deliver(self, rec: TxRecord) -> bool:
        """`broadcast` without persisting `sent`: the caller does (`mark_sent_many` for
        the batches of one cycle). True when a node holds the bytes."""
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
        return True

    async def _on_refusal(self, rec: TxRecord, exc: RpcResponseError) -> bool:
        """A node answered the broadcast with an error. True when it holds the bytes
        anyway (already known); False when the nonce turned out used (the record is
        mined or dropped); raises PushError for every other refusal."""
        kind = classify_send_error(exc.message)
        if kind is SendErrorKind.ALREADY_KNOWN:
            return True
        if kind is SendErrorKind.NONCE_TOO_LOW:
            receipt = await self.reads.find_receipt(rec)
            if receipt is not None:
                await self.states.mark_mined(rec, receipt)
            else:
                await self.states.drop(
                    rec, f"nonce {rec.nonce} too low: used by another transaction"
                )
                self.nonces.invalidate()
            return False
        if kind is SendErrorKind.NONCE_TOO_HIGH or kind is SendErrorKind.INVALID:
            # Refused outright: it cannot be in any pool. Resync nonces from chain.
            await self.states.drop(rec, f"refused by the node ({kind.value}): {exc.message}")
            self.nonces.invalidate()
            raise PushError(f"chain {self.chain}: transaction refused: {exc.message}") from None
        # UNDERPRICED, FEE_TOO_LOW, INSUFFICIENT_FUNDS: keep the record (same nonce,
        # same payload); a later replacement or funding lets it through.
        rec.error = f"{kind.value}: {exc.message}"
        self.status.last_error = rec.error
        if rec.last_sent_at is None:
            rec.last_sent_at = self.clock()
        await self.states.persist(rec)
        raise PushError(f"chain {self.chain}: broadcast refused: {rec.error}") from None

    async def replace(self, rec: TxRecord) -> None:
        """Stuck: the same payload at the same nonce, both fees bumped (within the cap)."""
        current = await self.fees()
        s = self.settings
        rep = replacement_fees(
            rec.max_fee, rec.priority_fee, current, fee_bump=s.fee_bump, cap=s.max_fee_wei
        )
        if not rep.valid:
            self.note_cap(True)
            # Keep it in the pools; a replacement at the cap would be refused anyway.
            rec.last_sent_at = self.clock()
            await self.broadcast(rec)
            return
        data = update_calldata(rec.payload)
        raw, tx_hash = self.sign(rec.nonce, data, rec.gas_limit, rep.max_fee, rep.priority_fee)
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
        await self.states.persist(rec)  # every hash is stored before it can be out there
        self.states.persisted(rec)
        await self.broadcast(rec)

    async def resend_lost(self, rec: TxRecord, waited: float) -> None:
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
        await self.broadcast(rec)
