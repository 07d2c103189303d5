"""Pusher fixtures: a registry + vault on a real anvil, RPC clients closed after the test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from aggregator.store import Store
from aggregator.store.push_repo import SqlPushStore
from chains.rpc import RpcClient
from devkit.anvil import AnvilNode
from devkit.testing.harness import VaultHarness


@pytest.fixture
def node(anvil_factory: Callable[..., AnvilNode]) -> AnvilNode:
    return anvil_factory(71101)


@pytest.fixture
def harness(node: AnvilNode) -> VaultHarness:
    return VaultHarness.deploy(node.url)


@pytest.fixture
async def sqlite_store(tmp_path: Any) -> AsyncIterator[Store]:
    """SQLite only, for tests whose subject is not the store."""
    s = Store(f"sqlite+aiosqlite:///{tmp_path}/push.db")
    await s.upgrade()
    yield s
    await s.close()


@pytest.fixture
def push_store(sqlite_store: Store) -> SqlPushStore:
    return SqlPushStore(sqlite_store)


@pytest.fixture
async def clients() -> AsyncIterator[list[RpcClient]]:
    made: list[RpcClient] = []
    yield made
    for c in made:
        await c.close()
