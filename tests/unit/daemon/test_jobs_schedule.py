"""APScheduler job settings: a slow job never overlaps itself, missed runs coalesce into
one, and a late run within the misfire grace still runs (never silently skipped)."""

from __future__ import annotations

import asyncio
import time

from aggregator.jobs import Jobs
from aggregator.metrics import Metrics


async def test_every_job_is_single_instance_coalesced_with_misfire_grace() -> None:
    jobs = Jobs(Metrics())

    async def noop() -> None:
        return None

    jobs.add("a", noop, 60.0, run_now=False)
    jobs.add("b", noop, 1.0, critical=False, run_now=False)
    jobs.start()
    try:
        for job in jobs.scheduler.get_jobs():
            assert job.max_instances == 1, job.id
            assert job.coalesce is True, job.id
            assert job.misfire_grace_time == 30, job.id
    finally:
        await jobs.shutdown()


async def test_slow_job_does_not_overlap_and_missed_runs_coalesce() -> None:
    jobs = Jobs(Metrics())
    running = peak = runs = 0

    async def slow() -> None:
        nonlocal running, peak, runs
        running += 1
        peak = max(peak, running)
        runs += 1
        try:
            await asyncio.sleep(1.0)  # ten times its interval
        finally:
            running -= 1

    jobs.add("slow", slow, 0.1)
    jobs.start()
    try:
        await asyncio.sleep(2.5)
    finally:
        await jobs.shutdown()
    assert peak == 1
    # Sequential 1 s runs in 2.5 s: at most 3 started. Without coalescing and
    # max_instances=1 the 0.1 s trigger would have started ~25.
    assert 2 <= runs <= 3, runs


async def test_shutdown_lets_a_running_job_finish_within_the_grace() -> None:
    jobs = Jobs(Metrics(), grace_s=2.0)
    finished = asyncio.Event()
    started = asyncio.Event()

    async def txn() -> None:
        started.set()
        await asyncio.sleep(0.3)
        finished.set()

    jobs.add("txn", txn, 60.0)
    jobs.start()
    await asyncio.wait_for(started.wait(), 5)
    t0 = time.monotonic()
    await jobs.shutdown()
    assert finished.is_set()
    assert time.monotonic() - t0 < 2.0
    assert jobs.status["txn"].last_error is None
