"""chains/attestations.py against a scripted registry: reads at the confirmed block
pinned by hash, final records not read again while the chain holds, a full read after
a reorg, only allow-listed attesters kept, and every hostile answer an
AttestationReadError naming the chain (the previous snapshot kept)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from chains.attestations import (
    AttestationConfigError,
    AttestationReader,
    AttestationReadError,
    decode_record,
)
from tests.unit.chains.attestation_fakes import GOOD, REG, ROGUE, SUBJ, FakeRegistry, rec


def reader(fake: FakeRegistry, confirmations: int = 3, max_new: int = 5000) -> AttestationReader:
    return AttestationReader(
        fake,  # type: ignore[arg-type]
        "beta", REG, attesters=frozenset({GOOD}), confirmations=confirmations,
        field="chains[1].contracts.attestations", max_new=max_new,
    )  # fmt: skip


async def test_reads_at_the_confirmed_block_and_only_what_can_change() -> None:
    fake = FakeRegistry(records={1: rec(), 2: rec(attester=ROGUE), 3: rec(revoked=True),
                                 4: rec(expiry=1050)})  # fmt: skip
    r = reader(fake)
    snap = await r.step()
    assert snap is not None and snap.block.number == 97 and snap.timestamp == 1097
    assert sorted(snap.records) == [1, 3, 4]  # the rogue attester's record is not kept
    assert snap.records[1].attester == GOOD and snap.records[1].subject == SUBJ
    assert sorted(fake.gets) == [1, 2, 3, 4]
    fake.gets.clear()
    assert await r.step() is snap  # nothing newer confirmed: no read at all
    assert fake.gets == []
    fake.head, fake.records[5] = 101, rec(score=-50)
    snap2 = await r.step()
    assert snap2 is not None and snap2.block.number == 98
    # Live 1 again and new 5; revoked 3, expired 4 (1050 <= 1097) and rogue 2 are final.
    assert sorted(fake.gets) == [1, 5]
    assert sorted(snap2.records) == [1, 3, 4, 5]


async def test_a_reorg_makes_a_full_read_and_drops_what_it_removed() -> None:
    fake = FakeRegistry(records={1: rec(), 2: rec(revoked=True)})
    r = reader(fake)
    await r.step()
    # Another branch: uid 2 is not revoked there, uid 1 was never made (a new uid 1).
    fake.fork, fake.head = "b", 105
    fake.records = {1: rec(score=-7000), 2: rec()}
    fake.gets.clear()
    snap = await r.step()
    assert snap is not None and sorted(fake.gets) == [1, 2]
    assert snap.records[1].score_bps == -7000 and not snap.records[2].revoked
    # The count going down (fewer uids) also forces a full read.
    fake.head, fake.records = 106, {1: rec()}
    snap = await r.step()
    assert snap is not None and sorted(snap.records) == [1]


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (None, "reverted"),
        (b"\x00" * 31, "31 bytes"),
        (rec()[:-32] + b"\x01" * 32, "malformed"),  # uint64 with high bits set
        (rec(score=0)[:64] + (20_000).to_bytes(32, "big") + rec()[96:], "outside"),
        (rec()[:96] + (2).to_bytes(32, "big") + rec()[128:], "malformed"),  # bool = 2
        (rec(subject="0x" + "00" * 20), "zero attester or subject"),
    ],
)
async def test_hostile_answers_name_the_chain_and_keep_the_snapshot(
    bad: bytes | None, why: str
) -> None:
    fake = FakeRegistry(records={1: rec()})
    r = reader(fake)
    first = await r.step()
    fake.head, fake.records[2] = 101, rec()
    fake.hostile[2] = bad
    with pytest.raises(AttestationReadError, match=f"chain 'beta'.*{why}"):
        await r.step()
    assert r.snapshot is first


async def test_a_long_history_is_caught_up_over_rounds_never_in_one_read() -> None:
    fake = FakeRegistry(records={u: rec(revoked=u % 2 == 0) for u in range(1, 13)})
    r = reader(fake, max_new=5)
    reads = []
    for _ in range(3):
        fake.gets.clear()
        snap = await r.step()
        assert snap is not None
        reads.append((sorted(fake.gets), snap.read_to))
        fake.head += 1
    # Round 2 and 3 re-read the live (odd) ones already known, then 5 new uids at most.
    assert reads == [([1, 2, 3, 4, 5], 5), ([1, 3, 5, 6, 7, 8, 9, 10], 10),
                     ([1, 3, 5, 7, 9, 11, 12], 12)]  # fmt: skip
    # A reorg in a long registry: the full read starts over from uid 1 but reads the
    # kept records too (final ones included: a reorg may have undone a revocation), so
    # the record of uid 11 is not lost while catching up.
    fake.fork = "b"
    fake.gets.clear()
    snap = await r.step()
    assert snap is not None and sorted(fake.gets) == list(range(1, 13))
    assert 11 in snap.records and snap.read_to == 5
    fake.head += 1
    # A node claiming a huge count costs max_new reads, not an unbounded loop; the
    # answers for uids that do not exist (reverts) are an error naming the chain.
    liar = FakeRegistry(records={1: rec(), 2: rec()}, count_override=(2**40).to_bytes(32, "big"))
    with pytest.raises(AttestationReadError, match=r"chain 'beta'.*reverted"):
        await reader(liar, max_new=5).step()
    assert sorted(liar.gets) == [1, 2, 3, 4, 5]


async def test_an_implausible_count_is_an_error() -> None:
    fake = FakeRegistry(count_override=b"\xff" * 32)
    with pytest.raises(AttestationReadError, match=r"chain 'beta'.*implausible"):
        await reader(fake).step()


async def test_validation_names_the_field() -> None:
    await reader(FakeRegistry()).validate()
    where = r"chains\[1\]\.contracts\.attestations.*no contract code"
    with pytest.raises(AttestationConfigError, match=where):
        await reader(FakeRegistry(code="0x")).validate()

    class NotRegistry(FakeRegistry):
        async def call_batch(self, calls: Sequence[tuple[str, bytes]], block: Any = "latest", *,
                             block_hash: str | None = None) -> list[bytes | None]:  # fmt: skip
            return [None for _ in calls]

    with pytest.raises(AttestationConfigError, match="not an AttestationRegistry"):
        await reader(NotRegistry()).validate()


def test_decode_record_roundtrip() -> None:
    r = decode_record(9, rec(score=-10_000, expiry=77, at=5, revoked=True))
    assert (r.uid, r.score_bps, r.expiry, r.attested_at, r.revoked) == (9, -10_000, 77, 5, True)
