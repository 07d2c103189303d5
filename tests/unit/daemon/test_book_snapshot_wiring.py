"""The daemon's book snapshot wiring: written at a clean stop when the ledger holds
every indexed change, skipped (the previous file kept) when it does not, and read by
the next start's book load. No chain is contacted: the start-up steps that need RPC
are not run, the book load is (it needs none)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from aggregator.config import AppConfig
from aggregator.daemon import Daemon
from aggregator.store.chain_repo import SqlChainStore
from chains.types import VaultEvent

COL = "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0"


def config(tmp_path: Path) -> AppConfig:
    return AppConfig(
        chains=[{"name": "c", "chain_id": 1, "rpc_urls": ["http://127.0.0.1:1"],
                 "contracts": {"vault": f"0x{1:040x}"}}],
        assets=[{"symbol": "WETH", "decimals": 18, "ltv": 0.8, "lt": 0.85,
                 "borrowable": True, "tokens": {"c": COL},
                 "sources": [{"kind": "chainlink", "name": "cl", "chain": "c",
                              "address": "0x" + "22" * 20}]}],
        store={"url": f"sqlite+aiosqlite:///{tmp_path}/agg.db",
               "snapshot_path": str(tmp_path / "book.snapshot")},
    )  # type: ignore[arg-type]  # fmt: skip


def loads(d: Daemon, result: str) -> float:
    got = d.metrics.registry.get_sample_value("agg_book_snapshot_loads_total", {"result": result})
    return got or 0.0


async def started(cfg: AppConfig) -> Daemon:
    d = Daemon(cfg)
    await d.store.upgrade()
    await d.book.load(d.engine)  # the start-up's "book load" step
    return d


async def test_written_at_a_clean_stop_and_read_by_the_next_start(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    d = await started(cfg)
    assert loads(d, "missing") == 1
    await SqlChainStore(d.store).apply_batch(
        "c", to_block=5, blocks=[], log_range=10, head_block=20, confirmed_block=10,
        keep_hashes_from=5,
        events=[VaultEvent(chain="c", block_number=5, block_hash="0x" + "05" * 32,
                           tx_hash="0x" + "aa" * 32, log_index=0, kind="deposit",
                           account=f"0x{7:040x}", token=COL, amount=10**18)],
    )  # fmt: skip
    # The indexer's callback: the change waits for the ledger, so no snapshot now.
    await d.ledger.accounts_changed("c", {f"0x{7:040x}"})
    await d.stop()
    assert not (tmp_path / "book.snapshot").exists()
    written = d.metrics.registry.get_sample_value(
        "agg_book_snapshot_writes_total", {"result": "skipped"}
    )
    assert written == 1

    d = await started(cfg)  # full load again (no snapshot), the change is in the book
    assert loads(d, "missing") == 1 and d.engine.book.n == 1
    await d.stop()
    assert (tmp_path / "book.snapshot").exists()

    d = await started(cfg)
    assert loads(d, "loaded") == 1 and d.engine.book.n == 1
    assert d.engine.book.find_account(f"0x{7:040x}") is not None
    await d.stop()


async def test_the_start_reads_the_snapshot_ahead_and_its_book_load_uses_that_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Daemon.start` prefetches the snapshot before its store migration; the book load
    takes that read (the file is gone by the time the book loads here). The chain id
    check stands in for the RPC round trips the read overlaps; the start is stopped at
    the step after the book load."""
    cfg = config(tmp_path)
    d = await started(cfg)
    await d.stop()  # a clean stop writes the snapshot (an empty book)
    path = tmp_path / "book.snapshot"
    assert path.exists()

    d = Daemon(cfg)
    assert d.snapshots is not None
    snaps = d.snapshots
    prefetch, calls = snaps.prefetch, []

    def spy() -> Any:
        calls.append("prefetch")
        return prefetch()

    async def chain_ids() -> None:
        assert calls == ["prefetch"]  # started before the migration and this check
        await asyncio.wait([prefetch()])  # the read under way (the same future)
        path.unlink()

    class Stop(Exception):
        pass

    async def after_the_book() -> None:
        raise Stop

    monkeypatch.setattr(snaps, "prefetch", spy)
    monkeypatch.setattr(d, "_verify_chains", chain_ids)
    monkeypatch.setattr(d.portfolio, "load", after_the_book)
    with pytest.raises(Stop):
        await d.start()
    assert loads(d, "loaded") == 1 and loads(d, "missing") == 0
    await d.stop()
