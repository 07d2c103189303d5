"""Position events of contracts/Markets.sol indexed beside the vault on a real anvil,
into a real store (SQLite and PostgreSQL): both finality views, idempotent replays,
and a reorg rolled back with the vault's events."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from web3 import Web3

from aggregator.store import Store
from aggregator.store.chain_repo import SqlChainStore
from aggregator.store.derivatives_repo import SqlDerivativeStore
from chains.contracts import contract, deploy
from chains.indexer import ChainIndexer
from chains.positions import FIXED, MarketsWatch, text_bytes32
from chains.rpc import RpcClient
from chains.types import ChainSettings
from devkit.anvil import AnvilNode
from devkit.testing.harness import DEPLOYER, KEEPER, USERS, VaultHarness

CONF = 3
ETH = text_bytes32("ETH-PERP")


class Env:
    def __init__(self, node: AnvilNode) -> None:
        self.node = node
        self.h = VaultHarness.deploy(node.url)
        self.w3 = Web3(Web3.HTTPProvider(node.url))
        self.address = deploy(self.w3, "Markets", DEPLOYER, sender=DEPLOYER)
        self.m = contract(self.w3, "Markets", self.address)
        self.tx(self.m.functions.setKeeper(KEEPER, True), DEPLOYER)
        self.tx(self.m.functions.listPerp(ETH), DEPLOYER)

    def tx(self, fn: Any, sender: str = KEEPER) -> None:
        r = self.w3.eth.wait_for_transaction_receipt(fn.transact({"from": sender}))
        assert r["status"] == 1

    def perp(self, user: str, size: float, price: float) -> None:
        self.tx(self.m.functions.setPerpPosition(user, ETH, int(size * FIXED), int(price * FIXED)))

    def option(self, user: str, size: float, strike: float = 3300.0, call: bool = True) -> None:
        und = text_bytes32("ETH")
        self.tx(
            self.m.functions.setOptionPosition(
                user, und, int(strike * FIXED), 2_000_000_000, call, int(size * FIXED)
            )
        )

    def settings(self) -> ChainSettings:
        return ChainSettings(
            name="c", chain_id=self.node.chain_id, rpc_urls=(self.node.url,), vault=self.h.vault,
            confirmations=CONF, start_block=self.h.deploy_block, block_time=0.05,
            max_log_range=4, rpc_timeout_s=2.0, rpc_rate_limit_per_s=10_000.0,
        )  # fmt: skip

    def onchain(self) -> dict[tuple[str, str], int]:
        out = {}
        for u in USERS:
            size = self.m.functions.perpOf(u, ETH).call()[0]
            if size:
                out[(u, "ETH-PERP")] = size
        return out


async def head_perps(repo: SqlDerivativeStore) -> dict[tuple[str, str], int]:
    return {
        (v.account, v.key): v.head.size
        for v in await repo.views("c")
        if v.kind == "perp" and v.head is not None and v.head.size
    }


@pytest.fixture
def env(anvil_factory: Callable[..., AnvilNode]) -> Env:
    return Env(anvil_factory(71009))


async def test_positions_indexed_with_finality_views(env: Env, store: Store) -> None:
    repo, chain_repo = SqlDerivativeStore(store), SqlChainStore(store)
    client = RpcClient.from_settings(env.settings())
    changed: list[set[str]] = []

    async def cb(chain: str, accounts: set[str]) -> None:
        changed.append(accounts)

    idx = ChainIndexer(
        env.settings(), client, chain_repo, on_accounts_changed=cb,
        markets=MarketsWatch(env.address, repo),
    )  # fmt: skip
    try:
        env.h.deposit(USERS[0], 10**18)
        env.perp(USERS[0], 2.5, 3000)
        env.option(USERS[1], -4.0)
        env.tx(env.m.functions.updateFunding(ETH, 7 * FIXED))
        await idx.sync_to_head()
        views = {(v.account, v.kind, v.key): v for v in await repo.views("c")}
        p = views[(USERS[0], "perp", "ETH-PERP")]
        assert p.head is not None and p.head.size == int(2.5 * FIXED)
        assert p.head.price == 3000 * FIXED
        assert p.confirmed is None  # not `confirmations` deep yet
        o = next(v for k, v in views.items() if k[1] == "option")
        assert o.account == USERS[1] and o.head is not None
        assert o.head.size == -4 * FIXED and o.head.underlying == "ETH" and o.head.is_call
        f = views[("0x0000000000000000000000000000000000000000", "funding", "ETH-PERP")]
        assert f.head is not None and f.head.funding == 7 * FIXED
        assert any(USERS[0] in c for c in changed) and any(USERS[1] in c for c in changed)
        # The vault's own events still flow as before.
        assert (await chain_repo.positions("c"))[0].head_amount == 10**18

        env.h.mine(CONF + 1)
        await idx.sync_to_head()
        views = {(v.account, v.kind, v.key): v for v in await repo.views("c")}
        assert views[(USERS[0], "perp", "ETH-PERP")].confirmed is not None
        # Re-applying already stored events is a no-op.
        before = await repo.events("c")
        await repo.apply_position_events("c", before)
        assert await repo.events("c") == before
        assert await head_perps(repo) == env.onchain()
    finally:
        await client.close()


async def test_reorg_rolls_back_position_events(env: Env, store: Store) -> None:
    repo, chain_repo = SqlDerivativeStore(store), SqlChainStore(store)
    client = RpcClient.from_settings(env.settings())
    idx = ChainIndexer(env.settings(), client, chain_repo, markets=MarketsWatch(env.address, repo))
    try:
        env.perp(USERS[0], 1.0, 3000)
        env.h.mine(CONF + 2)
        await idx.sync_to_head()
        snap = env.h.rpc("evm_snapshot")
        env.perp(USERS[0], 5.0, 3100)
        env.perp(USERS[2], -3.0, 3100)
        env.h.deposit(USERS[2], 10**18)
        await idx.sync_to_head()
        assert await head_perps(repo) == {(USERS[0], "ETH-PERP"): 5 * FIXED,
                                          (USERS[2], "ETH-PERP"): -3 * FIXED}  # fmt: skip
        # The other branch: those trades never happened, another one did.
        env.h.rpc("evm_revert", [snap])
        env.perp(USERS[1], 2.0, 2900)
        env.h.mine(2)
        await idx.sync_to_head()
        assert idx.status.reorgs == 1
        assert (
            await head_perps(repo)
            == env.onchain()
            == {
                (USERS[0], "ETH-PERP"): 1 * FIXED,
                (USERS[1], "ETH-PERP"): 2 * FIXED,
            }
        )
        assert all(p.head_amount == 0 for p in await chain_repo.positions("c"))
    finally:
        await client.close()
