"""The SQL IndexerStore: idempotent batches, finality views, rollbacks, corrections, rates."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from aggregator.store import Store
from aggregator.store.chain_repo import SqlChainStore
from chains.types import BlockRef, RateSample, VaultEvent

A = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
COL = "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0"
USD = "0xCf7Ed3AccA5a467e9e704C703E8D87F634fB0Fc9"
BIG = 2**255 + 12345


def ev(block: int, idx: int, kind: str, amount: int, token: str = COL, **kw: object) -> VaultEvent:
    return VaultEvent(
        chain="c",
        block_number=block,
        block_hash=f"0x{block:064x}",
        tx_hash=f"0x{block * 1000 + idx:064x}",
        log_index=idx,
        kind=kind,  # type: ignore[arg-type]
        account=A,
        token=token,
        amount=amount,
        **kw,  # type: ignore[arg-type]
    )


def blk(n: int, tag: str = "") -> BlockRef:
    return BlockRef(n, f"0x{tag}{n:0{64 - len(tag)}x}", f"0x{tag}{n - 1:0{64 - len(tag)}x}")


async def apply(
    repo: SqlChainStore, to: int, events: list[VaultEvent], head: int, conf: int = 2
) -> set[str]:
    return await repo.apply_batch(
        "c",
        to_block=to,
        blocks=[blk(n) for n in range(max(0, to - 3), to + 1)],
        events=events,
        log_range=50,
        head_block=head,
        confirmed_block=head - conf,
        keep_hashes_from=head - conf,
    )


def view(positions: list, kind: str) -> tuple[int, int]:  # type: ignore[type-arg]
    (p,) = [p for p in positions if p.kind == kind]
    return p.head_amount, p.confirmed_amount


async def test_batches_are_idempotent_and_exact(store: Store) -> None:
    repo = SqlChainStore(store)
    batch = [ev(5, 0, "deposit", BIG), ev(5, 1, "borrow", 7, USD)]
    assert await apply(repo, 5, batch, head=5) == {A}
    # The same range again (a crash after commit, a replay) must not double-count.
    assert await apply(repo, 5, batch, head=5) == set()
    pos = await repo.positions("c")
    assert view(pos, "collateral") == (BIG, 0)  # deposit not yet 2 deep
    assert view(pos, "debt") == (7, 7)  # borrow counts in both views at once
    assert len(await repo.events("c")) == 2
    cp = await repo.load_checkpoint("c")
    assert cp is not None and (cp.indexed_block, cp.log_range, cp.indexed_hash) == (
        5,
        50,
        blk(5).hash,
    )


async def test_confirmed_view_follows_depth(store: Store) -> None:
    repo = SqlChainStore(store)
    await apply(repo, 5, [ev(5, 0, "deposit", 100), ev(5, 1, "borrow", 50, USD)], head=5)
    await apply(
        repo, 6, [ev(6, 0, "withdraw", 30), ev(6, 1, "repay", 20, USD, counterparty=A)], head=6
    )
    pos = await repo.positions("c")
    # head: 100-30 collateral, 50-20 debt; confirmed ignores the pending deposit and repayment.
    assert view(pos, "collateral") == (70, 0)
    assert view(pos, "debt") == (30, 50)
    await apply(repo, 7, [], head=7)  # block 5 is now 2 deep
    pos = await repo.positions("c")
    assert view(pos, "collateral") == (70, 70)
    assert view(pos, "debt") == (30, 50)
    await apply(repo, 8, [], head=8)
    assert view(await repo.positions("c"), "debt") == (30, 30)


async def test_rollback_undoes_pending_and_promoted_events(store: Store) -> None:
    repo = SqlChainStore(store)
    await apply(repo, 5, [ev(5, 0, "deposit", 100)], head=5)
    await apply(repo, 8, [ev(7, 0, "deposit", 40), ev(8, 0, "withdraw", 10)], head=8)
    # block 5 promoted (confirmed <= 6), 7 still pending.
    assert view(await repo.positions("c"), "collateral") == (130, 90)
    changed = await repo.rollback("c", blk(6))
    assert changed == {A}
    assert view(await repo.positions("c"), "collateral") == (100, 100)
    assert [e.block_number for e in await repo.events("c")] == [5]
    assert max(await repo.block_hashes("c")) == 6
    cp = await repo.load_checkpoint("c")
    assert cp is not None and cp.indexed_block == 6
    await repo.rollback("c", blk(4))
    assert view(await repo.positions("c"), "collateral") == (0, 0)


async def test_block_hashes_keep_only_window_and_checkpoint(store: Store) -> None:
    repo = SqlChainStore(store)
    await repo.apply_batch(
        "c",
        to_block=100,
        blocks=[blk(100)],
        events=[],
        log_range=9,
        head_block=200,
        confirmed_block=197,
        keep_hashes_from=197,
    )
    assert set(await repo.block_hashes("c")) == {100}
    await repo.apply_batch(
        "c",
        to_block=200,
        blocks=[blk(n) for n in range(197, 201)],
        events=[],
        log_range=9,
        head_block=200,
        confirmed_block=197,
        keep_hashes_from=197,
    )
    assert set(await repo.block_hashes("c")) == {197, 198, 199, 200}


async def test_corrections_set_the_chain_value_and_roll_back(store: Store) -> None:
    repo = SqlChainStore(store)
    await apply(repo, 5, [ev(5, 0, "deposit", 100)], head=10)
    await repo.apply_corrections("c", 9, [(A, COL, "collateral", 80)], reconcile_block=9)
    assert view(await repo.positions("c"), "collateral") == (80, 80)
    await repo.apply_corrections(
        "c", 9, [(A, COL, "collateral", 85), (A, USD, "debt", 3)], reconcile_block=9
    )
    pos = await repo.positions("c")
    assert view(pos, "collateral") == (85, 85) and view(pos, "debt") == (3, 3)
    cp = await repo.load_checkpoint("c")
    assert cp is not None and cp.last_reconcile_block == 9
    await repo.rollback("c", blk(8))
    pos = await repo.positions("c")
    assert view(pos, "collateral") == (100, 100) and view(pos, "debt") == (0, 0)
    with pytest.raises(ValueError, match="negative"):
        await repo.apply_corrections("c", 9, [(A, COL, "collateral", -1)], reconcile_block=9)


async def test_fatal_and_reset(store: Store) -> None:
    repo = SqlChainStore(store)
    await apply(repo, 5, [ev(5, 0, "deposit", 1)], head=5)
    await repo.set_fatal("c", "reorg deeper than window")
    cp = await repo.load_checkpoint("c")
    assert cp is not None and cp.fatal_reason == "reorg deeper than window"
    await repo.reset_chain("c")
    assert await repo.load_checkpoint("c") is None
    assert await repo.positions("c") == []


async def test_rate_samples_latest_per_asset(store: Store) -> None:
    repo = SqlChainStore(store)
    await repo.add_rate_samples(
        [
            RateSample("wstETH", "c", 10, 1000, 1_180_000_000_000_000_000),
            RateSample("wstETH", "c", 12, 1024, 1_190_000_000_000_000_000),
            RateSample("sDAI", "d", 3, 900, 2**200, 10**6),
        ]
    )
    # Re-adding a sample for the same block is a no-op, not an error.
    await repo.add_rate_samples([RateSample("wstETH", "c", 12, 1024, 1)])
    latest = await repo.latest_rates()
    assert latest["wstETH"].rate == 1_190_000_000_000_000_000 and latest["wstETH"].block == 12
    assert latest["sDAI"].rate == 2**200 and latest["sDAI"].scale == 10**6
    assert set(await repo.latest_rates("c")) == {"wstETH"}


async def test_instances_adding_the_same_rate_sample_at_once_do_not_collide(
    store: Store,
) -> None:
    """Every instance of a cluster samples LST rates: the same (asset, chain, block)
    written by several at once is stored once, and none of them fails."""
    sample = [RateSample("wstETH", "c", 7, 700, 1_150_000_000_000_000_000)]
    repos = [SqlChainStore(store) for _ in range(4)]
    await asyncio.gather(*(r.add_rate_samples(sample * 2) for r in repos))
    latest = await repos[0].latest_rates()
    assert latest["wstETH"].block == 7 and latest["wstETH"].rate == sample[0].rate


@pytest.mark.parametrize("kind", ["deposit", "withdraw", "borrow"])
@pytest.mark.parametrize("pending", [True, False])
def test_inlined_effects_of_the_insert_loop_match_vault_event_effects(
    kind: str, pending: bool
) -> None:
    """apply_batch inlines VaultEvent.effects() for one-effect events; the two must agree."""
    from aggregator.store.chain_batches import SIMPLE_EFFECT as _SIMPLE_EFFECT

    (eff,) = ev(5, 0, kind, 7).effects()
    pkind, sign, adds_pending = _SIMPLE_EFFECT[kind]
    assert (eff.kind, eff.head_delta) == (pkind, sign * 7)
    assert (eff.pending_delta if pending else 0) == (7 if adds_pending and pending else 0)


@pytest.mark.parametrize(
    ("keys", "ordered"),
    [
        ([], True),
        ([(5, 0)], True),
        ([(5, 0), (5, 1), (6, 0), (9, 3)], True),
        ([(5, 0), (5, 0)], False),  # a repeated key
        ([(5, 1), (5, 0)], False),
        ([(6, 0), (5, 7)], False),
        ([(2**70, 0), (2**70, 1)], True),  # beyond int64: the tuple comparison
        ([(2**70, 1), (2**70, 1)], False),
    ],
)
def test_in_chain_order_is_the_strict_order_of_block_and_log_index(
    keys: list[tuple[int, int]], ordered: bool
) -> None:
    from aggregator.store.chain_batches import in_chain_order
    from chains.types import EventColumns

    cols = EventColumns("c", block_number=[b for b, _ in keys], log_index=[i for _, i in keys])
    assert in_chain_order(cols) is ordered
    # The reference: the tuple order itself.
    assert ordered == all(a < b for a, b in itertools.pairwise(keys))
