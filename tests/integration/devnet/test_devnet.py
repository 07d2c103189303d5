"""The devnet end to end: up into a temporary root, the repo's config.toml plus the
generated include load and point at live contracts and the exchange price server, the
fork sees origin's history, an OracleService built from that config prices every asset
from feeds and http sources, the simulator moves markets (and the exchange follows), and
down leaves no process behind."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import urllib.request
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from eth_utils import to_checksum_address

from aggregator.config import AppConfig, AssetConfig, load_config
from chains.contracts import contract
from chains.lst import LstRateReader, LstSource
from chains.rpc import RpcClient, RpcError, selector
from chains.types import RateSample
from devkit import exchange, manager
from devkit.anvil import free_port, rpc_call
from devkit.deploy import FEED_DECIMALS, web3_session
from devkit.simulator import MarketModel, SimulatorStats, run_simulator
from oracles import MappingRateProvider, OracleService, PriceStatus
from oracles.config import ChainlinkSourceConfig, HttpSourceConfig
from oracles.jsonpath import parse_path, resolve
from oracles.types import Price


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
    ex = devnet.exchange
    assert ex is not None and manager.pid_alive(ex.pid)
    assert json.loads((data / "exchange.pid").read_text()) == {"pid": ex.pid, "port": ex.port}
    assert (data / "exchange.log").is_file() and ex.log == str(data / "exchange.log")
    assert ex.url in (data / "devnet.toml").read_text()
    assert manager.load_state(Path(devnet.root)) == devnet
    assert set(manager.running_nodes(Path(devnet.root))) == {*devnet.nodes, manager.EXCHANGE}


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
        c = chain.contracts
        for addr in (c.vault, c.registry, c.multicall, c.attestations, c.markets):
            assert addr is not None and has_code(urls[chain.name], addr), (chain.name, addr)
            checked += 1
    # One AttestationRegistry per chain, at different addresses (no cross-chain mix-up).
    assert len({c.contracts.attestations for c in cfg.chains}) == len(cfg.chains)
    for asset in cfg.assets:
        assert set(asset.tokens) == set(urls), asset.symbol
        for chain_name, token in asset.tokens.items():
            assert has_code(urls[chain_name], token), (asset.symbol, chain_name)
            checked += 1
        assert len(asset.sources) >= 2, asset.symbol
        for src in asset.sources:
            if isinstance(src, ChainlinkSourceConfig):
                assert has_code(urls[src.chain], src.address), (asset.symbol, src.name)
                checked += 1
        if asset.rate is not None:
            assert has_code(urls[asset.rate.chain], asset.rate.address)
            checked += 1
    # 3 chains x (vault, registry, multicall, attestations, markets) + 5 assets x 3 tokens
    # + 13 feeds + 2 rates
    assert checked == 15 + 15 + 13 + 2


def test_markets_lists_the_perps_and_the_venue_keeper(devnet: manager.DevnetState) -> None:
    """Every indexed chain's Markets contract lets the venue keeper (dev account 9) record
    positions in the listed perp markets, and nobody else. (Before the tests that stop a
    chain: the module shares one devnet.)"""
    from chains.positions import text_bytes32
    from devkit.deploy import PERP_MARKETS, web3_session

    for chain in manager.INDEXED_CHAINS:
        dep = devnet.deployments[chain]
        assert dep.venue_keeper == devnet.accounts["venue_keeper"]
        with web3_session(devnet.url(chain)) as w3:
            m = contract(w3, "Markets", dep.markets)
            assert m.functions.isKeeper(dep.venue_keeper).call(), chain
            assert not m.functions.isKeeper(dep.keeper).call(), chain
            for name in PERP_MARKETS:
                assert m.functions.perpListed(text_bytes32(name)).call(), (chain, name)
            assert not m.functions.perpListed(text_bytes32("SOL-PERP")).call(), chain


def test_fork_sees_origin_deposits_made_before_the_fork(devnet: manager.DevnetState) -> None:
    dep = devnet.deployments["alpha"]
    user = devnet.accounts["users"][0]  # account 2: 10 WETH on origin
    with web3_session(devnet.url("alpha")) as w3:
        vault = contract(w3, "CollateralVault", dep.vault)
        assert vault.functions.collateralOf(user, dep.tokens["WETH"]).call() == 10 * 10**18
        logs = w3.eth.get_logs(
            {"address": to_checksum_address(dep.vault), "fromBlock": 0, "toBlock": dep.block}
        )
        assert len(logs) >= 4  # the seeded deposits, served from origin's history
        assert w3.eth.chain_id == 71001
    # One empty block on top of the seeded history: anvil serves no logs for the fork block.
    assert devnet.nodes["alpha"].fork_block == devnet.deployments["origin"].block + 1


async def test_pinned_reads_below_the_head_answer_as_the_fork_itself(
    devnet: manager.DevnetState,
) -> None:
    """Below its fork point alpha answers eth_call as origin (chain id 71000), which the
    daemon's sentinel takes for a lying endpoint; the fork point lies deeper than any
    read the daemon pins (CI once saw alpha demoted at head 132, forked at 131)."""
    fork = devnet.nodes["alpha"].fork_block
    assert fork is not None
    url = devnet.url("alpha")
    head = int(str(rpc_call(url, "eth_blockNumber")), 16)
    assert head >= fork + manager.FORK_DEPTH
    async with RpcClient("alpha", 71001, [url], max_rounds=1) as client:
        number = [(client.multicall, selector("getBlockNumber()"))]
        for block in (head - 2, fork + 1):
            (got,) = await client.call_batch(number, block)  # with the chain-id sentinel
            assert got is not None and int.from_bytes(got, "big") == block
        with pytest.raises(RpcError, match=r"sentinel returned .*11558, expected 71001"):
            await client.call_batch(number, fork - 1)  # the parent's context: why the depth


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
    ex = st["exchange"]
    assert ex["alive"] and ex["healthy"] and ex["url"] == devnet.exchange.url  # type: ignore[union-attr]
    assert set(ex["health"]["chains"]) == {"alpha", "beta"}


# -- the exchange price server and the http sources ------------------------------------


def http_sources(asset: AssetConfig) -> list[HttpSourceConfig]:
    return [s for s in asset.sources if isinstance(s, HttpSourceConfig)]


def feed_prices(devnet: manager.DevnetState, symbol: str) -> dict[str, float]:
    """The current answer of `symbol`'s feed on every indexed chain."""
    out = {}
    for chain in manager.INDEXED_CHAINS:
        dep = devnet.deployments[chain]
        with web3_session(devnet.url(chain)) as w3:
            feed = contract(w3, "MockV3Aggregator", dep.feeds[symbol])
            out[chain] = int(feed.functions.latestRoundData().call()[1]) / 10**FEED_DECIMALS
    return out


def fetch_quote(src: HttpSourceConfig) -> float:
    with urllib.request.urlopen(src.url, timeout=5) as resp:
        assert resp.status == 200, src.url
        doc = json.loads(resp.read())
    return float(resolve(doc, parse_path(src.path), src.path))


def test_exchange_serves_every_configured_http_source_near_the_feeds(
    devnet: manager.DevnetState, cfg: AppConfig
) -> None:
    assert devnet.exchange is not None
    priced = {}
    for asset in cfg.assets:
        sources = http_sources(asset)
        if not sources:
            continue
        feeds = feed_prices(devnet, asset.symbol)
        assert {s.name for s in sources} == set(exchange.VENUES), asset.symbol
        for src in sources:
            assert src.url.startswith(devnet.exchange.url + "/"), src.url
            quote = fetch_quote(src)
            for chain, feed in feeds.items():
                assert quote == pytest.approx(feed, rel=0.01), (asset.symbol, src.name, chain)
            priced[(asset.symbol, src.name)] = quote
    assert {sym for sym, _ in priced} >= {"WETH", "WBTC", "USDC"}
    # The real venues' paths and shapes, as documented in docs/oracles.md.
    weth = {s.name: s for s in http_sources(cfg.asset("WETH"))}
    assert weth["coinbase"].url.endswith("/v2/prices/ETH-USD/spot")
    assert weth["coinbase"].path == "data.amount"
    assert weth["kraken"].url.endswith("/0/public/Ticker?pair=ETHUSD")
    assert weth["kraken"].path == "result.*.c[0]"


async def read_rates(cfg: AppConfig, rpcs: dict[str, RpcClient]) -> dict[str, RateSample]:
    samples: dict[str, RateSample] = {}
    for asset in cfg.assets:
        if asset.rate is not None:
            reader = LstRateReader(asset.rate.chain, rpcs[asset.rate.chain])
            src = LstSource(asset.symbol, asset.rate.kind, asset.rate.address)
            for sample in await reader.read([src]):
                samples[sample.asset] = sample
    return samples


async def oracle_round(cfg: AppConfig, assets: list[AssetConfig]) -> dict[str, Price]:
    """One refresh of an OracleService built from the devnet config, as the daemon does."""
    async with AsyncExitStack() as stack:
        rpcs = {
            c.name: await stack.enter_async_context(RpcClient(c.name, c.chain_id, c.rpc_urls))
            for c in cfg.chains
        }
        rates = await read_rates(cfg, rpcs)

        async def latest_rates() -> dict[str, RateSample]:
            return rates

        service = OracleService.from_config(
            assets,
            cfg.oracle,
            ewma_lambda=cfg.risk.ewma_lambda,
            batch_callers=dict(rpcs),
            rate_provider=MappingRateProvider(latest_rates),
            source_timeout_s=cfg.scheduler.oracle_interval_s,
        )
        async with service:
            return await service.refresh()


async def test_oracle_service_from_the_devnet_config_uses_the_http_sources(
    cfg: AppConfig,
) -> None:
    prices = await oracle_round(cfg, list(cfg.assets))
    assert set(prices) == {a.symbol for a in cfg.assets}
    for symbol, price in prices.items():
        assert price.status is PriceStatus.OK, (symbol, price.reason)
    for symbol in ("WETH", "WBTC", "USDC"):
        lines = {s.source: s for s in prices[symbol].sources}
        assert len(lines) == 5, symbol
        for venue in exchange.VENUES:
            assert lines[venue].kind == "http" and lines[venue].used, (symbol, lines[venue])
            assert lines[venue].value == pytest.approx(prices[symbol].value, rel=0.01)


async def test_a_failing_http_source_or_exchange_never_makes_an_asset_unavailable(
    cfg: AppConfig,
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"

    def with_dead(asset: AssetConfig, names: set[str]) -> AssetConfig:
        sources = [
            s.model_copy(update={"url": dead + "/x"}) if s.name in names else s
            for s in asset.sources
        ]
        return asset.model_copy(update={"sources": sources})

    for names in ({"coinbase"}, set(exchange.VENUES)):
        assets = [with_dead(a, names) for a in cfg.assets]
        prices = await oracle_round(cfg, assets)
        for symbol in ("WETH", "WBTC", "USDC"):
            price = prices[symbol]
            assert price.status is PriceStatus.OK, (names, symbol, price.reason)
            lines = {s.source: s for s in price.sources}
            for name in names:
                assert lines[name].failure == "unreachable" and not lines[name].used
            assert sum(line.used for line in lines.values()) == 5 - len(names)


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


async def test_exchange_follows_the_simulated_market(devnet: manager.DevnetState) -> None:
    assert devnet.exchange is not None
    urls = devnet.exchange.source_urls()["WETH"]
    venues = {
        name: HttpSourceConfig(name=name, url=url, path=path)
        for name, url, path in (
            ("coinbase", urls["coinbase"], "data.amount"),
            ("kraken", urls["kraken"], "result.*.c[0]"),
        )
    }
    before = {n: await asyncio.to_thread(fetch_quote, s) for n, s in venues.items()}
    model = MarketModel.initial(seed=5, shock_probability=1.0, shock_range=(0.2, 0.2))
    model.prices["WETH"] = before["coinbase"]  # shock from where the market is now
    stats = SimulatorStats()
    await asyncio.wait_for(
        run_simulator(devnet, asyncio.Event(), 0.2, model=model, stats=stats, max_ticks=1), 20
    )
    assert stats.errors == {}
    feeds = await asyncio.to_thread(feed_prices, devnet, "WETH")
    deadline = time.monotonic() + 30  # the server re-reads the feeds every second
    for name, src in venues.items():
        chain = exchange.VENUES[name].chain
        while True:
            quote = await asyncio.to_thread(fetch_quote, src)
            if quote == pytest.approx(feeds[chain], rel=0.01):
                break
            assert time.monotonic() < deadline, (name, quote, feeds)
            await asyncio.sleep(0.1)
        assert quote < before[name] * 0.85, name


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
    assert devnet.exchange is not None
    pids = [n.pid for n in devnet.nodes.values()] + [devnet.exchange.pid]
    stopped = manager.down(root)
    assert stopped[0] == manager.EXCHANGE  # it reads alpha and beta: stopped first
    assert sorted(stopped) == sorted([*devnet.nodes, manager.EXCHANGE])
    assert not any(manager.pid_alive(p) for p in pids)
    with pytest.raises(OSError):
        urllib.request.urlopen(devnet.exchange.url + "/health", timeout=2)
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


def test_up_fails_cleanly_when_the_exchange_dies_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spawned: list[int] = []
    real_spawn = manager.spawn_detached

    def spy(cmd: list[str], log_path: Path) -> int:
        pid = real_spawn(cmd, log_path)
        spawned.append(pid)
        return pid

    def crashing(root: Path, port: int, python: str) -> list[str]:
        return [sys.executable, "-c", "import sys; sys.exit('injected exchange crash')"]

    monkeypatch.setattr(manager, "spawn_detached", spy)
    monkeypatch.setattr(exchange, "command", crashing)
    with pytest.raises(manager.DevnetError, match=r"(?s)exchange server.*exited.*injected"):
        manager.up(tmp_path)
    assert len(spawned) == 5  # 4 anvils, then the exchange
    assert not any(manager.pid_alive(p) for p in spawned)
    data = tmp_path / "data" / "devnet"
    assert not (data / "state.json").exists()
    assert not (data / "devnet.toml").exists()
    assert list(data.glob("*.pid")) == []
    assert "injected exchange crash" in (data / "exchange.log").read_text()


def test_pid_files_of_other_processes_are_never_signalled(tmp_path: Path) -> None:
    data = tmp_path / "data" / "devnet"
    data.mkdir(parents=True)
    # Our own pid: alive, but neither an anvil nor the exchange -- as after a reboot with
    # pid reuse.
    for name in ("beta", manager.EXCHANGE):
        (data / f"{name}.pid").write_text(f'{{"pid": {os.getpid()}, "port": 1}}')
    assert manager.running_nodes(tmp_path) == {}
    assert manager.down(tmp_path) == []
    assert manager.pid_alive(os.getpid())
    assert list(data.glob("*.pid")) == []


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
