"""How far apart a chain's blocks come, in whole seconds, from the heads the pusher
reads each cycle: what `controller.next_as_of` may put ahead of the head's timestamp.

Invariants:
- `lead_s()` is floor(seconds per block + JITTER_S) over the last `window` distinct
  heads: 0 on a chain with sub-second blocks (every block of a second shares its
  timestamp), 1 at one block a second, 12 on Ethereum mainnet.
- Unknown (fewer than two distinct heads) it is 1, the rule the
  pusher followed before it measured (right for any chain with blocks >= 1 s apart;
  on a faster chain it puts an entry at most one second ahead, never further).
- A head below the last one seen (a reorg, a devnet restarted) starts the window over.
"""

from __future__ import annotations

import math
from collections import deque

# Interval mining of 1 s shows occasional 0- or 2-s steps; a mean a little under one
# second is still one.
JITTER_S = 0.1
UNKNOWN_LEAD_S = 1


class BlockClock:
    def __init__(self, window: int = 32) -> None:
        if window < 2:
            raise ValueError(f"window must be >= 2 heads, got {window}")
        self._heads: deque[tuple[int, int]] = deque(maxlen=window)

    def see(self, block: int, timestamp: int) -> None:
        if self._heads:
            last = self._heads[-1][0]
            if block == last:
                return
            if block < last:
                self._heads.clear()
        self._heads.append((block, timestamp))

    def seconds_per_block(self) -> float | None:
        if len(self._heads) < 2:
            return None
        (b0, t0), (b1, t1) = self._heads[0], self._heads[-1]
        return (t1 - t0) / (b1 - b0)

    def lead_s(self) -> int:
        spb = self.seconds_per_block()
        if spb is None:
            return UNKNOWN_LEAD_S
        return max(0, math.floor(spb + JITTER_S))
