"""Bring the local multi-chain devnet up and down.

    from devkit import manager
    state = manager.up(Path("."))        # origin + alpha (fork) + beta + gamma, deployed, seeded
    manager.status(Path("."))            # {"running": bool, "chains": {...}}
    manager.down(Path("."))              # stops every node from the pid files, removes state

Besides the anvil nodes, `up` starts the exchange price server (devkit/exchange.py,
Coinbase- and Kraken-shaped endpoints that follow the alpha/beta feeds), managed the same way.

Layout under <root>/data/devnet/: <name>.log, <name>.pid (name = chain or "exchange"),
state.json, devnet.toml (the include that config.toml merges). The processes are detached
(not children of the caller), so `aggregator devnet up` can exit and leave them running;
`down` stops them by pid, after checking that the pid still belongs to the process we
started (pids get reused).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eth_utils import to_checksum_address

from chains.contracts import install_multicall
from devkit import exchange, pools
from devkit.anvil import DEV_KEYS, AnvilError, AnvilNode, free_port, rpc_call
from devkit.deploy import (
    ASSETS,
    DEMO_USERS,
    DEPLOYER,
    KEEPER,
    LIQUIDATOR,
    SEED_PLAN,
    VENUE_KEEPER,
    ChainDeployment,
    deploy_chain,
    seed_chain,
    web3_session,
)

ORIGIN = "origin"
# name -> chain id. origin stands in for a public testnet and is not indexed by the daemon.
CHAIN_IDS = {"origin": 71000, "alpha": 71001, "beta": 71002, "gamma": 71003}
INDEXED_CHAINS = ("alpha", "beta", "gamma")
FORKS = {"alpha": ORIGIN}
# Deployer nonce per freshly deployed chain, so addresses differ between chains.
NONCE_OFFSETS = {"origin": 0, "beta": 1000, "gamma": 2000}
DEFAULT_BLOCK_TIME_S = 1
# The exchange price server's name in pid/log files, status and `down`'s result.
EXCHANGE = "exchange"

# Which chains carry the Chainlink feed that prices each asset (2-3 per asset, so
# the median has a quorum), and where each LST's exchange rate is read.
FEED_CHAINS: dict[str, tuple[str, ...]] = {
    "USDC": ("alpha", "beta", "gamma"),
    "WBTC": ("alpha", "beta", "gamma"),
    "WETH": ("alpha", "beta", "gamma"),
    "wstETH": ("alpha", "beta"),
    "rETH": ("beta", "gamma"),
}
RATE_CHAIN = {"wstETH": "alpha", "rETH": "beta"}


class DevnetError(RuntimeError):
    pass


@dataclass(frozen=True)
class DevnetPaths:
    root: Path

    @property
    def data_dir(self) -> Path:
        return self.root / "data" / "devnet"

    @property
    def state_file(self) -> Path:
        return self.data_dir / "state.json"

    @property
    def include_file(self) -> Path:
        return self.data_dir / "devnet.toml"

    @property
    def pools_include_file(self) -> Path:
        """Per asset `liquidity = [{ chain, pool }]` (devkit/pools.py)."""
        return self.data_dir / "pools.toml"

    def log(self, chain: str) -> Path:
        return self.data_dir / f"{chain}.log"

    def pid(self, chain: str) -> Path:
        return self.data_dir / f"{chain}.pid"


@dataclass
class NodeState:
    name: str
    chain_id: int
    port: int
    pid: int
    log: str
    fork_url: str | None = None
    fork_block: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class ExchangeState:
    """The exchange price server process (see devkit/exchange.py)."""

    port: int
    pid: int
    log: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def source_urls(self) -> dict[str, dict[str, str]]:
        """asset -> {http source name: url}, as written into devnet.toml."""
        return exchange.source_urls(self.url)


@dataclass
class DevnetState:
    root: str
    nodes: dict[str, NodeState]
    deployments: dict[str, ChainDeployment]
    accounts: dict[str, Any] = field(default_factory=dict)
    block_time_s: int = DEFAULT_BLOCK_TIME_S
    started_at: str = ""
    # None only while `up` runs: the server reads state.json, so it starts after it exists.
    exchange: ExchangeState | None = None

    @property
    def paths(self) -> DevnetPaths:
        return DevnetPaths(Path(self.root))

    def url(self, chain: str) -> str:
        return self.nodes[chain].url

    def summary(self) -> dict[str, Any]:
        """What `aggregator devnet up` prints."""
        return {
            "state": str(self.paths.state_file),
            "include": str(self.paths.include_file),
            "pools_include": str(self.paths.pools_include_file),
            "chains": {
                name: {
                    "chain_id": node.chain_id,
                    "url": node.url,
                    "pid": node.pid,
                    "fork_url": node.fork_url,
                    "vault": self.deployments[name].vault,
                    "registry": self.deployments[name].registry,
                    "attestations": self.deployments[name].attestations,
                    "markets": self.deployments[name].markets or None,
                    "uniswap": pools.summary(self.deployments[name].uniswap),
                }
                for name, node in self.nodes.items()
            },
            "exchange": None
            if self.exchange is None
            else {
                "url": self.exchange.url,
                "pid": self.exchange.pid,
                "sources": self.exchange.source_urls(),
            },
            "keeper": self.accounts.get("keeper"),
            # Not the key itself: keys never go to output, even anvil's public dev keys.
            "keeper_key": "set AGG_KEEPER_KEY to anvil dev account 1's key (docs/devnet.md)",
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "nodes": {k: asdict(v) for k, v in self.nodes.items()},
            "deployments": {k: v.to_json() for k, v in self.deployments.items()},
            "accounts": self.accounts,
            "block_time_s": self.block_time_s,
            "started_at": self.started_at,
            "exchange": None if self.exchange is None else asdict(self.exchange),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DevnetState:
        return cls(
            root=data["root"],
            nodes={k: NodeState(**v) for k, v in data["nodes"].items()},
            deployments={k: ChainDeployment.from_json(v) for k, v in data["deployments"].items()},
            accounts=data.get("accounts", {}),
            block_time_s=data.get("block_time_s", DEFAULT_BLOCK_TIME_S),
            started_at=data.get("started_at", ""),
            exchange=ExchangeState(**data["exchange"]) if data.get("exchange") else None,
        )


# -- processes ----------------------------------------------------------------------


def _proc_state(pid: int) -> str | None:
    """Linux process state letter, None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return "?"
    return stat.rsplit(")", 1)[-1].split()[0]


def pid_alive(pid: int) -> bool:
    """True while the process runs. A zombie counts as dead: it no longer serves
    anything, and a reaper that is not us may take its time."""
    if Path("/proc").is_dir():
        state = _proc_state(pid)
        return state is not None and state not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_our_anvil(pid: int, port: int) -> bool:
    """Guard against pid reuse: only signal a process whose command line is our anvil."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    except OSError:
        return not Path("/proc").is_dir()
    has_port = any(a == b"--port" and b == str(port).encode() for a, b in itertools.pairwise(argv))
    return bool(argv) and argv[0].endswith(b"anvil") and has_port


def _is_our_exchange(pid: int, port: int) -> bool:
    """The same guard for the exchange server: `python -m devkit.exchange ...
    --port <port>`."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    except OSError:
        return not Path("/proc").is_dir()
    pairs = list(itertools.pairwise(argv))
    return (b"-m", exchange.MODULE.encode()) in pairs and (b"--port", str(port).encode()) in pairs


def is_ours(name: str, pid: int, port: int) -> bool:
    """Whether `pid` is still the devnet process `name` (a chain or EXCHANGE) on `port`."""
    if name == EXCHANGE:
        return _is_our_exchange(pid, port)
    return _is_our_anvil(pid, port)


def stop_pid(pid: int, port: int, timeout: float = 10.0, *, name: str = "") -> bool:
    """SIGTERM, then SIGKILL after `timeout`. Returns False if it was not (or no longer) ours.
    `name` selects the guard: EXCHANGE for the exchange server, anything else is an anvil."""
    if not pid_alive(pid) or not is_ours(name, pid, port):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return True


def spawn_detached(cmd: list[str], log_path: Path) -> int:
    """Start `cmd` in its own session, not as our child: a shell backgrounds it, prints
    its pid and exits. The caller can then exit (CLI) or stop it later by pid without
    leaving a zombie behind in a long-lived process (tests)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    script = 'exec 0</dev/null; "$@" >>"$AGG_DEVNET_LOG" 2>&1 & echo $!'
    env = dict(os.environ, AGG_DEVNET_LOG=str(log_path))
    out = subprocess.run(
        ["/bin/sh", "-c", script, "sh", *cmd],
        env=env,
        capture_output=True,
        start_new_session=True,
        check=True,
        timeout=30,
    )
    return int(out.stdout.decode().strip())


def _wait_ready(node: NodeState, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(node.pid):
            tail = _tail(Path(node.log))
            raise DevnetError(f"anvil for {node.name} (port {node.port}) exited; log tail:\n{tail}")
        try:
            got = int(str(rpc_call(node.url, "eth_chainId", timeout=2)), 16)
        except (OSError, urllib.error.URLError, AnvilError):
            time.sleep(0.05)
            continue
        if got != node.chain_id:
            raise DevnetError(
                f"{node.url} answers chain id {got}, expected {node.chain_id} ({node.name})"
            )
        return
    raise DevnetError(f"anvil for {node.name} on port {node.port} did not answer within {timeout}s")


def _start_exchange(paths: DevnetPaths) -> ExchangeState:
    port = free_port()
    pid = spawn_detached(exchange.command(paths.root, port, sys.executable), paths.log(EXCHANGE))
    # As with the nodes: the pid file first, so `down` finds the process whatever fails next.
    paths.pid(EXCHANGE).write_text(json.dumps({"pid": pid, "port": port}))
    return ExchangeState(port, pid, str(paths.log(EXCHANGE)))


def _wait_exchange_ready(ex: ExchangeState, timeout: float = 30.0) -> None:
    """Until /health answers 200: the server is listening *and* has read every venue's
    reference feeds once, so the daemon's first http fetch already gets a price."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not pid_alive(ex.pid):
            raise DevnetError(
                f"exchange server (port {ex.port}) exited; log tail:\n{_tail(Path(ex.log))}"
            )
        try:
            with urllib.request.urlopen(ex.url + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}: {exc.read()[:300].decode(errors='replace')}"
        except (OSError, urllib.error.URLError) as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise DevnetError(
        f"exchange server on port {ex.port} not healthy within {timeout}s (last: {last}); "
        f"log tail:\n{_tail(Path(ex.log))}"
    )


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _start_node(
    paths: DevnetPaths, name: str, fork_url: str | None = None, fork_block: int | None = None
) -> NodeState:
    spec = AnvilNode(CHAIN_IDS[name], port=free_port(), fork_url=fork_url, fork_block=fork_block)
    # Logged (no --silent): the devnet log is where one looks for what happened.
    cmd = [a for a in spec.command() if a != "--silent"]
    pid = spawn_detached(cmd, paths.log(name))
    node = NodeState(
        name, CHAIN_IDS[name], spec.port, pid, str(paths.log(name)), fork_url, fork_block
    )
    # The pid file goes first: whatever fails next, `down` can still find this process.
    paths.pid(name).write_text(json.dumps({"pid": pid, "port": spec.port}))
    return node


# -- state files --------------------------------------------------------------------


def load_state(root: Path) -> DevnetState | None:
    path = DevnetPaths(root).state_file
    try:
        return DevnetState.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DevnetError(
            f"devnet state file {path} is unreadable ({exc}); run `aggregator devnet down`"
        ) from None


def _pid_files(paths: DevnetPaths) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    if not paths.data_dir.is_dir():
        return out
    for f in sorted(paths.data_dir.glob("*.pid")):
        try:
            data = json.loads(f.read_text())
            out[f.stem] = (int(data["pid"]), int(data["port"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid TOML basic string here


def render_include(state: DevnetState) -> str:
    """The devnet.toml include: per-chain RPC URLs and contracts, per-asset token,
    feed and rate addresses, and the exchange server's URL per http source. config.toml
    owns everything else (the chain ids, and each http source's path and limits)."""
    lines = [
        f"# Generated by `aggregator devnet up` at {state.started_at}; rewritten on every up.",
        "# Do not edit: merged into config.toml through `include`.",
    ]
    if state.exchange is not None:
        lines.append(f"# Exchange price server: {state.exchange.url} (pid {state.exchange.pid})")
    lines.append("")
    http_urls = state.exchange.source_urls() if state.exchange is not None else {}
    for name in INDEXED_CHAINS:
        node, dep = state.nodes[name], state.deployments[name]
        lines += ["[[chains]]", f"name = {_toml_str(name)}", f"rpc_urls = [{_toml_str(node.url)}]"]
        if node.fork_url:
            lines.append(f"fork_url = {_toml_str(node.fork_url)}")
        lines += [
            "[chains.contracts]",
            f"vault = {_toml_str(dep.vault)}",
            f"registry = {_toml_str(dep.registry)}",
            f"multicall = {_toml_str(dep.multicall)}",
            f"attestations = {_toml_str(dep.attestations)}",
        ]
        if dep.markets:
            lines.append(f"markets = {_toml_str(dep.markets)}")
        lines.append("")
    for spec in ASSETS:
        lines += ["[[assets]]", f"symbol = {_toml_str(spec.symbol)}", "[assets.tokens]"]
        lines += [
            f"{c} = {_toml_str(state.deployments[c].tokens[spec.symbol])}" for c in INDEXED_CHAINS
        ]
        if spec.symbol in RATE_CHAIN:
            chain = RATE_CHAIN[spec.symbol]
            lines += [
                "[assets.rate]",
                f"kind = {_toml_str(spec.kind)}",
                f"chain = {_toml_str(chain)}",
                f"address = {_toml_str(state.deployments[chain].tokens[spec.symbol])}",
            ]
        for chain in FEED_CHAINS[spec.symbol]:
            lines += [
                "[[assets.sources]]",
                f"name = {_toml_str('chainlink-' + chain)}",
                'kind = "chainlink"',
                f"chain = {_toml_str(chain)}",
                f"address = {_toml_str(state.deployments[chain].feeds[spec.symbol])}",
            ]
        for source, url in http_urls.get(spec.symbol, {}).items():
            lines += [
                "[[assets.sources]]",
                f"name = {_toml_str(source)}",
                'kind = "http"',
                f"url = {_toml_str(url)}",
            ]
        lines.append("")
    return "\n".join(lines)


# -- public API ---------------------------------------------------------------------


def _recorded(root: Path) -> dict[str, tuple[int, int]]:
    """name -> (pid, port) of every devnet process recorded under `root`: pid files first
    (written before anything can fail), then state.json."""
    found: dict[str, tuple[int, int]] = dict(_pid_files(DevnetPaths(root)))
    with contextlib.suppress(DevnetError):
        state = load_state(root)
        if state is not None:
            for name, node in state.nodes.items():
                found.setdefault(name, (node.pid, node.port))
            if state.exchange is not None:
                found.setdefault(EXCHANGE, (state.exchange.pid, state.exchange.port))
    return found


def running_nodes(root: Path) -> dict[str, int]:
    """name -> pid of every devnet process under `root` that is still alive: the anvil
    nodes by chain name, and the exchange server as EXCHANGE."""
    return {
        name: pid
        for name, (pid, port) in _recorded(root).items()
        if pid_alive(pid) and is_ours(name, pid, port)
    }


def up(
    root: Path,
    *,
    replace: bool = False,
    block_time_s: int | None = DEFAULT_BLOCK_TIME_S,
    on_step: Callable[[str], None] | None = None,
) -> DevnetState:
    """Start origin (71000), deploy + seed it, fork alpha (71001) from it, start, deploy and
    seed beta (71002) and gamma (71003), install Multicall3 everywhere, then switch the
    indexed chains to interval mining (`block_time_s`; None keeps automine), write
    state.json, start the exchange price server (it reads state.json) and wait until it
    has read the feeds, then write devnet.toml (with the exchange's URLs) and the final
    state.json.

    A devnet still running under `root` is stopped first when `replace`, otherwise this
    raises DevnetError. If any step fails, every node started so far is stopped and the
    state files are removed before the error propagates; the same holds for the exchange.
    """
    _check_block_time(block_time_s)
    root = Path(root).resolve()
    paths = DevnetPaths(root)
    _clear_previous(root, paths, replace=replace)
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    step = on_step or (lambda _msg: None)
    nodes: dict[str, NodeState] = {}
    try:
        deployments = _deploy_independent(paths, nodes, step)
        _fork_alpha(paths, nodes, deployments, step)

        if block_time_s:
            for name in INDEXED_CHAINS:
                rpc_call(nodes[name].url, "evm_setIntervalMining", [block_time_s])

        state = DevnetState(
            root=str(root),
            nodes=nodes,
            deployments=deployments,
            accounts=_accounts(nodes[ORIGIN].url),
            block_time_s=block_time_s or 0,
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        _publish(paths, state, step)
        return state
    except BaseException:
        for node in nodes.values():
            stop_pid(node.pid, node.port)
        _remove_files(paths)
        raise


def _check_block_time(block_time_s: int | None) -> None:
    if block_time_s is not None and (not isinstance(block_time_s, int) or block_time_s < 1):
        # anvil's interval mining takes whole seconds.
        raise DevnetError(
            f"block_time_s must be a whole number of seconds >= 1, got {block_time_s!r}"
        )


def _publish(paths: DevnetPaths, state: DevnetState, step: Callable[[str], None]) -> None:
    """Write state.json, start the exchange (it reads state.json) and wait until it has
    read the feeds, then write devnet.toml and the final state.json. On any failure the
    exchange is stopped before the error propagates (up() then stops the nodes)."""
    _write_atomic(paths.state_file, json.dumps(state.to_json(), indent=2) + "\n")
    ex = _start_exchange(paths)
    try:
        _wait_exchange_ready(ex)
        state.exchange = ex
        step(f"exchange price server on {ex.url}")
        _write_atomic(paths.include_file, render_include(state))
        _write_atomic(paths.pools_include_file, pools.render_pools_include(state, INDEXED_CHAINS))
        _write_atomic(paths.state_file, json.dumps(state.to_json(), indent=2) + "\n")
        step("state written")
    except BaseException:
        stop_pid(ex.pid, ex.port, name=EXCHANGE)
        raise


def _clear_previous(root: Path, paths: DevnetPaths, *, replace: bool) -> None:
    """Refuse (or, with `replace`, stop) a devnet still running under root; remove its files."""
    alive = running_nodes(root)
    if alive:
        if not replace:
            listing = ", ".join(f"{n} (pid {p})" for n, p in sorted(alive.items()))
            raise DevnetError(
                f"a devnet is already running under {paths.data_dir}: {listing}; "
                "run `aggregator devnet down` first"
            )
        down(root)
    _remove_files(paths)


def _deploy_independent(
    paths: DevnetPaths, nodes: dict[str, NodeState], step: Callable[[str], None]
) -> dict[str, ChainDeployment]:
    """Start origin, beta and gamma (into `nodes`, so a failure stops them) and deploy
    and seed each."""
    for name in (ORIGIN, "beta", "gamma"):
        nodes[name] = _start_node(paths, name)
    for name in (ORIGIN, "beta", "gamma"):
        _wait_ready(nodes[name])
    step("nodes started")

    def build(name: str) -> ChainDeployment:
        with web3_session(nodes[name].url) as w3:
            dep = deploy_chain(w3, name, nonce_offset=NONCE_OFFSETS[name])
            seed_chain(w3, dep, SEED_PLAN[name])
            dep.uniswap = pools.deploy_uniswap(w3, dep).to_json()
            dep.block = w3.eth.block_number
            return dep

    # Independent chains, mostly waiting on RPC round trips: deploy them side by side.
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(build, name) for name in (ORIGIN, "beta", "gamma")}
        deployments = {name: f.result() for name, f in futures.items()}
    step("deployed and seeded origin, beta, gamma (with Uniswap v3 pools)")
    return deployments


# Empty blocks alpha mines right after its fork (see _fork_alpha): deeper than any
# block the daemon pins a read to (confirmations, reorg window, pool catch-up of 64).
FORK_DEPTH = 128


def _fork_alpha(
    paths: DevnetPaths,
    nodes: dict[str, NodeState],
    deployments: dict[str, ChainDeployment],
    step: Callable[[str], None],
) -> None:
    """Fork alpha from origin (its contracts are origin's, at the fork block)."""
    origin = nodes[ORIGIN]
    # Observed with anvil 1.7.1: a fork does not serve eth_getLogs for its fork
    # block itself, so an event mined in that block is invisible to the indexer.
    # Fork at an empty block on top of the seeded history instead.
    rpc_call(origin.url, "evm_mine")
    fork_block = int(str(rpc_call(origin.url, "eth_blockNumber")), 16)
    nodes["alpha"] = _start_node(paths, "alpha", fork_url=origin.url, fork_block=fork_block)
    _wait_ready(nodes["alpha"])
    install_multicall(nodes["alpha"].url)
    # A fork answers eth_call at a block below its fork point from the parent, in the
    # parent's context: Multicall3 getChainId() says 71000 there, and the daemon rightly
    # demotes an endpoint whose sentinel names another chain. Its pinned reads (the
    # confirmed block, a pool watcher's catch-up) go at most a few dozen blocks below
    # the head, so put the fork point deeper than that before anyone reads (same
    # timestamp: the chain's clock does not run ahead of the wall clock).
    rpc_call(nodes["alpha"].url, "anvil_mine", [hex(FORK_DEPTH), "0x0"])
    deployments["alpha"] = ChainDeployment.from_json(
        {
            **deployments[ORIGIN].to_json(),
            "chain": "alpha",
            "chain_id": CHAIN_IDS["alpha"],
            "block": fork_block,
        }
    )
    step(f"alpha forked from origin at block {fork_block}")


def _accounts(url: str) -> dict[str, Any]:
    """Role -> address, from the node itself; and a check that DEV_KEYS sign for the same
    accounts (a wrong key would make the keeper sign from an unfunded address)."""
    from eth_account import Account

    answer = rpc_call(url, "eth_accounts")
    if not isinstance(answer, list):
        raise DevnetError(f"eth_accounts on {url} returned {answer!r}")
    addr = [to_checksum_address(str(a)) for a in answer]
    for i, key in enumerate(DEV_KEYS[: len(addr)]):
        if Account.from_key(key).address.lower() != addr[i].lower():
            raise DevnetError(f"DEV_KEYS[{i}] does not match anvil's account {i} ({addr[i]})")
    return {
        "deployer": addr[DEPLOYER],
        "keeper": addr[KEEPER],
        "users": [addr[i] for i in DEMO_USERS],
        "liquidator": addr[LIQUIDATOR],
        "venue_keeper": addr[VENUE_KEEPER],
    }


def _remove_files(paths: DevnetPaths) -> None:
    if not paths.data_dir.is_dir():
        return
    # The devnet store (config.toml: data/devnet/aggregator.db) describes chains that no
    # longer exist once the nodes stop; a new devnet reusing it would look like a reorg.
    store = [*paths.data_dir.glob("aggregator.db"), *paths.data_dir.glob("aggregator.db-*")]
    generated = (paths.state_file, paths.include_file, paths.pools_include_file)
    for f in (*generated, *paths.data_dir.glob("*.pid"), *store):
        with contextlib.suppress(FileNotFoundError):
            f.unlink()


def down(root: Path) -> list[str]:
    """Stop every devnet process recorded under `root` (pid files and state.json) and remove
    the state, pid and include files; logs stay. Returns the names that were stopped
    (chains, and EXCHANGE for the exchange server)."""
    root = Path(root).resolve()
    paths = DevnetPaths(root)
    found = _recorded(root)
    # Readers before what they read: the exchange reads alpha and beta, alpha forks origin.
    order = sorted(found, key=lambda n: (n != EXCHANGE, n != "alpha"))
    stopped = [name for name in order if stop_pid(*found[name], name=name)]
    still = [n for n in order if pid_alive(found[n][0]) and is_ours(n, *found[n])]
    if still:
        raise DevnetError(f"could not stop devnet processes: {', '.join(still)}")
    _remove_files(paths)
    return stopped


def status(root: Path) -> dict[str, Any]:
    """{"running": every node and the exchange alive and answering,
    "chains": {name: {alive, pid, port, url, chain_id, head}},
    "exchange": {alive, answering, healthy, pid, port, url, health}}."""
    root = Path(root).resolve()
    state = load_state(root)
    if state is None:
        return {"running": False, "chains": {}, "reason": "no devnet state (not started)"}
    chains: dict[str, Any] = {}
    for name, node in state.nodes.items():
        alive = pid_alive(node.pid) and _is_our_anvil(node.pid, node.port)
        head: int | None = None
        if alive:
            with contextlib.suppress(OSError, urllib.error.URLError, AnvilError, ValueError):
                head = int(str(rpc_call(node.url, "eth_blockNumber", timeout=2)), 16)
        chains[name] = {
            "alive": alive,
            "answering": head is not None,
            "pid": node.pid,
            "port": node.port,
            "url": node.url,
            "chain_id": node.chain_id,
            "head": head,
            "fork_url": node.fork_url,
        }
    ex_status = _exchange_status(state.exchange)
    running = (
        bool(chains)
        and all(c["alive"] and c["answering"] for c in chains.values())
        and ex_status["alive"]
        and ex_status["answering"]
    )
    return {
        "running": running,
        "chains": chains,
        "exchange": ex_status,
        "started_at": state.started_at,
    }


def _exchange_status(ex: ExchangeState | None) -> dict[str, Any]:
    if ex is None:
        # A state.json from before the exchange existed, or `up` still in progress.
        return {"alive": False, "answering": False, "healthy": False, "reason": "not started"}
    alive = pid_alive(ex.pid) and _is_our_exchange(ex.pid, ex.port)
    health: Any = None
    code: int | None = None
    if alive:
        try:
            with urllib.request.urlopen(ex.url + "/health", timeout=2) as resp:
                code, health = resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            # 503 with a body: up, but some venue cannot read its reference chain.
            with contextlib.suppress(ValueError):
                code, health = exc.code, json.loads(exc.read())
        except (OSError, urllib.error.URLError, ValueError):
            pass
    return {
        "alive": alive,
        "answering": code is not None,
        "healthy": code == 200,
        "pid": ex.pid,
        "port": ex.port,
        "url": ex.url,
        "health": health,
    }
