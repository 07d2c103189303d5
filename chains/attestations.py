"""Reader of one chain's AttestationRegistry (contracts/AttestationRegistry.sol): the
attestations of the allow-listed attesters, as of the chain's confirmed block.

    AttestationReader(client, chain, address, *, attesters, confirmations, field,
                      min_block=0)
        await validate()          the address holds an AttestationRegistry, else
                                  AttestationConfigError naming `field` and the chain
        await step() -> AttestationSnapshot | None
                                  read at the confirmed block (None: below min_block)
    AttestationSnapshot(chain, block, timestamp, count, records)
        records: uid -> AttestationRecord of the allow-listed attesters

Why eth_call state reads at a pinned block and not Attested / Revoked logs: the state
of the registry at a block is exactly what counts, and reading it by block hash
(EIP-1898, requireCanonical, through the client's Multicall3 batches with their
chain-id sentinel) makes the reorg rule hold by construction: a reorg that removes an
attestation or a revocation, at any depth, is simply absent from the next read; there
is no event fold to roll back, no hash window to keep, no getLogs span to adapt. The
cost is bounded: a record is final once it is revoked, expired (by the block's
timestamp, which only grows) or by an attester not on the allow-list (attesters never
change), so each round reads `attestationCount`, the block timestamp, every uid new
since the last round (once) and the allow-listed records still live; final records are
read again only after a reorg.

Invariants:
- Reads are at `head - confirmations` (the vault indexer's confirmed view), every call
  of a round pinned to that block's hash; a block below `min_block` (the chain's
  start_block: a fork's pre-fork blocks answer with the parent's chain id) is not read.
- Final records are kept only while the previous round's block is still canonical
  (its hash at its height is unchanged: the indexer's positive-evidence rule) and the
  count did not go below the uids already read; otherwise every uid is read again (a
  full read).
- At most `max_new` new uids are read a round (`read_to` says how far): a long history,
  or a node claiming an absurd count, is caught up over several rounds; until then a
  later uid (a superseding or negative attestation) is not yet seen. A full read also
  reads again every record the previous snapshot kept (uid <= count), so catching up
  after a reorg never drops one it knew.
- An answer that cannot be the registry's (a revert for a uid <= count, a short or
  over-long word, a score outside -10000..10000, a zero attester or subject, a bad
  bool) is an `AttestationReadError` naming the chain and the uid; the previous
  snapshot stays, nothing half-read is kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import is_hex_address

from chains.rpc import SEL_GET_TIMESTAMP, RpcClient, RpcError, selector
from chains.types import BlockRef

SEL_COUNT = selector("attestationCount()")
SEL_GET = selector("getAttestation(uint256)")
SEL_SCORE_MIN = selector("SCORE_MIN()")
SEL_SCORE_MAX = selector("SCORE_MAX()")
SCORE_MIN, SCORE_MAX = -10_000, 10_000
_RECORD_TYPES = ["address", "uint64", "int16", "bool", "address", "uint64"]
_ZERO = "0x" + "00" * 20


class AttestationConfigError(ValueError):
    """The configured address is not an AttestationRegistry (names the field)."""


class AttestationReadError(RpcError):
    """The registry answered something that cannot be its state (names the chain)."""


@dataclass(frozen=True)
class AttestationRecord:
    uid: int
    attester: str  # lowercase
    subject: str  # lowercase
    score_bps: int
    expiry: int
    attested_at: int
    revoked: bool


@dataclass(frozen=True)
class AttestationSnapshot:
    chain: str
    block: BlockRef
    timestamp: int  # the block's timestamp: expiry is judged by it
    count: int  # attestationCount at the block
    records: Mapping[int, AttestationRecord]
    read_to: int = 0  # every uid <= read_to was read (< count: still catching up)

    def final(self, r: AttestationRecord) -> bool:
        return r.revoked or r.expiry <= self.timestamp


def _word(data: bytes | None, what: str) -> int:
    if data is None or len(data) != 32:
        raise ValueError(f"{what}: {'a revert' if data is None else f'{len(data)} bytes'}")
    return int.from_bytes(data, "big")


def decode_record(uid: int, data: bytes | None) -> AttestationRecord:
    """getAttestation(uid)'s answer, checked (ValueError saying what is wrong)."""
    if data is None:
        raise ValueError(f"getAttestation({uid}) reverted")
    if len(data) != 32 * len(_RECORD_TYPES):
        raise ValueError(f"getAttestation({uid}) answered {len(data)} bytes, expected 192")
    try:
        attester, expiry, score, revoked, subject, at = abi_decode(_RECORD_TYPES, data, strict=True)
    except Exception as exc:  # eth_abi raises several types for malformed words
        raise ValueError(f"getAttestation({uid}) malformed: {exc}") from None
    if not SCORE_MIN <= score <= SCORE_MAX:
        raise ValueError(f"getAttestation({uid}): score {score} outside -10000..10000")
    if _ZERO in (attester.lower(), subject.lower()) or not is_hex_address(subject):
        raise ValueError(f"getAttestation({uid}): zero attester or subject")
    return AttestationRecord(uid, attester.lower(), subject.lower(), int(score), int(expiry),
                             int(at), bool(revoked))  # fmt: skip


class AttestationReader:
    """One chain's registry (module docstring). Not concurrent: one `step()` at a time."""

    def __init__(
        self,
        client: RpcClient,
        chain: str,
        address: str,
        *,
        attesters: frozenset[str],
        confirmations: int,
        field: str,
        min_block: int = 0,
        max_new: int = 5000,
    ) -> None:
        if confirmations < 0 or max_new < 1:
            raise ValueError("confirmations must be >= 0 and max_new >= 1")
        self.client = client
        self.chain = chain
        self.address = address
        self.attesters = frozenset(a.lower() for a in attesters)
        self.confirmations = confirmations
        self.field = field
        self.min_block = min_block
        # New uids read per round at most: a registry with a long history (or a node
        # claiming an absurd count) is caught up over several rounds, never in one
        # unbounded read.
        self.max_new = max_new
        self.snapshot: AttestationSnapshot | None = None
        # uids whose attester is not allow-listed: final, never read again.
        self._ignored: set[int] = set()

    async def validate(self) -> None:
        """Code at the address that answers SCORE_MIN/SCORE_MAX/attestationCount like an
        AttestationRegistry; else AttestationConfigError naming the field (an RpcError
        is left to the caller: not a config problem)."""
        where = f"{self.field} = {self.address} on chain {self.chain!r}"
        code = await self.client.request("eth_getCode", [self.address, "latest"])
        if not isinstance(code, str) or code in ("0x", "0x0", ""):
            raise AttestationConfigError(f"{where}: no contract code at this address")
        calls = [(self.address, s) for s in (SEL_SCORE_MIN, SEL_SCORE_MAX, SEL_COUNT)]
        got = await self.client.call_batch(calls)
        try:
            lo = _word(got[0], "SCORE_MIN()")
            hi = _word(got[1], "SCORE_MAX()")
            _word(got[2], "attestationCount()")
        except ValueError as exc:
            raise AttestationConfigError(f"{where}: not an AttestationRegistry ({exc})") from None
        if lo != (1 << 256) + SCORE_MIN or hi != SCORE_MAX:
            raise AttestationConfigError(
                f"{where}: not an AttestationRegistry (score range {lo}..{hi}, "
                f"expected -10000..10000)"
            )

    async def step(self) -> AttestationSnapshot | None:
        """Read at the confirmed block (module docstring); returns the new snapshot (the
        previous one when nothing newer is confirmed)."""
        head = await self.client.block_number()
        n = max(0, head - self.confirmations)
        prev = self.snapshot
        if n < self.min_block:
            return prev
        if prev is not None and n <= prev.block.number:
            return prev
        at = await self.client.get_block(n)
        if at is None:
            raise AttestationReadError(f"chain {self.chain!r}: confirmed block {n} not found")
        count, ts = await self._count_and_time(at)
        full = prev is None or count < prev.read_to or not await self._canonical(prev.block)
        if full:
            self._ignored.clear()
        keep = {} if full or prev is None else {
            u: r for u, r in prev.records.items() if prev.final(r)
        }  # fmt: skip
        start = 1 if full or prev is None else prev.read_to + 1
        stop = min(count, start + self.max_new - 1)
        # The kept records still live; after a reorg every kept record that may still
        # exist, so a full read catching up over rounds never loses one it knew.
        live = {u for u in (prev.records if prev is not None else ()) if u not in keep}
        if full:
            live = {u for u in live if u <= count}
        uids = sorted(live | {u for u in range(start, stop + 1) if u not in self._ignored})
        fresh = await self._read(at, uids)
        records = {**keep}
        for r in fresh:
            if r.attester in self.attesters:
                records[r.uid] = r
            else:
                self._ignored.add(r.uid)
        read_to = max(stop, start - 1)
        self.snapshot = AttestationSnapshot(self.chain, at, ts, count, records, read_to)
        return self.snapshot

    async def _canonical(self, block: BlockRef) -> bool:
        ref = await self.client.get_block(block.number)
        return ref is not None and ref.hash == block.hash

    async def _count_and_time(self, at: BlockRef) -> tuple[int, int]:
        got = await self.client.call_batch(
            [(self.address, SEL_COUNT), (self.client.multicall, SEL_GET_TIMESTAMP)],
            at.number,
            block_hash=at.hash,
        )
        try:
            count, ts = _word(got[0], "attestationCount()"), _word(got[1], "block timestamp")
        except ValueError as exc:
            raise self._error(f"at block {at.number}: {exc}") from None
        if count >= 1 << 64:
            raise self._error(f"at block {at.number}: attestationCount {count} is implausible")
        return count, ts

    async def _read(self, at: BlockRef, uids: list[int]) -> list[AttestationRecord]:
        if not uids:
            return []
        calls = [(self.address, SEL_GET + u.to_bytes(32, "big")) for u in uids]
        answers = await self.client.call_batch(calls, at.number, block_hash=at.hash)
        out = []
        for u, data in zip(uids, answers, strict=True):
            try:
                out.append(decode_record(u, data))
            except ValueError as exc:
                raise self._error(f"at block {at.number}: {exc}") from None
        return out

    def _error(self, what: str) -> AttestationReadError:
        return AttestationReadError(
            f"chain {self.chain!r}: AttestationRegistry {self.address} {what}"
        )


def describe(snapshot: AttestationSnapshot | None) -> dict[str, Any] | None:
    """JSON-able summary of a snapshot (block, hash, timestamp, count, kept records)."""
    if snapshot is None:
        return None
    return {"block": snapshot.block.number, "hash": snapshot.block.hash,
            "timestamp": snapshot.timestamp, "count": snapshot.count,
            "read_to": snapshot.read_to, "records": len(snapshot.records)}  # fmt: skip


__all__ = [
    "AttestationConfigError",
    "AttestationReadError",
    "AttestationReader",
    "AttestationRecord",
    "AttestationSnapshot",
    "decode_record",
    "describe",
]
