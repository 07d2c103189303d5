"""The two-instance soak's fencing judgements (soak_cluster.py) on hand-made audits: each
invariant is shown to catch the write pattern it exists for, and to pass a clean run."""

from __future__ import annotations

from itertools import count

from soak_cluster import (
    AuditRow,
    Disruption,
    SpreadStats,
    judge_fencing,
    judge_mined_order,
    takeovers,
)

_ids = count(1)


def row(kind: str, xid: int, at: float = 0.0, **kw: object) -> AuditRow:
    base: dict[str, object] = {
        "lease": None,
        "holder": None,
        "token": None,
        "tbl": None,
        "op": None,
        "chain": None,
        "nonce": None,
        "rec_id": None,
        "hashes": (),
    }
    base.update(kw)
    return AuditRow(id=next(_ids), xid=xid, at=at, kind=kind, **base)  # type: ignore[arg-type]


def acquire(xid: int, lease: str, holder: str, token: int, at: float = 0.0) -> AuditRow:
    return row("acquire", xid, at, lease=lease, holder=holder, token=token)


def fence(xid: int, lease: str, holder: str, token: int, at: float = 0.0) -> AuditRow:
    return row("fence", xid, at, lease=lease, holder=holder, token=token)


def push_insert(xid: int, chain: str, nonce: int, rec_id: int, h: str) -> AuditRow:
    return row(
        "write",
        xid,
        tbl="push_tx",
        op="INSERT",
        chain=chain,
        nonce=nonce,
        rec_id=rec_id,
        hashes=(h,),
    )


def clean_handover() -> list[AuditRow]:
    return [
        acquire(1, "push:alpha", "a", 1),
        acquire(1, "index:alpha", "a", 1),
        fence(2, "push:alpha", "a", 1, at=1.0),
        push_insert(2, "alpha", 0, 10, "0xaa"),
        fence(3, "index:alpha", "a", 1),
        row("write", 3, tbl="chain_checkpoint", op="UPDATE", chain="alpha"),
        acquire(4, "push:alpha", "b", 2, at=12.0),
        fence(5, "push:alpha", "b", 2, at=13.0),
        push_insert(5, "alpha", 1, 11, "0xbb"),
    ]


def test_a_clean_handover_passes_and_maps_every_keeper_tx() -> None:
    rep = judge_fencing(clean_handover())
    assert rep.violations == []
    assert judge_mined_order(rep, "alpha", [(0, "0xaa"), (1, "0xbb")]) == (2, 2)
    assert rep.violations == []
    assert rep.writes["push:alpha"] == 2 and rep.writes["index:alpha"] == 1


def test_an_old_holders_write_after_the_takeover_is_a_violation() -> None:
    audit = [
        *clean_handover(),
        fence(6, "push:alpha", "a", 1),
        push_insert(6, "alpha", 2, 12, "0xcc"),
    ]
    rep = judge_fencing(audit)
    assert any("write by a token 1" in d for _i, d in rep.violations)


def test_a_write_without_its_leases_check_is_a_violation() -> None:
    # Fenced, but by the wrong lease: an index check does not cover a push record.
    audit = [
        acquire(1, "index:alpha", "a", 1),
        fence(2, "index:alpha", "a", 1),
        push_insert(2, "alpha", 0, 10, "0xaa"),
        row("write", 3, tbl="chain_event", op="INSERT", chain="alpha"),
    ]
    rep = judge_fencing(audit)
    assert len(rep.violations) == 2
    assert all("without a check" in d for _i, d in rep.violations)


def test_nonces_allocated_out_of_tenure_order_are_a_violation() -> None:
    rep = judge_fencing(clean_handover())
    # The chain mined b's record at a lower nonce than a's: a allocated after b started.
    judge_mined_order(rep, "alpha", [(0, "0xbb"), (1, "0xaa")])
    assert any("allocated by a token 1 after" in d for _i, d in rep.violations)
    judge_mined_order(rep, "alpha", [(5, "0xdead")])
    assert any("maps to no record" in d for _i, d in rep.violations)


def test_a_token_going_back_is_a_violation() -> None:
    rep = judge_fencing([acquire(1, "push:beta", "a", 3), acquire(2, "push:beta", "b", 3)])
    assert any("token went 3 -> 3" in d for _i, d in rep.violations)


def test_takeover_times_are_from_the_disruption_to_the_new_holders_acquire_and_write() -> None:
    audit = clean_handover()
    held = {"push:alpha": 1, "index:alpha": 1}
    got = takeovers(audit, [Disruption("kill", "a", 2.0, held)], ttl_s=3.0)
    by_lease = {t.lease: t for t in got}
    assert by_lease["push:alpha"].acquired_after_s == 10.0
    assert by_lease["push:alpha"].first_write_after_s == 11.0
    assert by_lease["index:alpha"].acquired_after_s is None  # nobody took it over
    # Paused 2 s at t=2 with a 3 s TTL: an acquisition at t=12 is a later hand-back.
    (late,) = takeovers(audit, [Disruption("pause", "a", 2.0, {"push:alpha": 1}, 2.0)], ttl_s=3.0)
    assert late.acquired_after_s is None
    (taken,) = takeovers(audit, [Disruption("pause", "a", 2.0, {"push:alpha": 1}, 5.0)], ttl_s=3.0)
    assert taken.acquired_after_s == 10.0


def test_spread_counts_balance_and_the_longest_idle_stretch() -> None:
    sp = SpreadStats(leases=6)
    sp.sample(0.0, {"i0": 6, "i1": 0}, steady=True)
    sp.sample(30.0, {"i0": 4, "i1": 2}, steady=True)
    sp.sample(40.0, {"i0": 3, "i1": 3}, steady=True)
    sp.sample(50.0, {"i0": 6, "i1": 0}, steady=False)  # not counted
    assert sp.samples == 3 and sp.balanced == 1 and sp.all_hold == 2
    assert sp.longest_idle_s == 0.0  # idle only in the first sample
    sp.sample(60.0, {"i0": 6, "i1": 0}, steady=True)
    sp.sample(130.0, {"i0": 6, "i1": 0}, steady=True)
    assert sp.longest_idle_s == 70.0
