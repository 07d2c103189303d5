"""Cross-chain claim reads: python -m bench.claims [--events N] [--claims K].

The book's sync reads, with every changed batch of accounts, their unsettled
cross-chain seize claims (`pending_claims`: claim rows, a `repay` carrying a claim id,
with no `liquidation` row of the same id on any chain) beside their positions on every
chain (aggregator/book_sync.py); a start-up without a snapshot reads every pending
claim, and a start from a book snapshot the accounts with any claim
(`claim_accounts`). A SQLite store holds N vault events over 200k accounts (the
history the claim query must not scan), K claim rows of which half are settled, and
3 positions per account and chain. Printed, against baselines in the same run:

  - `pending_claims` of a batch of 1,000 accounts (a tenth of them with a claim)
    against the positions read of the same batch on the 3 chains it rides beside;
  - `pending_claims` of every account, and `claim_accounts`, against one chain's full
    positions read (the start-up's other reads).

The claim rows are found through the partial index on `ref` (migration 0005): the
figures should not grow with N.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.results import Figure, record

CHAINS = ("ethereum", "arbitrum", "base")
ACCOUNTS = 200_000
BATCH = 1_000


def account(i: int) -> str:
    return f"0x{i:040x}"


def build(path: Path, n_events: int, n_claims: int, seed: int) -> None:
    from aggregator.store import Store

    async def migrate() -> None:
        store = Store(f"sqlite+aiosqlite:///{path}")
        await store.upgrade()
        await store.close()

    asyncio.run(migrate())
    rng = random.Random(seed)
    con = sqlite3.connect(path)
    cols = (
        "chain, block_number, block_hash, tx_hash, log_index, kind, account, token, amount, "
        "debt_amount, negative, pending, ref"
    )
    insert = f"INSERT INTO chain_event ({cols}) VALUES (?,?,?,?,?,?,?,?,?,?,0,0,?)"
    token = "0x" + "11" * 20
    rows: list[tuple[Any, ...]] = []

    def flush() -> None:
        con.executemany(insert, rows)
        rows.clear()

    for e in range(n_events):
        chain = CHAINS[e % 3]
        block = e // 3
        kind = ("deposit", "borrow", "repay", "withdraw")[rng.randrange(4)]
        rows.append((chain, block, f"0x{block:064x}", f"0x{e:064x}", 0, kind,
                     account(rng.randrange(ACCOUNTS)), token, "1000", "0", None))  # fmt: skip
        if len(rows) >= 100_000:
            flush()
    base = n_events // 3 + 1
    for k in range(n_claims):
        ref = f"0x{k:064x}"
        who = account(k * (ACCOUNTS // max(n_claims, 1)) % ACCOUNTS)
        rows.append(("ethereum", base + k, f"0x{base + k:064x}", f"0x{k:064x}", 1, "repay",
                     who, token, "500", "0", ref))  # fmt: skip
        if k % 2 == 0:  # settled on another chain
            rows.append(("arbitrum", base + k, f"0x{base + k:064x}", f"0x{k:064x}", 1,
                         "liquidation", who, token, "1", "500", ref))  # fmt: skip
    flush()
    con.executemany(
        "INSERT INTO chain_position VALUES (?,?,?,?,?,?,?,?)",
        (
            (c, account(i), f"0x{t:040x}", ("collateral", "debt", "collateral")[t], "1000",
             "0", "1000", 1)
            for c in CHAINS
            for i in range(ACCOUNTS)
            for t in range(3)
        ),
    )  # fmt: skip
    con.commit()
    con.close()


async def best_of(fn: Callable[[], Awaitable[Any]], n: int = 5) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(n):
        t0 = time.perf_counter()
        out = await fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


async def measure(path: Path, n_claims: int) -> None:
    from aggregator.store import Store
    from aggregator.store.chain_repo import SqlChainStore

    store = Store(f"sqlite+aiosqlite:///{path}")
    repo = SqlChainStore(store)
    try:
        step = ACCOUNTS // max(n_claims, 1)
        # A batch of which a tenth holds a claim (every `step`-th account does).
        holders = [account(k * step % ACCOUNTS) for k in range(0, min(n_claims, BATCH // 10))]
        others = [account((i * step + 1) % ACCOUNTS) for i in range(BATCH - len(holders))]
        batch = holders + others

        async def positions() -> int:
            return sum([len(await repo.positions(c, batch)) for c in CHAINS])

        t_pos, n_pos = await best_of(positions)
        t_claims, got = await best_of(lambda: repo.pending_claims(batch))
        t_chain, n_chain = await best_of(lambda: repo.positions(CHAINS[0]), 3)
        t_all, every = await best_of(lambda: repo.pending_claims(None), 3)
        t_acc, accs = await best_of(repo.claim_accounts, 3)
    finally:
        await store.close()
    expect_batch = (len(holders) + 1) // 2
    assert len(got) == expect_batch, (len(got), expect_batch)  # the unsettled half
    holders_all = {account(k * step % ACCOUNTS) for k in range(n_claims)}
    assert len(every) == n_claims // 2 and len(accs) == len(holders_all)
    record(
        Figure(
            "claims_batch",
            f"pending_claims of a batch of {BATCH:,} accounts ({len(holders)} with a claim, "
            f"{len(got)} unsettled) among {n_claims:,} claim rows",
            t_claims / t_pos,
            "x",
            f"the batch's positions on {len(CHAINS)} chains ({n_pos:,} rows, {t_pos * 1e3:.1f} ms)",
            "<= 1x",
            t_claims <= t_pos,
            {"claims_ms": t_claims * 1e3, "positions_ms": t_pos * 1e3},
        )
    )
    record(
        Figure(
            "claims_startup",
            f"pending_claims of every account ({len(every):,} unsettled) and claim_accounts "
            f"({len(accs):,}), together",
            (t_all + t_acc) / t_chain,
            "x",
            f"one chain's full positions read ({len(n_chain):,} rows, {t_chain * 1e3:.0f} ms)",
            "reported",
            None,
            {
                "pending_all_ms": t_all * 1e3,
                "claim_accounts_ms": t_acc * 1e3,
                "chain_positions_ms": t_chain * 1e3,
            },
        )
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--claims", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "claims.db"
        t0 = time.perf_counter()
        build(path, args.events, args.claims, args.seed)
        took = time.perf_counter() - t0
        print(
            f"store: {args.events:,} events, {args.claims:,} claim rows, "
            f"{len(CHAINS) * ACCOUNTS * 3:,} positions in {took:.0f} s"
        )
        asyncio.run(measure(path, args.claims))


if __name__ == "__main__":
    main()
