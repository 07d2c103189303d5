"""What the chain adapters need from persistent storage (implemented in SQL by the daemon).

Every mutating method is one atomic transaction: a crash leaves either all of
a step (events + balances + checkpoint) or none of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from chains.types import (
    BlockRef,
    Checkpoint,
    EventColumns,
    Position,
    PositionKind,
    RateSample,
    VaultEvent,
)


class IndexerStore(Protocol):
    async def load_checkpoint(self, chain: str) -> Checkpoint | None: ...

    async def block_hashes(self, chain: str) -> dict[int, str]:
        """Stored hashes of the unfinalized window (plus the checkpoint block)."""
        ...

    async def apply_batch(
        self,
        chain: str,
        *,
        to_block: int,
        blocks: Sequence[BlockRef],
        events: EventColumns | Sequence[VaultEvent],
        log_range: int,
        head_block: int,
        confirmed_block: int,
        keep_hashes_from: int,
        from_block: int | None = None,
        compact_below: int | None = None,
    ) -> set[str]:
        """Insert events not stored yet, apply their effects, promote pending
        deposits/repayments at or below `confirmed_block`, store block hashes
        (dropping those below `keep_hashes_from`) and move the checkpoint to
        `to_block`, atomically. Returns the accounts whose positions changed.

        With `compact_below` (at most `keep_hashes_from`: no rollback or promotion
        reaches below it), the batch's blocks [from_block, compact_below) are a
        compacted range: their events change positions, an audit record (count and
        digest of every event) is stored, and only each account's first event and
        liquidations are kept as event rows."""
        ...

    async def rollback(self, chain: str, ancestor: BlockRef) -> set[str]:
        """Undo every event above `ancestor.number` and reset the checkpoint there."""
        ...

    async def set_fatal(self, chain: str, reason: str) -> None: ...

    async def set_log_range(self, chain: str, log_range: int) -> None: ...

    async def positions(
        self, chain: str, accounts: Iterable[str] | None = None
    ) -> list[Position]: ...

    async def sample_accounts(self, chain: str, after: str, limit: int) -> list[str]:
        """Up to `limit` distinct accounts with a position, ordered, greater than `after`."""
        ...

    async def apply_corrections(
        self,
        chain: str,
        block: int,
        corrections: Sequence[tuple[str, str, PositionKind, int]],
        reconcile_block: int,
    ) -> None:
        """Set head amounts of (account, token, kind) to the on-chain value read at
        `block` (recorded as correction events at that block) and record the
        reconciliation cursor, atomically."""
        ...

    async def reset_chain(self, chain: str) -> None:
        """Forget everything indexed for `chain` (operator recovery after a fatal reorg)."""
        ...


class RateStore(Protocol):
    async def add_rate_samples(self, samples: Sequence[RateSample]) -> None: ...

    async def latest_rates(self, chain: str | None = None) -> dict[str, RateSample]:
        """The newest sample per asset (by block, then timestamp)."""
        ...
