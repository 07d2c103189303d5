"""The lease-spreading decision (aggregator/cluster/balance.py) on a simulated lease
table: instances join, leave and die in random orders; the work converges to an even
spread, no lease is ever held twice and none stays unowned."""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.cluster.balance import decide, member_lease

NAMES = [f"{kind}:{c}" for kind in ("index", "push") for c in ("alpha", "beta", "gamma")]
TTL = 15.0


@dataclass
class Row:
    holder: str
    live: bool = True
    expired_for_s: float = 0.0


def run_round(table: dict[str, Row], me: str, rng: random.Random) -> None:
    """One coordinator tick of `me` against the shared table (membership first)."""
    table[member_lease(me)] = Row(me)
    held = {n for n in NAMES if (r := table.get(n)) and r.live and r.holder == me}
    d = decide(NAMES, held, table, me, orphan_after_s=TTL)
    if d.release is not None:
        assert d.release in held
        table[d.release] = Row(me, live=False)
    for name in d.acquire:
        row = table.get(name)
        if row is None or not row.live:  # the database's compare-and-set
            table[name] = Row(me)


def spread(table: dict[str, Row]) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in NAMES:
        r = table.get(n)
        if r is not None and r.live:
            out[r.holder] = out.get(r.holder, 0) + 1
    return out


@given(st.integers(1, 5), st.integers(0, 10_000))
@settings(max_examples=60, deadline=None)
def test_instances_converge_to_an_even_spread(n: int, seed: int) -> None:
    rng = random.Random(seed)
    table: dict[str, Row] = {}
    instances = [f"i{k}" for k in range(n)]
    for _ in range(4 * len(NAMES)):
        rng.shuffle(instances)
        for me in instances:
            run_round(table, me, rng)
    counts = spread(table)
    assert sum(counts.values()) == len(NAMES)  # every lease owned
    assert max(counts.values()) - min(counts.get(i, 0) for i in instances) <= 1


def test_a_dead_instance_s_share_is_taken_over() -> None:
    rng = random.Random(1)
    table: dict[str, Row] = {}
    for _ in range(12):
        for me in ("a", "b"):
            run_round(table, me, rng)
    assert spread(table) == {"a": 3, "b": 3}
    # b dies: its member row and its leases expire (nobody renews them).
    for name, row in table.items():
        if row.holder == "b":
            table[name] = Row("b", live=False, expired_for_s=1.0)
    run_round(table, "a", rng)
    assert spread(table) == {"a": 6}


def test_no_churn_when_nobody_is_short() -> None:
    """Holding more than the share is fine while no live member holds less: e.g. a
    member that holds nothing because it only just joined is short; one that holds its
    share is not."""
    table = {n: Row("a") for n in NAMES[:4]} | {n: Row("b") for n in NAMES[4:]}
    table |= {member_lease("a"): Row("a"), member_lease("b"): Row("b")}
    d = decide(NAMES, set(NAMES[:4]), table, "a", orphan_after_s=TTL)
    assert d.share == 3 and d.release == NAMES[3]  # b holds 2 < 3: a gives one back
    table[member_lease("c")] = Row("c")
    d = decide(NAMES, set(NAMES[:4]), table, "a", orphan_after_s=TTL)
    assert d.share == 2 and d.release == NAMES[3]
    table = {n: Row("a") for n in NAMES[:3]} | {n: Row("b") for n in NAMES[3:]}
    table |= {member_lease("a"): Row("a"), member_lease("b"): Row("b")}
    assert decide(NAMES, set(NAMES[:3]), table, "a", orphan_after_s=TTL).release is None


def test_an_orphaned_lease_is_taken_beyond_the_share() -> None:
    """A member row of a dead instance still counts until it expires; a lease free for
    longer than the orphan bound is taken anyway."""
    table = {n: Row("a") for n in NAMES[:3]}
    table |= {member_lease("a"): Row("a"), member_lease("ghost"): Row("ghost")}
    table[NAMES[3]] = Row("ghost", live=False, expired_for_s=TTL + 1)
    table[NAMES[4]] = Row("ghost", live=False, expired_for_s=1.0)
    d = decide(NAMES, set(NAMES[:3]), table, "a", orphan_after_s=TTL)
    assert d.share == 3 and d.acquire == (NAMES[3],)


def test_a_row_of_ours_we_do_not_know_about_is_claimed_back() -> None:
    """An acquisition whose answer timed out may still have committed: the table says
    the lease is ours while no tenure here knows it. It is claimed back at once (a new
    token), not left idle until the row expires."""
    table = {member_lease("a"): Row("a"), NAMES[0]: Row("a")}
    d = decide(NAMES, set(), table, "a", orphan_after_s=TTL)
    assert NAMES[0] in d.acquire
