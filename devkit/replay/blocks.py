"""Blocks at the replay's own interval, also below one second.

anvil's interval mining (`evm_setIntervalMining`, what `devnet up` sets) takes whole
seconds, and a replay's wall time is its step count times the block interval: 745
hourly steps of 2020-03 cannot run faster than 12.4 minutes at one block a second.
For any other interval the replay switches the indexed chains to manual mining and
mines them itself (`Miner`), one block per chain every `interval_s`, on a schedule in
monotonic time (a late tick is not made up: blocks never bunch). anvil (since
foundry#9160) gives two blocks mined within one second the same timestamp, so the
chains' clocks stay on the wall clock, which the vaults' max age and the daemon's
staleness checks read.

Invariants:
- Every chain's previous interval mining is restored when the `Miner` context exits,
  on error and on cancellation too: a devnet the replay found running is left as it
  was. A chain that cannot be restored (its node gone) is a warning naming it, never
  an error hiding the one that ended the steps.
- A failed `evm_mine` is not a silent log line: the miner stops and `check()` (called
  by the step loop every step) raises it, naming the chain. One that hangs without
  failing is named by `stall_note()` in the error of whatever waits for a block (the
  step loop's wait for its feed updates).
- At a whole-second interval equal to the devnet's own, nothing is switched: anvil's
  interval mining is the same schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any

log = logging.getLogger("devkit.replay.blocks")
Rpc = Callable[[str, str, list[Any]], Awaitable[Any]]


class MinerError(RuntimeError):
    pass


class Miner:
    """Mines every chain of `urls` (chain -> RPC URL) every `interval_s` while entered;
    `devnet_block_s`: the devnet's own interval mining (whole seconds, 0 = automine),
    restored on exit. `rpc(url, method, params)` is the JSON-RPC call."""

    def __init__(
        self, rpc: Rpc, urls: Mapping[str, str], interval_s: float, devnet_block_s: int
    ) -> None:
        if not interval_s > 0:
            raise MinerError(f"block interval must be > 0 s, got {interval_s}")
        self.rpc = rpc
        self.urls = dict(urls)
        self.interval_s = interval_s
        self.devnet_block_s = devnet_block_s
        self.blocks = 0
        self.late_ticks = 0
        self.error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        # chain -> when its evm_mine in flight was asked (monotonic).
        self._asked: dict[str, float] = {}

    @property
    def own(self) -> bool:
        """Whether the replay mines (else anvil's interval mining already does it)."""
        return not (self.devnet_block_s >= 1 and self.interval_s == self.devnet_block_s)

    async def __aenter__(self) -> Miner:
        if self.own:
            for url in self.urls.values():
                await self.rpc(url, "evm_setIntervalMining", [0])
            self._task = asyncio.create_task(self._run(), name="replay-miner")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        method, params = (
            ("evm_setIntervalMining", [self.devnet_block_s])
            if self.devnet_block_s >= 1
            else ("evm_setAutomine", [True])
        )
        for chain, url in self.urls.items():
            try:
                await self.rpc(url, method, params)
            except Exception as restore_exc:
                # A node that is gone (the error being raised may be why) must not hide
                # that error; one that is up but kept manual mining is named.
                log.warning("replay miner: %s kept manual mining: %s failed: %s",
                            chain, method, restore_exc)  # fmt: skip

    def check(self) -> None:
        """Raise the miner's failure, if it failed."""
        if self.error is not None:
            raise MinerError(f"replay miner stopped: {self.error}") from self.error

    def stall_note(self, min_s: float = 1.0) -> str:
        """The chains whose evm_mine has been unanswered for `min_s` or more, for the
        error of a wait that ran out ("" when none)."""
        now = time.monotonic()
        late = sorted((c, now - t) for c, t in self._asked.items() if now - t >= min_s)
        if not late:
            return ""
        waits = ", ".join(f"{c} for {w:.1f} s" for c, w in late)
        return f"the replay miner's evm_mine is unanswered on {waits}"

    async def _run(self) -> None:
        t0 = time.monotonic()
        tick = 0
        try:
            while True:
                await asyncio.gather(*(self._mine(c, u) for c, u in self.urls.items()))
                self.blocks += 1
                tick += 1
                behind = time.monotonic() - (t0 + tick * self.interval_s)
                if behind > 0:
                    # Late (a loaded machine): the next block goes at the next tick of
                    # the schedule, not at once, so two blocks never come back to back.
                    skipped = int(behind // self.interval_s) + 1
                    tick += skipped
                    self.late_ticks += skipped
                await asyncio.sleep(max(0.0, t0 + tick * self.interval_s - time.monotonic()))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # kept and raised by check()
            self.error = exc

    async def _mine(self, chain: str, url: str) -> None:
        self._asked[chain] = time.monotonic()
        try:
            await self.rpc(url, "evm_mine", [])
        except Exception as exc:
            raise MinerError(f"{chain}: evm_mine failed: {exc}") from exc
        finally:
            del self._asked[chain]
