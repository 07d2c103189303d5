"""A devnet per test module and a daemon per test, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from daemon_helpers import daemon_config

from aggregator.config import AppConfig, load_config
from aggregator.daemon import Daemon
from aggregator.store import Store
from devkit import manager


@pytest.fixture(scope="module")
def devnet_cfg(devnet: manager.DevnetState) -> AppConfig:
    return load_config(Path(devnet.root) / "config.toml")


@pytest.fixture
async def daemon(devnet_cfg: AppConfig, store: Store) -> AsyncIterator[Daemon]:
    """A started daemon over the module's devnet, with a fresh migrated store (per backend)."""
    d = Daemon(daemon_config(devnet_cfg, store.url), store=store)
    # Bounded: a start-up that hangs must fail the test with a traceback, not stall CI.
    await asyncio.wait_for(d.start(), 90)
    try:
        yield d
    finally:
        await d.stop()
