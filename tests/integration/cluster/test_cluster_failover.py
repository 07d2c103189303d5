"""Three `aggregator run` processes on one PostgreSQL database and the devnet.

The holder of alpha's leases is killed with SIGKILL at random moments (during the
backfill, while a push is in flight, at a random delay), another instance takes over
within the lease bound and resumes from the checkpoint and the stored nonce and pending
records; one holder is paused with SIGSTOP past its lease and resumed, and must find
itself fenced out. Then, against the chains: no event lost or stored twice, balances
equal the vaults', every keeper nonce used by exactly one recorded transaction, a
registry entry for every account with debt or credit, and all instances serving the
same positions. Takeover times (kill -> the new holder's first protected write, from
the lease row) are printed and attached to the test report.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import time
from pathlib import Path
from typing import Any

import pytest
from cluster_env import (
    LEASE_TTL_S,
    RENEW_S,
    Activity,
    Cluster,
    check_events_and_balances,
    check_nonces,
    check_registry,
    cluster_config,
    keeper_nonce,
    leases,
    pg_database,
    positions_seen_by,
    query,
    wait_for,
)

from devkit import manager

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(400)]

# A takeover must land within the TTL + one renew round + start-up of the work. The
# margin is wide on purpose: on a loaded 2-core CI machine an instance's start-up of the
# work took 5 s (acquired 8.05 s after the kill with ttl 3 s). Its speed is reported
# (median and max, below), not judged; the bound only catches a takeover that hangs.
TAKEOVER_BOUND_S = LEASE_TTL_S + 2 * RENEW_S + 15.0
KILL_ROUNDS = int(os.environ.get("AGG_CLUSTER_KILL_ROUNDS", "4"))
SOAK_KILL_ROUNDS = 25


def _takeover(cl: Cluster, lease: str, killed: str, t_kill: float) -> dict[str, Any]:
    """Wait for another instance's first protected write under `lease`; seconds since
    the kill (database clock stamps the write; same host)."""

    def done() -> dict[str, Any] | None:
        row = leases(cl.store_url).get(lease)
        if row and row["holder"] != killed and row["first_write_at"] is not None:
            return row
        return None

    try:
        row = wait_for(done, TAKEOVER_BOUND_S + 10, f"takeover of {lease}")
    except AssertionError as exc:
        # What the successor was doing: the lease row (acquired? written?) and its log.
        now = leases(cl.store_url).get(lease) or {}
        inst = cl.instances.get(str(now.get("holder")))
        tail = inst.log()[-4000:] if inst is not None else "(no successor)"
        raise AssertionError(f"{exc}; lease row {now}; successor's log tail:\n{tail}") from exc
    return {
        "lease": lease,
        "new_holder": row["holder"],
        "token": int(row["token"]),
        "acquired_s": float(row["acquired_at"]) - t_kill,
        "first_write_s": float(row["first_write_at"]) - t_kill,
    }


def _push_in_flight(cl: Cluster) -> bool:
    rows = query(
        cl.store_url,
        "SELECT count(*) AS n FROM push_tx WHERE chain = 'alpha' "
        "AND status IN ('prepared', 'sent')",
    )
    return int(rows[0]["n"]) > 0


def _backfilling(cl: Cluster, low: int, high: int) -> bool:
    cp = query(cl.store_url, "SELECT indexed_block FROM chain_checkpoint WHERE chain = 'alpha'")
    if cp and int(cp[0]["indexed_block"]) >= high:
        raise AssertionError("the backfill finished before it could be interrupted")
    return bool(cp) and low <= int(cp[0]["indexed_block"]) < high


def _indexed(cl: Cluster) -> int:
    cp = query(cl.store_url, "SELECT indexed_block FROM chain_checkpoint WHERE chain = 'alpha'")
    return int(cp[0]["indexed_block"]) if cp else -1


def _quiet(cl: Cluster, devnet: manager.DevnetState) -> bool:
    """Every chain indexed past the point the activity stopped, nothing in flight."""
    from devkit.deploy import web3_session

    for name in manager.INDEXED_CHAINS:
        with web3_session(devnet.url(name)) as w3:
            head = int(w3.eth.block_number)
        cp = query(
            cl.store_url, "SELECT indexed_block FROM chain_checkpoint WHERE chain = :c", c=name
        )
        if not cp or int(cp[0]["indexed_block"]) < head - 1:
            return False
    open_txs = query(
        cl.store_url, "SELECT count(*) AS n FROM push_tx WHERE status NOT IN ('confirmed')"
    )
    return int(open_txs[0]["n"]) == 0


# As tests/conftest.py (importing it by name is ambiguous next to other conftest modules).
PG_URL = os.environ.get("AGG_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/agg_test")


def _run_failover(
    devnet: manager.DevnetState, tmp_path: Path, rounds: int, seed: int
) -> dict[str, Any]:
    rng = random.Random(seed)
    start_nonce = {n: keeper_nonce(devnet, n) for n in manager.INDEXED_CHAINS}
    from devkit.deploy import web3_session

    with web3_session(devnet.url("alpha")) as w3:
        alpha_head = int(w3.eth.block_number)
    config = cluster_config(devnet, max_log_range=1)
    takeovers: list[dict[str, Any]] = []
    with pg_database(PG_URL) as url:
        cl = Cluster(config, url, tmp_path)
        try:
            with Activity(devnet, seed) as activity:
                # Round 0, during the backfill: three instances start together on an
                # empty store; whichever takes alpha's index lease indexes from block 0,
                # one block per step, and is killed half-way.
                for n in range(3):
                    cl.start(f"inst-{n}")
                first_id = wait_for(lambda: cl.holder("index:alpha"), 60, "first lease")
                wait_for(
                    lambda: _backfilling(cl, alpha_head // 4, alpha_head // 2),
                    60,
                    "backfill under way",
                    0.02,
                )
                first = cl.instances[first_id]
                at_block = _indexed(cl)
                t_kill = time.time()
                first.proc.send_signal(signal.SIGKILL)
                first.proc.wait()
                got = _takeover(cl, "index:alpha", first_id, t_kill)
                got["moment"] = "backfill"
                got["killed_at_block"] = at_block
                takeovers.append(got)
                next_id = 3
                cl.start(f"inst-{next_id}")

                for r in range(rounds):
                    moment = "push" if r % 2 == 0 else "random"
                    if moment == "push":
                        wait_for(lambda: _push_in_flight(cl), 60, "a push in flight", 0.02)
                    else:
                        time.sleep(rng.uniform(0.5, 3.0))
                    holder = cl.holder("push:alpha") if moment == "push" else None
                    holder = holder or cl.holder("index:alpha")
                    assert holder is not None
                    victim = cl.instances[holder]
                    held = {n for n, row in leases(url).items() if row["holder"] == holder}
                    t_kill = time.time()
                    victim.proc.send_signal(signal.SIGKILL)
                    victim.proc.wait()
                    for lease in ("index:alpha", "push:alpha"):
                        if lease in held:
                            if lease == "push:alpha":
                                # The first push write waits for something to push.
                                row = wait_for(
                                    lambda lease=lease, holder=holder: (
                                        leases(url)[lease]["holder"] != holder
                                        and leases(url)[lease]
                                    ),
                                    TAKEOVER_BOUND_S + 10,
                                    "push takeover",
                                )
                                takeovers.append(
                                    {
                                        "lease": lease,
                                        "moment": moment,
                                        "new_holder": row["holder"],
                                        "acquired_s": float(row["acquired_at"]) - t_kill,
                                    }
                                )
                            else:
                                got = _takeover(cl, lease, holder, t_kill)
                                got["moment"] = moment
                                takeovers.append(got)
                    next_id += 1
                    cl.start(f"inst-{next_id}")

                # SIGSTOP the holder past its lease, let a peer take over, resume it.
                holder = cl.holder("index:alpha")
                assert holder is not None
                paused = cl.instances[holder]
                t_stop = time.time()
                paused.proc.send_signal(signal.SIGSTOP)
                got = _takeover(cl, "index:alpha", holder, t_stop)
                got["moment"] = "sigstop"
                takeovers.append(got)
                time.sleep(2.0)  # the successor writes while the old holder sleeps
                paused.proc.send_signal(signal.SIGCONT)

                def resumed_knows() -> bool:
                    status, body = paused.api("/v1/chains")
                    if status != 200:
                        return False
                    alpha = next(c for c in body["chains"] if c["chain"] == "alpha")
                    return not alpha["cluster"]["index"]["held_here"]

                wait_for(resumed_knows, 60, "the resumed instance to see its lease gone")
                assert paused.alive()
                assert leases(url)["index:alpha"]["holder"] != holder
                time.sleep(3.0)
                assert activity.error is None, activity.error
            assert activity.deposits > 0 and activity.price_moves > 0

            # Every instance stops sending new batches (an idle cluster still pushes
            # heartbeats); what is in flight is followed to confirmation.
            for inst in cl.live():
                cl.wait_serving(inst)  # the last restarted one may still be starting
                inst.pause_pushing()
            wait_for(lambda: _quiet(cl, devnet), 90, "indexing caught up and pushes confirmed", 0.5)
            events = check_events_and_balances(devnet, url)
            txs = check_nonces(devnet, url, start_nonce)
            live = cl.live()
            dead = [i for i in cl.instances.values() if not i.alive() and i.proc.returncode != -9]
            assert not dead and len(live) == 3, [
                (i.instance_id, i.proc.returncode, i.log()[-3000:]) for i in dead
            ]
            registry = check_registry(devnet, live[0])

            _status, page = live[0].api("/v1/accounts?limit=1000")
            accounts = [item["account"] for item in page["accounts"]]

            def same_everywhere() -> bool:
                seen = [positions_seen_by(i, accounts) for i in live]
                return all(s == seen[0] for s in seen)

            # Followers poll every 0.5 s: a moment, then every instance agrees.
            wait_for(same_everywhere, 60, "every instance serving the same positions", 0.5)
            # /v1/chains: every instance names the same holder; exactly one holds it.
            for name in manager.INDEXED_CHAINS:
                for kind in ("index", "push"):
                    views = []
                    for i in live:
                        _st, body = i.api("/v1/chains")
                        c = next(c for c in body["chains"] if c["chain"] == name)
                        views.append(c["cluster"][kind])
                    assert len({v["holder"] for v in views}) == 1, views
                    assert sum(v["held_here"] for v in views) == 1, views
                    assert all(isinstance(v["token"], int) and v["live"] for v in views)
            metrics = sum(
                _metric(i, "agg_cluster_lease_takeovers_total")
                for i in cl.instances.values()
                if i.alive()
            )
            assert metrics >= 1
            # The resumed instance was refused, not obeyed, if it tried to write.
            fenced_logs = paused.log().count("no longer current")
            assert "lease index:alpha lost" in paused.log()
            # Work cut off by the lost lease ended quietly; no task counted a crash.
            crashed = [ln for ln in paused.log().splitlines() if '"aggregator.supervisor"' in ln]
            assert not crashed, crashed
            return {
                "takeovers": takeovers,
                "events": events,
                "txs": txs,
                "registry_entries_checked": registry,
                "deposits": activity.deposits,
                "price_moves": activity.price_moves,
                "alpha_head_at_start": alpha_head,
                "fenced_writes_logged_by_paused": fenced_logs,
            }
        except BaseException:
            # What each instance did with its leases, for the failure report.
            for inst in cl.instances.values():
                lines = [
                    ln
                    for ln in inst.log().splitlines()
                    if "lease" in ln or '"error"' in ln or "Traceback" in ln
                ]
                print(f"--- {inst.instance_id} (pid {inst.proc.pid})", *lines[-40:], sep="\n")
            raise
        finally:
            cl.stop_all()


def _metric(inst: Any, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{inst.port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{")
    )


def _report(result: dict[str, Any], record: Any) -> None:
    writes = [t["first_write_s"] for t in result["takeovers"] if "first_write_s" in t]
    acquired = [t["acquired_s"] for t in result["takeovers"]]
    print("\ncluster failover:", result)
    print(
        f"takeover (kill -> first protected write) n={len(writes)} "
        f"median {statistics.median(writes):.2f}s max {max(writes):.2f}s; "
        f"lease acquired median {statistics.median(acquired):.2f}s max {max(acquired):.2f}s "
        f"(ttl {LEASE_TTL_S}s, renew {RENEW_S}s)"
    )
    record("takeovers", result["takeovers"])
    for t in result["takeovers"]:
        assert t["acquired_s"] <= TAKEOVER_BOUND_S, t
        if "first_write_s" in t:
            assert t["first_write_s"] <= TAKEOVER_BOUND_S + 2.0, t


def test_kill_and_pause_lease_holders_lose_and_duplicate_nothing(
    devnet: manager.DevnetState, tmp_path: Path, record_property: Any
) -> None:
    result = _run_failover(devnet, tmp_path, KILL_ROUNDS, seed=11)
    _report(result, record_property)


@pytest.mark.soak
def test_many_kill_rounds(
    devnet: manager.DevnetState, tmp_path: Path, record_property: Any
) -> None:
    result = _run_failover(devnet, tmp_path, SOAK_KILL_ROUNDS, seed=int(time.time()))
    _report(result, record_property)
