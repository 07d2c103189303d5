"""Shared fixtures: real anvil chains on free loopback ports, and a store per backend."""

from __future__ import annotations

import os
import shutil
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from aggregator.store import Store
from devkit import manager
from devkit.anvil import AnvilNode

# No per-example deadline anywhere: the default 200 ms fails a property test on a
# shared 2-core box under load (test_pool_reader failed so in a run at load 10), and
# a test must not depend on the machine being fast. Each test keeps its own
# max_examples; pytest-timeout bounds a hung one.
settings.register_profile("shared-box", deadline=None)
settings.load_profile("shared-box")


def _sigterm(signum: int, frame: object) -> None:
    # A CI timeout sends SIGTERM: turn it into Ctrl-C so fixtures tear down and no
    # anvil or devnet process outlives the run.
    raise KeyboardInterrupt


def pytest_configure(config: pytest.Config) -> None:
    signal.signal(signal.SIGTERM, _sigterm)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-soak", action="store_true", help="run long soak tests (make soak)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-soak"):
        return
    skip = pytest.mark.skip(reason="soak test: run with `make soak`")
    for item in items:
        # The marker, not the keyword: every test under tests/soak/ has the keyword.
        if item.get_closest_marker("soak") is not None:
            item.add_marker(skip)


PG_URL = os.environ.get("AGG_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/agg_test")


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[manager.DevnetState]:
    """The whole devnet (origin, forked alpha, beta, gamma, exchange) in a temporary root
    with a copy of the repo's config.toml; one per test module."""
    root = tmp_path_factory.mktemp("devnet")
    shutil.copy(REPO / "config.toml", root / "config.toml")
    state = manager.up(root)
    try:
        yield state
    finally:
        manager.down(root)


@pytest.fixture
def anvil_factory() -> Iterator[Callable[..., AnvilNode]]:
    """Start any number of anvil nodes; every one is stopped after the test."""
    nodes: list[AnvilNode] = []

    def start(chain_id: int = 31337, **kwargs: object) -> AnvilNode:
        node = AnvilNode(chain_id=chain_id, **kwargs)  # type: ignore[arg-type]
        nodes.append(node)
        return node.start()

    yield start
    for node in reversed(nodes):
        node.stop()


@pytest.fixture
def anvil(anvil_factory: Callable[..., AnvilNode]) -> AnvilNode:
    return anvil_factory(31337)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[tuple[str, str | None]]:
    """(url, pg_schema): a fresh empty database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/agg.db", None  # type: ignore[str-bytes-safe]
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield PG_URL, schema
    # Dropped in a fresh engine: the test's own engine belongs to its event loop.
    import asyncio

    async def drop() -> None:
        engine = create_async_engine(PG_URL)
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await engine.dispose()

    asyncio.run(drop())


async def unmigrated_store(url: str, schema: str | None) -> Store:
    """A Store on `url`, in its own PostgreSQL schema (created here) when one is given;
    not migrated (the caller decides how far)."""
    if schema:
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        await engine.dispose()
    return Store(url, pg_schema=schema)


@pytest.fixture
async def store(store_url: tuple[str, str | None]) -> AsyncIterator[Store]:
    """A migrated store on SQLite and on PostgreSQL (the test runs once per backend)."""
    url, schema = store_url
    s = await unmigrated_store(url, schema)
    await s.upgrade()
    yield s
    await s.close()
