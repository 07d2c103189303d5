"""Plain data shared by the chain adapters and whatever stores their facts.

chains/ never imports aggregator/: the daemon builds `ChainSettings` from its
pydantic ChainConfig and implements `IndexerStore` (chains/store.py) in SQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

MULTICALL3 = "0xcA11bde05977b3631167028862bE2a173976CA11"

EventKind = Literal["deposit", "withdraw", "borrow", "repay", "liquidation", "reconcile"]
PositionKind = Literal["collateral", "debt"]


@dataclass(frozen=True)
class ChainSettings:
    """What the chain adapters need from a chain's config section (same key names)."""

    name: str
    chain_id: int
    rpc_urls: tuple[str, ...]
    vault: str | None = None
    multicall: str = MULTICALL3
    confirmations: int = 3
    start_block: int = 0
    block_time: float = 2.0
    max_log_range: int = 2000
    rpc_timeout_s: float = 10.0
    rpc_rate_limit_per_s: float = 50.0
    reconcile_every_blocks: int = 100
    reconcile_sample: int = 50
    # Extra blocks of hashes kept beyond `confirmations` so that a reorg that
    # touches just-confirmed blocks can still be rolled back, not only detected.
    reorg_window_extra: int = 0

    def __post_init__(self) -> None:
        if not self.rpc_urls:
            raise ValueError(f"chain {self.name}: rpc_urls must not be empty")
        if self.confirmations < 0:
            raise ValueError(f"chain {self.name}: confirmations must be >= 0")

    @classmethod
    def from_config(cls, cfg: Any) -> ChainSettings:
        """Build from anything with aggregator.config.ChainConfig's attribute names
        (duck-typed, so chains/ does not import aggregator/)."""
        contracts = cfg.contracts
        return cls(
            name=cfg.name,
            chain_id=cfg.chain_id,
            rpc_urls=tuple(cfg.rpc_urls),
            vault=contracts.vault,
            multicall=contracts.multicall,
            confirmations=cfg.confirmations,
            start_block=cfg.start_block,
            block_time=cfg.block_time,
            max_log_range=cfg.max_log_range,
            rpc_timeout_s=cfg.rpc_timeout_s,
            rpc_rate_limit_per_s=cfg.rpc_rate_limit_per_s,
            reconcile_every_blocks=cfg.reconcile_every_blocks,
            reconcile_sample=cfg.reconcile_sample,
        )

    @property
    def reorg_window(self) -> int:
        """How many recent block hashes are kept: reorgs deeper than this are fatal."""
        return max(1, self.confirmations + self.reorg_window_extra)


@dataclass(frozen=True)
class VaultEvent:
    """One decoded vault log. `amount` is the primary amount (seized for liquidations)."""

    chain: str
    block_number: int
    block_hash: str
    tx_hash: str
    log_index: int
    kind: EventKind
    account: str
    token: str
    amount: int
    # Liquidated: liquidator, debt token and repaid amount; Repaid: payer.
    counterparty: str | None = None
    debt_token: str | None = None
    debt_amount: int = 0
    # Reconciliation corrections only: which position, and whether `amount` is subtracted.
    adjust_kind: PositionKind | None = None
    negative: bool = False

    def effects(self) -> list[PositionEffect]:
        """How this event moves the stored views (see docs/chains.md, "Finality views").

        Risk-lowering amounts (deposits, repayments) are also added to `pending`:
        the confirmed view ignores them until they are `confirmations` deep.
        """
        a = self.amount
        if self.kind == "deposit":
            return [PositionEffect(self.account, self.token, "collateral", a, a)]
        if self.kind == "withdraw":
            return [PositionEffect(self.account, self.token, "collateral", -a, 0)]
        if self.kind == "borrow":
            return [PositionEffect(self.account, self.token, "debt", a, 0)]
        if self.kind == "repay":
            return [PositionEffect(self.account, self.token, "debt", -a, a)]
        if self.kind == "liquidation":
            assert self.debt_token is not None
            return [
                PositionEffect(self.account, self.token, "collateral", -a, 0),
                PositionEffect(self.account, self.debt_token, "debt", -self.debt_amount, 0),
            ]
        # A reconciliation correction is stored as an event at the block it was read
        # at, so a later rollback of that block undoes it like any other fact.
        assert self.adjust_kind is not None
        return [
            PositionEffect(
                self.account, self.token, self.adjust_kind, -a if self.negative else a, 0
            )
        ]


@dataclass(frozen=True)
class PositionEffect:
    account: str
    token: str
    kind: PositionKind
    head_delta: int
    pending_delta: int


@dataclass(frozen=True)
class Position:
    """One (chain, account, token, kind) balance in both finality views.

    head_amount follows every indexed event. pending_amount is the sum of
    deposits/repayments not yet `confirmations` deep. The confirmed view is
    head minus pending for collateral (floored at 0) and head plus pending for debt.
    """

    chain: str
    account: str
    token: str
    kind: PositionKind
    head_amount: int
    pending_amount: int
    updated_block: int

    @property
    def confirmed_amount(self) -> int:
        if self.kind == "collateral":
            return max(0, self.head_amount - self.pending_amount)
        return self.head_amount + self.pending_amount


@dataclass(frozen=True)
class BlockRef:
    number: int
    hash: str
    parent_hash: str


@dataclass(frozen=True)
class Checkpoint:
    """The per-chain cursor, committed with the events it covers."""

    chain: str
    indexed_block: int
    indexed_hash: str | None
    log_range: int
    head_block: int = 0
    confirmed_block: int = 0
    fatal_reason: str | None = None
    last_reconcile_block: int = 0


@dataclass(frozen=True)
class RateSample:
    """An LST exchange rate: `rate / scale` underlying units per one whole token."""

    asset: str
    chain: str
    block: int
    timestamp: int
    rate: int
    scale: int = 10**18


@dataclass
class BatchResult:
    """What one committed indexing step changed (for callbacks and tests)."""

    chain: str
    from_block: int
    to_block: int
    events: int
    accounts: set[str] = field(default_factory=set)
