"""Soak: devnet + market simulator + daemon for AGG_SOAK_S seconds (default 600).

Every 30 s, for every demo account, the daemon's positions must equal the vaults'
(read at the indexed block's neighbourhood, so only when all chains are caught up),
no supervised task or job may have failed, and the process RSS may not keep growing.
Run with `make soak`.
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import time
from pathlib import Path

import pytest

from aggregator.config import ApiConfig, AppConfig, StoreConfig, load_config
from aggregator.daemon import Daemon
from aggregator.devnet import manager
from aggregator.devnet.deploy import web3_session
from aggregator.devnet.simulator import SimulatorStats, run_simulator
from chains.contracts import contract

REPO = Path(__file__).resolve().parents[2]
SOAK_S = float(os.environ.get("AGG_SOAK_S", "600"))

pytestmark = [pytest.mark.soak, pytest.mark.timeout(int(SOAK_S) + 300)]


def onchain(
    state: manager.DevnetState, cfg: AppConfig, account: str
) -> dict[tuple[str, str, str], int]:
    out: dict[tuple[str, str, str], int] = {}
    for c in cfg.chains:
        with web3_session(state.url(c.name)) as w3:
            vault = contract(w3, "CollateralVault", c.contracts.vault)
            for a in cfg.assets:
                for side, fn in (
                    ("collateral", vault.functions.collateralOf),
                    ("debt", vault.functions.debtOf),
                ):
                    v = int(fn(account, a.tokens[c.name]).call())
                    if v:
                        out[(c.name, a.symbol, side)] = v
    return out


def daemon_positions(daemon: Daemon, user: str) -> dict[tuple[str, str, str], int]:
    view = daemon.account_detail(user)
    assert view is not None
    return {
        (ch, r["asset"], r["side"]): int(r["head"])
        for ch, rows in view["positions"].items()
        for r in rows
        if int(r["head"])
    }


async def test_soak(tmp_path: Path) -> None:
    shutil.copy(REPO / "config.toml", tmp_path / "config.toml")
    state = await asyncio.to_thread(manager.up, tmp_path)
    stop = asyncio.Event()
    stats = SimulatorStats()
    try:
        cfg = load_config(tmp_path / "config.toml")
        cfg = cfg.model_copy(
            update={
                "store": StoreConfig(url=f"sqlite+aiosqlite:///{tmp_path}/soak.db"),
                "api": ApiConfig(port=0),
            }
        )
        daemon = Daemon(cfg)
        await daemon.start()
        sim = asyncio.create_task(run_simulator(state, stop, seed=7, stats=stats))
        rss: list[int] = []
        checks = 0
        deadline = time.monotonic() + SOAK_S
        try:
            while time.monotonic() < deadline:
                await asyncio.sleep(30)
                assert not sim.done(), sim.exception()
                assert daemon.supervisor.unhealthy() == []
                assert not [r for r in daemon.jobs.unhealthy() if "failures in a row" in r]
                assert not any(ix.status.fatal for ix in daemon.indexers.values())
                rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
                if not all(ix.status.caught_up for ix in daemon.indexers.values()):
                    continue
                for user in state.accounts["users"]:
                    # The chain may move between the two reads: a difference must be
                    # gone within a few blocks, so only a persistent one fails.
                    for _ in range(4):
                        want = await asyncio.to_thread(onchain, state, cfg, user)
                        got = daemon_positions(daemon, user)
                        if got == want:
                            break
                        await asyncio.sleep(3)
                    assert got == want, user
                    checks += 1
        finally:
            stop.set()
            sim.cancel()
            await daemon.stop()
        assert checks > 0
        # Peak RSS may rise while caches warm up; after the first third it must level off.
        third = len(rss) // 3
        if third:
            assert rss[-1] <= rss[third] * 1.25, rss
        print(
            f"soak: {SOAK_S:.0f}s, {stats.ticks} simulator ticks, {checks} account checks, "
            f"peak RSS {rss[-1] / 1024:.0f} MB"
        )
    finally:
        await asyncio.to_thread(manager.down, tmp_path)
