"""The devnet end to end: up into a temporary root, the repo's config.toml plus the
generated include load and point at live contracts, the fork sees origin's history,
the simulator moves markets, and down leaves no process behind."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aggregator.config import AppConfig, load_config
from aggregator.devnet import manager
from aggregator.devnet.anvil import rpc_call
from aggregator.devnet.deploy import web3_session
from aggregator.devnet.simulator import MarketModel, SimulatorStats, run_simulator
from chains.contracts import contract

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[manager.DevnetState]:
    root = tmp_path_factory.mktemp("devnet")
    shutil.copy(REPO / "config.toml", root / "config.toml")
    state = manager.up(root)
    try:
        yield state
    finally:
        manager.down(root)


@pytest.fixture(scope="module")
def cfg(devnet: manager.DevnetState) -> AppConfig:
    return load_config(Path(devnet.root) / "config.toml")


def has_code(url: str, address: str) -> bool:
    return str(rpc_call(url, "eth_getCode", [address, "latest"])) not in ("0x", "0x0")


def test_files_are_where_documented(devnet: manager.DevnetState) -> None:
    data = Path(devnet.root) / "data" / "devnet"
    for name in ("state.json", "devnet.toml", "origin.log", "alpha.log", "beta.log", "gamma.log"):
        assert (data / name).is_file(), name
    for chain, node in devnet.nodes.items():
        assert (data / f"{chain}.pid").is_file()
        assert manager.pid_alive(node.pid)
    assert manager.load_state(Path(devnet.root)) == devnet


def test_config_loads_and_matches_the_running_chains(
    devnet: manager.DevnetState, cfg: AppConfig
) -> None:
    assert cfg.chain_names == ["alpha", "beta", "gamma"]
    for chain in cfg.chains:
        assert chain.rpc_urls == [devnet.url(chain.name)]
        assert int(str(rpc_call(chain.rpc_urls[0], "eth_chainId")), 16) == chain.chain_id
    assert cfg.chain("alpha").fork_url == devnet.url("origin")
    assert {a.symbol for a in cfg.assets} == {"USDC", "WBTC", "WETH", "wstETH", "rETH"}


def test_every_configured_address_has_code(cfg: AppConfig) -> None:
    urls = {c.name: c.rpc_urls[0] for c in cfg.chains}
    checked = 0
    for chain in cfg.chains:
        for addr in (chain.contracts.vault, chain.contracts.registry, chain.contracts.multicall):
            assert addr is not None and has_code(urls[chain.name], addr), (chain.name, addr)
            checked += 1
    for asset in cfg.assets:
        assert set(asset.tokens) == set(urls), asset.symbol
        for chain_name, token in asset.tokens.items():
            assert has_code(urls[chain_name], token), (asset.symbol, chain_name)
            checked += 1
        assert len(asset.sources) >= 2, asset.symbol
        for src in asset.sources:
            chain_name = src.chain  # type: ignore[union-attr]
            assert has_code(urls[chain_name], src.address), (asset.symbol, src.name)  # type: ignore[union-attr]
            checked += 1
        if asset.rate is not None:
            assert has_code(urls[asset.rate.chain], asset.rate.address)
            checked += 1
    # 3 chains x (vault, registry, multicall) + 5 assets x 3 tokens + 13 feeds + 2 rates
    assert checked == 9 + 15 + 13 + 2


def test_fork_sees_origin_deposits_made_before_the_fork(devnet: manager.DevnetState) -> None:
    dep = devnet.deployments["alpha"]
    user = devnet.accounts["users"][0]  # account 2: 10 WETH on origin
    with web3_session(devnet.url("alpha")) as w3:
        vault = contract(w3, "CollateralVault", dep.vault)
        assert vault.functions.collateralOf(user, dep.tokens["WETH"]).call() == 10 * 10**18
        logs = w3.eth.get_logs({"address": dep.vault, "fromBlock": 0, "toBlock": dep.block})
        assert len(logs) >= 4  # the seeded deposits, served from origin's history
        assert w3.eth.chain_id == 71001
    assert devnet.nodes["alpha"].fork_block == devnet.deployments["origin"].block


def test_seeded_borrows_and_cross_chain_positions(devnet: manager.DevnetState) -> None:
    users = devnet.accounts["users"]
    beta, gamma = devnet.deployments["beta"], devnet.deployments["gamma"]
    with web3_session(devnet.url("beta")) as w3:
        vault = contract(w3, "CollateralVault", beta.vault)
        assert vault.functions.debtOf(users[0], beta.tokens["USDC"]).call() == 15_000 * 10**6
        reg = contract(w3, "HealthRegistry", beta.registry)
        assert reg.functions.isKeeper(devnet.accounts["keeper"]).call()
        assert reg.functions.isConsumer(beta.vault).call()
    with web3_session(devnet.url("gamma")) as w3:
        vault = contract(w3, "CollateralVault", gamma.vault)
        # Account 4 borrowed WETH on gamma with no collateral there (cross-chain credit).
        assert vault.functions.debtOf(users[2], gamma.tokens["WETH"]).call() == 10 * 10**18
        assert vault.functions.collateralOf(users[2], gamma.tokens["wstETH"]).call() == 0
    assert beta.registry != gamma.registry  # different addresses per chain, on purpose


def test_indexed_chains_mine_on_their_own(devnet: manager.DevnetState) -> None:
    before = {
        c: int(str(rpc_call(devnet.url(c), "eth_blockNumber")), 16) for c in manager.INDEXED_CHAINS
    }
    time.sleep(2.2)
    for chain, head in before.items():
        assert int(str(rpc_call(devnet.url(chain), "eth_blockNumber")), 16) > head, chain


def test_status_reports_every_node(devnet: manager.DevnetState) -> None:
    st = manager.status(Path(devnet.root))
    assert st["running"] is True
    assert set(st["chains"]) == {"origin", "alpha", "beta", "gamma"}
    for info in st["chains"].values():
        assert info["alive"] and info["head"] is not None


def test_second_up_refuses_while_running(devnet: manager.DevnetState) -> None:
    with pytest.raises(manager.DevnetError, match="already running"):
        manager.up(Path(devnet.root))


async def test_simulator_moves_feeds_and_rates_on_every_chain(devnet: manager.DevnetState) -> None:
    def read() -> dict[str, tuple[int, int]]:
        out = {}
        for chain in manager.INDEXED_CHAINS:
            dep = devnet.deployments[chain]
            with web3_session(devnet.url(chain)) as w3:
                eth = (
                    contract(w3, "MockV3Aggregator", dep.feeds["WETH"])
                    .functions.latestAnswer()
                    .call()
                )
                rate = (
                    contract(w3, "MockWstETH", dep.tokens["wstETH"])
                    .functions.stEthPerToken()
                    .call()
                )
            out[chain] = (eth, rate)
        return out

    before = await asyncio.to_thread(read)
    model = MarketModel.initial(seed=3, shock_probability=1.0, shock_range=(0.2, 0.2))
    stats = SimulatorStats()
    await asyncio.wait_for(
        run_simulator(devnet, asyncio.Event(), 0.2, model=model, stats=stats, max_ticks=1), 20
    )
    after = await asyncio.to_thread(read)
    assert stats.errors == {}
    assert stats.events and "ETH shock -20.0%" in stats.events[0]
    for chain in manager.INDEXED_CHAINS:
        eth_before, rate_before = before[chain]
        eth_after, rate_after = after[chain]
        assert eth_after < eth_before * 0.85, chain  # the shock reached every chain
        assert rate_after > rate_before, chain


async def test_simulator_survives_a_dead_chain(devnet: manager.DevnetState) -> None:
    broken = manager.DevnetState.from_json(devnet.to_json())
    broken.nodes["gamma"].port = 1  # nothing listens there
    stats = SimulatorStats()
    await asyncio.wait_for(
        run_simulator(broken, asyncio.Event(), 0.2, seed=1, stats=stats, max_ticks=2), 20
    )
    assert stats.ticks == 2
    assert set(stats.errors) == {"gamma"}
    assert stats.transactions > 0  # alpha and beta still got their updates


def test_down_leaves_no_process(devnet: manager.DevnetState) -> None:
    root = Path(devnet.root)
    pids = [n.pid for n in devnet.nodes.values()]
    stopped = manager.down(root)
    assert sorted(stopped) == sorted(devnet.nodes)
    assert not any(manager.pid_alive(p) for p in pids)
    data = root / "data" / "devnet"
    assert not (data / "state.json").exists()
    assert not (data / "devnet.toml").exists()
    assert list(data.glob("*.pid")) == []
    assert manager.status(root)["running"] is False
    assert manager.down(root) == []  # idempotent


def test_failed_up_stops_everything_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spawned: list[int] = []
    real_spawn = manager.spawn_detached

    def spy(cmd: list[str], log_path: Path) -> int:
        pid = real_spawn(cmd, log_path)
        spawned.append(pid)
        return pid

    def broken_seed(w3: object, dep: object, plan: object) -> None:
        raise RuntimeError("injected seeding failure")

    monkeypatch.setattr(manager, "spawn_detached", spy)
    monkeypatch.setattr(manager, "seed_chain", broken_seed)
    with pytest.raises(RuntimeError, match="injected seeding failure"):
        manager.up(tmp_path)
    assert len(spawned) == 3  # origin, beta, gamma; alpha never started
    assert not any(manager.pid_alive(p) for p in spawned)
    data = tmp_path / "data" / "devnet"
    assert not (data / "state.json").exists()
    assert list(data.glob("*.pid")) == []


def test_pid_files_of_other_processes_are_never_signalled(tmp_path: Path) -> None:
    data = tmp_path / "data" / "devnet"
    data.mkdir(parents=True)
    # Our own pid: alive, but not an anvil -- as after a reboot with pid reuse.
    (data / "beta.pid").write_text(f'{{"pid": {os.getpid()}, "port": 1}}')
    assert manager.running_nodes(tmp_path) == {}
    assert manager.down(tmp_path) == []
    assert manager.pid_alive(os.getpid())
    assert not (data / "beta.pid").exists()


def test_unreadable_state_is_a_clear_error(tmp_path: Path) -> None:
    data = tmp_path / "data" / "devnet"
    data.mkdir(parents=True)
    (data / "state.json").write_text("{not json")
    with pytest.raises(manager.DevnetError, match=r"state\.json"):
        manager.status(tmp_path)


def test_block_time_must_be_whole_seconds(tmp_path: Path) -> None:
    with pytest.raises(manager.DevnetError, match="block_time_s"):
        manager.up(tmp_path, block_time_s=0.5)  # type: ignore[arg-type]


def test_down_removes_the_devnet_store_but_keeps_logs(tmp_path: Path) -> None:
    data = tmp_path / "data" / "devnet"
    data.mkdir(parents=True)
    for name in ("aggregator.db", "aggregator.db-wal", "aggregator.db-shm", "beta.log"):
        (data / name).write_text("x")
    assert manager.down(tmp_path) == []
    assert sorted(p.name for p in data.iterdir()) == ["beta.log"]
