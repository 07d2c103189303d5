"""Chaos soak: the real daemon (`aggregator run` subprocesses) on the devnet, with user
activity on every chain, a moving market, and a chaos driver; the invariant checker
(soak_checker.py) judges at checkpoints and at the end. See docs/reliability.md.

    summary = asyncio.run(Soak(root, duration_s=60).run())

One instance on SQLite (kill -9 and restart), or N instances on PostgreSQL
(`instances=2, pg_url=...`): then the chaos kills (-9) or pauses (SIGSTOP) the lease
holder of a random chain, and soak_cluster.py judges fencing, takeovers and the spread
of the leases from a write audit in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import soak_cluster as cl
from eth_abi import encode
from soak_checker import Checker, PostgresSql, Rpc, SqliteSql, StoreSql, addr_word, sel
from sqlalchemy.engine import make_url

from aggregator.config import load_config
from devkit import manager
from devkit.anvil import DEV_KEYS, free_port
from devkit.deploy import ASSET_BY_SYMBOL
from devkit.simulator import MarketModel, _calls_for, _update_chain
from devkit.testing.faultproxy import FaultProxy

REPO = Path(__file__).resolve().parents[2]
CHAINS = manager.INDEXED_CHAINS
KEEPER_KEY = DEV_KEYS[1]
HEARTBEAT_S = 20.0
GRACE_S = 25.0
RESTART_WATCH_S = 30.0
GAS = hex(900_000)
MAX_UINT = 2**256 - 1
FEED_CHAOS_ASSETS = ("WETH", "WBTC", "USDC")  # five sources each: one bad one is outvoted
# Cluster mode: the lease TTL the instances run with, and how long every instance must
# have run undisturbed before a sample of the lease table counts for the spread.
LEASE_TTL_S = 10.0
SPREAD_SETTLE_S = 3 * LEASE_TTL_S + 10
# An instance that runs undisturbed but holds no work lease for longer than this is a
# spread violation (the balancer hands one back within a few renew rounds).
SPREAD_IDLE_MAX_S = 60.0

S = {
    n: sel(n)
    for n in (
        "deposit(address,uint256)",
        "withdraw(address,uint256)",
        "borrow(address,uint256)",
        "repay(address,address,uint256)",
        "liquidate(address,address,uint256,address)",
        "approve(address,uint256)",
        "mint(address,uint256)",
        "balanceOf(address)",
        "allowance(address,address)",
        "creditOf(address)",
        "healthOf(address)",
        "collateralOf(address,address)",
        "debtOf(address,address)",
        "valueOf(address,uint256)",
        "latestRoundData()",
        "updateRoundData(uint80,int256,uint256,uint256)",
    )
}

# Fault mixes the chaos driver rotates through. Endpoint A of each chain only ever gets
# transport faults; endpoint B may also lag or lie, so the daemon always has a way on.
MIXES_A: dict[str, dict[str, Any]] = {
    "clean": {},
    "flaky": {"drop": 0.03, "delay": 0.05, "http500": 0.03, "http429": 0.03, "malformed": 0.03},
    "slow": {"delay": 0.3, "delay_s": 0.8},
}
MIXES_B: dict[str, dict[str, Any]] = {
    **MIXES_A,
    "errors": {"http500": 0.3, "http429": 0.2, "malformed": 0.2, "drop": 0.1},
    "lagging": {"lag_blocks": 6},
    "lying": {"wrong_call": True},
}
NEUTRAL = {
    "drop": 0.0,
    "delay": 0.0,
    "delay_s": 0.5,
    "http500": 0.0,
    "http429": 0.0,
    "malformed": 0.0,
    "lag_blocks": 0,
    "wrong_call": False,
}


def _word(raw: bytes) -> int:
    return int.from_bytes(raw[:32], "big")


def _u(x: int) -> str:
    return encode(["uint256"], [x]).hex()


@dataclass
class Summary:
    duration_s: float
    actions: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    reorgs: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    feed_chaos: Counter[str] = field(default_factory=Counter)
    restarts: int = 0
    pushes: dict[str, int] = field(default_factory=dict)
    checks: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    info: Counter[str] = field(default_factory=Counter)
    mismatches: int = 0
    violations: list[tuple[str, str]] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    fault_mixes: Counter[str] = field(default_factory=Counter)
    log_errors: int = 0
    settle_s: float = 0.0
    evidence: list[str] = field(default_factory=list)
    clocks: str = "-"
    instances: int = 1
    store: str = "sqlite"
    pauses: int = 0
    cluster_rows: list[tuple[str, str]] = field(default_factory=list)
    load: list[float] = field(default_factory=list)

    def table(self) -> str:
        viol = Counter(v[0] for v in self.violations)
        rows = [
            ("chaos duration", f"{self.duration_s:.0f} s (+ settle {self.settle_s:.0f} s)"),
            ("user actions", _total_and_parts(self.actions)),
            ("vault events", _total_and_parts(self.events)),
            ("reorgs", _total_and_parts(self.reorgs)),
            ("RPC faults", _total_and_parts(self.faults)),
            ("feed chaos", _parts(self.feed_chaos) or "0"),
            ("RPC fault mixes (A/B per chain, every 10 s)", _parts(self.fault_mixes)),
            ("instances / store", f"{self.instances} / {self.store}"),
            ("daemon kill -9 + restart", str(self.restarts)),
            ("daemon SIGSTOP + SIGCONT", str(self.pauses)),
            ("pushes mined (keeper txs)", _total_and_parts(self.pushes)),
            ("checks", _parts(self.checks)),
            ("balance mismatches", str(self.mismatches)),
            ("violations", f"{len(self.violations)}" + (f" ({_parts(viol)})" if viol else "")),
            ("daemon error log lines", str(self.log_errors)),
            ("chain clocks", self.clocks),
            (
                "daemon RSS MB (first / max / last)",
                f"{self.rss_mb[0]:.0f} / {max(self.rss_mb):.0f} / {self.rss_mb[-1]:.0f}"
                if self.rss_mb
                else "-",
            ),
        ]
        rows += self.cluster_rows
        if self.load:
            rows.append(
                (
                    "load average 1 min (start / max / end, 2 cores)",
                    f"{self.load[0]:.1f} / {max(self.load):.1f} / {self.load[-1]:.1f}",
                )
            )
        rows += [(f"note: {k}", str(v)) for k, v in sorted(self.info.items())]
        rows += [(f"skipped: {k}", str(v)) for k, v in sorted(self.skipped.items())]
        w = max(len(k) for k, _ in rows)
        lines = ["", "=" * 30 + " chaos soak " + "=" * 30]
        lines += [f"{k.ljust(w)}  {v}" for k, v in rows]
        for inv, detail in self.violations[:30]:
            lines.append(f"VIOLATION [{inv}] {detail}")
        return "\n".join(lines)


def _parts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def _total_and_parts(counts: Mapping[str, int]) -> str:
    return f"{sum(counts.values())} ({_parts(counts)})"


class DaemonDied(RuntimeError):
    """The daemon process exited on its own (e.g. refused to start after a kill -9)."""


@dataclass
class Daemon:
    """One daemon instance slot; each start is a new process with a new instance id."""

    slot: str
    api_port: int
    log_path: Path
    gen: int = 0
    proc: subprocess.Popen[bytes] | None = None
    instance_id: str = ""
    up_since: float | None = None
    paused_since: float | None = None
    # Running and not paused since (None while dead or paused).
    calm_since: float | None = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Soak:
    def __init__(
        self,
        root: Path,
        duration_s: float,
        *,
        seed: int = 7,
        kill_every_s: float = 120.0,
        checkpoint_s: float = 15.0,
        instances: int = 1,
        pg_url: str | None = None,
    ) -> None:
        if instances > 1 and pg_url is None:
            raise ValueError("several instances need a PostgreSQL store (pg_url)")
        self.root = root
        self.duration_s = duration_s
        self.rng = random.Random(seed)
        self.seed = seed
        self.kill_every_s = kill_every_s
        self.checkpoint_s = checkpoint_s
        self.summary = Summary(duration_s)
        self.proxies: dict[str, list[FaultProxy]] = {}
        self.pg_base = pg_url
        self.cluster = pg_url is not None
        self.daemons = [
            Daemon(f"i{k}", free_port(), root / f"daemon-{k}.log") for k in range(instances)
        ]
        self.db_path = root / "soak.db"
        self.db_name = (
            f"{make_url(pg_url).database}_soak_{os.getpid()}" if pg_url is not None else ""
        )
        self.store_url = f"sqlite+aiosqlite:///{self.db_path}"
        self.summary.instances = instances
        self.summary.store = "postgres" if self.cluster else "sqlite"
        self.disruptions: list[cl.Disruption] = []
        self.slot_of: dict[str, str] = {}
        self.spread = cl.SpreadStats(leases=2 * len(CHAINS))
        self._rebalancing: dict[str, float] = {}
        self.fenced_out_lines = 0
        self.stale: set[tuple[str, str]] = set()
        self.lying: set[tuple[str, str]] = set()
        self.users: list[str] = []
        self.impersonated: set[str] = set()
        self._approved: set[tuple[str, str, str]] = set()
        self._market_stop = asyncio.Event()
        self._watchers: list[asyncio.Task[None]] = []
        self.shock_at = float("inf")

    # ------------------------------------------------------------------ setup

    async def run(self) -> Summary:
        shutil.copy(REPO / "config.toml", self.root / "config.toml")
        if self.pg_base is not None:
            self.store_url = await cl.create_database(self.pg_base, self.db_name)
        self.state = await asyncio.to_thread(manager.up, self.root)
        try:
            return await self._run()
        finally:
            await asyncio.to_thread(manager.down, self.root)
            if self.pg_base is not None and not os.environ.get("AGG_SOAK_KEEP_DB"):
                await cl.drop_database(self.pg_base, self.db_name)

    def _write_config(self) -> Path:
        text = (self.root / "config.toml").read_text()
        # The overlay goes last in config.toml's include list, whatever that holds: a
        # soak whose overlay is silently not read runs against the wrong store and API.
        text, n = re.subn(
            r"^include = \[(.*)\]$",
            r'include = [\1, "soak-overlay.toml"]',
            text,
            count=1,
            flags=re.M,
        )
        if n != 1:
            raise RuntimeError("config.toml has no `include = [...]` line to add the overlay to")
        cfg_path = self.root / "soak.toml"
        cfg_path.write_text(text)
        lines = []
        for c in CHAINS:
            urls = ", ".join(f'"{p.url}"' for p in self.proxies[c])
            lines += ["[[chains]]", f'name = "{c}"', f"rpc_urls = [{urls}]", ""]
        lines += [
            "[pusher]",
            f"heartbeat_s = {HEARTBEAT_S}",
            "",
            "[store]",
            f'url = "{self.store_url}"',
        ]
        if self.cluster:
            lines += ["", "[cluster]", f"lease_ttl_s = {LEASE_TTL_S}"]
        (self.root / "soak-overlay.toml").write_text("\n".join(lines) + "\n")
        return cfg_path

    async def _run(self) -> Summary:
        st = self.state
        for i, c in enumerate(CHAINS):
            self.proxies[c] = [
                await FaultProxy(st.url(c), seed=self.seed * 100 + i * 2 + k).start()
                for k in range(2)
            ]
        self.cfg_path = self._write_config()
        cfg = load_config(self.cfg_path)
        self.cfg = cfg
        rate_contracts = {}
        for a in cfg.assets:
            if a.rate is not None:
                rate_contracts[a.symbol] = (a.rate.chain, a.rate.kind, a.rate.address)
        self.session = aiohttp.ClientSession()
        self.rpc = {c: Rpc(self.session, st.url(c)) for c in CHAINS}
        self.checker = Checker(
            cfg=cfg,
            urls={c: st.url(c) for c in CHAINS},
            tokens={c: st.deployments[c].tokens for c in CHAINS},
            vaults={c: st.deployments[c].vault for c in CHAINS},
            registries={c: st.deployments[c].registry for c in CHAINS},
            rate_contracts=rate_contracts,
            keeper=st.accounts["keeper"],
            store=self._store_sql(),
            heartbeat_s=HEARTBEAT_S,
            grace_s=GRACE_S,
        )
        await self.checker.start()
        tape_stop = asyncio.Event()
        tasks: list[asyncio.Task[Any]] = []
        chaos_stop = asyncio.Event()
        workers: list[asyncio.Task[Any]] = []
        try:
            await self._make_users()
            self.checker.accounts = {u.lower() for u in self.users}
            for c in CHAINS:
                self.checker.start_blocks[c] = int(await self.rpc[c]("eth_blockNumber", []), 16)
            self.checker.soak_start_ts = int(time.time())
            tasks.append(asyncio.create_task(self.checker.run_tape(tape_stop)))
            tasks.append(asyncio.create_task(self._market()))
            if self.cluster:
                await self._prepare_cluster_store()
                tasks.append(asyncio.create_task(self._sample_leases(tape_stop)))
            for d in self.daemons:
                self._start_daemon(d)
            for d in self.daemons:
                await self._wait_ready(d, 180)
            await self._wait_first_pushes(90)
            workers = [asyncio.create_task(self._activity(c, chaos_stop)) for c in CHAINS] + [
                asyncio.create_task(self._reorgs(chaos_stop)),
                asyncio.create_task(self._rpc_chaos(chaos_stop)),
                asyncio.create_task(self._feed_chaos(chaos_stop)),
                asyncio.create_task(self._kills(chaos_stop)),
            ]
            t_end = time.monotonic() + self.duration_s
            self.shock_at = time.monotonic() + self.duration_s * 0.3
            while time.monotonic() < t_end:
                await asyncio.sleep(min(self.checkpoint_s, max(0.0, t_end - time.monotonic())))
                for w in workers:
                    if w.done() and w.exception() is not None:
                        raise w.exception()  # type: ignore[misc]
                await self._checkpoint()
            chaos_stop.set()
            await asyncio.gather(*workers)
            await self._settle()
            try:
                await self._final()
            except Exception as exc:
                # A checker failure must not lose the table of the run before it.
                self.summary.violations.append(("checker", f"{type(exc).__name__}: {exc}"))
        except DaemonDied as exc:
            # A daemon that cannot come back is the worst violation: report it in the
            # table rather than as a bare traceback.
            self.summary.violations.append(("daemon", str(exc)[-1500:]))
            chaos_stop.set()
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        finally:
            tape_stop.set()
            self._market_stop.set()
            for w in self._watchers:
                w.cancel()
            await asyncio.gather(*self._watchers, return_exceptions=True)
            await asyncio.gather(*tasks, return_exceptions=True)
            for d in self.daemons:
                if d.paused_since is not None and d.alive():
                    assert d.proc is not None
                    d.proc.send_signal(signal.SIGCONT)
                    d.paused_since = None
            for d in self.daemons:
                await self._stop_daemon(d)
            for ps in self.proxies.values():
                for p in ps:
                    self.summary.faults.update(p.stats)
                    await p.stop()
            await self.checker.close()
            await self.session.close()
        s = self.summary
        s.checks = self.checker.stats.checks
        s.skipped = self.checker.stats.skipped
        s.info.update(self.checker.stats.info)
        s.mismatches = self.checker.stats.mismatches
        s.violations += [(v.invariant, v.detail) for v in self.checker.stats.violations]
        s.log_errors = self._log_errors()
        s.load.append(os.getloadavg()[0])
        s.evidence = self.checker.stats.evidence
        s.clocks = (
            f"spread between chains up to {self.checker.clock_skew_s} s, ahead of wall "
            f"time by up to {self.checker.clock_lead_s:.1f} s"
        )
        return s

    async def _make_users(self) -> None:
        """The four demo users, the free dev accounts 7..9, and 8 impersonated addresses."""
        st = self.state
        dev = await self.rpc["beta"]("eth_accounts", [])
        self.users = list(st.accounts["users"]) + [dev[i] for i in (7, 8, 9)]
        for i in range(8):
            addr = "0x" + (0x50A4 * 10**30 + i + 1).to_bytes(20, "big").hex()
            self.users.append(addr)
            self.impersonated.add(addr.lower())
        for c in CHAINS:
            for u in self.impersonated:
                await self.rpc[c]("anvil_impersonateAccount", [u])
                await self.rpc[c]("anvil_setBalance", [u, hex(10**24)])

    # ------------------------------------------------------------------ daemon process

    def _store_sql(self) -> StoreSql:
        if self.cluster:
            return PostgresSql(cl.asyncpg_dsn(self.store_url))
        return SqliteSql(self.db_path)

    async def _prepare_cluster_store(self) -> None:
        """Migrate the fresh database, then put the write audit in place before any
        daemon starts: every protected write from the first one on is audited."""
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        out = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "aggregator.cli", "-c", str(self.cfg_path), "db", "upgrade"],
            env=env,
            cwd=self.root,
            capture_output=True,
            timeout=120,
        )
        if out.returncode != 0:
            raise RuntimeError(f"db upgrade failed: {out.stderr.decode()[-2000:]}")
        await cl.install_audit(self.store_url)

    def _start_daemon(self, d: Daemon) -> None:
        d.gen += 1
        d.instance_id = f"soak-{d.slot}-g{d.gen}"
        self.slot_of[d.instance_id] = d.slot
        env = {
            **os.environ,
            "AGG_KEEPER_KEY": KEEPER_KEY,
            "AGG_LOG_FORMAT": "json",
            "PYTHONWARNINGS": "ignore",
            "AGG_API__PORT": str(d.api_port),
            "AGG_CLUSTER__INSTANCE_ID": d.instance_id,
        }
        log = d.log_path.open("ab")
        d.proc = subprocess.Popen(
            [sys.executable, "-m", "aggregator.cli", "-c", str(self.cfg_path), "run"],
            env=env,
            stdout=log,
            stderr=log,
            cwd=self.root,
        )
        log.close()
        d.up_since = d.calm_since = time.time()
        d.paused_since = None
        self._rebalancing[d.slot] = time.time()

    @property
    def up_since(self) -> float | None:
        """For the freshness check: since when the service has run undisturbed (one
        instance: since it started; a cluster: since the last kill, pause, restart or
        resume, as every one of them may move a lease)."""
        calm = [d.calm_since for d in self.daemons]
        if not self.cluster:
            return calm[0]
        last = max((e.at for e in self.disruptions), default=0.0)
        known = [c for c in calm if c is not None]
        if not known:
            return None
        return max([last, *known])

    async def _kill_daemon(self, d: Daemon) -> None:
        assert d.proc is not None
        d.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(d.proc.wait, 30)
        d.up_since = d.calm_since = d.paused_since = None
        self.summary.restarts += 1

    async def _stop_daemon(self, d: Daemon) -> None:
        if d.proc is None or d.proc.poll() is not None:
            return
        d.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(d.proc.wait, 30)
            if code != 0:
                self.summary.violations.append(
                    ("shutdown", f"{d.instance_id}: SIGTERM exit code {code}")
                )
        except subprocess.TimeoutExpired:
            d.proc.kill()
            d.proc.wait()
            self.summary.violations.append(
                ("shutdown", f"{d.instance_id}: SIGTERM did not stop the daemon")
            )

    def _api(self, d: Daemon, path: str) -> tuple[int, Any]:
        url = f"http://127.0.0.1:{d.api_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                body = r.read()
                return r.status, json.loads(body) if body[:1] in b"{[" else body
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")
        except OSError:
            return 0, None

    async def _wait_ready(self, d: Daemon, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        reasons: list[str] = []
        while time.monotonic() < deadline:
            if d.proc is not None and d.proc.poll() is not None:
                raise DaemonDied(
                    f"{d.instance_id} exited with {d.proc.returncode}: {self._tail(d)}"
                )
            code, body = await asyncio.to_thread(self._api, d, "/readyz")
            if code == 200:
                return []
            reasons = (body or {}).get("reasons", []) if isinstance(body, dict) else []
            await asyncio.sleep(1)
        return reasons or ["not ready"]

    def _tail(self, d: Daemon) -> str:
        try:
            return d.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def _log_errors(self) -> int:
        n = 0
        fenced = 0
        for d in self.daemons:
            try:
                text = d.log_path.read_text(errors="replace")
            except OSError:
                continue
            for line in text.splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("level") in ("error", "critical"):
                    n += 1
                if "is no longer current" in str(rec.get("msg", rec.get("message", ""))):
                    fenced += 1
        self.fenced_out_lines = fenced
        return n

    async def _wait_first_pushes(self, timeout: float) -> None:
        """Activity starts once the daemon's own entries replaced the bootstrap ones."""
        deadline = time.monotonic() + timeout
        demo = [u.lower() for u in self.state.accounts["users"]]
        while time.monotonic() < deadline:
            ents = await self.checker.entries()
            if all(
                ents.get((c, u), (0, 0, 0))[2] >= self.checker.soak_start_ts
                for c in CHAINS
                for u in demo
                if (c, u) in ents
            ):
                return
            await asyncio.sleep(1)
        tails = "\n".join(self._tail(d) for d in self.daemons)
        raise RuntimeError(f"the daemon did not push within {timeout:.0f}s: {tails}")

    def _rss(self) -> None:
        self.summary.load.append(os.getloadavg()[0])
        rss = []
        for d in self.daemons:
            if not d.alive():
                continue
            assert d.proc is not None
            try:
                for line in Path(f"/proc/{d.proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        rss.append(int(line.split()[1]) / 1024)
            except OSError:
                pass
        if rss:
            self.summary.rss_mb.append(max(rss))

    # ------------------------------------------------------------------ cluster

    async def _sample_leases(self, stop: asyncio.Event) -> None:
        """The lease table every 2 s: the spread while every instance runs undisturbed,
        and how long a restarted or resumed instance takes to get its share back."""
        import asyncpg

        con = await asyncpg.connect(cl.asyncpg_dsn(self.store_url), timeout=10)
        try:
            while not stop.is_set():
                try:
                    rows = await cl.lease_rows(con)
                except asyncpg.PostgresError:
                    rows = []
                now = time.time()
                counts = cl.work_counts(rows, self.slot_of)
                counts = {d.slot: counts.get(d.slot, 0) for d in self.daemons}
                calm = [d.calm_since for d in self.daemons]
                steady = all(c is not None and now - c >= SPREAD_SETTLE_S for c in calm)
                self.spread.sample(now, counts, steady)
                floor = self.spread.leases // len(self.daemons)
                for slot, since in list(self._rebalancing.items()):
                    d = next(x for x in self.daemons if x.slot == slot)
                    if d.calm_since is None:
                        self._rebalancing.pop(slot)
                    elif counts.get(slot, 0) >= floor:
                        self.spread.rebalance_s.append(now - since)
                        self._rebalancing.pop(slot)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 2.0)
        finally:
            await con.close()

    async def _held_by(self, instance_id: str) -> dict[str, int]:
        import asyncpg

        con = await asyncpg.connect(cl.asyncpg_dsn(self.store_url), timeout=10)
        try:
            rows = await cl.lease_rows(con)
        finally:
            await con.close()
        return {
            str(r["name"]): int(r["token"])
            for r in rows
            if str(r["name"]).startswith(cl.WORK_PREFIXES)
            and r["live"]
            and r["holder"] == instance_id
        }

    async def _victim(self) -> Daemon:
        """The instance holding a random chain's index or push lease (any live one if
        that lease has no live holder among them)."""
        import asyncpg

        lease = f"{self.rng.choice(['index', 'push'])}:{self.rng.choice(CHAINS)}"
        con = await asyncpg.connect(cl.asyncpg_dsn(self.store_url), timeout=10)
        try:
            rows = {str(r["name"]): r for r in await cl.lease_rows(con)}
        finally:
            await con.close()
        row = rows.get(lease)
        live = [d for d in self.daemons if d.alive() and d.paused_since is None]
        if row is not None and row["live"]:
            for d in live:
                if d.instance_id == row["holder"]:
                    return d
        return self.rng.choice(live)

    def _cluster_report(self, audit: list[cl.AuditRow]) -> None:
        s = self.summary
        rep = cl.judge_fencing(audit)
        mapped = tenures = 0
        first_nonce: dict[str, int] = {}
        for r in audit:
            if r.kind == "write" and r.tbl == "push_tx" and r.op == "INSERT":
                assert r.chain is not None and r.nonce is not None
                first_nonce[r.chain] = min(first_nonce.get(r.chain, r.nonce), r.nonce)
        for c, txs in self.checker.keeper_txs.items():
            start = first_nonce.get(c)
            if start is None:
                continue
            m, n_tenures = cl.judge_mined_order(rep, c, [x for x in txs if x[0] >= start])
            mapped += m
            tenures += n_tenures
        s.violations += rep.violations
        self.checker.stats.checks["fencing"] += 1
        tk = cl.takeovers(audit, self.disruptions, ttl_s=LEASE_TTL_S)
        by_kind: dict[str, list[cl.Takeover]] = {}
        for tko in tk:
            by_kind.setdefault(tko.kind, []).append(tko)
        rows = [
            (
                "fenced writes (audited, by lease kind)",
                _total_and_parts(
                    Counter(
                        {
                            k: sum(v for n, v in rep.writes.items() if n.startswith(k))
                            for k in ("index", "push")
                        }
                    )
                ),
            ),
            ("lease tenures (acquisitions of work leases)", str(sum(rep.tenures.values()))),
            ("fenced transactions per instance", _parts(rep.writers)),
            (
                "keeper txs mapped to their allocating tenure",
                f"{mapped} (over {tenures} tenures, token order never goes back)",
            ),
            ("nonces allocated to 2+ records", str(rep.nonces_reallocated)),
            ("writes refused by the fence (daemon logs)", str(self.fenced_out_lines)),
        ]
        for kind in ("kill", "pause"):
            ts = by_kind.get(kind, [])
            taken = [t for t in ts if t.acquired_after_s is not None]
            rows.append(
                (
                    f"takeover after {kind}: leases held by the victim",
                    f"{len(ts)} ({len(taken)} taken over, {len(ts) - len(taken)} kept/retaken "
                    "by the victim)",
                )
            )
            rows.append(
                (
                    f"  {kind} -> new holder acquired",
                    cl.dist([t.acquired_after_s for t in taken if t.acquired_after_s is not None]),
                )
            )
            rows.append(
                (
                    f"  {kind} -> new holder's first write",
                    cl.dist(
                        [t.first_write_after_s for t in taken if t.first_write_after_s is not None]
                    ),
                )
            )
        pauses = [e.pause_s for e in self.disruptions if e.kind == "pause"]
        if pauses:
            rows.append(
                (
                    "pause lengths",
                    f"{min(pauses):.1f}..{max(pauses):.1f} s (lease ttl {LEASE_TTL_S:.0f} s)",
                )
            )
        rows.append(
            (f"lease spread (all instances up >= {SPREAD_SETTLE_S:.0f} s)", self.spread.table())
        )
        rows.append(
            (
                "longest undisturbed stretch with an idle instance",
                f"{self.spread.longest_idle_s:.0f} s",
            )
        )
        rows.append(
            (
                "rebalance after (re)start: instance back to its floor",
                cl.dist(self.spread.rebalance_s),
            )
        )
        s.cluster_rows = rows
        self.checker.stats.checks["spread"] += 1
        if self.spread.longest_idle_s > SPREAD_IDLE_MAX_S:
            s.violations.append(
                (
                    "spread",
                    f"an undisturbed instance held no work lease for "
                    f"{self.spread.longest_idle_s:.0f} s (max {SPREAD_IDLE_MAX_S:.0f} s)",
                )
            )

    # ------------------------------------------------------------------ checker

    async def _checkpoint(self) -> None:
        for d in self.daemons:
            if d.up_since is not None and d.proc is not None and d.proc.poll() is not None:
                raise DaemonDied(
                    f"{d.instance_id} exited with {d.proc.returncode}: {self._tail(d)}"
                )
        self._rss()
        await self.checker.check_balances()
        await self.checker.check_registry()
        await self.checker.check_freshness(self.up_since)

    async def _settle(self) -> None:
        """Chaos off: clean endpoints, feeds live, daemons up; wait until they caught up
        (ready, nothing pending), then the final checks run on a quiet system."""
        t0 = time.monotonic()
        for ps in self.proxies.values():
            for p in ps:
                p.set(**NEUTRAL)
        self.stale.clear()
        self.lying.clear()
        for d in self.daemons:
            if not d.alive():
                self._start_daemon(d)
        for d in self.daemons:
            reasons = await self._wait_ready(d, 150)
            if reasons:
                self.summary.violations.append(("settle", f"{d.instance_id} not ready: {reasons}"))
        # Pushes in flight land and get confirmed: let two push intervals pass.
        await asyncio.sleep(8)
        self.summary.settle_s = time.monotonic() - t0

    async def _final(self) -> None:
        self._rss()
        evs = await self.checker.events()
        self.summary.events.update(e.kind for e in evs if e.ts >= self.checker.soak_start_ts)
        await self.checker.check_balances()
        await self.checker.check_registry(evs, settled=True)
        await self.checker.check_freshness(self.up_since)
        self.checker.check_spend(evs)
        self.summary.pushes = await self.checker.check_nonces()
        if self.cluster:
            self._log_errors()
            self._cluster_report(await cl.read_audit(self.store_url))

    # ------------------------------------------------------------------ market

    async def _market(self) -> None:
        """The simulator's price model, driven here so feeds can go stale or lie."""
        model = MarketModel.initial(self.seed)
        shock_at = float("inf")
        async with aiohttp.ClientSession() as session:
            while not self._market_stop.is_set():
                model.step(3.0)
                if time.monotonic() > min(shock_at, self.shock_at):
                    model.shock(0.3)  # one sure ETH drop: liquidations have work
                    shock_at = self.shock_at = float("inf")
                per_chain = {}
                for c in CHAINS:
                    calls = []
                    dep = self.state.deployments[c]
                    for to, call in _calls_for(model, self.state, c):
                        data = call
                        sym = next(
                            (s for s, f in dep.feeds.items() if f.lower() == to.lower()), None
                        )
                        if sym is not None and (c, sym) in self.stale:
                            continue
                        if sym is not None and (c, sym) in self.lying:
                            answer = int.from_bytes(data[4:], "big", signed=True)
                            data = data[:4] + encode(["int256"], [int(answer * 1.6)])
                        calls.append((to, data))
                    per_chain[c] = calls
                await asyncio.gather(
                    *(_update_chain(session, self.state, c, cl) for c, cl in per_chain.items()),
                    return_exceptions=True,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._market_stop.wait(), 3.0)

    # ------------------------------------------------------------------ chaos

    async def _sleep(self, stop: asyncio.Event, s: float) -> bool:
        try:
            await asyncio.wait_for(stop.wait(), s)
            return True
        except TimeoutError:
            return False

    async def _reorgs(self, stop: asyncio.Event) -> None:
        while not await self._sleep(stop, self.rng.uniform(6, 15)):
            c = self.rng.choice(CHAINS)
            window = self.cfg.chain(c).confirmations
            depth = self.rng.randint(1, window)
            try:
                if self.state.nodes[c].fork_url:
                    depth = await self._reorg_fork(c, depth, window)
                else:
                    await self.rpc[c]("anvil_reorg", [depth, []])
                    # Both kinds of reorg rewind anvil's clock by the replaced blocks; a
                    # real chain's clock keeps to wall time.
                    await self.rpc[c]("evm_setTime", [int(time.time())])
            except RuntimeError as exc:
                self.summary.info[f"reorg refused: {exc}"[:80]] += 1
                continue
            if depth:
                self.summary.reorgs[f"{c} depth {depth}"] += 1

    async def _reorg_fork(self, chain: str, depth: int, window: int) -> int:
        """A reorg on a --fork-url node: anvil_reorg there drops the transactions but
        keeps their state (tests/integration/chains/test_chains_reorg.py), so snapshot
        now, let `depth` blocks be mined on top, and revert: the interval miner then
        builds a competing branch from the snapshot, on the wall clock again. Returns
        the depth, 0 if the chain ran past the window meanwhile (the snapshot is then
        dropped unused)."""
        rpc = self.rpc[chain]
        snap = await rpc("evm_snapshot", [])
        start = int(await rpc("eth_blockNumber", []), 16)
        deadline = time.monotonic() + 10 * depth
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            mined = int(await rpc("eth_blockNumber", []), 16) - start
            if mined >= depth:
                if mined > window:
                    return 0
                await rpc("evm_revert", [snap])
                await rpc("evm_setTime", [int(time.time())])
                return mined
        return 0

    async def _rpc_chaos(self, stop: asyncio.Event) -> None:
        while True:
            for c in CHAINS:
                a, b = self.proxies[c]
                ma = self.rng.choice(list(MIXES_A))
                mb = self.rng.choice(list(MIXES_B))
                a.set(**{**NEUTRAL, **MIXES_A[ma]})
                b.set(**{**NEUTRAL, **MIXES_B[mb]})
                self.summary.fault_mixes[f"{ma}/{mb}"] += 1
            if await self._sleep(stop, 10):
                return

    async def _feed_chaos(self, stop: asyncio.Event) -> None:
        kinds = ["stale", "lying"]
        while not await self._sleep(stop, self.rng.uniform(8, 15)):
            c = self.rng.choice(CHAINS)
            sym = self.rng.choice(FEED_CHAOS_ASSETS)
            kind = kinds[self.summary.feed_chaos.total() % 2]
            if kind == "stale":
                await self._make_stale(c, sym)
                self.stale.add((c, sym))
            else:
                self.lying.add((c, sym))
            self.summary.feed_chaos[kind] += 1
            await self._sleep(stop, self.rng.uniform(10, 20))
            self.stale.discard((c, sym))
            self.lying.discard((c, sym))

    async def _make_stale(self, chain: str, sym: str) -> None:
        feed = self.state.deployments[chain].feeds[sym]
        raw = await self.rpc[chain].call(feed, S["latestRoundData()"])
        rid = _word(raw)
        answer = int.from_bytes(raw[32:64], "big", signed=True)
        old = int(time.time()) - 7200
        data = (
            S["updateRoundData(uint80,int256,uint256,uint256)"]
            + encode(["uint80", "int256", "uint256", "uint256"], [rid + 1, answer, old, old]).hex()
        )
        await self._send(
            chain,
            self.state.deployments[chain].deployer,
            self.state.deployments[chain].feeds[sym],
            data,
        )

    async def _kills(self, stop: asyncio.Event) -> None:
        first = min(self.kill_every_s, self.duration_s * 0.4)
        wait = first
        while not await self._sleep(stop, wait):
            if self.cluster:
                await self._disrupt(stop)
                wait = self.kill_every_s * self.rng.uniform(0.5, 1.5)
                continue
            d = self.daemons[0]
            await self._kill_daemon(d)
            await asyncio.sleep(self.rng.uniform(1, 3))
            self._start_daemon(d)
            self._watchers.append(asyncio.create_task(self._watch_restart(d)))
            wait = self.kill_every_s

    async def _disrupt(self, stop: asyncio.Event) -> None:
        """Kill -9 (then restart after 1..15 s) or SIGSTOP (then SIGCONT after 2 s up to
        2.5 lease TTLs) the holder of a random chain's lease; one at a time, so a peer
        is always there to take over."""
        d = await self._victim()
        assert d.proc is not None
        held = await self._held_by(d.instance_id)
        kind = self.rng.choice(["kill", "pause"])
        t = time.time()
        if kind == "kill":
            self.disruptions.append(cl.Disruption("kill", d.instance_id, t, held))
            await self._kill_daemon(d)
            await self._sleep(stop, self.rng.uniform(1, 15))
            self._start_daemon(d)
            self._watchers.append(asyncio.create_task(self._watch_restart(d)))
            return
        pause = self.rng.uniform(2, 2.5 * LEASE_TTL_S)
        self.disruptions.append(cl.Disruption("pause", d.instance_id, t, held, pause))
        d.proc.send_signal(signal.SIGSTOP)
        d.paused_since, d.calm_since = t, None
        self.summary.pauses += 1
        await asyncio.sleep(pause)
        d.proc.send_signal(signal.SIGCONT)
        d.paused_since = None
        d.calm_since = time.time()
        self._rebalancing[d.slot] = time.time()

    async def _watch_restart(self, d: Daemon) -> None:
        """The daemon's own view of every account, twice a second for a while after a
        restart, for the evidence of a violation there (the window where a half-loaded
        daemon could push)."""
        base = f"http://127.0.0.1:{d.api_port}/v1/accounts/"
        timeout = aiohttp.ClientTimeout(total=2)

        async def view(a: str) -> Any:
            try:
                async with self.session.get(base + a, timeout=timeout) as r:
                    return await r.json() if r.status == 200 else None
            except (aiohttp.ClientError, TimeoutError, ValueError):
                return None

        t_end = time.monotonic() + RESTART_WATCH_S
        while time.monotonic() < t_end:
            views = await asyncio.gather(*(view(a) for a in self.users))
            now = time.time()
            for a, body in zip(self.users, views, strict=True):
                if body is not None:
                    self.checker.daemon_views.append((now, a.lower(), body))
            await asyncio.sleep(0.5)

    # ------------------------------------------------------------------ activity

    async def _send(self, chain: str, sender: str, to: str, data: str) -> bool:
        rpc = self.rpc[chain]
        if sender.lower() in self.impersonated:
            await rpc("anvil_setBalance", [sender, hex(10**24)])
        try:
            h = await rpc(
                "eth_sendTransaction", [{"from": sender, "to": to, "data": data, "gas": GAS}]
            )
        except RuntimeError:
            return False
        for _ in range(100):
            r = await rpc("eth_getTransactionReceipt", [h])
            if r is not None:
                return int(r["status"], 16) == 1
            await asyncio.sleep(0.1)
        return False  # dropped by a reorg

    async def _view(self, chain: str, to: str, sig: str, *args: str) -> int:
        return _word(await self.rpc[chain].call(to, S[sig] + "".join(args)))

    async def _ensure_tokens(self, chain: str, user: str, sym: str, amount: int) -> None:
        dep = self.state.deployments[chain]
        tok = dep.tokens[sym]
        if await self._view(chain, tok, "balanceOf(address)", addr_word(user)) < amount:
            await self._send(
                chain,
                dep.deployer,
                tok,
                S["mint(address,uint256)"] + addr_word(user) + _u(amount * 4),
            )
        allowed = await self._view(
            chain, tok, "allowance(address,address)", addr_word(user), addr_word(dep.vault)
        )
        if allowed < amount:
            await self._send(
                chain,
                user,
                tok,
                S["approve(address,uint256)"] + addr_word(dep.vault) + _u(MAX_UINT),
            )

    def _raw(self, sym: str, usd: float) -> int:
        spec = ASSET_BY_SYMBOL[sym]
        price = (
            self.checker.tape[-1][1].get(sym, spec.price_usd)
            if self.checker.tape
            else spec.price_usd
        )
        return max(1, int(usd / price * 10**spec.decimals))

    async def _activity(self, chain: str, stop: asyncio.Event) -> None:
        rng = random.Random(self.rng.random())
        dep = self.state.deployments[chain]
        vault = dep.vault
        collat = [s for s in dep.tokens]
        debts = ["USDC", "WETH"]
        while not await self._sleep(stop, rng.uniform(0.2, 0.8)):
            user = rng.choice(self.users)
            kind = rng.choices(
                ["deposit", "borrow", "repay", "withdraw", "liquidate"], [30, 30, 15, 15, 10]
            )[0]
            try:
                ok = await self._act(
                    rng=rng,
                    chain=chain,
                    kind=kind,
                    user=user,
                    vault=vault,
                    collat=collat,
                    debts=debts,
                    dep=dep,
                )
            except RuntimeError:
                ok = None
            if ok is None:
                continue
            self.summary.actions[f"{kind} {'ok' if ok else 'refused'}"] += 1

    async def _act(
        self,
        *,
        rng: random.Random,
        chain: str,
        kind: str,
        user: str,
        vault: str,
        collat: list[str],
        debts: list[str],
        dep: Any,
    ) -> bool | None:
        if kind == "deposit":
            sym = rng.choice(collat)
            raw = self._raw(sym, rng.uniform(500, 20_000))
            await self._ensure_tokens(chain, user, sym, raw)
            return await self._send(
                chain,
                user,
                vault,
                S["deposit(address,uint256)"] + addr_word(dep.tokens[sym]) + _u(raw),
            )
        if kind == "borrow":
            credit = await self._view(chain, dep.registry, "creditOf(address)", addr_word(user))
            if credit == 0:
                return None
            sym = rng.choice(debts)
            # Up to a little over the credit: the vault must refuse the excess.
            raw = self._raw(sym, credit / 1e6 * rng.uniform(0.2, 1.1))
            return await self._send(
                chain,
                user,
                vault,
                S["borrow(address,uint256)"] + addr_word(dep.tokens[sym]) + _u(raw),
            )
        if kind == "repay":
            sym = rng.choice(debts)
            tok = dep.tokens[sym]
            debt = await self._view(
                chain, vault, "debtOf(address,address)", addr_word(user), addr_word(tok)
            )
            if debt == 0:
                return None
            raw = max(1, int(debt * rng.uniform(0.2, 1.0)))
            await self._ensure_tokens(chain, user, sym, raw)
            return await self._send(
                chain,
                user,
                vault,
                S["repay(address,address,uint256)"] + addr_word(user) + addr_word(tok) + _u(raw),
            )
        if kind == "withdraw":
            sym = rng.choice(collat)
            tok = dep.tokens[sym]
            bal = await self._view(
                chain, vault, "collateralOf(address,address)", addr_word(user), addr_word(tok)
            )
            if bal == 0:
                return None
            raw = max(1, int(bal * rng.uniform(0.05, 0.5)))
            return await self._send(
                chain, user, vault, S["withdraw(address,uint256)"] + addr_word(tok) + _u(raw)
            )
        # liquidate: the liquidator (account 6) takes any account the registry marks
        liquidator = self.state.accounts["liquidator"]
        for victim in rng.sample(self.users, len(self.users)):
            raw = await self.rpc[chain].call(
                dep.registry, S["healthOf(address)"] + addr_word(victim)
            )
            if _word(raw[32:64]) < 2:
                continue
            for dsym in debts:
                dtok = dep.tokens[dsym]
                debt = await self._view(
                    chain, vault, "debtOf(address,address)", addr_word(victim), addr_word(dtok)
                )
                if debt == 0:
                    continue
                for csym in rng.sample(collat, len(collat)):
                    ctok = dep.tokens[csym]
                    if not await self._view(
                        chain,
                        vault,
                        "collateralOf(address,address)",
                        addr_word(victim),
                        addr_word(ctok),
                    ):
                        continue
                    await self._ensure_tokens(chain, liquidator, dsym, debt)
                    return await self._send(
                        chain,
                        liquidator,
                        vault,
                        S["liquidate(address,address,uint256,address)"]
                        + addr_word(victim)
                        + addr_word(dtok)
                        + _u(max(1, debt // 2))
                        + addr_word(ctok),
                    )
        return None
