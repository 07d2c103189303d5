"""SQLite's one-hand-off `apply_batch` (aggregator/store/chain_sqlite.py) against the
SQLAlchemy path it replaces there (still PostgreSQL's): the same random indexing
history (backfill with compacted ranges, the reorg window with pending deposits and
promotions, re-applied batches, rollbacks, corrections, a refused overlapping range)
applied both ways must leave every chain table identical, row ids and stored value
types included; a failure inside the driver's function must leave nothing behind."""

from __future__ import annotations

import random
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from aggregator.store import Store
from aggregator.store.chain_repo import SqlChainStore
from aggregator.store.chain_sqlite import SqliteBatchWriter
from chains.types import BlockRef, EventColumns, VaultEvent

ACCOUNTS = [f"0x{i:040x}" for i in range(0xA1, 0xB9)]
COL, USD = "0x" + "c0" * 20, "0x" + "d0" * 20
KINDS = ["deposit"] * 6 + ["withdraw", "borrow", "borrow", "repay", "liquidation"]
TABLES = (
    "chain_event", "chain_position", "chain_block", "chain_checkpoint", "chain_event_range",
    "chain_account",
)  # fmt: skip
STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}")


def events_of(rng: random.Random, chain: str, lo: int, hi: int, tag: int) -> list[VaultEvent]:
    out = []
    for n in range(lo, hi + 1):
        for i in range(rng.randrange(0, 6)):
            kind = rng.choice(KINDS)
            amount = rng.choice([rng.randrange(1, 10**6), 2**255 + rng.randrange(10**6)])
            extra: dict[str, Any] = {}
            if kind == "liquidation":
                extra = {"counterparty": USD, "debt_token": USD, "debt_amount": amount // 3}
            elif kind == "repay":
                extra = {"counterparty": rng.choice(ACCOUNTS)}
            out.append(
                VaultEvent(
                    chain=chain,
                    block_number=n,
                    block_hash=f"0x{tag:04x}{n:060x}",
                    tx_hash=f"0x{tag:04x}{n * 100 + i:060x}",
                    log_index=i,
                    kind=kind,  # type: ignore[arg-type]
                    account=rng.choice(ACCOUNTS),
                    token=USD if kind in ("borrow", "repay") else COL,
                    amount=amount,
                    **extra,
                )
            )
    return out


def ref(n: int, tag: int) -> BlockRef:
    return BlockRef(n, f"0x{tag:04x}{n:060x}", f"0x{tag:04x}{n - 1:060x}")


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every chain table's rows with their SQLite values as stored (type included);
    timestamps checked for SQLAlchemy's format, then masked."""
    db = sqlite3.connect(path)
    try:
        out = {}
        for table in TABLES:
            rows = []
            for row in db.execute(f"SELECT * FROM {table}"):
                rows.append(
                    tuple(
                        "<stamp>" if isinstance(v, str) and STAMP.fullmatch(v) else v for v in row
                    )
                )
            out[table] = sorted(rows, key=repr)
        return out
    finally:
        db.close()


async def history(repo: SqlChainStore, seed: int) -> list[str]:
    """A random indexing history of two chains; returns what each step answered (the
    accounts touched, or the refusal's message)."""
    rng = random.Random(seed)
    answers: list[str] = []
    for chain in ("a", "b"):
        indexed, tag, compacted_to = 99, 0, -1
        last: dict[str, Any] | None = None
        for _step in range(40):
            roll = rng.random()
            if roll < 0.1 and last is not None:
                # The indexer re-applying its last batch (a crash before it learnt of
                # the commit): idempotent.
                answers.append(repr(sorted(await repo.apply_batch(chain, **last))))
                continue
            if roll < 0.2 and indexed - 3 > compacted_to + 1:
                ancestor = rng.randrange(max(compacted_to + 1, indexed - 6), indexed)
                tag += 1
                touched = await repo.rollback(chain, ref(ancestor, tag - 1))
                answers.append(f"rollback {sorted(touched)}")
                indexed = ancestor
                continue
            if roll < 0.27:
                corrections = [
                    (rng.choice(ACCOUNTS), COL, "collateral", rng.randrange(0, 10**6))
                    for _ in range(rng.randrange(1, 4))
                ]
                await repo.apply_corrections(chain, indexed, corrections, indexed)  # type: ignore[arg-type]
                continue
            lo, hi = indexed + 1, indexed + rng.randrange(1, 12)
            head = hi + rng.randrange(0, 12)
            confirmed, keep_from = head - 3, head - 8
            evs = events_of(rng, chain, lo, hi, tag)
            if rng.random() < 0.2:
                rng.shuffle(evs)  # out of chain order: the general paths
            if evs and rng.random() < 0.1:
                evs.append(evs[0])  # a key twice in one batch
            compact = rng.random() < 0.7
            batch: dict[str, Any] = {
                "to_block": hi,
                "blocks": [ref(n, tag) for n in range(lo, hi + 1) if rng.random() < 0.9],
                "events": EventColumns.from_events(chain, evs) if rng.random() < 0.8 else evs,
                "log_range": hi - lo + 1,
                "head_block": head,
                "confirmed_block": confirmed,
                "keep_hashes_from": keep_from,
                "from_block": lo,
                "compact_below": min(keep_from, confirmed + 1) if compact else None,
            }
            answers.append(repr(sorted(await repo.apply_batch(chain, **batch))))
            last, indexed = batch, hi
            if compact and lo < min(keep_from, confirmed + 1):
                compacted_to = max(compacted_to, min(hi, keep_from - 1, confirmed))
        if compacted_to > 101:
            # A range overlapping a recorded one other than exactly: refused, and the
            # transaction leaves nothing.
            with pytest.raises(ValueError) as err:
                await repo.apply_batch(
                    chain,
                    to_block=compacted_to,
                    blocks=[],
                    events=[],
                    log_range=1,
                    head_block=compacted_to + 20,
                    confirmed_block=compacted_to + 10,
                    keep_hashes_from=compacted_to + 5,
                    from_block=compacted_to - 1,
                    compact_below=compacted_to + 1,
                )
            answers.append(str(err.value))
    return answers


async def run(path: Path, seed: int, *, driver: bool) -> list[str]:
    store = Store(f"sqlite+aiosqlite:///{path}")
    await store.upgrade()
    repo = SqlChainStore(store)
    assert isinstance(repo.sqlite, SqliteBatchWriter)
    if not driver:
        repo.sqlite = None
    try:
        return await history(repo, seed)
    finally:
        await store.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_driver_thread_batches_store_what_the_session_path_stores(
    tmp_path: Path, seed: int
) -> None:
    a, b = tmp_path / "session.db", tmp_path / "driver.db"
    answers_a = await run(a, seed, driver=False)
    answers_b = await run(b, seed, driver=True)
    assert answers_b == answers_a
    dump_a, dump_b = dump(a), dump(b)
    assert all(dump_a[t] for t in TABLES), "the history must reach every table"
    assert dump_b == dump_a


async def test_a_failure_inside_the_driver_function_commits_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "x.db"
    store = Store(f"sqlite+aiosqlite:///{path}")
    await store.upgrade()
    repo = SqlChainStore(store)
    rng = random.Random(7)
    first = events_of(rng, "c", 100, 120, 0)
    args: dict[str, Any] = {
        "blocks": [ref(n, 0) for n in range(100, 121)],
        "log_range": 21,
        "head_block": 130,
        "confirmed_block": 127,
        "keep_hashes_from": 122,
        "from_block": 100,
        "compact_below": 110,
    }
    await repo.apply_batch("c", to_block=120, events=first, **args)
    before = dump(path)
    second = events_of(rng, "c", 121, 125, 0)
    args.update(blocks=[ref(n, 0) for n in range(121, 126)], from_block=121, compact_below=None)

    def fail(*_: object) -> None:
        raise RuntimeError("crash after the events, positions and promotions were written")

    assert repo.sqlite is not None
    monkeypatch.setattr(repo.sqlite, "_block_hashes", fail)
    with pytest.raises(RuntimeError):
        await repo.apply_batch("c", to_block=125, events=second, **args)
    assert dump(path) == before
    monkeypatch.undo()
    await repo.apply_batch("c", to_block=125, events=second, **args)
    after = dump(path)
    assert after != before
    cp = await repo.load_checkpoint("c")
    assert cp is not None and cp.indexed_block == 125
    await store.close()
