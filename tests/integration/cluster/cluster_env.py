"""Real `aggregator run` processes on one PostgreSQL database and the devnet, the
activity that keeps them busy, and the invariant checks of the failover tests.

The checks compare the store with the chains themselves (not with the daemons' own
numbers). The reliability soak (issue 9) has a general invariant checker; these are the
few it needs for leases and could later be replaced by it: indexed events == the vault's
logs, stored balances == collateralOf/debtOf, every keeper nonce used by exactly one
recorded transaction, a registry entry for every account with debt or credit, and every
instance serving the same positions.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import create_async_engine
from web3 import Web3

from chains.contracts import contract
from chains.events import TOPIC_FILTER
from devkit import manager
from devkit.anvil import free_port
from devkit.deploy import FEED_DECIMALS, KEEPER, web3_session

KEEPER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
ADMIN_TOKEN = "cluster-test-admin-token"
LEASE_TTL_S = 3.0
RENEW_S = 0.5
# Fresh depositors (anvil dev accounts not used by the devnet's seed plan).
ACTIVE_USERS = (7, 8)


# ---------------------------------------------------------------- database
@contextmanager
def pg_database(base_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database on the test server (the daemons' store.url can only
    name a database, not a schema); skips when the server is not reachable."""
    name = f"agg_cl_{uuid.uuid4().hex[:10]}"
    url = make_url(base_url)

    async def admin(sql: str) -> None:
        engine = create_async_engine(
            url.set(database="postgres"), isolation_level="AUTOCOMMIT", pool_pre_ping=True
        )
        try:
            async with asyncio.timeout(10), engine.connect() as conn:
                await conn.execute(text(sql))
        finally:
            await engine.dispose()

    try:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.skip(f"PostgreSQL at AGG_TEST_PG_URL not usable: {exc}")
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def query(url: str, sql: str, **params: Any) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                rows = (await conn.execute(text(sql), params)).mappings().all()
                return [dict(r) for r in rows]
        except ProgrammingError as exc:
            if "does not exist" in str(exc):
                return []  # the first instance has not migrated the store yet
            raise
        finally:
            await engine.dispose()

    return asyncio.run(run())


def leases(url: str) -> dict[str, dict[str, Any]]:
    rows = query(
        url,
        "SELECT name, holder, token, previous_holder, writes, "
        "extract(epoch FROM acquired_at) AS acquired_at, "
        "extract(epoch FROM first_write_at) AS first_write_at, "
        "expires_at > clock_timestamp() AS live FROM cluster_lease",
    )
    return {r["name"]: r for r in rows}


# ---------------------------------------------------------------- config and processes
def cluster_config(devnet: manager.DevnetState, max_log_range: int) -> Path:
    """The devnet config with a small getLogs span, so a backfill takes many steps."""
    root = Path(devnet.root)
    src = (root / "config.toml").read_text()
    out, n = re.subn(
        r"(\[\[chains\]\]\n(?:[^\[\n][^\n]*\n)*?block_time = [0-9.]+\n)",
        rf"\1max_log_range = {max_log_range}\n",
        src,
    )
    assert n == 3, "expected three [[chains]] tables in config.toml"
    path = root / "cluster.toml"
    path.write_text(out)
    return path


@dataclass
class Instance:
    instance_id: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    def api(self, path: str, timeout: float = 5) -> tuple[int, Any]:
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def pause_pushing(self) -> None:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/v1/admin/pause",
            method="POST",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Cluster:
    config: Path
    store_url: str
    tmp: Path
    instances: dict[str, Instance] = field(default_factory=dict)

    def start(self, instance_id: str) -> Instance:
        port = free_port()
        log_path = self.tmp / f"{instance_id}.log"
        env = {
            **os.environ,
            "AGG_STORE__URL": self.store_url,
            "AGG_API__PORT": str(port),
            "AGG_KEEPER_KEY": KEEPER_KEY,
            "AGG_ADMIN_TOKEN": ADMIN_TOKEN,
            "AGG_CLUSTER__INSTANCE_ID": instance_id,
            "AGG_CLUSTER__LEASE_TTL_S": str(LEASE_TTL_S),
            "AGG_CLUSTER__RENEW_INTERVAL_S": str(RENEW_S),
            "AGG_CLUSTER__FOLLOW_INTERVAL_S": "0.5",
            "AGG_PUSHER__INTERVAL_S": "1",
            "AGG_LOG_FORMAT": "json",
        }
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "aggregator.cli", "-c", str(self.config), "run"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        inst = Instance(instance_id, port, proc, log_path)
        self.instances[instance_id] = inst
        return inst

    def wait_serving(self, inst: Instance, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert inst.alive(), inst.log()[-4000:]
            try:
                if inst.api("/healthz", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{inst.instance_id} did not serve /healthz")

    def holder(self, lease: str) -> str | None:
        row = leases(self.store_url).get(lease)
        return None if row is None or not row["live"] else str(row["holder"])

    def live(self) -> list[Instance]:
        return [i for i in self.instances.values() if i.alive()]

    def stop_all(self) -> None:
        for inst in self.instances.values():
            if inst.alive():
                inst.proc.send_signal(signal.SIGCONT)
                inst.proc.send_signal(signal.SIGTERM)
        for inst in self.instances.values():
            try:
                inst.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                inst.proc.kill()
                inst.proc.wait()


def wait_for(predicate: Any, timeout: float, what: str, poll: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# ---------------------------------------------------------------- chain activity
class Activity:
    """Deposits by fresh accounts on alpha and beta and WETH price moves on every chain,
    in one background thread, so there is always something to index and to push."""

    def __init__(self, devnet: manager.DevnetState, seed: int) -> None:
        self.devnet = devnet
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.deposits = 0
        self.price_moves = 0
        self.thread = threading.Thread(target=self._run, name="activity", daemon=True)

    def __enter__(self) -> Activity:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)

    def _send(self, w3: Web3, fn: Any, sender: str) -> None:
        tx = fn.transact({"from": sender, "gas": 500_000})
        assert w3.eth.wait_for_transaction_receipt(tx, timeout=30)["status"] == 1

    def _setup(self) -> None:
        """Each active user gets plenty of USDC, approved, on alpha and beta once; each
        deposit is then a single transaction."""
        for chain in ("alpha", "beta"):
            dep = self.devnet.deployments[chain]
            with web3_session(self.devnet.url(chain)) as w3:
                usdc = contract(w3, "MockERC20", dep.tokens["USDC"])
                for idx in ACTIVE_USERS:
                    user = w3.eth.accounts[idx]
                    self._send(w3, usdc.functions.mint(user, 10**15), dep.deployer)
                    self._send(w3, usdc.functions.approve(dep.vault, 2**255), user)

    def _deposits(self) -> None:
        """One deposit per active user on alpha and beta, all in the same block."""
        for chain in ("alpha", "beta"):
            dep = self.devnet.deployments[chain]
            with web3_session(self.devnet.url(chain)) as w3:
                vault = contract(w3, "CollateralVault", dep.vault)
                sent = []
                for idx in ACTIVE_USERS:
                    raw = self.rng.randint(1, 500) * 10**6
                    fn = vault.functions.deposit(dep.tokens["USDC"], raw)
                    sent.append(fn.transact({"from": w3.eth.accounts[idx], "gas": 300_000}))
                for tx in sent:
                    assert w3.eth.wait_for_transaction_receipt(tx, timeout=30)["status"] == 1
                    self.deposits += 1

    def _move_weth(self) -> None:
        factor = self.rng.choice((0.96, 1.04))
        for name, dep in self.devnet.deployments.items():
            if "WETH" not in dep.feeds:
                continue
            with web3_session(self.devnet.url(name)) as w3:
                feed = contract(w3, "MockV3Aggregator", dep.feeds["WETH"])
                price = int(feed.functions.latestRoundData().call()[1]) / 10**FEED_DECIMALS
                # Around the start price: a random walk could drift the fragile
                # account into liquidation and stop the test being about leases.
                price = min(max(price * factor, 3000.0), 3600.0)
                self._send(
                    w3, feed.functions.updateAnswer(round(price * 10**FEED_DECIMALS)), dep.deployer
                )
        self.price_moves += 1

    def _run(self) -> None:
        try:
            self._setup()
            n = 0
            while not self.stop.is_set():
                self._deposits()
                if n % 3 == 0:
                    self._move_weth()
                n += 1
                self.stop.wait(self.rng.uniform(0.2, 0.8))
        except BaseException as exc:  # reported by the test
            self.error = exc


# ---------------------------------------------------------------- invariants
def keeper_nonce(devnet: manager.DevnetState, chain: str) -> int:
    with web3_session(devnet.url(chain)) as w3:
        return int(w3.eth.get_transaction_count(w3.eth.accounts[KEEPER]))


def check_events_and_balances(devnet: manager.DevnetState, url: str) -> dict[str, int]:
    """Per chain: the stored events are exactly the vault's logs up to the indexed block
    (none lost, none twice), no reconciliation had to correct anything, and every stored
    balance equals collateralOf/debtOf at that block. Returns events per chain."""
    counts = {}
    for name in manager.INDEXED_CHAINS:
        dep = devnet.deployments[name]
        cp = query(url, "SELECT indexed_block FROM chain_checkpoint WHERE chain = :c", c=name)
        indexed = int(cp[0]["indexed_block"])
        stored = query(
            url,
            "SELECT block_number, log_index, kind FROM chain_event WHERE chain = :c",
            c=name,
        )
        assert not [e for e in stored if e["kind"] == "reconcile"], f"{name}: corrections"
        keys = [(int(e["block_number"]), int(e["log_index"])) for e in stored]
        assert len(keys) == len(set(keys)), f"{name}: an event stored twice"
        with web3_session(devnet.url(name)) as w3:
            logs = w3.eth.get_logs(
                {
                    "address": dep.vault,
                    "topics": TOPIC_FILTER,  # type: ignore[typeddict-item]
                    "fromBlock": 0,
                    "toBlock": indexed,
                }
            )
            onchain = {(int(lg["blockNumber"]), int(lg["logIndex"])) for lg in logs}
            assert set(keys) == onchain, (
                f"{name}: lost {sorted(onchain - set(keys))[:5]}, "
                f"extra {sorted(set(keys) - onchain)[:5]}"
            )
            vault = contract(w3, "CollateralVault", dep.vault)
            positions = query(
                url,
                "SELECT account, token, kind, head_amount FROM chain_position WHERE chain = :c",
                c=name,
            )
            for p in positions:
                fn = (
                    vault.functions.collateralOf
                    if p["kind"] == "collateral"
                    else (vault.functions.debtOf)
                )
                want = int(fn(p["account"], p["token"]).call(block_identifier=indexed))
                assert int(p["head_amount"]) == want, (name, p, want)
        counts[name] = len(keys)
    return counts


def check_nonces(
    devnet: manager.DevnetState, url: str, start_nonce: dict[str, int]
) -> dict[str, int]:
    """Every keeper nonce used since the daemons started belongs to exactly one stored
    record, mined at that nonce; no record was dropped (its nonce taken by another
    transaction) and none is left open. Returns transactions per chain."""
    out = {}
    for name in manager.INDEXED_CHAINS:
        with web3_session(devnet.url(name)) as w3:
            keeper = w3.eth.accounts[KEEPER]
            end = int(w3.eth.get_transaction_count(keeper))
            recs = query(
                url,
                "SELECT nonce, status, mined_hash, hashes FROM push_tx WHERE chain = :c",
                c=name,
            )
            bad = [r for r in recs if r["status"] not in ("confirmed",)]
            assert not bad, f"{name}: records not confirmed: {bad}"
            nonces = sorted(int(r["nonce"]) for r in recs)
            assert nonces == list(range(start_nonce[name], end)), (
                f"{name}: keeper nonces {start_nonce[name]}..{end - 1}, records {nonces}"
            )
            for r in recs:
                tx = w3.eth.get_transaction(r["mined_hash"])
                assert int(tx["nonce"]) == int(r["nonce"]) and tx["from"] == keeper, r
        out[name] = len(recs)
    return out


def check_registry(devnet: manager.DevnetState, inst: Instance) -> int:
    """Every account with debt or credit on a chain has a registry entry there."""
    status, page = inst.api("/v1/accounts?limit=1000")
    assert status == 200, page
    checked = 0
    for item in page["accounts"]:
        for name, credit in item["credit_usd"].items():
            has_debt = item["hf"] is not None
            if not has_debt and credit in ("0", "0.0"):
                continue
            dep = devnet.deployments[name]
            with web3_session(devnet.url(name)) as w3:
                reg = contract(w3, "HealthRegistry", dep.registry)
                as_of = int(reg.functions.healthOf(item["account"]).call()[2])
            assert as_of > 0, f"{name}: no registry entry for {item['account']}"
            checked += 1
    return checked


def positions_seen_by(inst: Instance, accounts: list[str]) -> dict[str, dict[Any, int]]:
    out = {}
    for a in accounts:
        status, view = inst.api(f"/v1/accounts/{a}")
        assert status == 200, (inst.instance_id, a, view)
        out[a] = {
            (c, row["asset"], row["side"]): int(row["head"])
            for c, rows in view["positions"].items()
            for row in rows
        }
    return out
