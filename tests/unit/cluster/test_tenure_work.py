"""Work under a lease, as the supervisor runs it (aggregator/cluster/wiring.py): a
refused write ends the tenure; a failure after the tenure ended is not a crash to
restart; a failure during the tenure is."""

from __future__ import annotations

import asyncio
import logging

import pytest

from aggregator.cluster.lease import Fence, FencedOut
from aggregator.cluster.wiring import tenure_work
from aggregator.metrics import Metrics
from aggregator.supervisor import Supervisor


async def _settle(sup: Supervisor, name: str) -> None:
    for _ in range(200):
        if sup.tasks[name].state in ("done", "backoff", "failed"):
            return
        await asyncio.sleep(0.01)


def _failures(m: Metrics, task: str) -> float:
    return m.registry.get_sample_value("agg_task_failures_total", {"task": task}) or 0.0


async def test_failure_after_the_tenure_ended_is_no_crash(caplog: pytest.LogCaptureFixture) -> None:
    """What a holder paused mid-write sees when it resumes: its lease timer has revoked
    the tenure, and the write fails on the connection the server closed meanwhile."""
    m = Metrics()
    sup = Supervisor(m, base_backoff_s=0.01, max_backoff_s=0.02)
    fence = Fence("index:alpha", "inst-0", 6)

    async def write_on_a_closed_connection() -> None:
        fence.revoked.set()
        raise RuntimeError("cannot switch to state 12; another operation is in progress")

    with caplog.at_level(logging.WARNING):
        sup.spawn("index:alpha", tenure_work(fence, write_on_a_closed_connection, _never))
        await _settle(sup, "index:alpha")
    info = sup.tasks["index:alpha"]
    assert info.state == "done" and info.failures == 0
    assert _failures(m, "index:alpha") == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "lease index:alpha: work stopped after the tenure (token 6) ended" in caplog.text
    await sup.stop()


async def test_failure_during_the_tenure_is_a_crash() -> None:
    m = Metrics()
    sup = Supervisor(m, base_backoff_s=0.01, max_backoff_s=0.02)
    fence = Fence("index:alpha", "inst-0", 6)

    async def broken() -> None:
        raise RuntimeError("a bug")

    sup.spawn("index:alpha", tenure_work(fence, broken, _never))
    await _settle(sup, "index:alpha")
    assert sup.tasks["index:alpha"].failures >= 1
    assert _failures(m, "index:alpha") >= 1
    await sup.stop()


async def test_refused_write_reports_the_fence_and_ends_quietly() -> None:
    m = Metrics()
    sup = Supervisor(m)
    fence = Fence("push:beta", "inst-1", 3)
    reported: list[Fence] = []

    async def fenced() -> None:
        raise FencedOut(fence.name, fence.holder, fence.token)

    sup.spawn("push:beta", tenure_work(fence, fenced, reported.append))
    await _settle(sup, "push:beta")
    assert reported == [fence]
    assert sup.tasks["push:beta"].state == "done" and sup.tasks["push:beta"].failures == 0
    await sup.stop()


def _never(fence: Fence) -> None:
    raise AssertionError(f"{fence} reported as fenced out")
