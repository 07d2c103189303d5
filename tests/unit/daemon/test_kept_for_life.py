"""startup.py `kept_for_life`: the daemon's modules and components are made with the
cyclic GC paused and, in a process that exists to run the daemon, frozen out of every
later collection (docs/performance.md "Start-up"); the GC is on again after the block,
error or not, and nothing is frozen when the block fails or freeze=False."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from aggregator.startup import kept_for_life


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    """The test process's objects go back to the collector whatever a test froze."""
    gc.unfreeze()
    yield
    gc.unfreeze()


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the cyclic GC frees it


def test_made_with_the_gc_paused_then_frozen() -> None:
    assert gc.isenabled() and gc.get_freeze_count() == 0
    with kept_for_life():
        assert not gc.isenabled()
        kept = Node()
    assert gc.isenabled() and gc.get_freeze_count() > 0
    assert gc.get_count()[0] < 10  # no young collection pending over what was made
    assert kept.me is kept


def test_a_frozen_cycle_is_not_collected_an_unfrozen_one_is() -> None:
    with kept_for_life(freeze=False):
        Node()
    assert gc.get_freeze_count() == 0 and gc.collect() >= 1
    with kept_for_life():
        Node()
    assert gc.collect() == 0  # the dropped cycle is frozen: walked by no collection


def test_a_failing_block_restores_the_gc_and_freezes_nothing() -> None:
    with pytest.raises(RuntimeError), kept_for_life():
        raise RuntimeError("import failed")
    assert gc.isenabled() and gc.get_freeze_count() == 0
    gc.disable()
    try:
        with kept_for_life(freeze=False):
            pass
        assert not gc.isenabled()  # left as it was found
    finally:
        gc.enable()
