"""Chain fixtures: a vault system on real anvil nodes, plain or forked from another anvil."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from chains_env import ChainEnv, make_chain

from aggregator.store import Store
from aggregator.store.chain_repo import SqlChainStore
from chains.rpc import RpcClient
from chains.types import ChainSettings
from devkit.anvil import AnvilNode
from devkit.testing.faultproxy import FaultProxy


@pytest.fixture(params=["plain", "forked"])
def chain(request: pytest.FixtureRequest, anvil_factory: Callable[..., AnvilNode]) -> ChainEnv:
    return make_chain(anvil_factory, request.param)


@pytest.fixture
def repo(store: Store) -> SqlChainStore:
    return SqlChainStore(store)


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[[ChainSettings], RpcClient]]:
    clients: list[RpcClient] = []

    def make(settings: ChainSettings, **kw: object) -> RpcClient:
        c = RpcClient.from_settings(settings, **kw)
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.close()


@pytest.fixture
async def proxies() -> AsyncIterator[Callable[..., Awaitable[FaultProxy]]]:
    """Start fault proxies in front of a node; all stopped after the test."""
    started: list[FaultProxy] = []

    async def make(upstream: str, **modes: object) -> FaultProxy:
        p = await FaultProxy(upstream, **modes).start()  # type: ignore[arg-type]
        started.append(p)
        return p

    yield make
    for p in started:
        await p.stop()
