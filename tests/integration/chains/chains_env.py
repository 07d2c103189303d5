"""Chain test environments: a vault on real anvil nodes, plain or forked from another anvil."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aggregator.store.chain_repo import SqlChainStore
from chains.types import ChainSettings
from devkit.anvil import AnvilNode
from devkit.testing.harness import USERS, VaultHarness


@dataclass
class ChainEnv:
    kind: str
    node: AnvilNode
    harness: VaultHarness
    origin: VaultHarness | None = None

    def settings(self, name: str = "c", **kw: object) -> ChainSettings:
        base: dict[str, object] = {
            "name": name,
            "chain_id": self.node.chain_id,
            "rpc_urls": (self.node.url,),
            "vault": self.harness.vault,
            "confirmations": 3,
            "start_block": self.harness.deploy_block,
            "block_time": 0.05,
            "max_log_range": 25,
            # Wide: a forked node answers pre-fork reads through its origin, and on a
            # loaded 2-core CI machine one stalled for over 6 s (three 2-s timeouts in
            # a row). These tests check what is indexed, not how fast; the fault tests
            # use `fault_settings`' short timeouts on purpose.
            "rpc_timeout_s": 10.0,
            "rpc_rate_limit_per_s": 10_000.0,
        }
        base.update(kw)
        return ChainSettings(**base)  # type: ignore[arg-type]


def make_chain(
    anvil_factory: Callable[..., AnvilNode], kind: str, chain_id: int = 71001
) -> ChainEnv:
    if kind == "plain":
        node = anvil_factory(chain_id)
        return ChainEnv(kind, node, VaultHarness.deploy(node.url))
    # Like the devnet: contracts and some history exist on origin before the fork,
    # so the fork's early events must come from origin through anvil's fork backend.
    origin_node = anvil_factory(chain_id - 1000)
    origin = VaultHarness.deploy(origin_node.url)
    origin.deposit(USERS[0], 5 * 10**18)
    origin.deposit(USERS[1], 3 * 10**18)
    origin.grant(USERS[1])
    origin.borrow(USERS[1], 200 * 10**6)
    node = anvil_factory(chain_id, fork_url=origin_node.url)
    return ChainEnv(kind, node, origin.at(node.url), origin)


async def stored_head(repo: SqlChainStore, chain: str = "c") -> dict[tuple[str, str, str], int]:
    return {
        (p.account, p.token, p.kind): p.head_amount
        for p in await repo.positions(chain)
        if p.head_amount
    }


def fault_settings(
    node: AnvilNode, h: VaultHarness, urls: tuple[str, ...], **kw: object
) -> ChainSettings:
    """Settings for a vault behind fault proxies: short spans, so faults show up within
    a test's few hundred blocks. The RPC timeout is wide (a 0.3-s one failed a range
    test on a loaded CI machine); a test that injects delays passes its own."""
    base: dict[str, object] = {
        "name": "c",
        "chain_id": node.chain_id,
        "rpc_urls": urls,
        "vault": h.vault,
        "confirmations": 2,
        "start_block": h.deploy_block,
        "block_time": 0.01,
        "max_log_range": 8,
        "rpc_timeout_s": 5.0,
        "rpc_rate_limit_per_s": 10_000.0,
    }
    base.update(kw)
    return ChainSettings(**base)  # type: ignore[arg-type]
