"""freeze_startup_heap: the start-up's objects leave the collector's generations, and the
start-up's cyclic garbage is collected first, not kept for good."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from aggregator.startup import freeze_startup_heap


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # the rest of the test session collects as usual


def test_garbage_is_collected_and_live_objects_are_frozen(unfrozen: None) -> None:
    a, b = _Node(), _Node()
    a.other, b.other = b, a  # a cycle: only the collector frees it
    dead = weakref.ref(a)
    del a, b
    kept = [_Node() for _ in range(100)]
    frozen = freeze_startup_heap()
    assert dead() is None  # collected before the freeze
    assert frozen >= len(kept)
    in_generations = {id(o) for o in gc.get_objects()}  # the frozen ones are not walked
    assert not any(id(k) in in_generations for k in kept)
