"""What the pusher needs from persistent storage (implemented in SQL by aggregator/store).

`insert_tx` and `update_tx` are each one committed transaction, and so are
`insert_txs` and `update_txs` for several records at once (all or none): the sender
calls them before it broadcasts, so after a crash the store always knows every nonce
it may have used and every hash it may have sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from chains.pusher.types import OnchainEntry, TxRecord


class PushStore(Protocol):
    async def insert_tx(self, rec: TxRecord) -> int:
        """Persist a new record; returns its id (also set on `rec.id`)."""
        ...

    async def update_tx(self, rec: TxRecord) -> None: ...

    async def insert_txs(self, recs: list[TxRecord]) -> None:
        """Persist new records in one transaction (all or none); sets each `rec.id`."""
        ...

    async def update_txs(self, recs: list[TxRecord]) -> None:
        """`update_tx` of each record, in one transaction (all or none)."""
        ...

    async def open_txs(self, chain: str, sender: str) -> list[TxRecord]:
        """Records of (chain, sender) not final yet (prepared, sent, mined), by nonce."""
        ...

    async def recent_txs(self, chain: str, limit: int = 20) -> list[TxRecord]: ...

    async def final_txs_at(self, chain: str, sender: str, nonces: range) -> list[TxRecord]:
        """Records of (chain, sender) that became final on chain (confirmed or failed)
        with a nonce in `nonces`, by nonce: the nonce-gap repair's owners."""
        ...

    async def save_onchain(self, entries: Iterable[OnchainEntry]) -> None:
        """Upsert what was read on chain per (chain, account)."""
        ...

    async def load_onchain(self, chain: str) -> dict[str, OnchainEntry]:
        """account (lower case) -> last stored reading."""
        ...

    async def check_lease(self) -> None:
        """Raise unless this instance may still send for the chain (with several
        instances: the push lease's fence; alone: always allowed)."""
        ...
