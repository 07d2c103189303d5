"""The pusher's measure of how far apart a chain's blocks come (push/block_clock.py)."""

from __future__ import annotations

import pytest

from aggregator.push.block_clock import UNKNOWN_LEAD_S, BlockClock


def _fed(heads: list[tuple[int, int]], window: int = 32) -> BlockClock:
    clock = BlockClock(window)
    for block, ts in heads:
        clock.see(block, ts)
    return clock


def test_unknown_until_two_distinct_heads() -> None:
    assert BlockClock().lead_s() == UNKNOWN_LEAD_S == 1
    assert _fed([(10, 100), (10, 100)]).seconds_per_block() is None


@pytest.mark.parametrize(
    ("spacing", "lead"),
    [([0, 1], 0), ([0, 0, 1, 1], 0), ([1], 1), ([1, 1, 1, 2, 1, 0, 1, 1, 1, 1], 1), ([12], 12)],
)
def test_lead_is_the_whole_seconds_per_block(spacing: list[int], lead: int) -> None:
    """0.5-s blocks (alternating 0 and 1 s), 0.25-s, 1-s with jitter, Ethereum's 12 s."""
    heads, ts = [], 1_800_000_000
    for i in range(64):
        heads.append((100 + i, ts))
        ts += spacing[i % len(spacing)]
    assert _fed(heads).lead_s() == lead


def test_the_window_follows_a_change_of_block_time() -> None:
    """A devnet switched from 1-s interval mining to 0.5-s blocks (the replay's miner)."""
    heads = [(i, 1_000 + i) for i in range(40)]
    heads += [(40 + i, 1_040 + i // 2) for i in range(40)]
    assert _fed(heads[:40]).lead_s() == 1
    assert _fed(heads).lead_s() == 0


def test_a_lower_head_starts_over() -> None:
    clock = _fed([(i, 1_000 + 12 * i) for i in range(10)])
    assert clock.lead_s() == 12
    clock.see(3, 2_000)  # reorg or restart
    assert clock.seconds_per_block() is None
    clock.see(4, 2_001)
    assert clock.lead_s() == 1


def test_bad_window() -> None:
    with pytest.raises(ValueError, match="window"):
        BlockClock(1)
