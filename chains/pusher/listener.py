"""What each registry holds now, per (account, chain): read once, then followed by events.

The first `refresh()` reads every account's slot with Multicall3 (entryOf per account,
pinned to one block, with the block's timestamp in the same call). After that the
state is followed from the registry's own logs, so the RPC cost of a cycle does not
grow with the number of accounts (bench/rpc_per_block.py):

- `BatchApplied(keeper, applied, skipped, batchHash)`: a batch was applied. For our
  own batches the payload is known (`payload_of(tx_hash)`, from the sender's records)
  and its entries become the state at once, except the ones an `EntrySkipped` of the
  same transaction names, which are re-read. A batch we did not send is fetched
  (eth_getTransactionByHash), checked against `batchHash` and its accounts re-read;
  one that cannot be decoded (sent through another contract) forces a full re-read.
- `CreditConsumed(account, ...)`: the vault spent credit: that account is re-read.
- Accounts new to the book are read once.

A reorg can undo a log we followed. The sender follows its own transactions until
they are final and reports a reorged or dropped one (`invalidate`); every account
touched by someone else's event is read again once that event is `recheck_depth`
blocks deep; and everything is re-read every `resync_s` and whenever the log range
to follow would exceed `max_log_range` blocks (a long outage).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

from chains.pusher.store import PushStore
from chains.pusher.types import OnchainEntry
from chains.registry_codec import ENTRY_LEN, RegistryEntry, unpack_slot
from chains.rpc import SEL_GET_TIMESTAMP, RpcClient, selector

log = logging.getLogger(__name__)

SEL_ENTRY_OF = selector("entryOf(address)")
SEL_UPDATE = selector("update(bytes)")
TOPIC_BATCH_APPLIED = "0x" + keccak(text="BatchApplied(address,uint256,uint256,bytes32)").hex()
TOPIC_ENTRY_SKIPPED = "0x" + keccak(text="EntrySkipped(address,uint40,uint40)").hex()
TOPIC_CREDIT_CONSUMED = "0x" + keccak(text="CreditConsumed(address,address,uint128,uint128)").hex()


@dataclass(frozen=True)
class Snapshot:
    chain: str
    block: int
    timestamp: int
    entries: dict[str, RegistryEntry | None]  # lower-case account -> entry
    # Accounts whose entry differs from the previous snapshot's (None: all may have).
    changed: frozenset[str] | None = None


def _skipped_by_tx(logs: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Transaction hash -> the accounts an EntrySkipped log of it names."""
    skipped_in: dict[str, set[str]] = {}
    for lg in logs:
        topics = lg.get("topics") or []
        if topics and str(topics[0]).lower() == TOPIC_ENTRY_SKIPPED and len(topics) > 1:
            skipped_in.setdefault(str(lg["transactionHash"]).lower(), set()).add(
                _topic_account(topics[1])
            )
    return skipped_in


def _topic_account(topic: Any) -> str:
    return "0x" + str(topic)[-40:].lower()


class RegistryListener:
    def __init__(
        self,
        chain: str,
        client: RpcClient,
        registry: str,
        store: PushStore | None = None,
        *,
        payload_of: Callable[[str], bytes | None] | None = None,
        recheck_depth: int = 12,
        resync_s: float = 3600.0,
        max_log_range: int = 2000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.chain = chain
        self.client = client
        self.registry = to_checksum_address(registry)
        self.store = store
        self.payload_of = payload_of or (lambda _h: None)
        self.recheck_depth = recheck_depth
        self.resync_s = resync_s
        self.max_log_range = max_log_range
        self.clock = clock
        self.onchain: dict[str, OnchainEntry] = {}
        self.entries: dict[str, RegistryEntry | None] = {}
        self.block = -1
        self.timestamp = 0
        self._synced_at: float | None = None  # last full read (clock)
        self._dirty: set[str] = set()
        self._recheck: dict[str, int] = {}  # account -> block its event was in
        self._force_full = False
        self.full_reads = 0

    async def load(self) -> None:
        """Last readings from the store, so the API has them before the first read."""
        if self.store is not None:
            self.onchain = await self.store.load_onchain(self.chain)

    def entry(self, account: str) -> RegistryEntry | None:
        got = self.onchain.get(account.lower())
        return None if got is None else got.entry

    def invalidate(self, accounts: Iterable[str]) -> None:
        """Read these accounts again next refresh (a batch of ours left the chain)."""
        self._dirty.update(a.lower() for a in accounts)

    # ------------------------------------------------------------------ reading
    async def _read_slots(
        self, addrs: list[str], block: int | str
    ) -> tuple[dict[str, RegistryEntry | None], int]:
        calls: list[tuple[str, bytes]] = [
            (self.registry, SEL_ENTRY_OF + abi_encode(["address"], [to_checksum_address(a)]))
            for a in addrs
        ]
        calls.append((self.client.multicall, SEL_GET_TIMESTAMP))
        results = await self.client.call_batch(calls, block)
        ts_raw = results[-1]
        if ts_raw is None or len(ts_raw) < 32:
            raise ValueError(f"chain {self.chain}: no block timestamp from Multicall3")
        entries: dict[str, RegistryEntry | None] = {}
        for addr, raw in zip(addrs, results[:-1], strict=True):
            if raw is None or len(raw) < 32:
                raise ValueError(
                    f"chain {self.chain}: entryOf({addr}) reverted on registry {self.registry}"
                )
            slot = int.from_bytes(raw[:32], "big")
            entries[addr] = None if slot == 0 else unpack_slot(slot)
        return entries, int.from_bytes(ts_raw[:32], "big")

    async def _commit(
        self, entries: dict[str, RegistryEntry | None], block: int, timestamp: int
    ) -> set[str]:
        now = time.time()
        changed: list[OnchainEntry] = []
        keys: set[str] = set()
        for addr, entry in entries.items():
            prev = self.onchain.get(addr)
            reading = OnchainEntry(self.chain, addr, entry, block, now)
            if prev is None or prev.entry != entry:
                changed.append(reading)
            if self.entries.get(addr, 0) != entry:  # 0: never known here
                keys.add(addr)
            self.onchain[addr] = reading
            self.entries[addr] = entry
        if changed and self.store is not None:
            await self.store.save_onchain(changed)
        self.block, self.timestamp = block, timestamp
        return keys

    async def read(self, accounts: Iterable[str]) -> Snapshot:
        """Every given account's slot now (a full read: one eth_call per 200 accounts)."""
        addrs = sorted({a.lower() for a in accounts})
        block = await self.client.block_number()
        entries, timestamp = await self._read_slots(addrs, block)
        await self._commit(entries, block, timestamp)
        self.full_reads += 1
        self._synced_at = self.clock()
        self._dirty.clear()
        self._recheck.clear()
        self._force_full = False
        return Snapshot(self.chain, block, timestamp, entries, None)

    async def refresh(self, accounts: Iterable[str]) -> Snapshot:
        """The state now: a full read the first time (and on the safety-net conditions
        above), else the previous state moved forward by the registry's logs, reading
        only the slots those logs (or new accounts) make uncertain."""
        wanted = {a.lower() for a in accounts}
        wanted.update(self.entries)
        wanted.update(self.onchain)  # seen on chain before (the store), maybe not in the book
        head = await self.client.block_number()
        full = (
            self.block < 0
            or self._force_full
            or self._synced_at is None
            or self.clock() - self._synced_at >= self.resync_s
            or head - self.block > self.max_log_range
        )
        if full:
            return await self.read(wanted)
        new = wanted.difference(self.entries)
        if head == self.block and not new and not self._dirty:
            return Snapshot(self.chain, head, self.timestamp, self.entries, frozenset())
        known: dict[str, RegistryEntry | None] = {}
        dirty = set(self._dirty) | new
        self._dirty.clear()
        if head > self.block:
            await self._follow_logs(self.block + 1, head, known, dirty)
            if self._force_full:
                return await self.read(wanted)
        due = [a for a, b in self._recheck.items() if head - b + 1 >= self.recheck_depth]
        for a in due:
            del self._recheck[a]
        dirty.update(due)
        dirty.difference_update(known)
        entries, timestamp = await self._read_slots(sorted(dirty), head)
        known.update(entries)
        changed = await self._commit(known, head, timestamp)
        return Snapshot(self.chain, head, timestamp, self.entries, frozenset(changed))

    async def _follow_logs(
        self, start: int, end: int, known: dict[str, RegistryEntry | None], dirty: set[str]
    ) -> None:
        logs = await self.client.get_logs(
            self.registry,
            [[TOPIC_BATCH_APPLIED, TOPIC_ENTRY_SKIPPED, TOPIC_CREDIT_CONSUMED]],
            start,
            end,
        )
        skipped_in = _skipped_by_tx(logs)
        for lg in logs:
            topics = lg.get("topics") or []
            if not topics:
                continue
            t0 = str(topics[0]).lower()
            block = int(str(lg["blockNumber"]), 16)
            if t0 == TOPIC_CREDIT_CONSUMED and len(topics) > 1:
                self._mark_dirty(_topic_account(topics[1]), block, known, dirty)
            elif t0 == TOPIC_BATCH_APPLIED and not await self._follow_batch(
                lg, block, skipped_in, known, dirty
            ):
                return

    def _mark_dirty(
        self, account: str, block: int, known: dict[str, RegistryEntry | None], dirty: set[str]
    ) -> None:
        """The slot must be read from the chain (and read again once `block` is final)."""
        dirty.add(account)
        known.pop(account, None)
        self._recheck[account] = block

    async def _follow_batch(
        self,
        lg: dict[str, Any],
        block: int,
        skipped_in: dict[str, set[str]],
        known: dict[str, RegistryEntry | None],
        dirty: set[str],
    ) -> bool:
        """One BatchApplied log. Entries of our own batch that were not skipped are known
        from the payload; every other account is re-read. False when a foreign batch
        cannot be decoded: the next read then covers every slot."""
        tx_hash = str(lg["transactionHash"]).lower()
        data = bytes.fromhex(str(lg.get("data", "0x"))[2:])
        batch_hash = data[64:96] if len(data) >= 96 else b""
        skipped = skipped_in.get(tx_hash, set())
        payload = self.payload_of(tx_hash)
        own = payload is not None and keccak(payload) == batch_hash
        if not own:
            payload = await self._foreign_payload(tx_hash, batch_hash)
            if payload is None:
                log.warning(
                    "pusher %s: batch %s on the registry could not be decoded; "
                    "re-reading every slot",
                    self.chain,
                    tx_hash,
                )
                self._force_full = True
                return False
        assert payload is not None
        for off in range(0, len(payload), ENTRY_LEN):
            account = "0x" + payload[off : off + 20].hex()
            if own and account not in skipped:
                known[account] = unpack_slot(
                    int.from_bytes(payload[off + 20 : off + ENTRY_LEN], "big")
                )
                dirty.discard(account)
            else:
                self._mark_dirty(account, block, known, dirty)
        return True

    async def _foreign_payload(self, tx_hash: str, batch_hash: bytes) -> bytes | None:
        """The batch of an update() we did not send, from its calldata, if it is a direct
        call whose argument hashes to the event's batchHash."""
        tx = await self.client.request("eth_getTransactionByHash", [tx_hash])
        if not isinstance(tx, dict):
            return None
        raw = bytes.fromhex(str(tx.get("input", "0x"))[2:])
        if raw[:4] != SEL_UPDATE:
            return None
        try:
            (payload,) = abi_decode(["bytes"], raw[4:])
        except Exception:
            return None
        payload = bytes(payload)
        if keccak(payload) != batch_hash or len(payload) % ENTRY_LEN:
            return None
        return payload
