"""One chain's pusher parts: RPC client, listener, sender and status.

Invariants:
- Each chain has its own parts; nothing here is shared between chains, so one chain's
  failure (RPC down, keeper out of funds, reverts) never waits on, or stops, another.
- Without a key, or in dry-run mode, there is no sender: nothing is ever signed.
- The sender tells the listener when a mined batch left the chain or a record was
  dropped, and those accounts are read again (what was inferred from it may be wrong).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aggregator.push.controller import OnchainArrays
from chains.pusher.keys import KeeperKey
from chains.pusher.listener import RegistryListener
from chains.pusher.sender import ChainSender, SenderHooks
from chains.pusher.store import PushStore
from chains.pusher.types import PushChainSettings
from chains.rpc import RpcClient

FAILING_AFTER = 3  # consecutive failed cycles before /readyz names the chain


@dataclass
class ChainPushState:
    """What /v1/chains, /readyz and metrics show for one chain's pusher."""

    chain: str
    cycles: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None
    last_ok_at: float | None = None
    last_push_at: float | None = None
    last_batch: dict[str, Any] | None = None
    pushes_sent: int = 0
    pushes_failed: int = 0
    entries_pushed: int = 0
    keeper_balance_wei: int | None = None
    keeper_low: bool = False
    triggered: int = 0
    ride_alongs: int = 0
    onchain_block: int = -1
    onchain_timestamp: int = 0
    dry_run_batches: list[dict[str, Any]] = field(default_factory=list)


class ChainPusher:
    def __init__(
        self,
        settings: PushChainSettings,
        client: RpcClient,
        store: PushStore,
        key: KeeperKey | None,
        *,
        dry_run: bool,
        hooks: SenderHooks | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.client = client
        self.sender = (
            None
            if key is None or dry_run
            else ChainSender(settings, client, store, key, hooks=hooks)
        )
        self.listener = RegistryListener(
            settings.name,
            client,
            settings.registry,
            store,
            payload_of=None if self.sender is None else self.sender.payload_of,
            recheck_depth=max(12, settings.confirmations),
        )
        if self.sender is not None:
            listener = self.listener
            self.sender.on_unmined = lambda rec: listener.invalidate(a for a, _ in rec.entries())
        # The listener's state as arrays by engine account index (vectorised triggers).
        self.onchain_arrays = OnchainArrays()
        self.known_accounts = 0  # book accounts already handed to the listener
        self.key_address = None if key is None else key.address
        self.state = ChainPushState(settings.name)
        self.wake = asyncio.Event()
