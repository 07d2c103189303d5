"""Hostile RPC endpoints: logs of another contract, headers whose parentHash does not
chain, another network's chain id. Each liar is detected and demoted while a healthy
endpoint carries on; the indexer ends with exactly the chain's balances."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
from chains_env import fault_settings, stored_head

from aggregator.store.chain_repo import SqlChainStore
from chains.events import TOPIC_FILTER
from chains.indexer import ChainIndexer
from chains.rpc import ChainIdMismatch, RpcClient, RpcUnavailable
from devkit.anvil import AnvilNode
from devkit.testing.faultproxy import FaultProxy
from devkit.testing.harness import USERS, VaultHarness

LIES: dict[str, tuple[dict[str, Any], str]] = {
    "wrong_log_address": ({"wrong_log_address": True}, "log outside the query"),
    "wrong_parent": ({"wrong_parent": True}, "headers do not chain"),
    "wrong_chain_id": ({"chain_id": 1}, "wrong chain"),
}


@pytest.fixture
def vault_chain(anvil_factory: Callable[..., AnvilNode]) -> tuple[AnvilNode, VaultHarness]:
    node = anvil_factory(71002)
    h = VaultHarness.deploy(node.url)
    for u in USERS:
        h.grant(u)
    h.bulk_deposits(60, per_block=4)
    h.borrow(USERS[0], 10**8)
    h.withdraw(USERS[1], 10**12)
    h.mine(3)
    return node, h


@pytest.mark.parametrize("lie", list(LIES))
async def test_lying_endpoint_is_demoted_and_the_healthy_one_carries_on(
    lie: str,
    vault_chain: tuple[AnvilNode, VaultHarness],
    repo: SqlChainStore,
    proxies: Callable[..., Awaitable[FaultProxy]],
    client_for: Callable[..., RpcClient],
) -> None:
    node, h = vault_chain
    modes, reason = LIES[lie]
    liar = await proxies(node.url, **modes)
    # The honest endpoint answers a little slower, so the client (ordering by health and
    # latency) prefers the liar until it is caught.
    honest = await proxies(node.url, delay=1.0, delay_s=0.03)
    s = fault_settings(node, h, (liar.url, honest.url), rpc_timeout_s=2.0)
    client = client_for(s, backoff_base_s=0.01, backoff_max_s=0.05, health_interval_s=3600)
    await client.connect()
    ix = ChainIndexer(s, client, repo)
    await ix.load()
    head = h.block_number()
    steps = 0
    while ix.status.indexed_block < head and steps < 200:
        steps += 1
        try:
            await ix.step()
        except RpcUnavailable:
            continue
    assert ix.status.indexed_block >= head and not ix.status.fatal, ix.status.last_error
    assert await stored_head(repo) == h.onchain_positions(ix.status.indexed_block)
    assert liar.stats[lie] > 0, liar.stats
    status = {st.url: st for st in client.status()}
    assert status[liar.url].state == "demoted", status[liar.url]
    assert reason in (status[liar.url].last_error or ""), status[liar.url].last_error
    assert status[honest.url].state == "healthy"


async def test_wrong_chain_id_on_every_endpoint_is_still_fatal(
    vault_chain: tuple[AnvilNode, VaultHarness],
    proxies: Callable[..., Awaitable[FaultProxy]],
    client_for: Callable[..., RpcClient],
) -> None:
    """Demoting needs a witness: with no endpoint on the configured chain the config is
    wrong, and that stays a fatal error naming the URL, expected and received ids."""
    node, h = vault_chain
    a = await proxies(node.url, chain_id=1)
    b = await proxies(node.url, chain_id=1)
    client = client_for(fault_settings(node, h, (a.url, b.url), rpc_timeout_s=2.0))
    with pytest.raises(ChainIdMismatch) as info:
        await client.connect()
    assert "expected 71002" in str(info.value) or "71002" in str(info.value)


async def test_a_reorg_between_header_reads_demotes_nobody(
    vault_chain: tuple[AnvilNode, VaultHarness],
    client_for: Callable[..., RpcClient],
) -> None:
    """Honest nodes whose headers stop chaining because of a reorg are not liars."""
    node, h = vault_chain
    s = fault_settings(node, h, (node.url,), rpc_timeout_s=2.0)
    client = client_for(s)
    await client.connect()
    n = h.block_number()
    before = await client.get_blocks([n - 2, n - 1, n])
    h.rpc("anvil_reorg", [2, []])
    after = await client.get_blocks([n - 2, n - 1, n])
    assert after[n].hash != before[n].hash and after[n].parent_hash == after[n - 1].hash
    assert [st.state for st in client.status()] == ["healthy"]


async def test_endpoint_that_falls_behind_after_reporting_its_head_loses_no_log(
    vault_chain: tuple[AnvilNode, VaultHarness],
    proxies: Callable[..., Awaitable[FaultProxy]],
    client_for: Callable[..., RpcClient],
) -> None:
    """The client's idea of an endpoint's head goes stale: the node behind the URL (a
    load balancer's other backend) falls behind after reporting a head, and answers
    getLogs for blocks it has not seen with a silently short list. The same endpoint must
    then prove it holds the last block of the range, or its answer is refused and a
    healthy endpoint's is used: no event is lost (the soak found one on the fork)."""
    node, h = vault_chain
    lagger = await proxies(node.url)
    honest = await proxies(node.url, delay=1.0, delay_s=0.03)
    s = fault_settings(node, h, (lagger.url, honest.url), rpc_timeout_s=2.0)
    client = client_for(s, backoff_base_s=0.01, backoff_max_s=0.05, health_interval_s=3600)
    await client.connect()
    start = h.block_number() + 1
    h.bulk_deposits(8, per_block=4)
    head = h.block_number()
    await client.pool.refresh_heads()  # both endpoints reported `head`...
    lagger.set(lag_blocks=head - start + 1)  # ...then the lagger's node fell behind
    logs = await client.get_logs(h.vault, TOPIC_FILTER, start, head)
    assert len(logs) == 8
    assert lagger.stats["lag"] > 0, lagger.stats
    status = {st.url: st for st in client.status()}
    assert "lagging" in (status[lagger.url].last_error or ""), status[lagger.url]


async def test_a_balance_read_ahead_of_its_block_corrects_nothing(
    vault_chain: tuple[AnvilNode, VaultHarness],
    repo: SqlChainStore,
    proxies: Callable[..., Awaitable[FaultProxy]],
    client_for: Callable[..., RpcClient],
) -> None:
    """Reconciliation reads collateralOf/debtOf at the indexed block. A node that
    answers with a later block's state (the 15-min soak saw one: a deposit of the next
    block counted twice until the next round) must not make it overwrite what the
    events say: a mismatch is re-read pinned to the block's hash before any correction."""
    node, h = vault_chain
    ahead = await proxies(node.url, call_ahead=True)
    s = fault_settings(node, h, (ahead.url,), reconcile_sample=50, rpc_timeout_s=2.0)
    ix = ChainIndexer(s, client_for(s), repo)
    await ix.sync_to_head()
    block = ix.status.indexed_block
    h.deposit(USERS[2], 10**9)  # mined after the indexed block, not indexed
    assert h.onchain_positions("latest") != h.onchain_positions(block)
    assert await ix.reconcile() == []
    assert ahead.stats["call_ahead"] >= 2
    assert ix.status.reconcile_mismatches == 0
    assert await stored_head(repo) == h.onchain_positions(block)
    # A real drift is still corrected: both reads agree on the chain's value.
    truth = h.collateral_of(USERS[0], block)
    await repo.apply_corrections(
        "c", block, [(USERS[0], h.col, "collateral", truth + 5)], reconcile_block=0
    )
    honest = await proxies(node.url)
    s2 = fault_settings(node, h, (honest.url,), reconcile_sample=50, rpc_timeout_s=2.0)
    ix2 = ChainIndexer(s2, client_for(s2), repo)
    await ix2.load()
    got = await ix2.reconcile()
    assert [(m.account, m.stored, m.onchain) for m in got] == [(USERS[0], truth + 5, truth)]


async def test_a_read_ahead_whose_block_left_the_chain_corrects_nothing(
    vault_chain: tuple[AnvilNode, VaultHarness],
    repo: SqlChainStore,
    proxies: Callable[..., Awaitable[FaultProxy]],
    client_for: Callable[..., RpcClient],
) -> None:
    """The pinned re-read fails when the indexed block is no longer on the node's chain
    (a reorg the next step rolls back): no correction, no crash, and the round is
    retried (the cursor does not move)."""
    node, h = vault_chain
    ahead = await proxies(node.url, call_ahead=True)
    s = fault_settings(node, h, (ahead.url,), reconcile_sample=50, rpc_timeout_s=2.0)
    ix = ChainIndexer(s, client_for(s), repo)
    await ix.sync_to_head()
    block = ix.status.indexed_block
    h.deposit(USERS[2], 10**9)
    runs = ix.status.reconcile_runs
    # As if a reorg replaced the indexed block after the store recorded it.
    ix.ctx.cp = replace(ix.checkpoint, indexed_hash="0x" + "ab" * 32)
    assert await ix.reconcile() == []
    assert ix.status.reconcile_runs == runs and ix.status.reconcile_mismatches == 0
    assert await stored_head(repo) == h.onchain_positions(block)


async def test_a_block_mined_between_the_health_check_reads_is_not_a_lie(
    vault_chain: tuple[AnvilNode, VaultHarness],
    proxies: Callable[..., Awaitable[FaultProxy]],
    client_for: Callable[..., RpcClient],
) -> None:
    """The health check reads eth_blockNumber, then eth_call at that number. A node that
    mines in between runs the call in the next block's context (getBlockNumber() is
    head + 1: seen from anvil in the 15-minute soak). That is honest once the node's head
    has really moved; the endpoint must stay healthy."""
    node, h = vault_chain
    mining = await proxies(node.url, call_ahead=True, mine_before_call=True)
    s = fault_settings(node, h, (mining.url,), rpc_timeout_s=2.0)
    client = client_for(s, health_interval_s=3600)
    start = h.block_number()
    await client.connect()
    for _ in range(3):
        await client.check_health()
    assert mining.stats["mined_before_call"] >= 4
    assert h.block_number() >= start + 4
    (st,) = client.status()
    assert st.state != "demoted", st.last_error


async def test_a_node_claiming_a_block_it_does_not_serve_stays_demoted(
    vault_chain: tuple[AnvilNode, VaultHarness],
    proxies: Callable[..., Awaitable[FaultProxy]],
    client_for: Callable[..., RpcClient],
) -> None:
    """The head + 1 tolerance is no way in for a liar: this node serves a head one
    block old but answers eth_call from the real tip, so its getBlockNumber() is head + 1
    while its own eth_blockNumber never gets there."""
    node, h = vault_chain
    liar = await proxies(node.url, call_ahead=True, lag_blocks=1)
    honest = await proxies(node.url)
    s = fault_settings(node, h, (liar.url, honest.url), rpc_timeout_s=2.0)
    client = client_for(s, health_interval_s=3600)
    await client.connect()
    await client.check_health()
    status = {st.url: st for st in client.status()}
    assert liar.stats["call_ahead"] >= 1
    assert status[liar.url].state == "demoted"
    assert "cross-check" in (status[liar.url].last_error or "")
    assert status[honest.url].state != "demoted"
