"""Which leases this instance should take or give back: a pure decision per round.

Without it the first instance up takes every lease and the others only follow. Every
instance keeps a membership lease `member:<instance id>` (renewed like the others), so
each knows the live instances from the lease table alone.

Invariants:
- `share = ceil(work leases / live members)`; this instance always counts as live.
- A free lease (no row, or expired) is taken only while this instance holds fewer than
  its share, or once it has been free for longer than `orphan_after_s` (two renew
  rounds in the coordinator): a member row of a dead instance counts until it expires,
  and a starting instance may be the one with room; a chain must not wait for either.
- A live row that names this instance although it holds no tenure for it (an
  acquisition that committed after its answer timed out) is taken again at once: the
  compare-and-set succeeds for its own holder and issues a new token.
- Every instance ends with `floor` or `share` leases (`floor = work leases // live
  members`). An instance gives back at most one lease per round: when it holds more
  than its share while another live member holds less than the share, or exactly the
  share while another holds less than the floor; never otherwise (no churn for
  nothing).
  Giving back stops the work and revokes its fence *before* the row is released, and
  the next holder gets a higher token: two tenures never may write at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Protocol

MEMBER_PREFIX = "member:"


class RowLike(Protocol):
    @property
    def holder(self) -> str: ...
    @property
    def live(self) -> bool: ...
    @property
    def expired_for_s(self) -> float: ...


@dataclass(frozen=True)
class Decision:
    acquire: tuple[str, ...]
    release: str | None
    share: int
    members: int


def member_lease(instance_id: str) -> str:
    return MEMBER_PREFIX + instance_id


def live_members(rows: Mapping[str, RowLike], me: str) -> set[str]:
    out = {me}
    for name, row in rows.items():
        if name.startswith(MEMBER_PREFIX) and row.live:
            out.add(row.holder)
    return out


def decide(
    names: Sequence[str],
    held: Set[str],
    rows: Mapping[str, RowLike],
    me: str,
    *,
    orphan_after_s: float,
) -> Decision:
    members = live_members(rows, me)
    share = math.ceil(len(names) / len(members)) if names else 0
    counts = dict.fromkeys(members, 0)
    for name in names:
        row = rows.get(name)
        if row is not None and row.live and row.holder in counts:
            counts[row.holder] += 1
    counts[me] = len(held)
    acquire: list[str] = []
    room = share - len(held)
    for name in names:
        if name in held:
            continue
        row = rows.get(name)
        if row is not None and row.live:
            if row.holder == me:  # ours in the table, unknown here: claim it back
                acquire.append(name)
                room -= 1
            continue
        orphaned = row is not None and row.expired_for_s > orphan_after_s
        if room > 0 or orphaned:
            acquire.append(name)
            room -= 1
    floor = len(names) // len(members)
    others = [n for who, n in counts.items() if who != me]
    over = len(held) > share and any(n < share for n in others)
    even_out = len(held) == share > floor and any(n < floor for n in others)
    release = None
    if over or even_out:
        # The last one in config order: a deterministic choice, stable across rounds.
        release = sorted(held, key=names.index)[-1]
    return Decision(tuple(acquire), release, share, len(members))
