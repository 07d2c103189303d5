"""Nonce-gap repair: nonces below our lowest open record that nobody will ever mine.

Another process using the keeper key can take nonces and abandon them (its
transactions dropped from every pool): reconciliation then continues above them, and
every later update on the chain waits forever for the missing nonces (OpenZeppelin
Relayer issues 818 and 844 describe such stalls). This module fills them.

Invariants:
- A gap is the nonces in [latest mined count, lowest open record's nonce) while no
  record owns any of them. Nothing else is ever filled: a nonce a record holds is only
  ever sent as that record's payload.
- A nonce of the gap that a *final* record owns (confirmed or failed: mined, then taken
  out of the chain by a reorg deeper than the confirmation window, or confirmed against
  a head a node overstated) is not a gap: the record is re-opened and its own bytes are
  sent again at once, without the wait (the soak saw such a nonce stall a chain's
  pushes for 60 s and more, once per instance that took the chain over).
- A gap is filled only after it has stood for `gap_fill_after_s` (the other process's
  transactions may still be on their way), and only after the push lease has been
  checked through the store (`PushStore.check_lease`): an instance that lost the chain
  to another instance sends nothing.
- The wait is for the other process, once per nonce: a gap made only of nonces this
  instance has already filled (its fillers taken out by a reorg) is filled again at
  once (the soak saw a reorged filler restart the 60 s wait).
- A filler is a zero-value transfer to the keeper itself at market fees (21,000 gas),
  never a payload; it is not persisted: it holds no update, and a crash before it mines
  leaves at worst the same gap, filled again at the next opportunity. A filler the node
  refuses (e.g. a same-nonce transaction of the other process with higher fees is
  still pending) is logged and retried in the next pass.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from chains.pusher.chain_reads import KeyReads
from chains.pusher.errors import PushError
from chains.pusher.fees import Fees
from chains.pusher.keys import KeeperKey
from chains.pusher.records import OpenRecords
from chains.pusher.store import PushStore
from chains.pusher.transitions import RecordStates
from chains.pusher.types import PushChainSettings, SenderStatus, TxRecord
from chains.rpc import RpcClient, RpcResponseError

log = logging.getLogger("chains.pusher.sender")

TRANSFER_GAS = 21_000
# How far below the mined nonce count a filled nonce is remembered: far deeper than any
# reorg the pusher survives.
FILLED_MEMORY = 256


def missing_nonces(latest: int, open_nonces: list[int]) -> range:
    """The nonces no one will fill: from the chain's mined count up to the lowest open
    record (empty when there is no record above a hole)."""
    if not open_nonces:
        return range(0)
    return range(latest, min(open_nonces))


class GapFiller:
    def __init__(
        self,
        settings: PushChainSettings,
        client: RpcClient,
        key: KeeperKey,
        *,
        reads: KeyReads,
        store: PushStore,
        status: SenderStatus,
        fees: Callable[[], Awaitable[Fees]],
        states: RecordStates,
        broadcast: Callable[[TxRecord], Awaitable[bool]],
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.states = states
        self.broadcast = broadcast
        self.client = client
        self.key = key
        self.reads = reads
        self.store = store
        self.status = status
        self.fees = fees
        self.clock = clock
        self._gap_since: float | None = None
        self._gap: range = range(0)
        # Nonces this instance sent a filler for (recent ones only: see `repair`).
        self._filled: set[int] = set()

    async def repair(self, records: OpenRecords) -> int:
        """Fill a gap that has stood long enough; returns the number of fillers sent."""
        if not len(records):
            self._clear()
            return 0
        latest = await self.reads.tx_count("latest")
        gap = missing_nonces(latest, [r.nonce for r in records.ordered()])
        # Only a gap not seen before can hold a final record: one that stands is made of
        # nonces no record owned when it was first seen, and records only become final
        # from open ones (which are above it).
        if gap and gap != self._gap and await self._reopen_owned(gap):
            gap = missing_nonces(latest, [r.nonce for r in records.ordered()])
        if not gap:
            self._clear()
            return 0
        now = self.clock()
        if gap != self._gap or self._gap_since is None:
            self._gap, self._gap_since = gap, now
            self._filled = {n for n in self._filled if n >= latest - FILLED_MEMORY}
            if self._filled.issuperset(gap):
                log.warning(
                    "chain %s: nonces %d..%d, filled before, are missing again (a reorg); "
                    "filling them again now",
                    self.settings.name,
                    gap.start,
                    gap.stop - 1,
                )
                self._gap_since = now - self.settings.gap_fill_after_s
            else:
                log.warning(
                    "chain %s: nonce gap %d..%d below the lowest open record (another "
                    "process using keeper %s?); filling it after %.0f s unless it closes",
                    self.settings.name,
                    gap.start,
                    gap.stop - 1,
                    self.key.address,
                    self.settings.gap_fill_after_s,
                )
        self.status.nonce_gap = [gap.start, gap.stop - 1]
        if now - self._gap_since < self.settings.gap_fill_after_s:
            return 0
        await self.store.check_lease()
        return await self._fill(gap)

    async def _reopen_owned(self, gap: range) -> int:
        """Re-open the final records that own nonces of `gap` and send their bytes
        again; the number re-opened. A broadcast that fails is left to the follower
        (the record is `sent`: the same bytes go again after `rebroadcast_after_s`)."""
        owned = await self.store.final_txs_at(self.settings.name, self.key.address, gap)
        for rec in owned:
            await self.states.reopen(rec)
            try:
                await self.broadcast(rec)
            except PushError as exc:
                log.warning(
                    "chain %s: re-opened update (nonce %d) not sent yet: %s",
                    self.settings.name,
                    rec.nonce,
                    exc,
                )
        return len(owned)

    async def _fill(self, gap: range) -> int:
        fees = await self.fees()
        sent = 0
        for nonce in gap:
            raw, tx_hash = self.key.sign(
                {
                    "type": 2,
                    "chainId": self.settings.chain_id,
                    "nonce": nonce,
                    "to": self.key.address,
                    "value": 0,
                    "data": b"",
                    "gas": TRANSFER_GAS,
                    "maxFeePerGas": fees.max_fee,
                    "maxPriorityFeePerGas": fees.priority_fee,
                }
            )
            try:
                await self.client.send_raw_transaction(raw)
            except RpcResponseError as exc:
                log.warning(
                    "chain %s: gap filler for nonce %d refused: %s (retried next pass)",
                    self.settings.name,
                    nonce,
                    exc.message,
                )
                continue
            sent += 1
            self._filled.add(nonce)
            self.status.gap_fills_total += 1
            log.warning(
                "chain %s: filled nonce %d with a zero-value self-transfer %s",
                self.settings.name,
                nonce,
                tx_hash,
            )
        return sent

    def _clear(self) -> None:
        self._gap, self._gap_since = range(0), None
        self.status.nonce_gap = None
