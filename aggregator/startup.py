"""Start-up steps of the daemon: each one bounded in time, each failure a named error.

`StartupError` is what every part raises for a condition that makes running unsafe
(wrong chain id, unreachable chain, an unreadable keeper key): the daemon refuses to
start with its message rather than serve or push a number it knows to be wrong.
`gc_paused` keeps the cyclic garbage collector off for the bulk phases of a start
(the book load), `kept_for_life` for the objects the process keeps (the daemon's
modules and components), which a process entry point then freezes out of every later
collection.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import TypeVar

log = logging.getLogger(__name__)

STARTUP_STEP_TIMEOUT_S = 60.0
T = TypeVar("T")


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for a bulk phase. A book load makes millions of
    short-lived acyclic objects (rows, ints, strings), and each allocation burst
    triggers collections that walk every tracked object of the process: with the GC
    on, the start-up load of 1M accounts spent about as long collecting as loading
    (docs/performance.md "Start-up"). Restored on exit, error or not."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@contextmanager
def kept_for_life(*, freeze: bool = True) -> Iterator[None]:
    """Objects made in the block live as long as the process (the daemon's modules,
    the daemon itself with its engine and the kernels loaded from numba's cache): the
    cyclic GC is paused while they are made, and then, with `freeze`, every object
    tracked so far moves to the permanent generation (`gc.freeze`), so no later
    collection walks them. The daemon's imports alone ran 3 full collections (0.16-0.20
    s of a 1.4-1.6 s import) that found nothing to free; and pausing alone only defers
    the walk: the first young and middle collections after the block traverse
    everything the block made (0.06 s and 0.1 s at a 1M-account start). Only a process
    entry point freezes (cli.py `cmd_run`); code that runs inside another program
    (tests) passes freeze=False."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
        if freeze:
            # Before the GC is on again: the first allocation after would otherwise
            # start a young collection over everything the block made.
            gc.freeze()
    finally:
        if was:
            gc.enable()


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
