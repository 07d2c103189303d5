"""Plain data of the pusher: per-chain settings, transaction records, status."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from chains.registry_codec import RegistryEntry, unpack_batch

# prepared: signed and persisted, maybe not broadcast (a crash can stop us in between)
# sent: accepted by a node at least once; mined: a receipt exists at mined_block
# confirmed / failed: `confirmations` blocks on top of it, status 1 / 0 (final)
# dropped: the nonce was taken by another transaction, or the node refused it before it
#          reached a mempool; its entries are no longer in flight (final)
TxStatus = Literal["prepared", "sent", "mined", "confirmed", "failed", "dropped"]
OPEN_STATUSES: tuple[TxStatus, ...] = ("prepared", "sent", "mined")
FINAL_STATUSES: tuple[TxStatus, ...] = ("confirmed", "failed", "dropped")
# Final after being mined: the record's nonce was used on chain by its own bytes.
MINED_FINAL_STATUSES: tuple[TxStatus, ...] = ("confirmed", "failed")

GWEI = 10**9


@dataclass(frozen=True)
class PushChainSettings:
    """What one chain's sender needs; built from the daemon's config (duck-typed)."""

    name: str
    chain_id: int
    registry: str
    confirmations: int = 3
    batch_gas_budget: int = 3_000_000
    fee_bump: float = 0.125
    max_fee_wei: int = 500 * GWEI
    min_priority_fee_wei: int = GWEI // 100
    stuck_after_s: float = 30.0
    rebroadcast_after_s: float = 6.0
    max_in_flight: int = 4
    gas_headroom: float = 1.2
    fee_history_blocks: int = 10
    fee_percentile: float = 50.0
    # A nonce gap below the lowest open record is filled after standing this long.
    gap_fill_after_s: float = 60.0

    def __post_init__(self) -> None:
        if self.fee_bump < 0.125:
            # Most nodes refuse a replacement that raises either fee by less than
            # 10%; 12.5% also clears the 12.5% base-fee step of a full block.
            raise ValueError(f"chain {self.name}: fee_bump must be >= 0.125")
        if self.max_in_flight < 1:
            raise ValueError(f"chain {self.name}: max_in_flight must be >= 1")

    @classmethod
    def from_config(cls, chain: Any, pusher: Any) -> PushChainSettings:
        """From aggregator.config ChainConfig and PusherConfig attribute names."""
        registry = chain.contracts.registry
        if registry is None:
            raise ValueError(f"chain {chain.name}: no contracts.registry configured")
        return cls(
            name=chain.name,
            chain_id=chain.chain_id,
            registry=registry,
            confirmations=chain.confirmations,
            batch_gas_budget=pusher.batch_gas_budget,
            fee_bump=pusher.fee_bump,
            max_fee_wei=int(pusher.max_fee_gwei * GWEI),
            min_priority_fee_wei=int(pusher.min_priority_fee_gwei * GWEI),
            stuck_after_s=pusher.stuck_after_s,
            rebroadcast_after_s=pusher.rebroadcast_after_s,
            max_in_flight=pusher.max_in_flight,
            gas_headroom=pusher.gas_headroom,
            gap_fill_after_s=pusher.gap_fill_after_s,
        )


@dataclass
class TxRecord:
    """One registry update transaction, persisted before it is ever broadcast.

    `raw_tx`/`tx_hash` are the current signed attempt (a replacement changes them);
    `hashes` keeps every attempt, because any of them may be the one that is mined.
    A signed transaction is public data (it is broadcast), so storing it is safe, and
    rebroadcasting the same bytes after a crash can never conflict with itself.
    """

    chain: str
    sender: str
    nonce: int
    to: str
    payload: bytes
    payload_hash: str
    gas_limit: int
    max_fee: int
    priority_fee: int
    raw_tx: bytes
    tx_hash: str
    hashes: list[str] = field(default_factory=list)
    status: TxStatus = "prepared"
    created_at: float = field(default_factory=time.time)
    last_sent_at: float | None = None
    mined_hash: str | None = None
    mined_block: int | None = None
    mined_block_hash: str | None = None
    gas_used: int | None = None
    replacements: int = 0
    reorgs: int = 0
    error: str | None = None
    id: int | None = None

    @property
    def open(self) -> bool:
        return self.status in OPEN_STATUSES

    def entries(self) -> list[tuple[str, RegistryEntry]]:
        return unpack_batch(self.payload)

    def summary(self) -> dict[str, Any]:
        """JSON-able, for the API and logs (the payload itself is only counted)."""
        return {
            "id": self.id,
            "nonce": self.nonce,
            "status": self.status,
            "tx_hash": self.tx_hash,
            "hashes": list(self.hashes),
            "entries": len(self.payload) // 52,
            "max_fee": self.max_fee,
            "priority_fee": self.priority_fee,
            "gas_limit": self.gas_limit,
            "gas_used": self.gas_used,
            "mined_block": self.mined_block,
            "replacements": self.replacements,
            "reorgs": self.reorgs,
            "error": self.error,
        }


@dataclass(frozen=True)
class OnchainEntry:
    """What the registry holds for (chain, account) at `block` (None entry = empty slot)."""

    chain: str
    account: str
    entry: RegistryEntry | None
    block: int
    read_at: float


@dataclass
class SenderStatus:
    chain: str
    sender: str | None
    next_nonce: int | None = None
    pending_txs: int = 0
    sent_total: int = 0
    confirmed_total: int = 0
    failed_total: int = 0
    dropped_total: int = 0
    replacements_total: int = 0
    rebroadcasts_total: int = 0
    reorgs_total: int = 0
    gas_used_total: int = 0
    last_error: str | None = None
    at_fee_cap: bool = False
    # [first, last] nonce of a gap below the lowest open record, while one stands.
    nonce_gap: list[int] | None = None
    gap_fills_total: int = 0
