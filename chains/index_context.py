"""What the parts of one chain's indexer share: settings, client, store, the checkpoint
in memory, the status the daemon reads, and the two outcomes every part may reach
(accounts changed, fatal).

Invariants:
- `cp` mirrors the store's checkpoint after every committed transaction (batch,
  rollback, correction, fatal); it is replaced, never mutated, and only after the store
  call that made it true returned.
- The fatal state is persisted in the store's checkpoint, so a restart stays fatal;
  a fatal chain is never indexed again until it is reset.
- `client` is looked up here on every use, so replacing `ChainIndexer.client` reaches
  every part.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from chains.positions import MarketsWatch
from chains.rpc import RpcClient
from chains.store import IndexerStore
from chains.types import ChainSettings, Checkpoint

log = logging.getLogger(__name__)

AccountsCallback = Callable[[str, set[str]], Awaitable[None]]


@dataclass
class Progress:
    """Backfill/follow progress; plain numbers a metrics layer can export."""

    chain: str
    head_block: int
    indexed_block: int
    blocks_per_s: float
    events_per_s: float
    eta_s: float | None
    events_total: int


@dataclass
class ChainStatus:
    """What the daemon exposes per chain (/v1/chains, metrics, /readyz)."""

    chain: str
    head_block: int = 0
    indexed_block: int = -1
    confirmed_block: int = -1
    lag: int = 0
    fatal: bool = False
    fatal_reason: str | None = None
    log_range: int = 0
    caught_up: bool = False
    blocks_per_s: float = 0.0
    events_per_s: float = 0.0
    eta_s: float | None = None
    events_total: int = 0
    reorgs: int = 0
    deepest_reorg: int = 0
    reconcile_runs: int = 0
    reconcile_mismatches: int = 0
    last_error: str | None = None
    endpoints: list[dict[str, Any]] = field(default_factory=list)


class IndexContext:
    def __init__(
        self,
        settings: ChainSettings,
        client: RpcClient,
        store: IndexerStore,
        *,
        on_accounts_changed: AccountsCallback | None,
        markets: MarketsWatch | None,
    ) -> None:
        self.settings = settings
        self.chain = settings.name
        self.vault = settings.vault or ""
        self.client = client
        self.store = store
        self.on_accounts_changed = on_accounts_changed
        # Derivative position events (chains/positions.py): same ranges, same header
        # checks, written before the vault batch and rolled back before it.
        self.markets = markets
        self.status = ChainStatus(chain=self.chain)
        self.cp: Checkpoint | None = None

    @property
    def checkpoint(self) -> Checkpoint:
        if self.cp is None:
            raise RuntimeError(f"chain {self.chain!r}: call load() first")
        return self.cp

    async def accounts_changed(self, accounts: set[str]) -> None:
        if accounts and self.on_accounts_changed is not None:
            await self.on_accounts_changed(self.chain, set(accounts))

    async def fatal(self, reason: str) -> None:
        log.critical("%s", reason)
        self.status.fatal, self.status.fatal_reason = True, reason
        await self.store.set_fatal(self.chain, reason)
        self.cp = replace(self.checkpoint, fatal_reason=reason)
