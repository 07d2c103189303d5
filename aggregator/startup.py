"""Start-up steps of the daemon: each one bounded in time, each failure a named error.

`StartupError` is what every part raises for a condition that makes running unsafe
(wrong chain id, unreachable chain, an unreadable keeper key): the daemon refuses to
start with its message rather than serve or push a number it knows to be wrong.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable
from typing import TypeVar

log = logging.getLogger(__name__)

STARTUP_STEP_TIMEOUT_S = 60.0
T = TypeVar("T")


class StartupError(RuntimeError):
    """A condition that makes running unsafe (wrong chain id, unreachable chain)."""


async def startup_step(what: str, work: Awaitable[T]) -> T:
    """A start-up step that hangs is a named error, not a daemon stuck before its API."""
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(STARTUP_STEP_TIMEOUT_S):
            result = await work
    except TimeoutError:
        raise StartupError(
            f"start-up step '{what}' did not finish in {STARTUP_STEP_TIMEOUT_S:.0f}s"
        ) from None
    log.debug("start-up: %s took %.3fs", what, time.perf_counter() - t0)
    return result


def freeze_startup_heap() -> int:
    """Move every object the start-up made (modules, the loaded book and engine, the
    pusher's stored readings) out of the collector's generations (`gc.freeze`), after
    collecting the start-up's garbage (so none of it is kept for good). A full
    collection then walks only what was allocated since: in bench/push_latency.py a
    price move's allocations (10k accounts x 3 chains) set one off in the middle of the
    pushes every round, 0.2-0.5 s over ~324k start-up objects on the shared box, and
    0.01-0.12 s once they were frozen; a daemon with a larger book walks more. Frozen
    objects are still freed by reference counting; only cycles among them stay.
    Returns the number of objects frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
