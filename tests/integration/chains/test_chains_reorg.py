"""Reorgs injected on real anvil chains (anvil_reorg and evm_snapshot/evm_revert)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from chains_env import ChainEnv, make_chain, stored_head

from aggregator.store.chain_repo import SqlChainStore
from chains.indexer import ChainIndexer
from chains.rpc import RpcClient
from chains.types import ChainSettings
from devkit.anvil import AnvilNode
from devkit.testing.harness import USERS, VaultHarness

CONFIRMATIONS = 4  # == the reorg window


def settings_for(name: str, node: AnvilNode, h: VaultHarness) -> ChainSettings:
    return ChainSettings(
        name=name,
        chain_id=node.chain_id,
        rpc_urls=(node.url,),
        vault=h.vault,
        confirmations=CONFIRMATIONS,
        start_block=h.deploy_block,
        block_time=0.05,
        max_log_range=5,
        rpc_timeout_s=2.0,
        rpc_rate_limit_per_s=10_000.0,
    )


def setup_chain(
    anvil_factory: Callable[..., AnvilNode], chain_id: int
) -> tuple[AnvilNode, VaultHarness]:
    node = anvil_factory(chain_id)
    h = VaultHarness.deploy(node.url, nonce_offset=chain_id % 100)
    for u in USERS:
        h.deposit(u, 100 * 10**18)
        h.grant(u)
    # Setup must never be reorged away by the test's shallow reorgs.
    h.mine(CONFIRMATIONS + 2)
    return node, h


def random_actions(rng: random.Random, h: VaultHarness) -> None:
    for _ in range(rng.randint(1, 4)):
        u = rng.choice(USERS)
        action = rng.choice(["deposit", "withdraw", "borrow", "repay", "mine"])
        if action == "deposit":
            h.deposit(u, rng.randint(1, 10**18))
        elif action == "withdraw":
            h.withdraw(u, rng.randint(1, 10**16))
        elif action == "borrow":
            h.borrow(u, rng.randint(1, 10**8))
        elif action == "repay" and h.debt_of(u):
            h.repay(rng.choice(USERS), u, rng.randint(1, h.debt_of(u)))
        else:
            h.mine(rng.randint(1, 2))


async def assert_matches_chain(ix: ChainIndexer, repo: SqlChainStore, h: VaultHarness) -> None:
    status = await ix.sync_to_head()
    assert not status.fatal, status.fatal_reason
    assert await stored_head(repo, ix.chain) == h.onchain_positions(status.indexed_block)
    # Confirmed view: exactly the head view minus deposits/repayments above the confirmed block.
    for p in await repo.positions(ix.chain):
        assert p.confirmed_amount == (
            max(0, p.head_amount - p.pending_amount)
            if p.kind == "collateral"
            else p.head_amount + p.pending_amount
        )
    assert await ix.reconcile() == []


@pytest.mark.parametrize("seed", [1, 2])
async def test_random_reorgs_within_the_window_on_two_chains(
    seed: int,
    anvil_factory: Callable[..., AnvilNode],
    repo: SqlChainStore,
    client_for: Callable[..., RpcClient],
) -> None:
    rng = random.Random(seed)
    chains = []
    for name, cid in (("a", 71002), ("b", 71003)):
        node, h = setup_chain(anvil_factory, cid)
        s = settings_for(name, node, h)
        chains.append((ChainIndexer(s, client_for(s), repo), h))
    depths: list[int] = []
    for _round in range(4):
        for ix, h in chains:
            snap = h.rpc("evm_snapshot")
            since = h.block_number()
            random_actions(rng, h)
            await assert_matches_chain(ix, repo, h)
            mined = h.block_number() - since
            if 1 <= mined <= CONFIRMATIONS and rng.random() < 0.5:
                # Back to the snapshot, then a competing branch (shorter or longer).
                h.rpc("evm_revert", [snap])
                depths.append(mined)
            else:
                depth = rng.randint(1, CONFIRMATIONS)
                h.rpc("anvil_reorg", [depth, []])
                depths.append(depth)
            random_actions(rng, h)
            await assert_matches_chain(ix, repo, h)
    for ix, _ in chains:
        assert ix.status.reorgs >= 1
        assert 1 <= ix.status.deepest_reorg <= CONFIRMATIONS
    assert max(depths) <= CONFIRMATIONS


async def test_snapshot_revert_to_a_shorter_branch(
    anvil_factory: Callable[..., AnvilNode],
    repo: SqlChainStore,
    client_for: Callable[..., RpcClient],
) -> None:
    node, h = setup_chain(anvil_factory, 71004)
    s = settings_for("a", node, h)
    ix = ChainIndexer(s, client_for(s), repo)
    await assert_matches_chain(ix, repo, h)
    snap = h.rpc("evm_snapshot")
    h.deposit(USERS[0], 5 * 10**18)
    h.borrow(USERS[1], 10**8)
    h.deposit(USERS[2], 10**18)
    await assert_matches_chain(ix, repo, h)
    tip = ix.status.indexed_block
    h.rpc("evm_revert", [snap])
    # The new branch is shorter than our tip: the stored tip height does not exist any more.
    h.withdraw(USERS[3], 10**15)
    assert h.block_number() < tip
    await assert_matches_chain(ix, repo, h)
    assert ix.status.reorgs == 1 and ix.status.deepest_reorg == 3
    kinds = [(e.kind, e.account) for e in await repo.events("a") if e.block_number > tip - 3]
    assert kinds == [("withdraw", USERS[3])]


async def test_reorg_deeper_than_window_is_fatal_for_that_chain_only(
    anvil_factory: Callable[..., AnvilNode],
    repo: SqlChainStore,
    client_for: Callable[..., RpcClient],
) -> None:
    (na, ha), (nb, hb) = setup_chain(anvil_factory, 71002), setup_chain(anvil_factory, 71003)
    sa, sb = settings_for("a", na, ha), settings_for("b", nb, hb)
    ia, ib = ChainIndexer(sa, client_for(sa), repo), ChainIndexer(sb, client_for(sb), repo)
    await assert_matches_chain(ia, repo, ha)
    hb.deposit(USERS[0], 10**18)
    await assert_matches_chain(ib, repo, hb)
    before = await stored_head(repo, "b")
    depth = random.Random(3).randint(CONFIRMATIONS + 1, CONFIRMATIONS + 4)
    hb.rpc("anvil_reorg", [depth, []])
    status = await ib.sync_to_head()
    assert status.fatal
    assert "deeper than the 4-block window" in (status.fatal_reason or "")
    # Never silent corruption: the stored view is left as it was, and the state persists.
    assert await stored_head(repo, "b") == before
    cp = await repo.load_checkpoint("b")
    assert cp is not None and cp.fatal_reason == status.fatal_reason
    restarted = ChainIndexer(sb, client_for(sb), repo)
    await restarted.load()
    assert restarted.status.fatal and not await restarted.step()
    # The other chain keeps indexing.
    ha.deposit(USERS[1], 3 * 10**18)
    await assert_matches_chain(ia, repo, ha)
    # Operator recovery: reset and re-index from start_block.
    await repo.reset_chain("b")
    fresh = ChainIndexer(sb, client_for(sb), repo)
    await assert_matches_chain(fresh, repo, hb)


async def test_reorg_on_plain_and_forked_chains(
    chain: ChainEnv, repo: SqlChainStore, client_for: Callable[..., RpcClient]
) -> None:
    """The fork takes its reorg from evm_snapshot / evm_revert: anvil_reorg on a fork
    leaves the state of the transactions it drops (next test)."""
    h = chain.harness
    s = chain.settings(confirmations=CONFIRMATIONS)
    ix = ChainIndexer(s, client_for(s), repo)
    h.grant(USERS[2])
    h.mine(CONFIRMATIONS + 1)
    await assert_matches_chain(ix, repo, h)
    snap = h.rpc("evm_snapshot")
    h.deposit(USERS[2], 7 * 10**18)
    h.borrow(USERS[2], 50 * 10**6)
    await assert_matches_chain(ix, repo, h)
    h.rpc("evm_revert", [snap])
    h.deposit(USERS[3], 10**18)
    h.mine(2)  # the new branch is longer than the one it replaces
    await assert_matches_chain(ix, repo, h)
    assert ix.status.reorgs == 1
    assert (USERS[2], h.usd, "debt") not in {
        (p.account, p.token, p.kind) for p in await repo.positions("c") if p.head_amount
    }


def test_anvil_reorg_on_a_fork_keeps_the_state_of_the_transactions_it_drops(
    anvil_factory: Callable[..., AnvilNode],
) -> None:
    """A quirk of the pinned anvil (found by the chaos soak): on a --fork-url node,
    anvil_reorg replaces the blocks and drops their transactions, receipts and logs,
    but not their state changes, so the chain holds collateral no event ever put there.
    No indexer can follow that, so the soak and the tests reorg forks with
    evm_snapshot / evm_revert. When this test fails, anvil fixed it and the soak can
    use anvil_reorg on the fork again."""
    h = make_chain(anvil_factory, "forked").harness
    h.mine(3)  # anvil_reorg cannot reach back into the fork block
    before = h.collateral_of(USERS[3])
    receipt = h.deposit(USERS[3], 10**18)
    h.rpc("anvil_reorg", [1, []])
    assert h.rpc("eth_getTransactionReceipt", [receipt["transactionHash"]]) is None
    logs = h.rpc(
        "eth_getLogs",
        [{"address": h.vault, "fromBlock": receipt["blockNumber"], "toBlock": "latest"}],
    )
    assert logs == []
    assert h.collateral_of(USERS[3]) == before + 10**18


@pytest.mark.parametrize("when", ["after", "before"])
async def test_a_reorg_between_the_headers_and_the_logs_loses_no_log(
    when: str,
    anvil_factory: Callable[..., AnvilNode],
    repo: SqlChainStore,
    client_for: Callable[..., RpcClient],
) -> None:
    """The branch changes around the getLogs call: the new branch has a borrow in a
    block where the logs' branch had no vault log, so no log hash can show the
    difference. "after": the logs answered, then the reorg; headers read after the logs
    (the order before 2026-12-06) were the new branch's, the step committed them without
    the borrow and the indexer never read that block again (a missed event the soak
    found as a store balance the node's own logs disagreed with). "before": the headers
    are read, then the reorg, then the logs: their anchor (the range's last block) has
    changed, so the step is dropped (ChainMoved) and the next one reads the new branch."""
    node, h = setup_chain(anvil_factory, 71011)
    s = settings_for("a", node, h)
    client = client_for(s)
    ix = ChainIndexer(s, client, repo)
    await assert_matches_chain(ix, repo, h)
    snap = h.rpc("evm_snapshot")
    h.mine(2)  # the branch read first: no vault log in either block
    read_logs = client.get_log_records
    reorged: list[int] = []

    def reorg() -> None:
        if not reorged:
            h.rpc("evm_revert", [snap])
            h.borrow(USERS[0], 10**6)  # at the height of the first empty block
            h.mine(2)
            reorged.append(h.block_number())

    async def read_with_reorg(*args: Any, **kw: Any) -> Any:
        if when == "before":
            reorg()
        logs = await read_logs(*args, **kw)
        if when == "after":
            reorg()
        return logs

    client.get_log_records = read_with_reorg  # type: ignore[method-assign]
    await assert_matches_chain(ix, repo, h)
    assert reorged
    assert any(e.kind == "borrow" for e in await repo.events("a"))
    assert ix.status.last_error is None
