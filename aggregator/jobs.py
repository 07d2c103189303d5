"""Periodic jobs on APScheduler, each wrapped so that its last outcome is visible.

APScheduler on its own only logs a job's exception; here every run records its
result, failures count in `agg_job_failures`, and a job whose last run failed
(or that has not succeeded within `stale_after_s`) makes /readyz fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import Counter, Gauge

from aggregator.metrics import Metrics
from chains.rpc import RpcUnavailable

log = logging.getLogger(__name__)
# Failed runs in a row that make /readyz fail.
FAILURES_UNREADY = 3


@dataclass
class JobStatus:
    name: str
    interval_s: float
    critical: bool
    runs: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_ok_at: float | None = None
    last_error: str | None = None
    last_duration_s: float | None = None
    running: bool = False
    created_at: float = 0.0

    def stale(self, now: float, factor: float = 5.0, grace_s: float = 30.0) -> bool:
        ref = self.last_ok_at if self.last_ok_at is not None else self.created_at
        return now - ref > self.interval_s * factor + grace_s

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "interval_s": self.interval_s,
            "runs": self.runs,
            "failures": self.failures,
            "consecutive_failures": self.consecutive_failures,
            "last_ok_at": self.last_ok_at,
            "last_error": self.last_error,
            "last_duration_s": self.last_duration_s,
        }


class Jobs:
    def __init__(self, metrics: Metrics, grace_s: float = 5.0) -> None:
        self.grace_s = grace_s
        self.scheduler = AsyncIOScheduler(
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30}
        )
        self.status: dict[str, JobStatus] = {}
        self._ok = Gauge(
            "agg_job_last_ok_timestamp", "Last successful run", ["job"], registry=metrics.registry
        )
        self._fail = Counter(
            "agg_job_failures", "Failed job runs", ["job"], registry=metrics.registry
        )
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def add(
        self,
        name: str,
        func: Callable[[], Awaitable[None]],
        interval_s: float,
        *,
        critical: bool = True,
        run_now: bool = True,
    ) -> JobStatus:
        status = JobStatus(name, interval_s, critical, created_at=time.time())
        self.status[name] = status

        async def wrapped() -> None:
            status.running = True
            self._running += 1
            self._idle.clear()
            started = time.perf_counter()
            try:
                await func()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                status.failures += 1
                status.consecutive_failures += 1
                status.last_error = f"{type(exc).__name__}: {exc}"
                self._fail.labels(job=name).inc()
                if not isinstance(exc, RpcUnavailable):
                    log.error("job %s failed: %s", name, status.last_error, exc_info=exc)
                elif status.consecutive_failures >= FAILURES_UNREADY:
                    log.error(
                        "job %s failed %d times in a row: %s",
                        name,
                        status.consecutive_failures,
                        status.last_error,
                    )
                else:
                    # No node answered this time: the next run retries, and only a
                    # streak makes the daemon unready. A traceback says nothing here.
                    log.warning("job %s failed: %s", name, status.last_error)
            else:
                status.consecutive_failures = 0
                status.last_ok_at = time.time()
                self._ok.labels(job=name).set(status.last_ok_at)
            finally:
                status.runs += 1
                status.running = False
                self._running -= 1
                if not self._running:
                    self._idle.set()
                status.last_duration_s = time.perf_counter() - started

        kwargs: dict[str, object] = {}
        if run_now:
            from datetime import UTC, datetime

            kwargs["next_run_time"] = datetime.now(UTC)
        self.scheduler.add_job(wrapped, "interval", seconds=interval_s, id=name, **kwargs)
        return status

    def start(self) -> None:
        self.scheduler.start()

    async def pause(self) -> None:
        """No new runs; returns once the runs in flight have finished."""
        self.scheduler.pause()
        await self._idle.wait()

    async def shutdown(self) -> None:
        """Drain: no new runs, in-flight runs get `grace_s` to finish their transaction."""
        if not self.scheduler.running:
            return
        self.scheduler.pause()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self.grace_s)
        self.scheduler.shutdown(wait=False)

    def unhealthy(self, now: float | None = None) -> list[str]:
        now = time.time() if now is None else now
        reasons = []
        for s in self.status.values():
            if not s.critical:
                continue
            if s.consecutive_failures >= FAILURES_UNREADY:
                reasons.append(
                    f"job {s.name}: {s.consecutive_failures} failures in a row ({s.last_error})"
                )
            elif s.stale(now):
                since = now - (s.last_ok_at or s.created_at)
                reasons.append(f"job {s.name}: no successful run for {since:.0f}s")
        return reasons
