"""A reorg between the getLogs call and the header reads must drop the step, not commit it."""

from __future__ import annotations

from typing import Any

import msgspec
from eth_abi import encode
from eth_utils import keccak

from aggregator.store import Store
from aggregator.store.chain_repo import SqlChainStore
from chains.events import SIGNATURES
from chains.indexer import ChainIndexer
from chains.rpc import ChainMoved, RpcLog
from chains.types import BlockRef, ChainSettings

VAULT = "0x" + "11" * 20
ACCT = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
TOKEN = "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0"


def h(n: int, branch: str = "a") -> str:
    return "0x" + (branch * 2) + f"{n:062x}"


class FakeClient:
    """Serves a chain of `head` blocks; logs may come from another branch."""

    def __init__(
        self,
        head: int,
        log_branch: str,
        parent_break_at: int | None = None,
        *,
        check_anchor: bool = False,
    ) -> None:
        self.head, self.log_branch, self.parent_break_at = head, log_branch, parent_break_at
        # Off: the anchor is passed over, so the commit's own log-hash check is what
        # drops the step (it still guards against a node whose proof and logs differ).
        self.check_anchor = check_anchor

    async def block_number(self) -> int:
        return self.head

    async def get_block(self, n: int) -> BlockRef:
        parent = "0x" + "ff" * 32 if n == self.parent_break_at else h(n - 1)
        return BlockRef(n, h(n), parent)

    async def get_blocks(self, numbers: list[int]) -> dict[int, BlockRef]:
        return {n: await self.get_block(n) for n in numbers}

    async def get_logs(self, address: str, topics: Any, lo: int, hi: int) -> list[dict[str, Any]]:
        return [
            {
                "address": VAULT,
                "topics": [
                    "0x" + keccak(text=SIGNATURES["deposit"]).hex(),
                    "0x" + "00" * 12 + ACCT[2:].lower(),
                    "0x" + "00" * 12 + TOKEN[2:].lower(),
                ],
                "data": "0x" + encode(["uint256"], [5]).hex(),
                "blockNumber": hex(n),
                "blockHash": h(n, self.log_branch),
                "transactionHash": "0x" + "cd" * 32,
                "logIndex": "0x0",
            }
            for n in range(lo, hi + 1)
        ]

    async def get_log_records(
        self, address: str, topics: Any, lo: int, hi: int, *, end_hash: str | None = None
    ) -> list[RpcLog]:
        logs = msgspec.convert(await self.get_logs(address, topics, lo, hi), list[RpcLog])
        # The real client's head proof: the answering node's block `hi`, asked right
        # after the logs, is of the logs' branch.
        if self.check_anchor and end_hash is not None and end_hash != h(hi, self.log_branch):
            raise ChainMoved("c", hi, end_hash, h(hi, self.log_branch))
        return logs

    def status(self) -> list[Any]:
        return []


def settings() -> ChainSettings:
    return ChainSettings(
        name="c", chain_id=1, rpc_urls=("http://x",), vault=VAULT, confirmations=3, max_log_range=10
    )


async def test_logs_from_another_branch_are_not_committed(store: Store) -> None:
    repo = SqlChainStore(store)
    ix = ChainIndexer(settings(), FakeClient(head=8, log_branch="b"), repo)  # type: ignore[arg-type]
    await ix.load()
    assert await ix.step() is False
    assert await repo.events("c") == [] and await repo.load_checkpoint("c") is None
    # Once the logs agree with the headers, the same range commits.
    ix.client = FakeClient(head=8, log_branch="a")  # type: ignore[assignment]
    assert await ix.step() is True
    assert len(await repo.events("c")) == 9


async def test_logs_anchored_to_a_replaced_block_drop_the_step(store: Store) -> None:
    repo = SqlChainStore(store)
    client = FakeClient(head=8, log_branch="b", check_anchor=True)
    ix = ChainIndexer(settings(), client, repo)  # type: ignore[arg-type]
    await ix.load()
    assert await ix.step() is False
    assert ix.status.last_error is None  # a reorg in flight, not an RPC failure
    assert await repo.events("c") == [] and await repo.load_checkpoint("c") is None
    client.log_branch = "a"
    assert await ix.step() is True
    assert len(await repo.events("c")) == 9


async def test_headers_that_do_not_extend_our_tip_are_not_committed(store: Store) -> None:
    repo = SqlChainStore(store)
    ix = ChainIndexer(settings(), FakeClient(head=8, log_branch="a"), repo)  # type: ignore[arg-type]
    await ix.sync_to_head()
    assert ix.status.indexed_block == 8
    ix.client = FakeClient(head=12, log_branch="a", parent_break_at=9)  # type: ignore[assignment]
    assert await ix.step() is False
    cp = await repo.load_checkpoint("c")
    assert cp is not None and cp.indexed_block == 8


async def test_sync_to_head_gives_up_instead_of_spinning(store: Store) -> None:
    repo = SqlChainStore(store)
    s = ChainSettings(
        name="c", chain_id=1, rpc_urls=("http://x",), vault=VAULT, confirmations=3, block_time=0.001
    )
    ix = ChainIndexer(s, FakeClient(head=8, log_branch="b"), repo)  # type: ignore[arg-type]
    status = await ix.sync_to_head(max_idle_steps=3)
    assert not status.caught_up and status.indexed_block == -1


class MovedAbove(FakeClient):
    """The chain moved under the read-ahead: logs from `moved_from` on are another
    branch's, so their anchor (the header read before them) no longer holds."""

    def __init__(self, head: int, moved_from: int) -> None:
        super().__init__(head, "a", check_anchor=True)
        self.moved_from = moved_from

    async def get_log_records(
        self, address: str, topics: Any, lo: int, hi: int, *, end_hash: str | None = None
    ) -> list[RpcLog]:
        self.log_branch = "b" if hi >= self.moved_from else "a"
        return await super().get_log_records(address, topics, lo, hi, end_hash=end_hash)


async def test_a_move_seen_by_the_read_ahead_drops_only_the_step_that_takes_it(
    store: Store,
) -> None:
    repo = SqlChainStore(store)
    client = MovedAbove(head=45, moved_from=10)
    ix = ChainIndexer(settings(), client, repo)  # type: ignore[arg-type]
    await ix.load()
    # The first range commits while the read-ahead (backfill: the head is far) meets the
    # moved chain in the next one.
    assert await ix.step() is True
    assert ix.status.indexed_block == 9 and len(await repo.events("c")) == 10
    assert await ix.step() is False  # the read-ahead's ChainMoved, taken by this step
    assert ix.status.last_error is None  # a reorg in flight, not an RPC failure
    cp = await repo.load_checkpoint("c")
    assert cp is not None and cp.indexed_block == 9
    client.moved_from = 10**9  # the node settled on one branch
    status = await ix.sync_to_head()
    assert status.indexed_block == 45
    events = await repo.events("c")
    assert len(events) == 46 and all(e.block_hash == h(e.block_number) for e in events)
