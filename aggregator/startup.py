"""Start-up steps of the daemon: each one bounded in time, each failure a named error.

`StartupError` is what every part raises for a condition that makes running unsafe
(wrong chain id, unreachable chain, an unreadable keeper key): the daemon refuses to
start with its message rather than serve or push a number it knows to be wrong.
"""

from __future__ import annotations

import asyncio
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
