"""kill -9 the indexer at random moments during backfill; the resumed store equals a clean run."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from crash_worker import main as run_worker

from aggregator.store import Store
from aggregator.store.chain_repo import SqlChainStore
from devkit.anvil import AnvilNode
from devkit.testing.harness import USERS, VaultHarness

WORKER = Path(__file__).with_name("crash_worker.py")


async def snapshot(db: str) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]], int]:
    store = Store(db)
    repo = SqlChainStore(store)
    events: list[tuple[object, ...]] = [
        (e.block_number, e.log_index, e.kind, e.account, e.amount) for e in await repo.events("c")
    ]
    positions: list[tuple[object, ...]] = [
        (p.account, p.token, p.kind, p.head_amount, p.pending_amount)
        for p in await repo.positions("c")
    ]
    cp = await repo.load_checkpoint("c")
    await store.close()
    assert cp is not None
    return events, positions, cp.indexed_block


def kill_during_backfill(cmd: list[str], rounds: int, rng: random.Random) -> tuple[int, list[int]]:
    """Start the worker `rounds` times, SIGKILL it at a random moment of its backfill."""
    kills = 0
    resumed_from: list[int] = []
    for _ in range(rounds):
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "indexing from N": the store is open, backfill starts
        resumed_from.append(int(line.split()[-1]))
        time.sleep(rng.uniform(0.05, 0.4))
        if proc.poll() is None:
            proc.kill()  # SIGKILL: no cleanup, no rollback handler, mid-transaction at times
            kills += 1
        proc.wait(timeout=10)
        proc.stdout.close()
    return kills, resumed_from


async def test_kill_9_during_backfill_resumes_to_the_clean_result(
    anvil_factory: Callable[..., AnvilNode], tmp_path: Path
) -> None:
    node = anvil_factory(71002)
    h = VaultHarness.deploy(node.url)
    h.grant(USERS[0])
    h.bulk_deposits(600, per_block=8)
    h.borrow(USERS[0], 10**8)
    h.withdraw(USERS[0], 10**9)
    args = [node.url, "", h.vault, str(h.deploy_block), str(node.chain_id)]

    crashed = f"sqlite+aiosqlite:///{tmp_path}/crashed.db"
    cmd = [sys.executable, str(WORKER), node.url, crashed, *args[2:]]
    kills, resumed_from = kill_during_backfill(cmd, rounds=3, rng=random.Random(7))
    assert kills >= 2
    # Each restart resumed from a later committed checkpoint, never from scratch.
    assert resumed_from[0] == h.deploy_block - 1 and resumed_from[-1] > resumed_from[0]
    assert resumed_from == sorted(resumed_from)
    await run_worker(node.url, crashed, h.vault, h.deploy_block, node.chain_id)

    clean = f"sqlite+aiosqlite:///{tmp_path}/clean.db"
    await run_worker(node.url, clean, h.vault, h.deploy_block, node.chain_id)
    a, b = await snapshot(crashed), await snapshot(clean)
    assert a == b
    assert len(a[0]) == 602
