"""Nonces of one keeper key on one chain, and the restart reconciliation that sets them.

Invariants:
- A nonce is never reused: `allocate` only moves forward; `release` (`release_from`)
  gives back only the nonce(s) just allocated, and only when nothing signed under
  them was stored or sent.
- Only reconciliation moves the next nonce backwards, and never below a nonce an open
  record may hold, nor below the chain's pending count (transactions of this key that
  we have no record of keep their nonces).
- After a refusal that shows our view of the nonces is wrong, `invalidate` forces a
  reconciliation before the next send or step.
"""

from __future__ import annotations

import logging

from chains.pusher.chain_reads import KeyReads
from chains.pusher.errors import PushError
from chains.pusher.records import OpenRecords
from chains.pusher.store import PushStore
from chains.pusher.transitions import RecordStates

# The sender's own logger: its records keep the name they had before the split.
log = logging.getLogger("chains.pusher.sender")


class NonceManager:
    """The next nonce of one key on one chain. Only reconcile() may move it backwards
    (to what the chain and the open records allow)."""

    def __init__(self, chain: str, sender: str) -> None:
        self.chain, self.sender = chain, sender
        self.next_nonce: int | None = None
        self.reconciled = False

    def reset(self, value: int) -> None:
        self.next_nonce = value
        self.reconciled = True

    def invalidate(self) -> None:
        """Our view of the chain's nonces is wrong: reconcile before the next use."""
        self.reconciled = False

    def allocate(self) -> int:
        if self.next_nonce is None:
            raise PushError(f"chain {self.chain}: nonce manager not reconciled")
        n = self.next_nonce
        self.next_nonce += 1
        return n

    def release(self, nonce: int) -> None:
        """Give back a nonce that never left the process (nothing signed was stored)."""
        self.release_from(nonce, 1)

    def release_from(self, first: int | None, count: int) -> None:
        """Give back the `count` nonces from `first`, just allocated together, none of
        which left the process; only when they are still the last ones allocated."""
        if first is not None and count > 0 and self.next_nonce == first + count:
            self.next_nonce = first


async def reconcile(
    nonces: NonceManager,
    records: OpenRecords,
    reads: KeyReads,
    store: PushStore,
    states: RecordStates,
) -> tuple[int, int]:
    """Match stored open records with the chain; set the next nonce. Returns the chain's
    (latest, pending) transaction counts."""
    chain, sender = nonces.chain, nonces.sender
    latest = await reads.tx_count("latest")
    pending = await reads.tx_count("pending")
    records.load(await store.open_txs(chain, sender))
    for rec in records.ordered():
        if rec.nonce < latest and rec.status in ("prepared", "sent"):
            receipt = await reads.find_receipt(rec)
            if receipt is not None:
                await states.mark_mined(rec, receipt)
            elif await reads.nonce_used_for_good(rec.nonce):
                await states.drop(rec, f"nonce {rec.nonce} was used by another transaction")
            # else: kept open for step(), which drops it once that is final
    nxt = max(latest, records.max_nonce() + 1)
    if pending > nxt:
        # Transactions from this key that we have no record of (another process
        # using the same key?): never reuse their nonces.
        log.warning(
            "chain %s: keeper %s has %d pending transaction(s) not sent by this "
            "daemon (pending nonce %d); continuing above them",
            chain,
            sender,
            pending - nxt,
            pending,
        )
        nxt = pending
    nonces.reset(nxt)
    return latest, pending
