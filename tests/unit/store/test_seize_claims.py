"""The cross-chain seize in the store and the book: unsettled claims paired with their
settlements by claim id across chains (SQLite and PostgreSQL), reorgs of either half,
compacted backfill keeping them, and the pending-claim hold (aggregator/claim_holds.py)
against a scalar reference."""

from __future__ import annotations

import random

import pytest

from aggregator.claim_holds import bonus_bps, hold_amount, with_holds
from aggregator.risk.book import MAX_AMOUNT, PositionRow, counted_amount
from aggregator.store import Store
from aggregator.store.chain_batches import _kept_rows
from aggregator.store.chain_repo import SqlChainStore
from chains.types import BlockRef, EventColumns, SeizeClaim, VaultEvent

A = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
B = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
LIQ = "0x976EA74026E726554dB657fA54763abd0C3a0aa9"
COL = "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0"
USD = "0xCf7Ed3AccA5a467e9e704C703E8D87F634fB0Fc9"
ID1, ID2 = "0x" + "a1" * 32, "0x" + "b2" * 32


def blk(chain: str, n: int) -> BlockRef:
    tag = {"d": "d", "c": "c"}[chain]
    return BlockRef(n, f"0x{tag}{n:063x}", f"0x{tag}{n - 1:063x}")


def claim(block: int, account: str, amount: int, ref: str, idx: int = 0) -> VaultEvent:
    return VaultEvent(
        "d", block, blk("d", block).hash, f"0x{block:064x}", idx, "repay", account, USD,
        amount, counterparty=LIQ, ref=ref,
    )  # fmt: skip


def settle(block: int, account: str, seized: int, ref: str) -> VaultEvent:
    return VaultEvent(
        "c", block, blk("c", block).hash, f"0x{block:064x}", 0, "liquidation", account, COL,
        seized, counterparty=LIQ, debt_token=USD, debt_amount=0, ref=ref,
    )  # fmt: skip


async def apply(repo: SqlChainStore, chain: str, to: int, events: list[VaultEvent]) -> None:
    await repo.apply_batch(
        chain, to_block=to, blocks=[blk(chain, n) for n in range(max(1, to - 3), to + 1)],
        events=events, log_range=50, head_block=to, confirmed_block=to - 2,
        keep_hashes_from=to - 3,
    )  # fmt: skip


async def test_claims_pair_with_their_settlements_across_chains(store: Store) -> None:
    repo = SqlChainStore(store)
    await apply(repo, "d", 10, [claim(9, A, 500, ID1), claim(10, B, 70, ID2)])
    # A plain repayment (no claim id) is not a claim.
    await apply(repo, "d", 11, [VaultEvent("d", 11, blk("d", 11).hash, "0x" + "11" * 32, 0,
                                           "repay", A, USD, 5, counterparty=A)])  # fmt: skip
    pending = await repo.pending_claims()
    assert [(c.chain, c.account, c.token, c.amount, c.block_number, c.ref) for c in pending] == [
        ("d", A, USD, 500, 9, ID1), ("d", B, USD, 70, 10, ID2),
    ]  # fmt: skip
    assert [c.ref for c in await repo.pending_claims([B])] == [ID2]
    assert await repo.pending_claims([]) == []
    await apply(repo, "c", 20, [settle(20, A, 123, ID1)])
    assert [c.ref for c in await repo.pending_claims()] == [ID2]
    assert await repo.claim_accounts() == {A, B}
    # A reorg of the collateral chain takes the settlement away: A's claim pends again.
    await repo.rollback("c", blk("c", 19))
    assert [c.ref for c in await repo.pending_claims()] == [ID1, ID2]
    # A reorg of the debt chain takes the claim itself away.
    await repo.rollback("d", blk("d", 9))
    assert [c.ref for c in await repo.pending_claims()] == [ID1]
    (a_claim,) = await repo.pending_claims([A])
    assert a_claim.amount == 500


def test_a_compacted_range_keeps_every_row_with_a_claim_id() -> None:
    events = EventColumns.from_events(
        "d",
        [
            claim(1, A, 1, ref=None, idx=0),  # type: ignore[arg-type]  # A's first event
            claim(2, A, 2, ref=None),  # type: ignore[arg-type]  # a plain repayment: dropped
            claim(3, A, 3, ID1),  # a claim: kept
        ],
    )
    for in_order in (True, False):
        assert _kept_rows(events, [0, 1, 2], set(), in_order) == [0, 2]
        assert _kept_rows(events, [0, 1, 2], {A}, in_order) == [2]


# -- the hold --------------------------------------------------------------------------
SYMBOLS = {("d", USD.lower()): "USDC", ("c", COL.lower()): "WETH"}


def test_the_hold_keeps_the_counted_debt_at_pre_claim_debt_plus_the_bonus() -> None:
    """Each phase of a claim, from the counted amount (max(head, confirmed)): X + bR
    while it pends and once final, X - R once settled."""
    x, r, b = 1_000_000, 400_000, 500  # raw units, 5% bonus
    c = SeizeClaim("d", A, USD, r, 9, ID1)
    phases = {
        "pending": PositionRow(A, "d", "USDC", "debt", x - r, x),
        "final": PositionRow(A, "d", "USDC", "debt", x - r, x - r),
    }
    for row in phases.values():
        (held,), unknown = with_holds([row], [c], SYMBOLS, b)
        assert unknown == []
        assert counted_amount(1, held.head, held.confirmed) == x + r * b // 10_000
    settled = PositionRow(A, "d", "USDC", "debt", x - r, x - r)
    assert with_holds([settled], [], SYMBOLS, b) == ([settled], [])


def _reference(rows: list[PositionRow], claims: list[SeizeClaim], bonus: int) -> dict:
    """Plain loops from the rule: every debt row's head plus ceil(amount x (1 + bonus))
    of each claim on its (account, chain, asset); a claim without a row makes one."""
    out = {(r.account.lower(), r.chain, r.asset, r.side): [r.head, r.confirmed] for r in rows}
    for c in claims:
        symbol = SYMBOLS.get((c.chain, c.token.lower()))
        if symbol is None:
            continue
        key = (c.account.lower(), c.chain, symbol, "debt")
        add = (c.amount * (10_000 + bonus) + 9_999) // 10_000
        cur = out.setdefault(key, [0, 0])
        cur[0] = min(MAX_AMOUNT, cur[0] + add)
    return {k: tuple(v) for k, v in out.items()}


@pytest.mark.parametrize("seed", range(20))
def test_holds_on_random_books_match_the_reference(seed: int) -> None:
    rng = random.Random(seed)
    rows, seen = [], set()
    for _ in range(rng.randint(0, 8)):
        key = (rng.choice([A, B]), rng.choice("dc"), rng.choice(["USDC", "WETH"]),
               rng.choice(["debt", "collateral"]))  # fmt: skip
        if key in seen:
            continue
        seen.add(key)
        head = rng.randint(0, 10**9)
        rows.append(PositionRow(*key, head, rng.randint(0, 10**9)))  # type: ignore[arg-type]
    claims = [
        SeizeClaim(
            rng.choice("dc"),
            rng.choice([A, B]),
            rng.choice([USD, COL, LIQ]),
            rng.randint(1, 10**9),
            i,
            f"0x{i:064x}",
        )
        for i in range(rng.randint(0, 6))
    ]
    bonus = rng.randint(0, 2_000)
    got, unknown = with_holds(rows, claims, SYMBOLS, bonus)
    assert {(r.account.lower(), r.chain, r.asset, r.side): (r.head, r.confirmed) for r in got} == (
        _reference(rows, claims, bonus)
    )
    assert [c.ref for c in unknown] == [
        c.ref for c in claims if (c.chain, c.token.lower()) not in SYMBOLS
    ]
    # Rows not held are the very same objects, in their order.
    assert [r for r in got[: len(rows)] if r in rows] == [r for r in rows if r in got]


def test_bonus_and_hold_rounding() -> None:
    assert bonus_bps([0.05, 0.075, 0.1]) == 1_000
    assert bonus_bps([0.0501]) == 501
    assert bonus_bps([]) == 0
    assert hold_amount(3, 500) == 4  # 3.15 rounded up
    assert hold_amount(MAX_AMOUNT, 500) == MAX_AMOUNT
