"""Read-only RPC questions about one keeper key's transactions.

Nothing here writes or signs. `nonce_used_for_good` uses the same finality as the
record follower (head - confirmations, at least 1): a nonce used only inside the reorg
window may still be freed by a reorg, so it is not "used for good".
"""

from __future__ import annotations

from typing import Any

from chains.pusher.types import TxRecord
from chains.rpc import RpcClient


class KeyReads:
    def __init__(self, client: RpcClient, sender: str, confirmations: int) -> None:
        self.client = client
        self.sender = sender
        self.confirmations = confirmations

    async def tx_count(self, tag: str) -> int:
        return int(
            str(await self.client.request("eth_getTransactionCount", [self.sender, tag])), 16
        )

    async def balance(self) -> int:
        return int(str(await self.client.request("eth_getBalance", [self.sender, "latest"])), 16)

    async def receipt(self, tx_hash: str) -> dict[str, Any] | None:
        r = await self.client.request("eth_getTransactionReceipt", [tx_hash])
        return r if isinstance(r, dict) else None

    async def find_receipt(self, rec: TxRecord) -> dict[str, Any] | None:
        """The receipt of whichever attempt of the record was mined (any may be)."""
        for h in reversed(rec.hashes):
            r = await self.receipt(h)
            if r is not None and r.get("blockHash"):
                return r
        return None

    async def nonce_used_for_good(self, nonce: int) -> bool:
        """Is `nonce` used in a block below the reorg window (head - confirmations, as
        final as the follower counts a block)?"""
        final = await self.client.block_number() - max(1, self.confirmations)
        return final >= 0 and await self.tx_count(hex(final)) > nonce

    async def known(self, rec: TxRecord) -> bool:
        """Does the node hold any of the record's attempts (pool or chain)?"""
        for h in reversed(rec.hashes):
            if await self.client.request("eth_getTransactionByHash", [h]) is not None:
                return True
        return False
