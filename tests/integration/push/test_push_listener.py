"""The incremental listener on a real anvil: after one full read it follows the
registry's logs and reads only the slots they make uncertain, and it still sees
every kind of change (our batches, someone else's batch, the vault consuming credit,
a batch of ours that left the chain)."""

from __future__ import annotations

from typing import Any

from push_env import client, entry_of, keeper_key, sender, step_until

from aggregator.store.push_repo import SqlPushStore
from chains.pusher.listener import RegistryListener
from chains.registry_codec import RegistryEntry
from chains.rpc import RpcClient
from devkit.anvil import AnvilNode
from devkit.testing.harness import USERS, VaultHarness

OTHERS = [f"0x{i:040x}" for i in range(0x1000, 0x1000 + 250)]


def calls(rpc: RpcClient) -> int:
    return sum(s.requests for s in rpc.status())


async def test_follows_logs_and_reads_only_uncertain_slots(
    node: AnvilNode, harness: VaultHarness, push_store: SqlPushStore, clients: list[RpcClient]
) -> None:
    rpc = client(node.url, node.chain_id)
    clients.append(rpc)
    s = sender(node, harness, rpc, push_store, confirmations=1, batch_gas_budget=10_000_000)
    lis = RegistryListener("c", rpc, harness.registry, push_store, payload_of=s.payload_of)
    s.on_unmined = lambda rec: lis.invalidate(a for a, _ in rec.entries())
    # 1,250+ accounts: a full read would be 7 eth_calls of 200.
    idle = [f"0x{i:040x}" for i in range(0x5000, 0x5000 + 1000)]
    book = [u.lower() for u in USERS] + OTHERS + idle
    snap = await lis.refresh(book)
    assert snap.changed is None and lis.full_reads == 1
    assert all(e is None for e in snap.entries.values())

    # Nothing new on chain: no slot is read, whatever the book size.
    harness.mine()
    before = calls(rpc)
    snap = await lis.refresh([])
    assert snap.changed == frozenset() and lis.full_reads == 1
    assert calls(rpc) - before <= 4  # head (+ a health probe), logs, timestamp

    # Our own batch: its entries come from the payload we sent, not from reads.
    ts = int(harness.rpc("eth_getBlockByNumber", ["latest", False])["timestamp"], 16) + 1
    ours = [(a, RegistryEntry(10**9 + i, 1_500_000_000, ts, 0)) for i, a in enumerate(OTHERS)]
    await s.send_batch(ours)
    await step_until(s, lambda: not s.records, node=node)
    snap = await lis.refresh([])
    assert {a: snap.entries[a] for a, _ in ours} == dict(ours)
    assert snap.changed == frozenset(a for a, _ in ours)
    assert lis.full_reads == 1

    # Someone else's batch (the keeper key used outside this process): decoded from
    # the transaction's calldata and checked against batchHash.
    user = USERS[0]
    harness.grant(user, credit_usd6=5_000 * 10**6, tier=0)
    snap = await lis.refresh([])
    assert snap.entries[user.lower()] == entry_of(harness, user)
    assert snap.entries[user.lower()] is not None

    # The vault consumes credit on a borrow: CreditConsumed makes that slot re-read.
    harness.borrow(user, 1_000 * 10**6)
    snap = await lis.refresh([])
    got = snap.entries[user.lower()]
    assert got == entry_of(harness, user)
    assert got is not None and got.credit_usd6 < 5_000 * 10**6

    # A new account of the book is read once.
    new = USERS[1].lower()
    harness.grant(USERS[1], credit_usd6=7, tier=0)
    snap = await lis.refresh([new])
    assert snap.entries[new] == entry_of(harness, USERS[1])

    # Invalidated accounts (a batch of ours that left the chain) are read again even
    # with no log about them: here the slot is changed behind the listener's back.
    key = OTHERS[0]
    harness.rpc("anvil_setStorageAt", [harness.registry, _slot_key(key), "0x" + "00" * 32])
    snap = await lis.refresh([])
    assert snap.entries[key] is not None  # not seen: no log said so
    lis.invalidate([key])
    snap = await lis.refresh([])
    assert snap.entries[key] is None
    assert lis.full_reads == 1


async def test_undecodable_foreign_batch_forces_a_full_read(
    node: AnvilNode, harness: VaultHarness, push_store: SqlPushStore, clients: list[RpcClient]
) -> None:
    rpc = client(node.url, node.chain_id)
    clients.append(rpc)
    lis = RegistryListener("c", rpc, harness.registry, push_store)
    await lis.refresh([u.lower() for u in USERS])
    harness.grant(USERS[2], credit_usd6=9, tier=0)

    async def no_tx(method: str, params: list[Any], **kw: Any) -> Any:
        if method == "eth_getTransactionByHash":
            return None  # e.g. a node that pruned it, or a call through a multisig
        return await original(method, params, **kw)

    original = rpc.request
    rpc.request = no_tx  # type: ignore[method-assign]
    snap = await lis.refresh([])
    assert lis.full_reads == 2
    assert snap.entries[USERS[2].lower()] == entry_of(harness, USERS[2])


def _slot_key(account: str) -> str:
    from eth_abi import encode
    from eth_utils import keccak

    return "0x" + keccak(encode(["address", "uint256"], [account, 1])).hex()


def test_keeper_key_is_the_harness_keeper() -> None:
    from devkit.testing.harness import KEEPER

    assert keeper_key().address.lower() == KEEPER.lower()
