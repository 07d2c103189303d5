"""A daemon on the devnet for integration tests: the devnet root's config.toml with a
fresh SQLite store, the API on any free port and the test's section overrides; started
within 90 s and stopped on exit, whatever the test did."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aggregator.config import ApiConfig, AppConfig, StoreConfig, load_config
from aggregator.daemon import Daemon
from devkit.manager import DevnetState

START_TIMEOUT_S = 90


def devnet_config(
    devnet: DevnetState, db_dir: Path, edit: Callable[[AppConfig], dict[str, Any]] | None = None
) -> AppConfig:
    """The devnet's config with its store in `db_dir` and the API on any port; `edit`
    returns more top-level updates from the loaded config (e.g. a faster pusher)."""
    base = load_config(Path(devnet.root) / "config.toml")
    update: dict[str, Any] = {
        "store": StoreConfig(url=f"sqlite+aiosqlite:///{db_dir}/agg.db"),
        "api": ApiConfig(port=0),
    }
    if edit is not None:
        update.update(edit(base))
    return base.model_copy(update=update)


@asynccontextmanager
async def running(cfg: AppConfig) -> AsyncIterator[Daemon]:
    d = Daemon(cfg)
    await asyncio.wait_for(d.start(), START_TIMEOUT_S)
    try:
        yield d
    finally:
        await d.stop()
