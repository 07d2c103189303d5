"""ChainSender on real anvil: send + confirm, crash points, stuck replacement, reorg,
restart reconciliation and classified node errors."""

from __future__ import annotations

import asyncio
import math

import pytest
from push_env import (
    Crash,
    FakeClock,
    chain_time,
    client,
    entry_of,
    keeper_txs,
    nonce_of,
    sender,
    step_until,
)

from aggregator.cluster.lease import Fence, FencedOut
from aggregator.store import Store
from aggregator.store.push_repo import SqlPushStore
from chains.pusher.errors import BatchTooLarge, PushError
from chains.pusher.keys import key_from_hex
from chains.pusher.sender import ChainSender, EstimatedBatch, SenderHooks
from chains.pusher.types import TxRecord
from chains.registry_codec import RegistryEntry
from chains.rpc import RpcClient, RpcUnavailable
from devkit.anvil import AnvilNode
from devkit.testing.faultproxy import FaultProxy
from devkit.testing.harness import DEPLOYER, KEEPER, USERS, VaultHarness, _call

pytestmark = pytest.mark.timeout(120)


def _entries(
    h: VaultHarness, n: int = 2, credit: int = 1_000_000
) -> list[tuple[str, RegistryEntry]]:
    ts = chain_time(h)
    return [(USERS[i], RegistryEntry(credit * (i + 1), 1_500_000_000, ts, 0)) for i in range(n)]


def _manual_mining(chain_id: int, anvil_factory: object) -> tuple[AnvilNode, VaultHarness]:
    """A fresh chain with the vault deployed, mining only when the test says so."""
    node: AnvilNode = anvil_factory(chain_id)  # type: ignore[operator]
    h = VaultHarness.deploy(node.url)
    h.rpc("evm_setAutomine", [False])
    return node, h


async def test_batch_is_persisted_sent_mined_and_confirmed(
    node: AnvilNode, harness: VaultHarness, push_store: SqlPushStore, clients: list[RpcClient]
) -> None:
    rpc = client(node.url, node.chain_id)
    clients.append(rpc)
    s = sender(node, harness, rpc, push_store, confirmations=2)
    start_nonce = nonce_of(harness)
    entries = _entries(harness)
    rec = await s.send_batch(entries)
    assert rec.status == "sent" and rec.nonce == start_nonce
    stored = await push_store.open_txs("c", KEEPER)
    assert [r.tx_hash for r in stored] == [rec.tx_hash]
    await step_until(s, lambda: not s.records, node=node)
    assert [r.status for r in await push_store.recent_txs("c")] == ["confirmed"]
    for account, entry in entries:
        assert entry_of(harness, account) == entry
    assert nonce_of(harness) == start_nonce + 1
    assert s.status.confirmed_total == 1 and s.status.gas_used_total > 0
    assert s.nonces.next_nonce == start_nonce + 1


@pytest.mark.parametrize("point", ["after_persist", "after_broadcast"])
async def test_crash_then_restart_loses_nothing_and_never_conflicts(
    point: str,
    node: AnvilNode,
    harness: VaultHarness,
    store: Store,
    clients: list[RpcClient],
) -> None:
    """Crash between persist and broadcast, and between broadcast and receipt (on SQLite
    and PostgreSQL): a new sender over the same store gets the update mined at the same
    nonce, exactly once, then carries on at the next nonce."""
    repo = SqlPushStore(store)
    rpc = client(node.url, node.chain_id)
    clients.append(rpc)

    def crash(_: object) -> None:
        raise Crash(point)

    hooks = SenderHooks(**{point: crash})  # type: ignore[arg-type]
    s1 = sender(node, harness, rpc, repo, hooks=hooks, confirmations=1)
    start_block = harness.block_number()
    start_nonce = nonce_of(harness)
    entries = _entries(harness)
    with pytest.raises(Crash):
        await s1.send_batch(entries)
    if point == "after_persist":
        assert nonce_of(harness) == start_nonce  # never broadcast
        assert entry_of(harness, USERS[0]) is None
    else:
        assert nonce_of(harness) == start_nonce + 1  # automine: mined, receipt not seen

    # "Restart": a new sender from the same store, nothing carried over in memory.
    s2 = sender(node, harness, rpc, repo, confirmations=1)
    await s2.reconcile()
    assert s2.nonces.next_nonce == start_nonce + 1
    await step_until(s2, lambda: not s2.records, node=node)
    for account, entry in entries:
        assert entry_of(harness, account) == entry
    txs = keeper_txs(harness, start_block)
    assert [int(t["nonce"], 16) for t in txs] == [start_nonce]
    records = await repo.recent_txs("c")
    assert [(r.nonce, r.status, len(r.hashes)) for r in records] == [(start_nonce, "confirmed", 1)]
    # The next batch takes the next nonce.
    nxt = await s2.send_batch(_entries(harness, 1, credit=7))
    assert nxt.nonce == start_nonce + 1


async def test_crash_inside_broadcast_is_already_known_on_restart(
    anvil_factory: object, push_store: SqlPushStore, clients: list[RpcClient]
) -> None:
    """The node got the bytes but the process died before recording it: the restart
    rebroadcasts the same bytes, the node says "already known", nothing new is signed."""
    node, h = _manual_mining(71102, anvil_factory)
    rpc = client(node.url, node.chain_id)
    clients.append(rpc)

    def broadcast_then_crash(rec: object) -> None:
        h.rpc("eth_sendRawTransaction", ["0x" + rec.raw_tx.hex()])  # type: ignore[attr-defined]
        raise Crash("inside broadcast")

    s1 = sender(node, h, rpc, push_store, hooks=SenderHooks(after_persist=broadcast_then_crash))
    with pytest.raises(Crash):
        await s1.send_batch(_entries(h, 1))
    s2 = sender(node, h, rpc, push_store, confirmations=1)
    await s2.step()
    (rec,) = s2.open_records()
    assert rec.status == "sent" and len(rec.hashes) == 1
    assert nonce_of(h, tag="pending") == 1 + nonce_of(h)
    node.mine()
    await step_until(s2, lambda: not s2.records, node=node)
    assert entry_of(h, USERS[0]) is not None


async def test_stuck_transaction_is_replaced_with_both_fees_bumped(
    anvil_factory: object, push_store: SqlPushStore, clients: list[RpcClient]
) -> None:
    node, h = _manual_mining(71103, anvil_factory)
    rpc = client(node.url, node.chain_id)
    clients.append(rpc)
    clock = FakeClock()
    s = sender(node, h, rpc, push_store, clock=clock, stuck_after_s=10, confirmations=1)
    start_nonce = nonce_of(h)
    start_block = h.block_number()
    rec = await s.send_batch(_entries(h, 1))
    first = h.rpc("eth_getTransactionByHash", [rec.tx_hash])
    await s.step()
    assert len(rec.hashes) == 1  # not stuck yet
    clock.advance(11)
    await s.step()
    assert len(rec.hashes) == 2 and rec.replacements == 1
    second = h.rpc("eth_getTransactionByHash", [rec.hashes[1]])
    for fee in ("maxFeePerGas", "maxPriorityFeePerGas"):
        assert int(second[fee], 16) * 1000 >= int(first[fee], 16) * 1125, fee
    assert int(second["nonce"], 16) == int(first["nonce"], 16) == start_nonce
    # The replacement is what the pool holds: mining includes exactly one of them.
    node.mine()
    await step_until(s, lambda: not s.records, node=node)
    txs = keeper_txs(h, start_block)
    assert [(t["hash"], int(t["nonce"], 16)) for t in txs] == [(rec.hashes[1], start_nonce)]
    assert nonce_of(h) == start_nonce + 1
    (final,) = await push_store.recent_txs("c")
    assert final.mined_hash == rec.hashes[1] and final.hashes == rec.hashes
    # The store holds the replacement's bytes (written with its hash, not the first's).
    assert final.raw_tx == rec.raw_tx != bytes.fromhex(first["input"][2:])


async def test_replacement_stops_at_the_fee_cap(
    anvil_factory: object, push_store: SqlPushStore, clients: list[RpcClient]
) -> None:
    node, h = _manual_mining(71104, anvil_factory)
    rpc = client(node.url, node.chain_id)
    clients.append(rpc)
    clock = FakeClock()
    base = int(h.rpc("eth_getBlockByNumber", ["latest", False])["baseFeePerGas"], 16)
    cap = 2 * base + 10**7  # what the first send asks for: no room to bump
    s = sender(node, h, rpc, push_store, clock=clock, stuck_after_s=1, max_fee_wei=cap)
    rec = await s.send_batch(_entries(h, 1))
    assert rec.max_fee <= cap
    for _ in range(3):
        clock.advance(2)
        await s.step()
    assert len(rec.hashes) == 1 and s.status.at_fee_cap
    assert max(rec.max_fee, rec.priority_fee) <= cap


async def test_reorg_that_drops_a_mined_update_requeues_it(
    node: AnvilNode, harness: VaultHarness, push_store: SqlPushStore, clients: list[RpcClient]
) -> None:
    rpc = client(node.url, node.chain_id)
    clients.append(rpc)
    s = sender(node, harness, rpc, push_store, confirmations=4)
    snap = harness.rpc("evm_snapshot")
    entries = _entries(harness, 1)
    rec = await s.send_batch(entries)
    await s.step()
    assert rec.status == "mined"
    assert entry_of(harness, USERS[0]) == entries[0][1]
    harness.rpc("evm_revert", [snap])  # the block with our update is gone
    assert entry_of(harness, USERS[0]) is None
    await s.step()
    assert rec.reorgs == 1 and rec.status in ("sent", "mined")
    await step_until(s, lambda: not s.records, node=node)
    assert entry_of(harness, USERS[0]) == entries[0][1]
    assert s.status.reorgs_total == 1


async def test_update_is_final_only_below_the_reorg_window(
    anvil_factory: object, push_store: SqlPushStore, clients: list[RpcClient]
) -> None:
    """confirmations = 2: a reorg of depth 2 is inside the window, so an update with
    only its own block and one more on top is not final yet; when that reorg comes, the
    update is re-queued, not lost behind a "confirmed" record (a nonce gap the soak hit)."""
    node, h = _manual_mining(71107, anvil_factory)
    rpc = client(node.url, node.chain_id)
    clients.append(rpc)
    s = sender(node, h, rpc, push_store, confirmations=2)
    rec = await s.send_batch(_entries(h, 1))
    node.mine()
    await s.step()
    assert rec.status == "mined"
    node.mine()  # two blocks, the update's own included
    await s.step()
    assert rec.status == "mined", "final while a reorg in the window can still remove it"
    h.rpc("anvil_reorg", [2, []])
    await s.step()
    assert rec.reorgs == 1 and rec.status == "sent"
    node.mine(3)
    await s.step()
    await s.step()
    assert rec.status == "confirmed"
    assert h.rpc("eth_getTransactionReceipt", [rec.tx_hash])["blockNumber"] == hex(rec.mined_block)


@pytest.mark.parametrize("how", ["reorged_before_receipt", "dropped_from_pool"])
async def test_sent_update_no_node_holds_is_sent_again_unchanged(
    how: str, anvil_factory: object, push_store: SqlPushStore, clients: list[RpcClient]
) -> None:
    """The soak found updates waiting the full stuck_after_s (and every later nonce with
    them) after a reorg dropped their block before the receipt was seen: a lost
    transaction goes out again, same bytes and hash, after rebroadcast_after_s."""
    node, h = _manual_mining(71106, anvil_factory)
    rpc = client(node.url, node.chain_id)
    clients.append(rpc)
    clock = FakeClock()
    s = sender(
        node,
        h,
        rpc,
        push_store,
        clock=clock,
        stuck_after_s=30,
        rebroadcast_after_s=6,
        confirmations=1,
    )
    start_nonce = nonce_of(h)
    snap = h.rpc("evm_snapshot")
    rec = await s.send_batch(_entries(h, 1))
    if how == "reorged_before_receipt":
        node.mine()
        assert h.rpc("eth_getTransactionReceipt", [rec.tx_hash]) is not None
        h.rpc("evm_revert", [snap])
        h.rpc("anvil_dropAllTransactions")  # a reorg drops what it does not re-include
    else:
        h.rpc("anvil_dropTransaction", [rec.tx_hash])
    assert h.rpc("eth_getTransactionByHash", [rec.tx_hash]) is None
    clock.advance(3)
    await s.step()
    assert s.status.rebroadcasts_total == 0  # too early: it may still be on its way
    clock.advance(4)
    await s.step()
    assert s.status.rebroadcasts_total == 1 and s.status.replacements_total == 0
    assert h.rpc("eth_getTransactionByHash", [rec.tx_hash]) is not None
    await s.step()
    assert s.status.rebroadcasts_total == 1  # the node holds it now: no second send
    node.mine()
    await step_until(s, lambda: not s.records, node=node)
    (final,) = await push_store.recent_txs("c")
    assert final.hashes == [rec.tx_hash] and final.mined_hash == rec.tx_hash
    assert nonce_of(h) == start_nonce + 1


async def test_failed_lookup_of_a_lost_update_resends_nothing_until_it_answers(
    anvil_factory: object, push_store: SqlPushStore, clients: list[RpcClient]
) -> None:
    """The rebroadcast check asks the node for the record's hashes: if that question
    fails, the cycle fails (visible like any RPC failure) and nothing is resent on a
    guess; once the node answers again, the lost update goes out unchanged."""
    node, h = _manual_mining(71108, anvil_factory)
    async with FaultProxy(node.url) as proxy:
        rpc = client(proxy.url, node.chain_id)
        clients.append(rpc)
        clock = FakeClock()
        s = sender(node, h, rpc, push_store, clock=clock, stuck_after_s=30, rebroadcast_after_s=6)
        rec = await s.send_batch(_entries(h, 1))
        h.rpc("anvil_dropTransaction", [rec.tx_hash])
        proxy.set(fail_methods=("eth_getTransactionByHash",))
        clock.advance(7)
        with pytest.raises(RpcUnavailable, match="eth_getTransactionByHash"):
            await s.step()
        assert proxy.stats["fail_method"] >= 1
        assert s.status.rebroadcasts_total == 0
        (stored,) = await push_store.open_txs("c", KEEPER)
        assert (stored.status, stored.hashes) == ("sent", [rec.tx_hash])
        assert h.rpc("eth_getTransactionByHash", [rec.tx_hash]) is None
        proxy.set(fail_methods=())
        await asyncio.sleep(0.5)  # the endpoint's short backoff after the 500s
        await s.step()
        assert s.status.rebroadcasts_total == 1 and s.status.replacements_total == 0
        assert h.rpc("eth_getTransactionByHash", [rec.tx_hash]) is not None
        node.mine()
        await step_until(s, lambda: not s.records, node=node)
        (final,) = await push_store.recent_txs("c")
        assert final.hashes == [rec.tx_hash] and final.mined_hash == rec.tx_hash


async def test_nonce_taken_in_a_block_a_reorg_can_remove_is_not_given_up(
    anvil_factory: object, push_store: SqlPushStore, clients: list[RpcClient]
) -> None:
    """Another transaction of the keeper key holds a record's nonce, but in a block a
    reorg may still replace: the record stays open. When the reorg removes that block,
    the record's own bytes fill the nonce. Dropping it on that glimpse (as before) left
    a nonce gap in the soak that stalled every later update on the chain. Once the
    other transaction is below the reorg window, the record is dropped."""
    node, h = _manual_mining(71109, anvil_factory)
    rpc = client(node.url, node.chain_id)
    clients.append(rpc)
    clock = FakeClock()

    def start() -> ChainSender:
        return sender(
            node,
            h,
            rpc,
            push_store,
            clock=clock,
            confirmations=2,
            stuck_after_s=30,
            rebroadcast_after_s=6,
        )

    s = start()

    def take_nonce(nonce: int) -> None:
        h.rpc("eth_sendTransaction", [{"from": KEEPER, "to": KEEPER, "nonce": hex(nonce)}])
        node.mine()

    snap = h.rpc("evm_snapshot")
    rec = await s.send_batch(_entries(h, 1))
    h.rpc("anvil_dropTransaction", [rec.tx_hash])
    take_nonce(rec.nonce)
    await s.step()
    assert s.status.dropped_total == 0 and [r.nonce for r in s.open_records()] == [rec.nonce]
    h.rpc("evm_revert", [snap])  # the other transaction's block is reorged away
    h.rpc("anvil_dropAllTransactions")
    clock.advance(7)
    await s.step()
    assert s.status.rebroadcasts_total == 1
    node.mine()
    await step_until(s, lambda: not s.records, node=node)
    (mined,) = await push_store.recent_txs("c")
    assert mined.status == "confirmed" and mined.mined_hash == rec.tx_hash

    rec2 = await s.send_batch(_entries(h, 1, credit=2_000_000))
    h.rpc("anvil_dropTransaction", [rec2.tx_hash])
    take_nonce(rec2.nonce)
    s = start()  # a restart: its reconciliation follows the same rule
    await s.step()
    assert s.status.dropped_total == 0  # one block on top: still inside the window
    node.mine()
    node.mine()
    await s.step()
    assert s.status.dropped_total == 1 and not s.records
    statuses = {r.nonce: r.status for r in await push_store.recent_txs("c")}
    assert statuses == {rec.nonce: "confirmed", rec2.nonce: "dropped"}


async def test_restart_never_reuses_a_nonce_pending_from_elsewhere(
    anvil_factory: object, push_store: SqlPushStore, clients: list[RpcClient]
) -> None:
    """A transaction from the same key that this daemon never recorded (another process)
    sits in the pool: reconciliation continues above it."""
    node, h = _manual_mining(71105, anvil_factory)
    start = nonce_of(h)
    h.rpc("eth_sendTransaction", [{"from": KEEPER, "to": KEEPER, "value": "0x1"}])
    rpc = client(node.url, node.chain_id)
    clients.append(rpc)
    s = sender(node, h, rpc, push_store, confirmations=1)
    await s.reconcile()
    assert s.nonces.next_nonce == start + 1
    rec = await s.send_batch(_entries(h, 1))
    assert rec.nonce == start + 1
    node.mine()
    await step_until(s, lambda: not s.records, node=node)


async def test_insufficient_funds_is_classified_and_recovers_at_the_same_nonce(
    node: AnvilNode, harness: VaultHarness, push_store: SqlPushStore, clients: list[RpcClient]
) -> None:
    poor = key_from_hex("0x" + "5a" * 32, "test")
    harness.send(
        DEPLOYER,
        harness.registry,
        _call("setKeeper(address,bool)", ["address", "bool"], [poor.address, True]),
    )
    rpc = client(node.url, node.chain_id)
    clients.append(rpc)
    s = sender(node, harness, rpc, push_store, key=poor, confirmations=1)
    with pytest.raises(PushError, match="insufficient_funds"):
        await s.send_batch(_entries(harness, 1))
    (rec,) = s.open_records()
    assert rec.status == "prepared" and rec.nonce == 0
    with pytest.raises(PushError):
        await s.step()  # still poor: the same bytes are refused again, nothing new signed
    harness.rpc("anvil_setBalance", [poor.address, hex(10**18)])
    await step_until(s, lambda: not s.records, node=node)
    assert entry_of(harness, USERS[0]) is not None
    assert nonce_of(harness, poor.address) == 1
    assert rec.hashes == [rec.tx_hash]


async def test_a_batch_that_would_revert_is_never_signed(
    node: AnvilNode, harness: VaultHarness, push_store: SqlPushStore, clients: list[RpcClient]
) -> None:
    stranger = key_from_hex("0x" + "6b" * 32, "test")  # not a keeper
    rpc = client(node.url, node.chain_id)
    clients.append(rpc)
    s = sender(node, harness, rpc, push_store, key=stranger)
    with pytest.raises(PushError, match="NotKeeper"):
        await s.send_batch(_entries(harness, 1))
    assert await push_store.recent_txs("c") == []
    assert s.nonces.next_nonce == 0


async def test_a_gas_bound_is_proven_by_one_call_and_a_short_one_is_estimated(
    node: AnvilNode, harness: VaultHarness, push_store: SqlPushStore, clients: list[RpcClient]
) -> None:
    """A caller's gas bound that the batch runs within is taken after one eth_call (no
    eth_estimateGas); a bound the batch does not run within falls back to the estimate;
    a batch that reverts is never signed, with or without a bound."""
    rpc = client(node.url, node.chain_id)
    clients.append(rpc)
    s = sender(node, harness, rpc, push_store, confirmations=1)
    entries = _entries(harness, 3)
    exact = (await s.estimate_batch(entries)).estimate
    estimates = 0
    estimate_gas = s.estimate_gas

    async def counted(data: bytes) -> int:
        nonlocal estimates
        estimates += 1
        return await estimate_gas(data)

    s.estimate_gas = counted  # type: ignore[method-assign]
    bound = exact + 50_000
    priced = await s.estimate_batch(entries, bound)
    assert (priced.estimate, estimates) == (bound, 0)
    short = await s.estimate_batch(entries, exact // 2)  # out of gas at the bound
    assert (short.estimate, estimates) == (exact, 1)
    rec = await s.send_estimated(priced)
    assert rec.gas_limit == math.ceil(bound * 1.2)  # gas_headroom over the proven bound
    await step_until(s, lambda: not s.records, node=node)
    for account, entry in entries:
        assert entry_of(harness, account) == entry
    stranger = sender(node, harness, rpc, push_store, key=key_from_hex("0x" + "6b" * 32, "t"))
    with pytest.raises(PushError, match="NotKeeper"):
        await stranger.estimate_batch(entries, bound)
    assert [r.nonce for r in await push_store.recent_txs("c")] == [rec.nonce]


async def test_a_replacement_written_by_a_restarted_store_is_what_is_stored(
    node: AnvilNode, harness: VaultHarness, store: Store, clients: list[RpcClient]
) -> None:
    """update_tx skips the signed bytes only when this object wrote them under the same
    hash: a store object that did not (after a restart) writes them on its first update,
    and a replacement is always written (SQLite and PostgreSQL)."""
    rpc = client(node.url, node.chain_id)
    clients.append(rpc)
    harness.rpc("evm_setAutomine", [False])
    s = sender(node, harness, rpc, SqlPushStore(store), confirmations=1)
    rec = await s.send_batch(_entries(harness, 1))
    restarted = SqlPushStore(store)
    rec.raw_tx, rec.tx_hash = b"\x02" + b"\x11" * 40, "0x" + "ab" * 32
    rec.hashes.append(rec.tx_hash)
    await restarted.update_tx(rec)
    (stored,) = await SqlPushStore(store).open_txs("c", KEEPER)
    assert (stored.raw_tx, stored.tx_hash) == (rec.raw_tx, rec.tx_hash)
    rec.status = "mined"  # a later change with the same bytes keeps them
    await restarted.update_tx(rec)
    (stored,) = await SqlPushStore(store).open_txs("c", KEEPER)
    assert (stored.status, stored.raw_tx) == ("mined", rec.raw_tx)


def _cycle_batches(h: VaultHarness, n: int = 3) -> list[list[tuple[str, RegistryEntry]]]:
    ts = chain_time(h)
    return [[(USERS[i], RegistryEntry(1_000 * (i + 1), 1_400_000_000, ts, 0))] for i in range(n)]


def assert_on_chain(h: VaultHarness, batches: list[list[tuple[str, RegistryEntry]]]) -> None:
    """Every entry of every batch is what the registry holds for its account."""
    for batch in batches:
        for account, entry in batch:
            assert entry_of(h, account) == entry


async def test_a_cycles_batches_are_all_stored_before_any_is_sent_then_go_in_nonce_order(
    anvil_factory: object, push_store: SqlPushStore, clients: list[RpcClient]
) -> None:
    node, h = _manual_mining(71111, anvil_factory)
    rpc = client(node.url, node.chain_id)
    clients.append(rpc)
    seen: list[tuple[int, int]] = []  # (records inserted, node's pending nonce) per insert
    start = nonce_of(h)
    s = sender(node, h, rpc, push_store, confirmations=1)
    stored_at_persist: list[int] = []
    insert_txs = push_store.insert_txs

    async def counting_insert(recs: list[TxRecord]) -> None:
        await insert_txs(recs)
        stored_at_persist.append(len(await push_store.open_txs("c", KEEPER)))
        seen.append((len(recs), nonce_of(h, tag="pending")))

    push_store.insert_txs = counting_insert  # type: ignore[method-assign]
    batches = _cycle_batches(h)
    priced = [await s.estimate_batch(b) for b in batches]
    recs = await s.send_estimated_many(priced, await s.fees())
    # One insert for the three records, before anything reached the node.
    assert seen == [(3, start)] and stored_at_persist == [3]
    assert [r.nonce for r in recs] == [start, start + 1, start + 2]
    assert [r.status for r in recs] == ["sent"] * 3
    assert nonce_of(h, tag="pending") == start + 3
    node.mine()
    await step_until(s, lambda: not s.records, node=node)
    assert [int(t["nonce"], 16) for t in keeper_txs(h, 0)][-3:] == [start, start + 1, start + 2]
    assert_on_chain(h, batches)


async def test_a_crash_after_a_cycles_records_are_stored_loses_none_of_them(
    anvil_factory: object, push_store: SqlPushStore, clients: list[RpcClient]
) -> None:
    node, h = _manual_mining(71112, anvil_factory)
    rpc = client(node.url, node.chain_id)
    clients.append(rpc)

    def crash(_: object) -> None:
        raise Crash("after_persist")

    start = nonce_of(h)
    start_block = h.block_number()
    s1 = sender(node, h, rpc, push_store, hooks=SenderHooks(after_persist=crash), confirmations=1)
    batches = _cycle_batches(h)
    priced = [await s1.estimate_batch(b) for b in batches]
    with pytest.raises(Crash):
        await s1.send_estimated_many(priced, await s1.fees())
    assert nonce_of(h, tag="pending") == start  # nothing broadcast
    s2 = sender(node, h, rpc, push_store, confirmations=1)
    await s2.reconcile()
    assert s2.nonces.next_nonce == start + 3
    await step_until(s2, lambda: not s2.records, node=node)
    txs = keeper_txs(h, start_block)
    assert sorted(int(t["nonce"], 16) for t in txs) == [start, start + 1, start + 2]
    assert_on_chain(h, batches)


async def test_a_broadcast_failing_mid_cycle_leaves_the_rest_stored_and_sent_later(
    anvil_factory: object, push_store: SqlPushStore, clients: list[RpcClient]
) -> None:
    node, h = _manual_mining(71113, anvil_factory)
    rpc = client(node.url, node.chain_id)
    clients.append(rpc)
    s = sender(node, h, rpc, push_store, confirmations=1)
    start = nonce_of(h)
    deliver = s.out.deliver
    calls = 0

    async def flaky(rec: TxRecord) -> bool:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise PushError("node unavailable")
        return await deliver(rec)

    s.out.deliver = flaky  # type: ignore[method-assign]
    batches = _cycle_batches(h)
    priced = [await s.estimate_batch(b) for b in batches]
    with pytest.raises(PushError, match="unavailable"):
        await s.send_estimated_many(priced, await s.fees())
    stored = await push_store.open_txs("c", KEEPER)
    assert [(r.nonce, r.status) for r in stored] == [
        (start, "sent"),
        (start + 1, "prepared"),
        (start + 2, "prepared"),
    ]
    s.out.deliver = deliver  # type: ignore[method-assign]
    await step_until(s, lambda: not s.records, node=node)
    assert_on_chain(h, batches)


async def test_a_cycle_over_budget_or_failing_to_store_signs_nothing_it_keeps(
    node: AnvilNode, harness: VaultHarness, sqlite_store: Store, clients: list[RpcClient]
) -> None:
    rpc = client(node.url, node.chain_id)
    clients.append(rpc)

    class Failing(SqlPushStore):
        async def insert_txs(self, recs: list[TxRecord]) -> None:
            raise OSError("disk full")

    s = sender(node, harness, rpc, Failing(sqlite_store), batch_gas_budget=200_000)
    await s.reconcile()
    start = s.nonces.next_nonce
    batches = _cycle_batches(harness)
    priced = [await s.estimate_batch(b) for b in batches]
    over = [*priced[:1], EstimatedBatch(1, priced[1].payload, priced[1].data, 300_000)]
    with pytest.raises(BatchTooLarge):
        await s.send_estimated_many(over, await s.fees())
    with pytest.raises(OSError, match="disk full"):
        await s.send_estimated_many(priced, await s.fees())
    assert s.nonces.next_nonce == start and not s.records
    assert nonce_of(harness, tag="pending") == start


async def _abandoned_gap(
    anvil_factory: object, chain_id: int, push_store: SqlPushStore, clients: list[RpcClient]
) -> tuple[AnvilNode, VaultHarness, ChainSender, FakeClock, int]:
    """Another process using the keeper key takes the next nonce, then abandons it (its
    transaction leaves the pool); our update sits above the hole."""
    node, h = _manual_mining(chain_id, anvil_factory)
    start = nonce_of(h)
    other = h.rpc("eth_sendTransaction", [{"from": KEEPER, "to": KEEPER, "value": "0x1"}])
    rpc = client(node.url, node.chain_id)
    clients.append(rpc)
    clock = FakeClock()
    s = sender(node, h, rpc, push_store, confirmations=1, clock=clock, gap_fill_after_s=60)
    rec = await s.send_batch(_entries(h, 1))
    assert rec.nonce == start + 1
    h.rpc("anvil_dropTransaction", [other])
    return node, h, s, clock, start


async def test_a_nonce_gap_left_by_another_process_is_filled_after_the_wait(
    anvil_factory: object, push_store: SqlPushStore, clients: list[RpcClient]
) -> None:
    node, h, s, clock, start = await _abandoned_gap(anvil_factory, 71106, push_store, clients)
    block0 = h.block_number()
    for _ in range(3):  # before the wait: nothing is filled, the update cannot mine
        await s.step()
        node.mine()
        clock.advance(15)
    assert nonce_of(h) == start and s.status.nonce_gap == [start, start]
    assert s.status.gap_fills_total == 0 and entry_of(h, USERS[0]) is None
    clock.advance(30)
    await step_until(s, lambda: not s.records, node=node)
    assert s.status.gap_fills_total == 1 and s.status.nonce_gap is None
    assert entry_of(h, USERS[0]) is not None and nonce_of(h) == start + 2
    filler = next(t for t in keeper_txs(h, block0) if int(str(t["nonce"]), 16) == start)
    assert filler["to"].lower() == KEEPER.lower() and int(str(filler["value"]), 16) == 0
    assert filler["input"] in ("0x", "0x0")


def _revocable_fence(store: Store) -> tuple[Fence, SqlPushStore]:
    """A push store fenced by a tenure that is current until the test revokes it (this
    test's store has no lease table)."""
    fence = Fence("push:c", "me", 1)
    real_check = fence.check

    async def alone_until_revoked(session: object) -> None:
        if fence.revoked.is_set():
            await real_check(session)  # type: ignore[arg-type]

    fence.check = alone_until_revoked  # type: ignore[method-assign]
    return fence, SqlPushStore(store, fence=fence)


async def test_an_instance_without_the_lease_never_fills_a_gap(
    anvil_factory: object, store: Store, clients: list[RpcClient]
) -> None:
    fence, fenced = _revocable_fence(store)
    node, h, s, clock, start = await _abandoned_gap(anvil_factory, 71107, fenced, clients)
    fence.revoked.set()  # another instance took the chain
    clock.advance(120)
    with pytest.raises(FencedOut):
        await s.step()
    node.mine()
    assert nonce_of(h) == start and s.status.gap_fills_total == 0


async def test_a_confirmed_update_a_deep_reorg_removed_is_sent_again_not_gap_filled(
    anvil_factory: object, push_store: SqlPushStore, clients: list[RpcClient]
) -> None:
    """The soak's beta stall: an update confirmed (its block below the window), then a
    reorg deeper than the window takes that block, and the updates above it wait on its
    nonce. The nonce is the record's own, so its bytes go again at once: no 60 s wait
    for a gap filler, no zero-value transfer in its place, and its entry lands."""
    node, h = _manual_mining(71108, anvil_factory)
    rpc = client(node.url, node.chain_id)
    clients.append(rpc)
    clock = FakeClock()
    s = sender(node, h, rpc, push_store, confirmations=1, clock=clock, gap_fill_after_s=60)
    start = nonce_of(h)
    first = _entries(h, 1)
    rec = await s.send_batch(first)
    node.mine()
    await s.step()
    node.mine()
    await s.step()
    assert rec.status == "confirmed" and rec.id not in s.records
    block0 = h.block_number()
    above = await s.send_batch(_entries(h, 2, credit=2_000_000)[1:])
    assert above.nonce == start + 1
    h.rpc("anvil_reorg", [3, []])  # deeper than the window: the confirmed block goes
    assert nonce_of(h) == start and entry_of(h, USERS[0]) is None
    await s.step()  # no clock advance: nothing may wait for gap_fill_after_s
    reopened = s.records[rec.id]  # read back from the store: not the object sent
    assert reopened.status == "sent" and reopened.reorgs == 1
    await step_until(s, lambda: not s.records, node=node)
    assert s.status.gap_fills_total == 0 and s.status.nonce_gap is None
    assert entry_of(h, USERS[0]) == first[0][1] and entry_of(h, USERS[1]) is not None
    assert nonce_of(h) == start + 2
    resent = [t for t in keeper_txs(h, block0 - 3) if int(str(t["nonce"]), 16) == start]
    assert [t["hash"] for t in resent] == [rec.tx_hash]


async def test_an_instance_without_the_lease_never_reopens_a_final_record(
    anvil_factory: object, store: Store, clients: list[RpcClient]
) -> None:
    """The re-open path writes the record before it sends its bytes: an instance that
    lost the chain is refused at that write, and neither the record nor the chain moves."""
    fence, fenced = _revocable_fence(store)
    node, h = _manual_mining(71109, anvil_factory)
    rpc = client(node.url, node.chain_id)
    clients.append(rpc)
    s = sender(node, h, rpc, fenced, confirmations=1, clock=FakeClock(), gap_fill_after_s=60)
    start = nonce_of(h)
    rec = await s.send_batch(_entries(h, 1))
    for _ in range(2):
        node.mine()
        await s.step()
    assert rec.status == "confirmed"
    await s.send_batch(_entries(h, 2, credit=2_000_000)[1:])
    h.rpc("anvil_reorg", [3, []])  # the confirmed block goes
    assert nonce_of(h) == start
    fence.revoked.set()  # another instance took the chain
    with pytest.raises(FencedOut):
        await s.step()
    node.mine()
    assert nonce_of(h) == start and s.status.gap_fills_total == 0
    (kept,) = await fenced.final_txs_at("c", KEEPER, range(start, start + 1))
    assert kept.status == "confirmed" and kept.reorgs == 0


async def test_a_filler_a_reorg_removed_is_sent_again_without_a_second_wait(
    anvil_factory: object, push_store: SqlPushStore, clients: list[RpcClient]
) -> None:
    """The wait is for the other process, once: after it, our filler and the update
    above it mine, then a reorg takes their block. The update is re-sent (its record),
    the filler is not persisted: the same nonce is a gap again, filled at once."""
    node, h, s, clock, start = await _abandoned_gap(anvil_factory, 71110, push_store, clients)
    await s.step()
    clock.advance(61)
    await s.step()  # the filler goes
    assert s.status.gap_fills_total == 1
    node.mine()
    assert nonce_of(h) == start + 2  # filler and update in one block
    await s.step()  # the gap is closed: the sender forgets it
    assert s.status.nonce_gap is None
    h.rpc("anvil_reorg", [1, []])
    assert nonce_of(h) == start and entry_of(h, USERS[0]) is None
    # The reorg dropped both transactions: the update's record goes again after
    # `rebroadcast_after_s` (6 s), far less than the 60 s a second wait would take.
    clock.advance(7)
    await step_until(s, lambda: not s.records and nonce_of(h) == start + 2, node=node)
    assert s.status.gap_fills_total == 2 and s.status.nonce_gap is None
    assert entry_of(h, USERS[0]) is not None
