"""The soak's view of a multi-instance deployment on PostgreSQL (docs/reliability.md,
"Two-instance soak"): its own database, a write audit the daemons know nothing about,
and the fencing, takeover and lease-spread judgements made from it.

The audit is a set of triggers the soak installs after migrating the schema and
before any daemon starts. Every row written to the tables a lease protects (push_tx;
chain_checkpoint, chain_event, chain_position, chain_block) and every fence check and
acquisition on `cluster_lease` appends a row to `soak_audit`, stamped with the writing
transaction's id. A rolled-back transaction leaves no audit row, so the audit holds
exactly the writes that landed. From it:

- every protected write maps to the fence check of its own transaction, on the lease
  of its kind and chain (an unfenced write is a violation);
- per lease, in the order the lease row's lock serialised them, every fence check
  carries the token and holder of the latest acquisition before it: two tenures
  never interleave, and a paused-then-resumed old holder's write never lands after
  its successor acquired;
- per chain, the keeper transactions mined, in nonce order, were inserted (nonce
  allocated) under non-decreasing tokens: no instance allocated a nonce after its
  successor started allocating.

Only the chains, the lease table and the audit are read: never the daemons' own
claims.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

WORK_PREFIXES = ("index:", "push:")

AUDIT_SQL = """
CREATE TABLE IF NOT EXISTS soak_audit (
    id bigserial PRIMARY KEY,
    xid bigint NOT NULL DEFAULT txid_current(),
    at double precision NOT NULL DEFAULT extract(epoch FROM clock_timestamp()),
    kind text NOT NULL,
    lease text, holder text, token bigint,
    tbl text, op text, chain text, nonce bigint, rec_id bigint, status text, hashes text
);

CREATE OR REPLACE FUNCTION soak_audit_lease() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.token <> OLD.token THEN
        INSERT INTO soak_audit (kind, lease, holder, token)
        VALUES ('acquire', NEW.name, NEW.holder, NEW.token);
    ELSIF NEW.writes = OLD.writes + 1 THEN
        INSERT INTO soak_audit (kind, lease, holder, token)
        VALUES ('fence', NEW.name, NEW.holder, NEW.token);
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION soak_audit_push() RETURNS trigger AS $$
BEGIN
    INSERT INTO soak_audit (kind, tbl, op, chain, nonce, rec_id, status, hashes)
    VALUES ('write', 'push_tx', TG_OP, NEW.chain, NEW.nonce, NEW.id, NEW.status,
            NEW.hashes::text);
    RETURN NEW;
END $$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION soak_audit_index() RETURNS trigger AS $$
DECLARE ch text;
BEGIN
    IF TG_OP = 'DELETE' THEN ch := OLD.chain; ELSE ch := NEW.chain; END IF;
    INSERT INTO soak_audit (kind, tbl, op, chain) VALUES ('write', TG_TABLE_NAME, TG_OP, ch);
    RETURN NULL;
END $$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS soak_audit_lease ON cluster_lease;
CREATE TRIGGER soak_audit_lease AFTER INSERT OR UPDATE ON cluster_lease
    FOR EACH ROW EXECUTE FUNCTION soak_audit_lease();
DROP TRIGGER IF EXISTS soak_audit_push ON push_tx;
CREATE TRIGGER soak_audit_push AFTER INSERT OR UPDATE ON push_tx
    FOR EACH ROW EXECUTE FUNCTION soak_audit_push();
"""
INDEX_TABLES = ("chain_checkpoint", "chain_event", "chain_position", "chain_block")


def index_trigger_sql(table: str) -> str:
    return (
        f"DROP TRIGGER IF EXISTS soak_audit_index ON {table};\n"
        f"CREATE TRIGGER soak_audit_index AFTER INSERT OR UPDATE OR DELETE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION soak_audit_index();"
    )


def asyncpg_dsn(sqlalchemy_url: str, database: str | None = None) -> str:
    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    if database is not None:
        url = url.set(database=database)
    return url.render_as_string(hide_password=False)


async def create_database(base_url: str, name: str) -> str:
    """A fresh database `name` on the server of `base_url`; returns its SQLAlchemy URL."""
    con = await asyncpg.connect(asyncpg_dsn(base_url, "postgres"), timeout=10)
    try:
        await con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await con.execute(f'CREATE DATABASE "{name}"')
    finally:
        await con.close()
    return make_url(base_url).set(database=name).render_as_string(hide_password=False)


async def drop_database(base_url: str, name: str) -> None:
    con = await asyncpg.connect(asyncpg_dsn(base_url, "postgres"), timeout=10)
    try:
        await con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await con.close()


async def install_audit(url: str) -> None:
    con = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    try:
        await con.execute(AUDIT_SQL)
        for t in INDEX_TABLES:
            await con.execute(index_trigger_sql(t))
    finally:
        await con.close()


@dataclass(frozen=True)
class AuditRow:
    id: int
    xid: int
    at: float
    kind: str  # acquire | fence | write
    lease: str | None
    holder: str | None
    token: int | None
    tbl: str | None
    op: str | None
    chain: str | None
    nonce: int | None
    rec_id: int | None
    hashes: tuple[str, ...]


async def read_audit(url: str) -> list[AuditRow]:
    con = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    try:
        rows = await con.fetch(
            "SELECT id, xid, at, kind, lease, holder, token, tbl, op, chain, nonce, rec_id, "
            "hashes FROM soak_audit ORDER BY id"
        )
    finally:
        await con.close()
    return [
        AuditRow(
            id=int(r["id"]),
            xid=int(r["xid"]),
            at=float(r["at"]),
            kind=str(r["kind"]),
            lease=r["lease"],
            holder=r["holder"],
            token=None if r["token"] is None else int(r["token"]),
            tbl=r["tbl"],
            op=r["op"],
            chain=r["chain"],
            nonce=None if r["nonce"] is None else int(r["nonce"]),
            rec_id=None if r["rec_id"] is None else int(r["rec_id"]),
            hashes=tuple(h.lower() for h in json.loads(r["hashes"])) if r["hashes"] else (),
        )
        for r in rows
    ]


def lease_of(row: AuditRow) -> str:
    """The lease a protected write needs: push_tx -> push:<chain>, chain_* -> index:<chain>."""
    kind = "push" if row.tbl == "push_tx" else "index"
    return f"{kind}:{row.chain}"


@dataclass
class FencingReport:
    violations: list[tuple[str, str]] = field(default_factory=list)
    writes: Counter[str] = field(default_factory=Counter)  # protected writes per lease
    tenures: Counter[str] = field(default_factory=Counter)  # acquisitions per lease
    writers: Counter[str] = field(default_factory=Counter)  # fenced transactions per holder
    # rec_id -> (lease token, holder) of the transaction that inserted the record
    record_tenure: dict[int, tuple[int, str]] = field(default_factory=dict)
    # hash -> rec_id, every hash a record was ever sent under
    record_of_hash: dict[str, int] = field(default_factory=dict)
    nonces_reallocated: int = 0

    def violate(self, inv: str, detail: str) -> None:
        self.violations.append((inv, detail))


def judge_fencing(audit: Sequence[AuditRow]) -> FencingReport:
    """The fencing invariants over the whole audit (module docstring)."""
    rep = FencingReport()
    fence_of_xid: dict[int, list[AuditRow]] = defaultdict(list)
    for r in audit:
        if r.kind == "fence":
            fence_of_xid[r.xid].append(r)
    current: dict[str, tuple[int, str]] = {}  # lease -> (token, holder) of the last acquire
    for r in audit:
        if r.kind == "acquire":
            assert r.lease is not None and r.token is not None and r.holder is not None
            prev = current.get(r.lease)
            if prev is not None and r.token <= prev[0]:
                rep.violate("fencing", f"{r.lease}: token went {prev[0]} -> {r.token}")
            current[r.lease] = (r.token, r.holder)
            if r.lease.startswith(WORK_PREFIXES):
                rep.tenures[r.lease] += 1
        elif r.kind == "fence":
            assert r.lease is not None and r.token is not None and r.holder is not None
            cur = current.get(r.lease)
            if cur is None or cur != (r.token, r.holder):
                rep.violate(
                    "fencing",
                    f"{r.lease}: write by {r.holder} token {r.token} landed while the "
                    f"current tenure was {cur}",
                )
            rep.writers[r.holder] += 1
        elif r.kind == "write":
            need = lease_of(r)
            fences = [f for f in fence_of_xid.get(r.xid, []) if f.lease == need]
            if not fences:
                rep.violate(
                    "fencing",
                    f"{r.tbl} {r.op} on {r.chain} (xid {r.xid}) without a check of {need}",
                )
                continue
            rep.writes[need] += 1
            f = fences[0]
            if r.tbl == "push_tx" and r.rec_id is not None:
                assert f.token is not None and f.holder is not None
                if r.op == "INSERT":
                    rep.record_tenure[r.rec_id] = (f.token, f.holder)
                for h in r.hashes:
                    rep.record_of_hash[h] = r.rec_id
    inserted_nonce: dict[tuple[str, int], set[int]] = defaultdict(set)
    for r in audit:
        if r.kind == "write" and r.tbl == "push_tx" and r.op == "INSERT":
            assert r.chain is not None and r.nonce is not None and r.rec_id is not None
            inserted_nonce[(r.chain, r.nonce)].add(r.rec_id)
    rep.nonces_reallocated = sum(1 for ids in inserted_nonce.values() if len(ids) > 1)
    return rep


def judge_mined_order(
    rep: FencingReport, chain: str, mined: Sequence[tuple[int, str]]
) -> tuple[int, int]:
    """Keeper txs mined on `chain` (nonce, hash) in nonce order: each maps to a record,
    and the tokens that allocated them never go back. Returns (mapped, tenures seen)."""
    last: tuple[int, str, int] | None = None  # token, holder, nonce
    mapped = 0
    tokens: set[int] = set()
    for nonce, h in mined:
        rid = rep.record_of_hash.get(h.lower())
        if rid is None or rid not in rep.record_tenure:
            rep.violate("fencing", f"{chain}: keeper tx {h} (nonce {nonce}) maps to no record")
            continue
        token, holder = rep.record_tenure[rid]
        mapped += 1
        tokens.add(token)
        if last is not None and token < last[0]:
            rep.violate(
                "fencing",
                f"{chain}: nonce {nonce} allocated by {holder} token {token} after nonce "
                f"{last[2]} by {last[1]} token {last[0]}",
            )
        last = (token, holder, nonce)
    return mapped, len(tokens)


# ---------------------------------------------------------------- takeovers
@dataclass(frozen=True)
class Disruption:
    kind: str  # kill | pause
    victim: str  # instance id
    at: float  # wall time (same host as the database: one clock)
    held: dict[str, int]  # work lease -> token the victim held then
    pause_s: float = 0.0


@dataclass(frozen=True)
class Takeover:
    kind: str
    lease: str
    acquired_after_s: float | None  # None: the victim kept or took it back itself
    first_write_after_s: float | None


def takeovers(
    audit: Sequence[AuditRow], events: Sequence[Disruption], *, ttl_s: float
) -> list[Takeover]:
    """Per lease a disrupted instance held: how long until another instance acquired it
    and wrote under it. A paused instance that resumed in time keeps its leases; an
    acquisition more than two TTLs after it resumed is a later hand-back (rebalancing),
    not a takeover, and counts as kept."""
    out = []
    for ev in events:
        for lease, token in ev.held.items():
            acq = next(
                (
                    r
                    for r in audit
                    if r.kind == "acquire"
                    and r.lease == lease
                    and r.token is not None
                    and r.token > token
                ),
                None,
            )
            late = (
                ev.kind == "pause" and acq is not None and acq.at > ev.at + ev.pause_s + 2 * ttl_s
            )
            if acq is None or acq.holder == ev.victim or late:
                out.append(Takeover(ev.kind, lease, None, None))
                continue
            wr = next(
                (
                    r
                    for r in audit
                    if r.kind == "fence"
                    and r.lease == lease
                    and r.token is not None
                    and r.token >= (acq.token or 0)
                ),
                None,
            )
            out.append(
                Takeover(
                    ev.kind,
                    lease,
                    max(0.0, acq.at - ev.at),
                    None if wr is None else max(0.0, wr.at - ev.at),
                )
            )
    return out


def dist(xs: Sequence[float]) -> str:
    if not xs:
        return "-"
    s = sorted(xs)

    def pct(p: float) -> float:
        return s[min(len(s) - 1, max(0, math.ceil(p * len(s)) - 1))]

    return f"n {len(s)}: p50 {statistics.median(s):.1f} s, p95 {pct(0.95):.1f} s, max {s[-1]:.1f} s"


# ---------------------------------------------------------------- lease spread
@dataclass
class SpreadStats:
    """Samples of the lease table while every instance ran (not killed, not paused)
    for at least the settle time: how the work leases were spread."""

    leases: int = 0
    samples: int = 0
    balanced: int = 0  # every instance held floor..share work leases
    all_hold: int = 0  # every instance held at least one
    per_instance: Counter[str] = field(default_factory=Counter)  # lease-samples per slot
    # Longest stretch of steady samples in which some instance held no work lease.
    longest_idle_s: float = 0.0
    _idle_since: dict[str, float] = field(default_factory=dict)
    # Restart/resume -> the instance holds floor leases again, seconds.
    rebalance_s: list[float] = field(default_factory=list)

    def sample(self, t: float, counts: dict[str, int], steady: bool) -> None:
        n = len(counts)
        if not steady or n == 0:
            self._idle_since.clear()
            return
        floor, share = self.leases // n, math.ceil(self.leases / n)
        self.samples += 1
        if all(floor <= k <= share for k in counts.values()):
            self.balanced += 1
        if all(k >= 1 for k in counts.values()):
            self.all_hold += 1
        for slot, k in counts.items():
            self.per_instance[slot] += k
            if k == 0:
                since = self._idle_since.setdefault(slot, t)
                self.longest_idle_s = max(self.longest_idle_s, t - since)
            else:
                self._idle_since.pop(slot, None)

    def table(self) -> str:
        if not self.samples:
            return "no steady samples"
        mean = ", ".join(
            f"{slot} {self.per_instance[slot] / self.samples:.1f}"
            for slot in sorted(self.per_instance)
        )
        return (
            f"{self.samples} samples: balanced {100 * self.balanced / self.samples:.0f}%, "
            f"every instance holds some {100 * self.all_hold / self.samples:.0f}%; "
            f"mean work leases held: {mean} (of {self.leases})"
        )


def work_counts(rows: Sequence[dict[str, Any]], slot_of: dict[str, str]) -> dict[str, int]:
    """Live work leases per instance slot, from `cluster_lease` rows."""
    counts: dict[str, int] = dict.fromkeys(set(slot_of.values()), 0)
    for r in rows:
        if str(r["name"]).startswith(WORK_PREFIXES) and r["live"]:
            slot = slot_of.get(str(r["holder"]))
            if slot is not None:
                counts[slot] += 1
    return counts


async def lease_rows(con: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await con.fetch(
        "SELECT name, holder, token, expires_at > clock_timestamp() AS live FROM cluster_lease"
    )
    return [dict(r) for r in rows]
