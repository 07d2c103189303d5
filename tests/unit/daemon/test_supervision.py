"""A failed background task or job is a visible state, never a silent log line."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from aggregator.jobs import Jobs
from aggregator.metrics import Metrics
from aggregator.supervisor import Supervisor
from chains.rpc import RpcUnavailable


async def until(done: Callable[[], bool], tries: int = 200) -> None:
    """Let the scheduler run until `done` (at most tries x 20 ms)."""
    for _ in range(tries):
        if done():
            return
        await asyncio.sleep(0.02)


def metric(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


async def test_crashing_task_is_restarted_and_counted() -> None:
    m = Metrics()
    sup = Supervisor(m, base_backoff_s=0.01, max_backoff_s=0.02)
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError(f"boom {runs}")
        await asyncio.sleep(3600)

    sup.spawn("flaky", flaky)
    for _ in range(200):
        if runs >= 3:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.01)
    info = sup.tasks["flaky"]
    assert info.state == "running" and info.failures == 2
    assert info.last_error == "RuntimeError: boom 2"
    assert metric(m, "agg_task_failures_total", task="flaky") == 2
    assert metric(m, "agg_task_up", task="flaky") == 1
    assert sup.unhealthy() == []
    await sup.stop()
    assert info.state == "stopped"


async def test_task_without_restart_stays_failed_and_unhealthy() -> None:
    m = Metrics()
    sup = Supervisor(m)

    async def dies() -> None:
        raise ValueError("bad RPC answer")

    info = sup.spawn("once", dies, restart=False)
    assert info.task is not None
    await info.task
    assert info.state == "failed"
    assert [t.name for t in sup.unhealthy()] == ["once"]
    assert metric(m, "agg_task_up", task="once") == 0
    await sup.stop()


async def test_failing_job_makes_readiness_fail_after_three_runs() -> None:
    m = Metrics()
    jobs = Jobs(m)
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("feed down")

    status = jobs.add("oracle", broken, interval_s=0.05)
    jobs.start()
    await until(lambda: calls >= 3)
    await jobs.shutdown()
    assert status.consecutive_failures >= 3
    reasons = jobs.unhealthy()
    assert len(reasons) == 1 and "ConnectionError: feed down" in reasons[0]
    assert (metric(m, "agg_job_failures_total", job="oracle") or 0) >= 3


async def test_job_that_never_succeeds_goes_stale() -> None:
    m = Metrics()
    jobs = Jobs(m)

    async def fine() -> None:
        return None

    status = jobs.add("sync", fine, interval_s=1.0, run_now=False)
    assert jobs.unhealthy(now=status.created_at + 1) == []
    assert jobs.unhealthy(now=status.created_at + 100)[0].startswith("job sync: no successful run")


async def test_job_log_level_says_whether_to_act(caplog: pytest.LogCaptureFixture) -> None:
    """No node answering once is a warning without traceback (the next run retries);
    the streak that makes /readyz fail, and any other exception, is an error."""
    jobs = Jobs(Metrics())
    calls = 0

    async def rpc_down() -> None:
        nonlocal calls
        calls += 1
        raise RpcUnavailable("alpha", "eth_call", ["http://n: Server disconnected"], False)

    async def bug() -> None:
        raise KeyError("x")

    jobs.add("reconcile", rpc_down, interval_s=0.05)
    jobs.add("broken", bug, interval_s=3600)
    with caplog.at_level(logging.WARNING, logger="aggregator.jobs"):
        jobs.start()
        await until(lambda: calls >= 3)
        await jobs.shutdown()
    mine = [r for r in caplog.records if "reconcile" in r.getMessage()]
    assert [r.levelname for r in mine[:3]] == ["WARNING", "WARNING", "ERROR"]
    assert "3 times in a row" in mine[2].getMessage()
    assert all(r.exc_info is None for r in mine)
    (crash,) = [r for r in caplog.records if "broken" in r.getMessage()]
    assert crash.levelname == "ERROR" and crash.exc_info is not None


async def test_expected_failure_is_one_warning_line_and_still_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    m = Metrics()
    sup = Supervisor(m, base_backoff_s=0.01, max_backoff_s=0.02)

    async def node_down() -> None:
        raise RpcUnavailable("alpha", "eth_getLogs", ["http://n: refused"], False)

    async def bug() -> None:
        raise KeyError("pool")

    with caplog.at_level(logging.DEBUG, logger="aggregator.supervisor"):
        quiet = sup.spawn("pools:alpha", node_down, restart=False, expected=(RpcUnavailable,))
        loud = sup.spawn("pools:beta", bug, restart=False, expected=(RpcUnavailable,))
        assert quiet.task is not None and loud.task is not None
        await quiet.task
        await loud.task
    alpha = [r for r in caplog.records if "pools:alpha" in r.getMessage()]
    assert [(r.levelno, r.exc_info is not None) for r in alpha] == [
        (logging.WARNING, False),
        (logging.DEBUG, True),
    ]
    assert "RpcUnavailable: chain 'alpha': eth_getLogs failed" in alpha[0].getMessage()
    beta = [r for r in caplog.records if "pools:beta" in r.getMessage()]
    assert [(r.levelno, r.exc_info is not None) for r in beta] == [(logging.ERROR, True)]
    # Visibility is the same either way: failed, counted, down.
    for name in ("pools:alpha", "pools:beta"):
        assert sup.tasks[name].state == "failed"
        assert metric(m, "agg_task_failures_total", task=name) == 1
        assert metric(m, "agg_task_up", task=name) == 0
    await sup.stop()
