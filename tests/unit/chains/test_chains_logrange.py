from __future__ import annotations

import itertools

import pytest

from chains.logrange import LogRange, range_hint


@pytest.mark.parametrize(
    ("message", "requested", "expected"),
    [
        (
            "query returned more than 10000 results. Try with this block range [0x10, 0x2F].",
            1000,
            32,
        ),
        ("Query returned more than 10000 results. Try with this block range [0x1, 0x1]", 50, 1),
        ("block range is too wide", 1000, 500),
        ("exceed maximum block range: 500", 2000, 500),
        ("You can make eth_getLogs requests with up to a 2K block range", 5000, 2000),
        ("query returned more than 10000 results", 64, 32),
        ("log response size exceeded", 9, 4),
        # A suggestion larger than what failed must still shrink the span.
        ("exceed maximum block range: 5000", 100, 99),
    ],
)
def test_range_hint_parses_provider_messages(message: str, requested: int, expected: int) -> None:
    assert range_hint(message, requested) == expected


@pytest.mark.parametrize(
    "message", ["execution reverted", "header not found", "invalid argument 0: hex string"]
)
def test_other_errors_are_not_range_errors(message: str) -> None:
    assert range_hint(message, 100) is None


def test_range_grows_slowly_and_is_capped() -> None:
    r = LogRange(maximum=100, current=40)
    spans = []
    for _ in range(12):
        r.succeeded()
        spans.append(r.current)
    assert spans[:2] == [40, 40]  # needs a few successes in a row before growing
    assert spans[2] == 45
    assert max(spans) <= 100
    assert all(b >= a for a, b in itertools.pairwise(spans))
    r.halve()
    assert r.current == spans[-1] // 2
    r.shrink_to(0)
    assert r.current == 1


def test_persisted_range_is_clamped_to_config() -> None:
    assert LogRange(maximum=10, current=5000).current == 10
    with pytest.raises(ValueError, match="max_log_range"):
        LogRange(maximum=0, current=1)


@pytest.mark.parametrize(
    ("message", "ceiling"),
    [
        ("exceed maximum block range: 500", 500),
        ("You can make eth_getLogs requests with up to a 2K block range", 2000),
        ("block range is too wide", 99),
        ("query returned more than 10000 results. Try with this block range [0x1, 0x9].", None),
    ],
)
def test_block_count_caps_become_a_ceiling(message: str, ceiling: int | None) -> None:
    from chains.logrange import range_ceiling

    assert range_ceiling(message, 100) == ceiling
    if ceiling is not None:
        r = LogRange(maximum=10_000, current=100)
        r.limit_to(ceiling)
        for _ in range(100):
            r.succeeded()
        assert r.current == min(ceiling, 10_000)
