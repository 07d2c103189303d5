"""Plain data shared by the chain adapters and whatever stores their facts.

chains/ never imports aggregator/: the daemon's pydantic ChainConfig inherits the
chain knobs from `ChainTuning` here, builds `ChainSettings` from its config and
implements `IndexerStore` (chains/store.py) in SQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MULTICALL3 = "0xcA11bde05977b3631167028862bE2a173976CA11"

EventKind = Literal["deposit", "withdraw", "borrow", "repay", "liquidation", "reconcile"]
PositionKind = Literal["collateral", "debt"]


class ChainTuning(BaseModel):
    """A chain's indexing and RPC knobs, each named, defaulted and bounded here once:
    the daemon's `[[chains]]` config section (aggregator.config.ChainConfig) inherits
    these fields and `ChainSettings` carries them to the adapters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    confirmations: int = Field(default=3, ge=0, le=1000)
    block_time: float = Field(default=2.0, gt=0)
    start_block: int = Field(default=0, ge=0)
    # Largest eth_getLogs range tried first; the indexer adapts downwards and remembers.
    max_log_range: int = Field(default=2000, ge=1)
    rpc_timeout_s: float = Field(default=10.0, gt=0)
    rpc_rate_limit_per_s: float = Field(default=50.0, gt=0)
    reconcile_every_blocks: int = Field(default=100, ge=1)
    reconcile_sample: int = Field(default=50, ge=1)
    # Backfill without a row per event for blocks no reorg or promotion can reach
    # (docs/chains.md, "Compacted backfill").
    compact_backfill: bool = False


class ChainSettings(ChainTuning):
    """What the chain adapters need from a chain's config section (same key names;
    the config nests `vault` and `multicall` under `contracts`)."""

    name: str
    chain_id: int
    rpc_urls: tuple[str, ...]
    vault: str | None = None
    multicall: str = MULTICALL3
    # Extra blocks of hashes kept beyond `confirmations` so that a reorg that
    # touches just-confirmed blocks can still be rolled back, not only detected.
    reorg_window_extra: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _some_url(self) -> ChainSettings:
        if not self.rpc_urls:
            raise ValueError(f"chain {self.name}: rpc_urls must not be empty")
        return self

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
            **{key: getattr(cfg, key) for key in ChainTuning.model_fields},
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
    # The cross-chain seize's claim id (0x hex) on both halves, claim and settlement:
    # what pairs them across chains (the ledger's pending-claim hold).
    ref: str | None = None

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
            seize = PositionEffect(self.account, self.token, "collateral", -a, 0)
            if not self.debt_amount:
                # A cross-chain settlement: its debt was repaid on the claim's chain.
                return [seize]
            return [
                seize,
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


@dataclass
class EventColumns:
    """Vault events of one chain as parallel columns: row i of every list is one event
    (the fields of `VaultEvent`). The indexer's hot path decodes getLogs answers into
    this and the store inserts it in bulk, without an object per event. Every list
    has the same length (`append` and `take` keep it so)."""

    chain: str
    block_number: list[int] = field(default_factory=list)
    block_hash: list[str] = field(default_factory=list)
    tx_hash: list[str] = field(default_factory=list)
    log_index: list[int] = field(default_factory=list)
    kind: list[EventKind] = field(default_factory=list)
    account: list[str] = field(default_factory=list)
    token: list[str] = field(default_factory=list)
    amount: list[int] = field(default_factory=list)
    counterparty: list[str | None] = field(default_factory=list)
    debt_token: list[str | None] = field(default_factory=list)
    debt_amount: list[int] = field(default_factory=list)
    adjust_kind: list[PositionKind | None] = field(default_factory=list)
    negative: list[bool] = field(default_factory=list)
    ref: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.block_number)

    def columns(self) -> tuple[list[Any], ...]:
        """The columns in `VaultEvent` field order (after `chain`)."""
        return (
            self.block_number, self.block_hash, self.tx_hash, self.log_index, self.kind,
            self.account, self.token, self.amount, self.counterparty, self.debt_token,
            self.debt_amount, self.adjust_kind, self.negative, self.ref,
        )  # fmt: skip

    def append(self, ev: VaultEvent) -> None:
        if ev.chain != self.chain:
            raise ValueError(f"event of chain {ev.chain!r} in a batch for {self.chain!r}")
        values = (
            ev.block_number, ev.block_hash, ev.tx_hash, ev.log_index, ev.kind, ev.account,
            ev.token, ev.amount, ev.counterparty, ev.debt_token, ev.debt_amount,
            ev.adjust_kind, ev.negative, ev.ref,
        )  # fmt: skip
        for col, value in zip(self.columns(), values, strict=True):
            col.append(value)

    @classmethod
    def from_events(cls, chain: str, events: Iterable[VaultEvent]) -> EventColumns:
        cols = cls(chain)
        for ev in events:
            cols.append(ev)
        return cols

    def event(self, i: int) -> VaultEvent:
        return VaultEvent(self.chain, *(col[i] for col in self.columns()))

    def events(self) -> list[VaultEvent]:
        return [VaultEvent(self.chain, *row) for row in zip(*self.columns(), strict=True)]

    def take(self, rows: Sequence[int]) -> EventColumns:
        """The given rows, in that order."""
        picked = [list(map(col.__getitem__, rows)) for col in self.columns()]
        return EventColumns(self.chain, *picked)


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


@dataclass(frozen=True)
class SeizeClaim:
    """A cross-chain seize claim (docs/contracts.md) whose settlement is not indexed on
    any chain yet: `amount` of debt `token` repaid on `chain` by a liquidator, for
    collateral the account still holds elsewhere until the settlement."""

    chain: str
    account: str
    token: str
    amount: int
    block_number: int
    ref: str
