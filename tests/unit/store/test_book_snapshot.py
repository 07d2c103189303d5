"""Book snapshots (aggregator/book_snapshot.py): a start from the snapshot plus the
store's writes since gives the book, and the ratings, of a full load; events, promotions
and corrections after the snapshot are replayed; a rollback after it, a corrupt,
foreign or older snapshot fall back to the full load with a clear message; a crash
mid-write leaves the previous snapshot usable. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aggregator import book_snapshot
from aggregator.book_snapshot import BookSnapshots
from aggregator.book_sync import BookSync, book_fingerprint
from aggregator.config import AppConfig
from aggregator.metrics import Metrics
from aggregator.risk import RiskEngine
from aggregator.risk.market import PriceInput
from aggregator.store import Store
from aggregator.store.chain_repo import SqlChainStore
from aggregator.store.models.meta import DaemonMeta
from chains.types import BlockRef, VaultEvent

COL = "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0"  # WETH
USD = "0xCf7Ed3AccA5a467e9e704C703E8D87F634fB0Fc9"  # USDC
CHAINS = ("c", "d")


def config(weth_decimals: int = 18) -> AppConfig:
    return AppConfig(
        chains=[
            {"name": n, "chain_id": i + 1, "rpc_urls": ["http://127.0.0.1:1"],
             "contracts": {"vault": f"0x{i + 1:040x}"}}
            for i, n in enumerate(CHAINS)
        ],
        assets=[
            {"symbol": "USDC", "decimals": 6, "ltv": 0.85, "lt": 0.9, "borrowable": True,
             "tokens": {c: USD for c in CHAINS}},
            {"symbol": "WETH", "decimals": weth_decimals, "ltv": 0.8, "lt": 0.85,
             "borrowable": True, "tokens": {c: COL for c in CHAINS}},
        ],
    )  # type: ignore[arg-type]  # fmt: skip


def acct(i: int) -> str:
    return f"0x{i:040x}"


def ev(chain: str, block: int, idx: int, kind: str, account: int, amount: int,  # noqa: PLR0917
       token: str = COL) -> VaultEvent:  # fmt: skip
    return VaultEvent(
        chain=chain, block_number=block, block_hash=f"0x{block:064x}",
        tx_hash=f"0x{block * 1000 + idx:064x}", log_index=idx, kind=kind,  # type: ignore[arg-type]
        account=acct(account), token=token, amount=amount,
    )  # fmt: skip


def blk(n: int, tag: str = "") -> BlockRef:
    return BlockRef(n, f"0x{tag}{n:0{64 - len(tag)}x}", f"0x{tag}{n - 1:0{64 - len(tag)}x}")


async def apply(
    repo: SqlChainStore, chain: str, to: int, events: list[VaultEvent], tag: str = ""
) -> set[str]:
    """One indexed batch; returns the accounts it changed (the indexer's callback)."""
    head = to + 4  # four blocks of confirmations: deposits in the last four pend
    return await repo.apply_batch(
        chain, to_block=to, blocks=[blk(n, tag) for n in range(max(0, to - 6), to + 1)],
        events=events, log_range=50, head_block=to, confirmed_block=head - 8,
        keep_hashes_from=max(0, to - 6),
    )  # fmt: skip


async def history(repo: SqlChainStore, n_accounts: int, seed: int, to: int = 10) -> None:
    """Deposits and borrows of `n_accounts` on both chains up to block `to`, some
    amounts >= 2**128 (exact side dict), some deposits still pending."""
    rng = np.random.default_rng(seed)
    for chain in CHAINS:
        events: list[VaultEvent] = []
        for a in range(1, n_accounts + 1):
            block = int(rng.integers(1, to + 1))
            big = 10**40 if a % 17 == 0 else 1
            amount = int(rng.integers(1, 10**6)) * 10**15 * big
            events.append(ev(chain, block, a, "deposit", a, amount))
            if a % 3:
                events.append(ev(chain, block, 10_000 + a, "borrow", a,
                                 int(rng.integers(1, 10**4)) * 10**6, token=USD))  # fmt: skip
        events.sort(key=lambda e: (e.block_number, e.log_index))
        await apply(repo, chain, to, events)


def sync(cfg: AppConfig, store: Store, snaps: BookSnapshots | None) -> BookSync:
    async def nothing(_: object) -> None:
        return None

    return BookSync(cfg, SqlChainStore(store), metrics=Metrics(), indexers={},
                    owns_index=lambda _c: True, recompute=nothing, snapshots=snaps)  # fmt: skip


def snapshots(cfg: AppConfig, store: Store, path: Path) -> tuple[BookSnapshots, Metrics]:
    m = Metrics()
    snaps = BookSnapshots(
        path, fingerprint=book_fingerprint(cfg), chains=cfg.chain_names,
        store=SqlChainStore(store), metrics=m,
    )  # fmt: skip
    return snaps, m


async def loaded(cfg: AppConfig, store: Store, snaps: BookSnapshots | None) -> RiskEngine:
    eng = RiskEngine.from_config(cfg)
    await sync(cfg, store, snaps).load(eng)
    return eng


async def save(snaps: BookSnapshots, eng: RiskEngine) -> bool:
    return await snaps.save(eng.export_book, lambda: None, lambda: ({}, []))


def rated(eng: RiskEngine) -> dict[str, Any]:
    """Every account's ratings and exact amounts, by address (row order may differ)."""
    eng.set_prices({"USDC": PriceInput(1.0), "WETH": PriceInput(3000.0)})
    eng.set_volatility({"USDC": 0.001, "WETH": 0.04}, {})
    eng.recompute()
    eng.allocate_credit()
    b = eng.book
    out: dict[str, Any] = {}
    for a, addr in enumerate(b.account_address):
        rows = sorted(
            (b.chains[int(b.r_chain[r])], b.assets[int(b.r_asset[r])], int(b.r_side[r]),
             b.exact(int(r)), float(b.r_amount[r]))
            for r in b.rows_of(a).tolist()
        )  # fmt: skip
        out[addr] = (
            float(eng.r_hf[a]), float(eng.r_bp[a]), int(eng.r_tier[a]),
            eng.credit[a].tolist(), b.coll[a].tolist(), b.debt[a].tolist(), rows,
        )  # fmt: skip
    return out


def count(m: Metrics, result: str) -> float:
    return m.registry.get_sample_value("agg_book_snapshot_loads_total", {"result": result}) or 0.0


async def test_round_trip_rates_bit_identical_to_a_full_load(store: Store, tmp_path: Path) -> None:
    cfg, repo = config(), SqlChainStore(store)
    await history(repo, 60, seed=1)
    full = await loaded(cfg, store, None)
    snaps, m = snapshots(cfg, store, tmp_path / "book.snap")
    assert await save(snaps, full)
    again = await loaded(cfg, store, snaps)
    assert count(m, "loaded") == 1
    assert again.book.account_address == full.book.account_address  # same indices
    n = full.book.n
    for col in ("r_account", "r_chain", "r_asset", "r_side", "r_amount", "r_limbs"):
        np.testing.assert_array_equal(getattr(again.book, col)[:n], getattr(full.book, col)[:n])
    assert any(a >> 128 for r in range(n) for a in full.book.exact(r))
    # The key index is the stored order, checked, not sorted again: the same index.
    np.testing.assert_array_equal(again.book.index.keys, full.book.index.keys)
    np.testing.assert_array_equal(again.book.index.rows, full.book.index.rows)
    # The dense sums and the pool layout (compiled passes, rebuilt on both paths from
    # the rows): the same arrays, so the kernels stream the same pairs.
    na = full.book.n_accounts
    for eng_arr in ("coll", "debt"):
        np.testing.assert_array_equal(getattr(again.book, eng_arr), getattr(full.book, eng_arr))
    assert again.pool.end == full.pool.end > 0
    for col in ("a_start", "a_cnt", "a_cap", "grp", "held"):
        np.testing.assert_array_equal(getattr(again.pool, col)[:na], getattr(full.pool, col)[:na])
    end = full.pool.end
    np.testing.assert_array_equal(again.pool.pc[:end], full.pool.pc[:end])
    np.testing.assert_array_equal(again.pool.pv[:end], full.pool.pv[:end])
    assert rated(again) == rated(full)


@pytest.mark.parametrize("bad", ["swapped", "repeated", "out_of_range", "absent"])
async def test_a_stored_key_order_that_does_not_sort_the_rows_is_not_trusted(
    store: Store, tmp_path: Path, bad: str
) -> None:
    """The stored key order is under the payload digest, so damaged bytes are `corrupt`
    (test below); an order that passes the digest but does not sort the rows' keys (a
    writer's bug), or none, is checked and the keys are sorted again: the load gives
    the key index and the ratings of a full load."""
    cfg, repo = config(), SqlChainStore(store)
    await history(repo, 40, seed=8)
    full = await loaded(cfg, store, None)
    snaps, m = snapshots(cfg, store, tmp_path / "book.snap")
    addresses, rows = full.export_book()
    good = rows.order
    assert good is not None
    np.testing.assert_array_equal(np.sort(good), np.arange(rows.account.size))
    order = good.copy()
    if bad == "swapped":
        order[[0, -1]] = order[[-1, 0]]
    elif bad == "repeated":
        order[1] = order[0]
    elif bad == "out_of_range":
        order[0] = order.size
    state = book_snapshot.BookState(
        addresses, rows._replace(order=None if bad == "absent" else order),
        await snaps.marks(), store_id=await repo.store_id(),
    )  # fmt: skip
    book_snapshot.write(snaps.path, state, snaps.fingerprint)
    got = await loaded(cfg, store, snaps)
    assert count(m, "loaded") == 1
    np.testing.assert_array_equal(got.book.index.keys, full.book.index.keys)
    np.testing.assert_array_equal(got.book.index.rows, full.book.index.rows)
    assert rated(got) == rated(full)


async def test_events_promotions_and_corrections_after_the_snapshot_are_replayed(
    store: Store, tmp_path: Path
) -> None:
    cfg, repo = config(), SqlChainStore(store)
    await history(repo, 40, seed=2)
    snaps, m = snapshots(cfg, store, tmp_path / "book.snap")
    assert await save(snaps, await loaded(cfg, store, None))
    # After the snapshot: new blocks (a new account, a withdrawal, a repayment, deposits
    # promoted as their blocks confirm) and a correction stamped at a reconcile block
    # below the indexed one.
    await apply(repo, "c", 14, [ev("c", 12, 0, "withdraw", 5, 1), ev("c", 13, 0, "deposit", 99, 7),
                                ev("c", 14, 0, "repay", 1, 1, token=USD)])  # fmt: skip
    await apply(repo, "d", 30, [ev("d", 30, 0, "borrow", 7, 5 * 10**6, token=USD)])
    await repo.apply_corrections("d", 12, [(acct(3), COL, "collateral", 42)], reconcile_block=12)
    got = await loaded(cfg, store, snaps)
    assert count(m, "loaded") == 1
    want = await loaded(cfg, store, None)
    assert got.book.find_account(acct(99)) is not None
    assert rated(got) == rated(want)


async def test_a_live_book_round_trips_to_the_ratings_of_a_full_load(
    store: Store, tmp_path: Path
) -> None:
    """A book changed by events (rows appended out of chain order by the live path)
    and snapshotted gives, after a restart, the sums and ratings of a full load."""
    cfg, repo = config(), SqlChainStore(store)
    await history(repo, 30, seed=3)
    s = sync(cfg, store, None)
    live = RiskEngine.from_config(cfg)
    await s.load(live)
    # Account 31 appears on chain d first, then on chain c (a row after d's); account 2
    # gets a new debt row on chain c after its chain d rows.
    changed = await apply(repo, "d", 20, [ev("d", 20, 0, "deposit", 31, 10**17)])
    later = [ev("c", 21, 0, "deposit", 31, 9 * 10**16), ev("c", 21, 1, "borrow", 2, 10**6, USD)]
    changed |= await apply(repo, "c", 21, later)
    assert {acct(31), acct(2)} < changed  # and the accounts whose deposits confirmed
    for row in await s.positions(sorted(changed)):
        live.apply_position(row)  # what the ledger does with the indexer's callback
    snaps, m = snapshots(cfg, store, tmp_path / "book.snap")
    assert await save(snaps, live)
    got = await loaded(cfg, store, snaps)
    assert count(m, "loaded") == 1
    assert rated(got) == rated(await loaded(cfg, store, None)) == rated(live)


async def test_a_rollback_before_the_snapshot_replays_a_rollback_after_it_reloads(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg, repo = config(), SqlChainStore(store)
    await history(repo, 30, seed=4)
    await apply(repo, "c", 12, [ev("c", 12, 0, "deposit", 4, 10**18)])
    await repo.rollback("c", blk(11))  # before the snapshot: its count is in the marks
    snaps, m = snapshots(cfg, store, tmp_path / "book.snap")
    assert await save(snaps, await loaded(cfg, store, None))
    assert rated(await loaded(cfg, store, snaps)) == rated(await loaded(cfg, store, None))
    assert count(m, "loaded") == 1
    # After it: a reorg replaces blocks 9..12 with another branch (the reverted rows
    # are stamped with the ancestor, below the snapshot's mark).
    await apply(repo, "c", 13, [ev("c", 13, 0, "borrow", 2, 10**6, token=USD)])
    await repo.rollback("c", blk(8))
    await apply(repo, "c", 12, [ev("c", 10, 0, "deposit", 8, 5)], tag="b")
    caplog.set_level(logging.INFO, logger="aggregator")
    got = await loaded(cfg, store, snaps)
    assert count(m, "store") == 1
    want = "book snapshot not used (store): chain c: 1 rollback(s) since the snapshot"
    assert want in caplog.text
    assert rated(got) == rated(await loaded(cfg, store, None))


async def test_a_rolled_back_correction_below_the_mark_is_caught(
    store: Store, tmp_path: Path
) -> None:
    """A rollback to the block the snapshot saw, with nothing indexed since: the mark's
    block and rollback count catch it (the hash of the same block differs, or the count)."""
    cfg, repo = config(), SqlChainStore(store)
    await history(repo, 20, seed=5)
    snaps, m = snapshots(cfg, store, tmp_path / "book.snap")
    assert await save(snaps, await loaded(cfg, store, None))
    await repo.rollback("d", blk(6))
    await apply(repo, "d", 10, [ev("d", 9, 0, "deposit", 1, 3)], tag="f")
    await loaded(cfg, store, snaps)
    assert count(m, "store") == 1 and count(m, "loaded") == 0


async def test_a_prefetched_read_is_used_once_and_checked_like_any_other(
    store: Store, tmp_path: Path
) -> None:
    """A start reads the file ahead (`prefetch`, before its store migration): the book
    load takes that read, even if the file is gone by then, checks it against the store
    as usual, and the next open reads the file again (here: missing)."""
    cfg, repo = config(), SqlChainStore(store)
    await history(repo, 30, seed=12)
    path = tmp_path / "book.snap"
    full = await loaded(cfg, store, None)
    snaps, m = snapshots(cfg, store, path)
    assert await save(snaps, full)
    await asyncio.wait([snaps.prefetch()])
    path.unlink()
    again = await loaded(cfg, store, snaps)
    assert count(m, "loaded") == 1
    assert rated(again) == rated(full)
    assert await snaps.open() is None and count(m, "missing") == 1


async def test_a_prefetched_snapshot_is_still_checked_against_the_store(
    store: Store, tmp_path: Path
) -> None:
    """Read ahead, then the store moves in a way the replay cannot follow (a rollback):
    the prefetched snapshot is refused as a fresh read would be, and the full load runs."""
    cfg, repo = config(), SqlChainStore(store)
    await history(repo, 30, seed=13)
    path = tmp_path / "book.snap"
    snaps, m = snapshots(cfg, store, path)
    assert await save(snaps, await loaded(cfg, store, None))
    await asyncio.wait([snaps.prefetch()])
    await repo.rollback("c", blk(7))
    got = await loaded(cfg, store, snaps)
    assert count(m, "store") == 1 and count(m, "loaded") == 0
    assert rated(got) == rated(await loaded(cfg, store, None))


async def test_a_prefetch_of_a_missing_file_falls_back_quietly(
    store: Store, tmp_path: Path
) -> None:
    cfg, repo = config(), SqlChainStore(store)
    await history(repo, 10, seed=14)
    snaps, m = snapshots(cfg, store, tmp_path / "none.snap")
    await asyncio.wait([snaps.prefetch()])
    got = await loaded(cfg, store, snaps)
    assert count(m, "missing") == 1 and count(m, "loaded") == 0
    assert rated(got) == rated(await loaded(cfg, store, None))


@pytest.mark.parametrize("damage", ["payload", "limbs", "header", "truncated", "empty", "garbage"])
async def test_a_corrupt_snapshot_falls_back_to_the_full_load(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    cfg, repo = config(), SqlChainStore(store)
    await history(repo, 20, seed=6)
    path = tmp_path / "book.snap"
    snaps, m = snapshots(cfg, store, path)
    assert await save(snaps, await loaded(cfg, store, None))
    data = bytearray(path.read_bytes())
    if damage == "payload":
        data[-100] ^= 0x01  # one bit of the stored key order (the last array)
    elif damage == "limbs":  # one bit of an amount's limbs, found through the layout
        (length,) = struct.unpack("<Q", data[8:16])
        layout = {d["name"]: d for d in json.loads(bytes(data[16 : 16 + length]))["layout"]}
        start = 16 + length + 32
        start += -start % 64
        data[start + layout["limbs"]["offset"] + 5] ^= 0x01
    elif damage == "header":
        data[40] ^= 0x01
    elif damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "empty":
        data = bytearray()
    else:
        data = bytearray(b"not a snapshot at all" * 10)
    path.write_bytes(bytes(data))
    caplog.set_level(logging.INFO, logger="aggregator")
    got = await loaded(cfg, store, snaps)
    assert count(m, "corrupt") == 1 and count(m, "loaded") == 0
    assert "book snapshot not used (corrupt)" in caplog.text
    assert "loading every stored position" in caplog.text
    assert rated(got) == rated(await loaded(cfg, store, None))


async def test_another_config_store_or_format_falls_back(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, repo = config(), SqlChainStore(store)
    await history(repo, 20, seed=7)
    path = tmp_path / "book.snap"
    snaps, m = snapshots(cfg, store, path)
    assert await save(snaps, await loaded(cfg, store, None))
    caplog.set_level(logging.INFO, logger="aggregator")
    other = config(weth_decimals=8)  # the same rows would mean other amounts
    other_snaps, om = snapshots(other, store, path)
    got = await loaded(other, store, other_snaps)
    assert count(om, "config") == 1 and "book snapshot not used (config)" in caplog.text
    assert rated(got) == rated(await loaded(other, store, None))
    # The same URL, another store (created again): its store_id differs.
    async with store.transaction() as s:
        row = await s.get(DaemonMeta, "store_id")
        assert row is not None
        row.value = "another"
    got = await loaded(cfg, store, snaps)
    assert count(m, "store") == 1 and "this store is another" in caplog.text
    assert rated(got) == rated(await loaded(cfg, store, None))
    monkeypatch.setattr(book_snapshot, "FORMAT", book_snapshot.FORMAT + 1)
    await loaded(cfg, store, snaps)
    assert count(m, "format") == 1 and "this version reads" in caplog.text
    monkeypatch.undo()
    path.unlink()
    await loaded(cfg, store, snaps)
    assert count(m, "missing") == 1


async def test_a_crash_mid_write_leaves_the_previous_snapshot_usable(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, repo = config(), SqlChainStore(store)
    await history(repo, 20, seed=8)
    path = tmp_path / "book.snap"
    snaps, m = snapshots(cfg, store, path)
    assert await save(snaps, await loaded(cfg, store, None))
    before = path.read_bytes()
    await apply(repo, "c", 15, [ev("c", 15, 0, "deposit", 50, 10**18)])

    def crash(fd: int) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(book_snapshot.os, "fsync", crash)
    with pytest.raises(OSError, match="disk gone"):
        await save(snaps, await loaded(cfg, store, None))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert m.registry.get_sample_value("agg_book_snapshot_writes_total", {"result": "failed"}) == 1
    # A crash that killed the process leaves its temporary file: harmless, then removed.
    stray = tmp_path / f".book.snap.tmp-{os.getpid() + 1}"
    stray.write_bytes(before[:100])
    got = await loaded(cfg, store, snaps)  # the old snapshot plus the replay
    assert count(m, "loaded") == 1
    assert rated(got) == rated(await loaded(cfg, store, None))
    assert await save(snaps, got)
    assert not stray.exists()


async def test_a_snapshot_is_not_written_while_the_book_trails_the_store(
    store: Store, tmp_path: Path
) -> None:
    cfg, repo = config(), SqlChainStore(store)
    await history(repo, 5, seed=9)
    path = tmp_path / "book.snap"
    snaps, m = snapshots(cfg, store, path)
    eng = await loaded(cfg, store, None)
    wrote = await snaps.save(eng.export_book, lambda: "3 account(s) wait", lambda: ({}, []))
    assert not wrote and not path.exists()
    assert m.registry.get_sample_value("agg_book_snapshot_writes_total", {"result": "skipped"}) == 1


async def test_impossible_accounts_and_unknown_tokens_survive_the_snapshot(
    store: Store, tmp_path: Path
) -> None:
    cfg = config()
    snaps, _ = snapshots(cfg, store, tmp_path / "book.snap")
    eng = await loaded(cfg, store, None)
    bad = {"c": ["0x" + "0c" * 20]}
    assert await snaps.save(eng.export_book, lambda: None, lambda: (bad, [("d", "0xee", 2)]))
    s = sync(cfg, store, snaps)
    await s.load(RiskEngine.from_config(cfg))
    assert s.impossible == {"c": {"0x" + "0c" * 20}}
    assert s.unknown_tokens == {("d", "0xee"): 2}
