"""Compacted backfill (`compact_backfill`): below the kept block hashes a range keeps
positions and an audit record, not a row per event. Against a full-rows run of the same
chain, reorgs and restarts inside and across that boundary must give the same positions,
the same first-seen blocks and liquidations (what the reputation feed reads), and every
audit record must match the range's logs re-read and re-hashed."""

from __future__ import annotations

import itertools
import random
from typing import Any

import msgspec
import pytest
from eth_abi import encode
from eth_utils import keccak
from sqlalchemy import select

from aggregator.store import Store
from aggregator.store.chain_repo import SqlChainStore
from aggregator.store.chain_rows import RNG
from chains.events import SIGNATURES, decode_records, range_digest
from chains.indexer import ChainIndexer
from chains.rpc import RpcLog
from chains.types import BlockRef, ChainSettings, VaultEvent

VAULT = "0x" + "11" * 20
ACCOUNTS = [f"0x{i:040x}" for i in range(0xA1, 0xA6)]
COL, USD, LIQ = "0x" + "c0" * 20, "0x" + "d0" * 20, "0x" + "e0" * 20
KINDS = ["deposit"] * 5 + ["withdraw", "borrow", "borrow", "repay", "liquidation"]


def topic(addr: str) -> str:
    return "0x" + "00" * 12 + addr[2:].lower()


class FakeChain:
    """A chain whose blocks from a fork point can be replaced by another branch; each
    block's vault logs are a function of (block, branch)."""

    def __init__(self, head: int, seed: int) -> None:
        self.head, self.seed = head, seed
        self.branch: dict[int, int] = {}  # block -> branch number (0 when absent)

    def reorg(self, fork_at: int, new_head: int) -> None:
        tag = max(self.branch.values(), default=0) + 1
        for n in range(fork_at, new_head + 1):
            self.branch[n] = tag
        for n in [n for n in self.branch if n > new_head]:
            del self.branch[n]
        self.head = new_head

    def hash(self, n: int) -> str:
        return "0x" + f"{self.branch.get(n, 0):04x}" + f"{n:060x}"

    def ref(self, n: int) -> BlockRef:
        return BlockRef(n, self.hash(n), self.hash(n - 1))

    def logs(self, n: int) -> list[dict[str, Any]]:
        rng = random.Random(f"{self.seed}/{n}/{self.branch.get(n, 0)}")
        out = []
        for i in range(rng.randrange(0, 5)):
            kind = rng.choice(KINDS)
            account = rng.choice(ACCOUNTS)
            amount = rng.randrange(1, 10**6) * (10**18 if kind == "deposit" else 1)
            if kind == "repay":
                topics, data = (
                    [topic(account), topic(USD)],
                    encode(["uint256", "address"], [amount, LIQ]),
                )
            elif kind == "liquidation":
                topics = [topic(account), topic(LIQ), topic(COL)]
                data = encode(["uint256", "address", "uint256"], [amount, USD, amount // 3])
            else:
                token = USD if kind == "borrow" else COL
                topics, data = [topic(account), topic(token)], encode(["uint256"], [amount])
            out.append(
                {
                    "address": VAULT,
                    "topics": ["0x" + keccak(text=SIGNATURES[kind]).hex(), *topics],  # type: ignore[index]
                    "data": "0x" + data.hex(),
                    "blockNumber": hex(n),
                    "blockHash": self.hash(n),
                    "transactionHash": "0x" + f"{n:032x}{i:032x}",
                    "logIndex": hex(i),
                }
            )
        return out

    # The RpcClient surface the indexer uses.
    async def block_number(self) -> int:
        return self.head

    async def get_block(self, n: int) -> BlockRef | None:
        return self.ref(n) if n <= self.head else None

    async def get_blocks(self, numbers: list[int]) -> dict[int, BlockRef]:
        return {n: self.ref(n) for n in numbers}

    async def get_log_records(
        self, address: str, topics: Any, lo: int, hi: int, *, end_hash: str | None = None
    ) -> list[RpcLog]:
        assert end_hash in (None, self.ref(hi).hash), "logs anchored to another block"
        logs = [entry for n in range(lo, hi + 1) for entry in self.logs(n)]
        return msgspec.convert(logs, list[RpcLog])

    def status(self) -> list[Any]:
        return []


def settings(name: str, compact: bool) -> ChainSettings:
    return ChainSettings(
        name=name, chain_id=1, rpc_urls=("http://x",), vault=VAULT, confirmations=3,
        reorg_window_extra=2, max_log_range=7, block_time=0.001, compact_backfill=compact,
        reconcile_every_blocks=10**9,
    )  # fmt: skip


class Pair:
    """The same chain indexed twice into one store: full rows ("full") and compacted
    ("compact"); `restart` replaces an indexer by a fresh one over the same store."""

    def __init__(self, store: Store, chain: FakeChain) -> None:
        self.repo = SqlChainStore(store)
        self.chain = chain
        self.ix = {name: self._new(name) for name in ("full", "compact")}

    def _new(self, name: str) -> ChainIndexer:
        return ChainIndexer(settings(name, name == "compact"), self.chain, self.repo)  # type: ignore[arg-type]

    def restart(self, name: str) -> None:
        self.ix[name] = self._new(name)

    async def sync(self) -> None:
        for ix in self.ix.values():
            status = await ix.sync_to_head()
            assert status.indexed_block == self.chain.head and not status.fatal

    async def positions(self, name: str) -> list[tuple[str, str, str, int, int, int]]:
        return sorted(
            (p.account, p.token, p.kind, p.head_amount, p.pending_amount, p.confirmed_amount)
            for p in await self.repo.positions(name)
        )

    async def check_same(self) -> None:
        full, compact = await self.positions("full"), await self.positions("compact")
        assert full and compact == full
        # What the reputation feed reads: first block per account and the liquidations.
        ev_full, ev_compact = await self.repo.events("full"), await self.repo.events("compact")
        assert first_seen(ev_compact) == first_seen(ev_full)
        assert liquidations(ev_compact) == liquidations(ev_full)
        await self.check_audit()

    async def check_audit(self) -> None:
        """Every audit record matches the range's logs re-read from the chain; the
        ranges and the rows cover the indexed blocks once each."""
        async with self.repo.store.session() as s:
            ranges = (await s.execute(select(RNG).where(RNG.c.chain == "compact"))).all()
        for r in ranges:
            recs = await self.chain.get_log_records(VAULT, [], r.from_block, r.to_block)
            cols = decode_records("compact", recs)
            assert (r.events, r.digest) == (len(cols), range_digest(cols))
        spans = sorted((r.from_block, r.to_block) for r in ranges)
        for (_, hi), (lo, _) in itertools.pairwise(spans):
            assert lo > hi  # disjoint: no block compacted twice
        rows = await self.repo.events("compact")
        for r in ranges:
            kept = [e for e in rows if r.from_block <= e.block_number <= r.to_block]
            assert len(kept) == r.rows_kept


def first_seen(events: list[VaultEvent]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in events:
        out[e.account] = min(out.get(e.account, e.block_number), e.block_number)
    return out


def liquidations(events: list[VaultEvent]) -> list[tuple[int, int, str, int, int]]:
    return sorted(
        (e.block_number, e.log_index, e.account, e.amount, e.debt_amount)
        for e in events
        if e.kind == "liquidation"
    )


@pytest.mark.parametrize("seed", [1, 2])
async def test_backfill_reorgs_and_restarts_match_the_full_rows_path(
    store: Store, seed: int
) -> None:
    chain = FakeChain(head=80, seed=seed)
    pair = Pair(store, chain)
    # A restart in the middle of the backfill (after a few compacted ranges).
    await pair.ix["compact"].load()
    for _ in range(4):
        assert await pair.ix["compact"].step()
    pair.restart("compact")
    await pair.sync()
    await pair.check_same()
    rows = len(await pair.repo.events("compact"))
    assert rows < len(await pair.repo.events("full")) / 2  # compaction did happen
    window = pair.ix["full"].settings.reorg_window
    # A reorg inside the kept rows (2 blocks deep), then one whose ancestor is the
    # boundary itself (the lowest kept hash), each followed by new blocks.
    chain.reorg(chain.head - 1, chain.head + 4)
    await pair.sync()
    await pair.check_same()
    chain.reorg(chain.head - window + 1, chain.head + 2)
    await pair.sync()
    await pair.check_same()
    # A long outage: the head runs far ahead, and the range below the new boundary
    # (rows written while following) stays as rows; new ranges compact.
    chain.head += 40
    pair.restart("compact")
    await pair.sync()
    await pair.check_same()


async def test_restart_across_the_boundary_then_a_reorg_in_the_new_window(store: Store) -> None:
    chain = FakeChain(head=30, seed=7)
    pair = Pair(store, chain)
    await pair.sync()
    # Following the head block by block: every batch is above the boundary (rows).
    for _ in range(6):
        chain.head += 1
        await pair.sync()
    # Restart while the head moves on: the resumed batch straddles the new boundary.
    chain.head += 9
    pair.restart("compact")
    pair.restart("full")
    await pair.sync()
    await pair.check_same()
    chain.reorg(chain.head - 3, chain.head + 1)
    await pair.sync()
    await pair.check_same()


async def test_a_reorg_deeper_than_the_window_is_fatal_on_both_paths(store: Store) -> None:
    chain = FakeChain(head=40, seed=3)
    pair = Pair(store, chain)
    await pair.sync()
    full_before = await pair.positions("full")
    chain.reorg(20, 45)
    for ix in pair.ix.values():
        status = await ix.sync_to_head()
        assert status.fatal and status.indexed_block == 40
    assert await pair.positions("full") == full_before == await pair.positions("compact")


async def test_a_reapplied_compacted_batch_changes_nothing(store: Store) -> None:
    repo = SqlChainStore(store)
    chain = FakeChain(head=50, seed=5)
    cols = decode_records("c", await chain.get_log_records(VAULT, [], 10, 20))
    batch = dict(
        to_block=20, blocks=[chain.ref(20)], events=cols, log_range=11, head_block=50,
        confirmed_block=47, keep_hashes_from=45, from_block=10, compact_below=45,
    )  # fmt: skip
    await repo.apply_batch("c", **batch)  # type: ignore[arg-type]
    before = (await repo.positions("c"), await repo.events("c"))
    await repo.apply_batch("c", **batch)  # type: ignore[arg-type]
    assert (await repo.positions("c"), await repo.events("c")) == before
    # Overlapping a recorded range other than exactly is refused, not double-counted.
    with pytest.raises(ValueError, match="overlaps"):
        await repo.apply_batch("c", **{**batch, "from_block": 15})  # type: ignore[arg-type]
    # A rollback into a compacted range is refused (the indexer never asks for one).
    with pytest.raises(ValueError, match="compacted range"):
        await repo.rollback("c", chain.ref(15))
    # Compacting blocks a rollback or a promotion can still reach is refused.
    with pytest.raises(ValueError, match="cannot compact"):
        await repo.apply_batch("c", **{**batch, "compact_below": 49})  # type: ignore[arg-type]
    assert (await repo.positions("c"), await repo.events("c")) == before


async def test_a_failed_batch_leaves_no_events_rows_or_audit(store: Store) -> None:
    """The bulk insert (COPY on PostgreSQL) is part of the batch's transaction: a
    failure later in the batch (here a duplicate block hash) leaves nothing behind."""
    repo = SqlChainStore(store)
    chain = FakeChain(head=50, seed=11)
    cols = decode_records("c", await chain.get_log_records(VAULT, [], 10, 49))
    assert len(cols) > 10
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        await repo.apply_batch(
            "c", to_block=49, blocks=[chain.ref(49), chain.ref(49)], events=cols,
            log_range=40, head_block=50, confirmed_block=47, keep_hashes_from=45,
            from_block=10, compact_below=45,
        )  # fmt: skip
    assert await repo.events("c") == [] and await repo.positions("c") == []
    async with store.session() as s:
        assert (await s.execute(select(RNG))).all() == []
    assert await repo.load_checkpoint("c") is None


def _column_events(seed: int, n: int, kinds: list[str]) -> list[VaultEvent]:
    rnd = random.Random(seed)
    accounts = ["0x" + f"{i:040x}" for i in range(1, 5)]
    out = []
    for i in range(n):
        kind = rnd.choice(kinds)
        liq = kind == "liquidation"
        out.append(
            VaultEvent(
                chain="c",
                block_number=10 + i // 3,
                block_hash="0x" + f"{10 + i // 3:064x}",
                tx_hash="0x" + f"{i:064x}",
                log_index=i % 3,
                kind=kind,  # type: ignore[arg-type]
                account=rnd.choice(accounts),
                token=rnd.choice(accounts[:2]),
                amount=rnd.randrange(2**256),
                counterparty=rnd.choice(accounts) if kind in ("repay", "liquidation") else None,
                debt_token=accounts[3] if liq else None,
                debt_amount=rnd.randrange(2**200) if liq else 0,
            )
        )
    return out


@pytest.mark.parametrize("kinds", [["deposit"], ["deposit", "withdraw", "borrow", "repay",
                                                 "liquidation"]])  # fmt: skip
def test_range_digest_is_the_sha256_of_the_documented_lines(kinds: list[str]) -> None:
    import hashlib

    from chains.types import EventColumns

    for n in (0, 1, 40):
        events = _column_events(n, n, kinds)
        # The reference, written from the format in the docstring, one event at a time.
        text = "".join(
            f"{e.block_number}:{e.log_index}:{e.tx_hash}:{e.kind}:{e.account}:{e.token}:"
            f"{e.amount}:{e.counterparty or ''}:{e.debt_token or ''}:{e.debt_amount}\n"
            for e in events
        )
        cols = EventColumns.from_events("c", events)
        assert range_digest(cols) == hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("kinds", [["deposit"], ["deposit", "withdraw", "borrow"]])
@pytest.mark.parametrize("confirmed", [0, 10**6])
def test_batch_deltas_equal_the_sum_of_each_events_effects(
    kinds: list[str], confirmed: int
) -> None:
    from aggregator.store.chain_batches import _add_deltas, add_effect
    from chains.types import EventColumns

    events = _column_events(7, 60, kinds)
    start = {("0x" + f"{1:040x}", "0x" + f"{1:040x}", "collateral"): (5, 3)}
    got = dict(start)
    cols = EventColumns.from_events("c", events)
    _add_deltas(got, cols, [False] * len(events), confirmed)
    # The reference: each event's effects, one by one, pending above the confirmed block.
    want = dict(start)
    for e in events:
        for eff in e.effects():
            add_effect(want, eff, 1, e.block_number > confirmed)
    assert got == want


@pytest.mark.parametrize("kinds", [["deposit"], ["deposit", "withdraw", "liquidation"]])
@pytest.mark.parametrize("in_order", [True, False])
def test_kept_rows_are_each_unseen_accounts_first_row_and_the_kept_kinds(
    kinds: list[str], in_order: bool
) -> None:
    from aggregator.store.chain_batches import _kept_rows
    from aggregator.store.chain_rows import KEPT_KINDS
    from chains.types import EventColumns

    for seed, n in ((1, 0), (2, 1), (3, 40), (4, 90)):
        cols = EventColumns.from_events("c", _column_events(seed, n, kinds))
        seen = {"0x" + f"{2:040x}"}
        deep = list(range(n * 2 // 3))
        if not in_order:
            deep = deep[::-1]  # the general path walks `deep` as given
        # The reference: one row at a time, in the order of `deep`.
        want: list[int] = []
        first = set(seen)
        for i in deep:
            if cols.account[i] not in first or cols.kind[i] in KEPT_KINDS:
                want.append(i)
                first.add(cols.account[i])
        got = _kept_rows(cols, deep, seen, in_order)
        assert got == want
        if in_order and n > 10:
            assert 0 < len(got) < len(deep)  # the case is not trivial
