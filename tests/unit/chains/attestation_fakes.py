"""A scripted AttestationRegistry client for the reader and feed tests: per-block
hashes (a `fork` letter changes every hash: a reorg), records by uid, hostile answers
per uid, and the getAttestation uids asked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_abi import encode

from chains.attestations import SEL_COUNT, SEL_GET, SEL_SCORE_MAX, SEL_SCORE_MIN
from chains.rpc import SEL_GET_TIMESTAMP
from chains.types import BlockRef

REG = "0x" + "12" * 20
MC = "0x" + "ca" * 20
GOOD, ROGUE = "0x" + "a" * 40, "0x" + "c" * 40
SUBJ = "0x" + "5" * 40


def rec(  # noqa: PLR0917
        attester: str = GOOD, expiry: int = 10_000, score: int = 100, revoked: bool = False,
        subject: str = SUBJ, at: int = 1) -> bytes:  # fmt: skip
    return encode(["address", "uint64", "int16", "bool", "address", "uint64"],
                  [attester, expiry, score, revoked, subject, at])  # fmt: skip


@dataclass
class FakeRegistry:
    """Head, per-block hashes, the registry's records (uid -> encoded), the calls seen."""

    head: int = 100
    fork: str = "a"
    records: dict[int, bytes] = field(default_factory=dict)
    gets: list[int] = field(default_factory=list)
    multicall: str = MC
    code: str = "0x6080"
    hostile: dict[int, bytes | None] = field(default_factory=dict)
    count_override: bytes | None = None

    def ref(self, n: int) -> BlockRef:
        return BlockRef(n, f"0x{self.fork}{n:063x}", f"0x{self.fork}{n - 1:063x}")

    async def block_number(self) -> int:
        return self.head

    async def get_block(self, n: int) -> BlockRef | None:
        return self.ref(n) if n <= self.head else None

    async def request(self, method: str, params: list[Any]) -> Any:
        assert method == "eth_getCode"
        return self.code

    async def call_batch(self, calls: Sequence[tuple[str, bytes]], block: Any = "latest", *,
                         block_hash: str | None = None) -> list[bytes | None]:  # fmt: skip
        if block_hash is not None:
            assert block_hash == self.ref(block).hash, "pinned to the block's hash"
        out: list[bytes | None] = []
        for to, data in calls:
            sel, arg = data[:4], data[4:]
            if to == MC and sel == SEL_GET_TIMESTAMP:
                out.append((1000 + int(block)).to_bytes(32, "big"))
            elif sel == SEL_COUNT:
                out.append(self.count_override or len(self.records).to_bytes(32, "big"))
            elif sel == SEL_SCORE_MIN:
                out.append(((1 << 256) - 10_000).to_bytes(32, "big"))
            elif sel == SEL_SCORE_MAX:
                out.append((10_000).to_bytes(32, "big"))
            elif sel == SEL_GET:
                uid = int.from_bytes(arg, "big")
                self.gets.append(uid)
                out.append(self.hostile[uid] if uid in self.hostile else self.records.get(uid))
            else:
                out.append(None)
        return out
