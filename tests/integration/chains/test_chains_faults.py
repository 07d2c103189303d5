"""RPC faults between the indexer and a real node, injected by devkit.testing.faultproxy."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from chains_env import fault_settings, stored_head
from eth_abi import decode, encode

from aggregator.store.chain_repo import SqlChainStore
from chains.indexer import ChainIndexer
from chains.rpc import ChainIdMismatch, RpcClient, RpcUnavailable, selector
from chains.types import ChainSettings
from devkit.anvil import AnvilNode
from devkit.testing.faultproxy import FaultProxy
from devkit.testing.harness import USERS, VaultHarness


@pytest.fixture
def busy_chain(anvil_factory: Callable[..., AnvilNode]) -> tuple[AnvilNode, VaultHarness]:
    node = anvil_factory(71002)
    h = VaultHarness.deploy(node.url)
    for u in USERS:
        h.grant(u)
    h.bulk_deposits(300, per_block=10)
    h.borrow(USERS[0], 10**8)
    h.withdraw(USERS[1], 10**12)
    h.repay(USERS[2], USERS[0], 10**7)
    h.mine(3)
    return node, h


async def test_indexer_loses_and_duplicates_nothing_through_faults(
    busy_chain: tuple[AnvilNode, VaultHarness],
    repo: SqlChainStore,
    proxies: Callable[..., Awaitable[FaultProxy]],
    client_for: Callable[..., RpcClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    node, h = busy_chain
    flaky = [
        await proxies(
            node.url,
            seed=s,
            drop=0.05,
            delay=0.05,
            delay_s=0.5,
            http500=0.08,
            http429=0.08,
            malformed=0.08,
        )
        for s in (1, 2)
    ]
    lagging = await proxies(node.url, lag_blocks=20)
    liar = await proxies(node.url, wrong_call=True)
    urls = (lagging.url, liar.url, flaky[0].url, flaky[1].url)
    # Shorter than the injected 0.5-s delays: a delayed answer is a timeout.
    s = fault_settings(node, h, urls, rpc_timeout_s=0.3)
    client = client_for(
        s, backoff_base_s=0.01, backoff_max_s=0.05, max_rounds=8, health_interval_s=0.2
    )
    ix = ChainIndexer(s, client, repo)
    await ix.load()
    head = h.block_number()
    steps = 0
    while ix.status.indexed_block < head and steps < 500:
        steps += 1
        try:
            await ix.step()
        except RpcUnavailable:
            continue  # the daemon's run loop backs off and retries the same way
        assert await ix.reconcile([USERS[0]]) == []  # the liar must never be believed
    assert ix.status.indexed_block >= head
    # Compare with the chain and with the exact set of logs a clean node returns.
    assert await stored_head(repo) == h.onchain_positions(ix.status.indexed_block)
    clean = client_for(fault_settings(node, h, (node.url,)))
    from chains.events import TOPIC_FILTER, decode_log

    raw = await clean.get_logs(h.vault, TOPIC_FILTER, h.deploy_block, ix.status.indexed_block)
    expected = sorted(
        (e.block_number, e.log_index, e.kind, e.amount) for e in (decode_log("c", r) for r in raw)
    )
    got = sorted((e.block_number, e.log_index, e.kind, e.amount) for e in await repo.events("c"))
    assert got == expected and len(got) == 303
    # Every fault kind actually happened, and the bad endpoints were demoted with a reason.
    served = flaky[0].stats + flaky[1].stats
    assert {"drop", "delay", "http500", "http429", "malformed"} <= set(served), served
    assert lagging.stats["lag"] > 0 and liar.stats["wrong_call"] > 0
    status = {st.url: st for st in client.status()}
    assert status[lagging.url].state == "demoted" and "lag" in (
        status[lagging.url].last_error or ""
    )
    liar_error = status[liar.url].last_error or ""
    assert status[liar.url].state == "demoted"
    assert "cross-check" in liar_error or "answered wrongly" in liar_error


async def test_wrong_eth_call_answer_is_never_returned(
    busy_chain: tuple[AnvilNode, VaultHarness],
    proxies: Callable[..., Awaitable[FaultProxy]],
    client_for: Callable[..., RpcClient],
) -> None:
    node, h = busy_chain
    liar = await proxies(node.url, wrong_call=True)
    # The liar is first in the list and nothing has health-checked it yet.
    client = client_for(fault_settings(node, h, (liar.url, node.url)), health_interval_s=3600)
    data = selector("collateralOf(address,address)") + encode(
        ["address", "address"], [USERS[0], h.col]
    )
    (got,) = await client.call_batch([(h.vault, data)])
    assert decode(["uint256"], got)[0] == h.collateral_of(USERS[0])  # type: ignore[arg-type]
    st = client.status()[0]
    assert st.state == "demoted" and "answered wrongly" in (st.last_error or "")
    # Only the liar: no trustworthy answer at all, and an error that says so.
    alone = client_for(fault_settings(node, h, (liar.url,)), max_rounds=1)
    with pytest.raises(RpcUnavailable, match="answered wrongly"):
        await alone.call_batch([(h.vault, data)])


async def test_lagging_endpoint_is_not_asked_for_logs_it_has_not_seen(
    busy_chain: tuple[AnvilNode, VaultHarness],
    proxies: Callable[..., Awaitable[FaultProxy]],
    client_for: Callable[..., RpcClient],
) -> None:
    node, h = busy_chain
    lagging = await proxies(node.url, lag_blocks=10)
    client = client_for(fault_settings(node, h, (lagging.url, node.url)))
    await client.check_health()
    st = client.status()
    assert st[0].state == "demoted" and "behind" in (st[0].last_error or "")
    head = h.block_number()
    logs = await client.get_logs(h.vault, [], head - 5, head)
    assert lagging.requests["eth_getLogs"] == 0
    assert len(logs) >= 1


@pytest.mark.parametrize("style", ["infura", "wide", "max"])
async def test_getlogs_range_adapts_to_provider_limits_and_is_persisted(
    style: str,
    busy_chain: tuple[AnvilNode, VaultHarness],
    repo: SqlChainStore,
    proxies: Callable[..., Awaitable[FaultProxy]],
    client_for: Callable[..., RpcClient],
) -> None:
    node, h = busy_chain
    capped = await proxies(node.url, getlogs_max_range=5, range_message=style)
    s = fault_settings(node, h, (capped.url,), max_log_range=64)
    ix = ChainIndexer(s, client_for(s), repo)
    await ix.sync_to_head()
    assert capped.stats["range_error"] >= 1
    # A block-count cap becomes a ceiling; a result-count cap (infura style) is
    # re-probed slowly, one step above what worked.
    assert ix.status.log_range <= (6 if style == "infura" else 5)
    assert await stored_head(repo) == h.onchain_positions(ix.status.indexed_block)
    cp = await repo.load_checkpoint("c")
    assert cp is not None and cp.log_range == ix.status.log_range
    # A restart starts from the remembered range instead of re-probing from 64.
    errors_before = capped.stats["range_error"]
    h.bulk_deposits(40, per_block=2)
    again = ChainIndexer(s, client_for(s), repo)
    await again.sync_to_head()
    assert capped.stats["range_error"] - errors_before <= (4 if style == "infura" else 1)


async def test_unknown_getlogs_error_is_surfaced_not_swallowed(
    busy_chain: tuple[AnvilNode, VaultHarness],
    repo: SqlChainStore,
    client_for: Callable[..., RpcClient],
) -> None:
    node, h = busy_chain
    s = fault_settings(node, h, (node.url,), vault="0x" + "00" * 19 + "01")
    ix = ChainIndexer(s, client_for(s), repo)
    await ix.load()
    # Block 10**9 does not exist: the node's own error must reach the caller.
    from chains.rpc import RpcResponseError

    with pytest.raises((RpcResponseError, RpcUnavailable)):
        await client_for(s).get_logs(s.vault or "", [], 10**9, 10**9 + 1)


async def test_chain_id_mismatch_is_a_clear_fatal_error(
    anvil_factory: Callable[..., AnvilNode], client_for: Callable[..., RpcClient]
) -> None:
    node = anvil_factory(71002)
    s = ChainSettings(name="beta", chain_id=71003, rpc_urls=(node.url,))
    client = client_for(s)
    with pytest.raises(ChainIdMismatch) as info:
        await client.connect()
    msg = str(info.value)
    assert "'beta'" in msg and node.url in msg and "71002" in msg and "71003" in msg


async def test_sends_are_never_retried(
    busy_chain: tuple[AnvilNode, VaultHarness],
    proxies: Callable[..., Awaitable[FaultProxy]],
    client_for: Callable[..., RpcClient],
) -> None:
    node, h = busy_chain
    broken = await proxies(node.url, http500=1.0)
    client = client_for(fault_settings(node, h, (broken.url, node.url)))
    with pytest.raises(RpcUnavailable, match="HTTP 500"):
        await client.send_raw_transaction(b"\x02\xf8")
    assert broken.requests["eth_sendRawTransaction"] == 1
    # A node's rejection is surfaced as is (a garbage tx here), again exactly once.
    from chains.rpc import RpcResponseError

    with pytest.raises(RpcResponseError):
        await client.send_raw_transaction(b"\x02\xf8")


async def test_rate_limit_backs_off_on_429(
    busy_chain: tuple[AnvilNode, VaultHarness],
    proxies: Callable[..., Awaitable[FaultProxy]],
    client_for: Callable[..., RpcClient],
) -> None:
    node, h = busy_chain
    throttled = await proxies(node.url, http429=1.0)
    client = client_for(
        fault_settings(node, h, (throttled.url, node.url), rpc_rate_limit_per_s=100.0)
    )
    for _ in range(5):
        assert await client.block_number() == h.block_number()
    st = client.status()[0]
    assert st.state == "throttled" and "429" in (st.last_error or "")
    # It was asked once, then left alone while its Retry-After backoff runs.
    assert throttled.requests["eth_blockNumber"] <= 2


async def test_run_loop_rides_out_an_outage_and_stops_on_request(
    busy_chain: tuple[AnvilNode, VaultHarness],
    repo: SqlChainStore,
    proxies: Callable[..., Awaitable[FaultProxy]],
    client_for: Callable[..., RpcClient],
) -> None:
    import asyncio

    node, h = busy_chain
    down = await proxies(node.url, http500=1.0)
    s = fault_settings(node, h, (down.url,), max_log_range=50)
    ix = ChainIndexer(s, client_for(s, backoff_base_s=0.01, max_rounds=1), repo)
    stop = asyncio.Event()
    task = asyncio.create_task(ix.run(stop))
    try:
        for _ in range(200):
            await asyncio.sleep(0.01)
            if ix.status.last_error:
                break
        assert "HTTP 500" in (ix.status.last_error or "") and not ix.status.fatal
        down.set(http500=0.0)
        for _ in range(500):
            await asyncio.sleep(0.02)
            if ix.status.caught_up and ix.status.indexed_block >= h.block_number():
                break
        assert ix.status.last_error is None
        assert await stored_head(repo) == h.onchain_positions(ix.status.indexed_block)
    finally:
        stop.set()
    await asyncio.wait_for(task, 30)


async def test_run_loop_turns_a_chain_id_mismatch_into_the_fatal_state(
    busy_chain: tuple[AnvilNode, VaultHarness],
    repo: SqlChainStore,
    client_for: Callable[..., RpcClient],
) -> None:
    import asyncio

    node, h = busy_chain
    s = fault_settings(node, h, (node.url,), chain_id=1)
    ix = ChainIndexer(s, client_for(s), repo)
    await asyncio.wait_for(ix.run(asyncio.Event()), 5)
    assert ix.status.fatal and "expected 1" in (ix.status.fatal_reason or "")
    cp = await repo.load_checkpoint("c")
    assert cp is not None and cp.fatal_reason == ix.status.fatal_reason


@pytest.mark.parametrize("lag", [2, 10])
async def test_a_lagging_only_endpoint_never_triggers_a_rollback(
    lag: int,
    busy_chain: tuple[AnvilNode, VaultHarness],
    repo: SqlChainStore,
    proxies: Callable[..., Awaitable[FaultProxy]],
    client_for: Callable[..., RpcClient],
) -> None:
    node, h = busy_chain
    s = fault_settings(node, h, (node.url,), confirmations=4)
    await ChainIndexer(s, client_for(s), repo).sync_to_head()
    before = await stored_head(repo)
    # After a restart only a node `lag` blocks behind our tip is reachable.
    behind = await proxies(node.url, lag_blocks=lag)
    s2 = fault_settings(node, h, (behind.url,), confirmations=4)
    ix = ChainIndexer(s2, client_for(s2), repo)
    await ix.load()
    for _ in range(3):
        assert await ix.step() is False
    assert not ix.status.fatal and ix.status.reorgs == 0
    assert "below our indexed block" in (ix.status.last_error or "")
    # Ahead of the only visible head is "nothing to do", not a reorg.
    st = await ix.sync_to_head(max_idle_steps=3)
    assert not st.fatal and st.reorgs == 0 and st.indexed_block > st.head_block
    assert await stored_head(repo) == before
