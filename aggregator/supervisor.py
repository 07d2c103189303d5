"""Keeps every background task referenced, restarts failed loops, and makes failure visible.

A task that dies is not a log line: its state goes to /readyz and to the
`agg_task_up` / `agg_task_failures_total` metrics until it runs again.

A task may name the failures it expects (`expected`, e.g. an RPC error of a chain's
node): those are logged as one warning line naming the task and the error, with the
traceback at debug only; any other failure is an error with its traceback. Both count
and show the same in metrics and readiness.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from aggregator.metrics import Metrics

log = logging.getLogger(__name__)

TaskState = Literal["running", "backoff", "failed", "stopped", "done"]


@dataclass
class TaskInfo:
    name: str
    factory: Callable[[], Awaitable[None]]
    restart: bool
    critical: bool
    expected: tuple[type[Exception], ...] = ()
    state: TaskState = "running"
    failures: int = 0
    last_error: str | None = None
    last_failure_at: float | None = None
    started_at: float = field(default_factory=time.time)
    task: asyncio.Task[None] | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "state": self.state,
            "critical": self.critical,
            "failures": self.failures,
            "last_error": self.last_error,
            "last_failure_at": self.last_failure_at,
        }


class Supervisor:
    def __init__(
        self,
        metrics: Metrics,
        *,
        base_backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
    ) -> None:
        self.metrics = metrics
        self.tasks: dict[str, TaskInfo] = {}
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self._stopping = False

    def spawn(
        self,
        name: str,
        factory: Callable[[], Awaitable[None]],
        *,
        restart: bool = True,
        critical: bool = True,
        expected: tuple[type[Exception], ...] = (),
    ) -> TaskInfo:
        """Run `factory()` as a supervised task. `restart`: start it again after a crash.
        `expected`: failures logged as one warning line (module docstring)."""
        if name in self.tasks and self.tasks[name].state in ("running", "backoff"):
            raise RuntimeError(f"task {name!r} is already running")
        info = TaskInfo(
            name=name, factory=factory, restart=restart, critical=critical, expected=expected
        )
        self.tasks[name] = info
        info.task = asyncio.create_task(self._run(info), name=f"agg:{name}")
        return info

    async def _run(self, info: TaskInfo) -> None:
        while not self._stopping:
            info.state = "running"
            self.metrics.task_up.labels(task=info.name).set(1)
            try:
                await info.factory()
            except asyncio.CancelledError:
                info.state = "stopped"
                self.metrics.task_up.labels(task=info.name).set(0)
                raise
            except Exception as exc:
                info.failures += 1
                info.last_error = f"{type(exc).__name__}: {exc}"
                info.last_failure_at = time.time()
                self.metrics.task_up.labels(task=info.name).set(0)
                self.metrics.task_failures.labels(task=info.name).inc()
                self._log_failure(info, exc)
                if not info.restart:
                    info.state = "failed"
                    return
                info.state = "backoff"
                delay = min(self.max_backoff_s, self.base_backoff_s * 2 ** min(info.failures, 10))
                await asyncio.sleep(delay * (0.5 + random.random() / 2))
                continue
            info.state = "done"
            self.metrics.task_up.labels(task=info.name).set(0)
            return

    @staticmethod
    def _log_failure(info: TaskInfo, exc: Exception) -> None:
        if isinstance(exc, info.expected):
            # A known outside failure (a node down): one line; the stack says nothing new.
            log.warning("task %s failed (%d): %s", info.name, info.failures, info.last_error)
            log.debug("task %s failure traceback", info.name, exc_info=exc)
        else:
            log.error(
                "task %s failed (%d): %s", info.name, info.failures, info.last_error, exc_info=exc
            )

    def unhealthy(self) -> list[TaskInfo]:
        """Critical tasks that are not running now (failed, or waiting to restart)."""
        return [t for t in self.tasks.values() if t.critical and t.state in ("failed", "backoff")]

    def snapshot(self) -> list[dict[str, object]]:
        return [t.as_dict() for t in self.tasks.values()]

    async def stop(self, grace_s: float = 10.0) -> None:
        self._stopping = True
        running = [t.task for t in self.tasks.values() if t.task and not t.task.done()]
        for task in running:
            task.cancel()
        if running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*running, return_exceptions=True), timeout=grace_s
                )
