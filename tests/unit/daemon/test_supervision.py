"""A failed background task or job is a visible state, never a silent log line."""

from __future__ import annotations

import asyncio

from aggregator.jobs import Jobs
from aggregator.metrics import Metrics
from aggregator.supervisor import Supervisor


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
    for _ in range(200):
        if calls >= 3:
            break
        await asyncio.sleep(0.02)
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
