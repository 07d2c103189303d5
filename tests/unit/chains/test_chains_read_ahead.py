"""The backfill read-ahead: consecutive ranges read while the store writes, taken by a
step as one range; bounded; an error surfaces in the step that takes it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from chains.index_fetch import READ_AHEAD_EMPTY_RANGES, READ_AHEAD_RANGES, Fetched, ReadAhead
from chains.types import BlockRef


def ranges(
    span: int,
    calls: list[int],
    fail_at: int | None = None,
    gate: asyncio.Event | None = None,
    logs_from: int = 0,
) -> Callable[[int], Awaitable[Fetched]]:
    async def fetch(start: int) -> Fetched:
        if gate is not None:
            await gate.wait()
        calls.append(start)
        if start == fail_at:
            raise RuntimeError(f"node down at {start}")
        end = start + span - 1
        logs = [f"log{n}" for n in range(max(start, logs_from), end + 1)]
        return end, logs, {end: BlockRef(end, f"h{end}", f"h{end - 1}")}  # type: ignore[return-value]

    return fetch


async def test_ranges_read_so_far_are_taken_as_one_contiguous_range() -> None:
    calls: list[int] = []
    ahead = ReadAhead(ranges(10, calls), 100, head=10_000)
    await asyncio.sleep(0.05)  # let it read up to its bound
    assert calls == [100 + 10 * i for i in range(READ_AHEAD_RANGES)]  # bounded
    end, logs, headers = await ahead.take()
    assert end == 100 + 10 * READ_AHEAD_RANGES - 1
    assert logs == [f"log{n}" for n in range(100, end + 1)]  # type: ignore[comparison-overlap]
    assert sorted(headers) == [109 + 10 * i for i in range(READ_AHEAD_RANGES)]
    assert ahead.serves(end + 1, 10_000) and not ahead.serves(end, 10_000)
    assert not ahead.serves(end + 1, 9_999)  # read with a head above the step's
    await asyncio.sleep(0.05)
    assert len(calls) == 2 * READ_AHEAD_RANGES  # room again: it read on
    await ahead.cancel()


async def test_take_waits_for_the_first_range_and_stops_at_the_head() -> None:
    calls: list[int] = []
    gate = asyncio.Event()
    ahead = ReadAhead(ranges(5, calls, gate=gate), 0, head=9)
    taker = asyncio.create_task(ahead.take())
    await asyncio.sleep(0.02)
    assert not taker.done()
    gate.set()
    end, _, _ = await taker
    assert end >= 4
    if end < 9:
        end, _, _ = await ahead.take()
    assert end == 9 and calls == [0, 5]
    await asyncio.sleep(0)
    assert not ahead.serves(10, 20)  # exhausted: the step fetches for itself


async def test_an_error_surfaces_in_the_step_that_takes_it() -> None:
    calls: list[int] = []
    ahead = ReadAhead(ranges(10, calls, fail_at=110), 100, head=1000)
    end, _, _ = await ahead.take()
    assert end == 109  # what was read before the error is still taken
    with pytest.raises(RuntimeError, match="node down at 110"):
        await ahead.take()
    await ahead.cancel()


async def test_ranges_without_logs_are_merged_up_to_their_own_bound() -> None:
    calls: list[int] = []
    gate = asyncio.Event()
    # Blocks below 1000 have no logs; the reader is held until the step waits.
    ahead = ReadAhead(ranges(10, calls, gate=gate, logs_from=1000), 0, head=10_000)
    taker = asyncio.create_task(ahead.take())
    await asyncio.sleep(0.01)
    gate.set()
    end, logs, headers = await taker
    # Not the first empty range alone: as many as the empty bound, as one range.
    assert logs == [] and end == 10 * READ_AHEAD_EMPTY_RANGES - 1
    assert sorted(headers) == [9 + 10 * i for i in range(READ_AHEAD_EMPTY_RANGES)]
    # Up to block 999 empty, then logs: taken as soon as a range with logs is ready.
    while end < 999:
        end, logs, _ = await ahead.take()
        assert end <= 999 or logs
    end, logs, _ = await ahead.take()
    assert logs and end >= 1009
    await ahead.cancel()


async def test_empty_ranges_up_to_the_head_are_taken_when_the_reading_ends() -> None:
    calls: list[int] = []
    ahead = ReadAhead(ranges(10, calls, logs_from=10**9), 0, head=49)
    end, logs, _ = await ahead.take()
    assert (end, logs) == (49, []) and calls == [0, 10, 20, 30, 40]
