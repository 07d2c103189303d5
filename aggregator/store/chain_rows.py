"""Table handles and row <-> VaultEvent conversions of the chain store.

Shared by the write path (`chain_batches.py`), the read side (`chain_reads.py`) and
`chain_repo.SqlChainStore`. Facts defined once here: which event kinds pend until
confirmed (`RISK_LOWERING`: a deposit or repayment lowers risk, so it counts only once
`confirmations` deep), the confirmed amount of a position, the log indexes
reserved for reconciliation corrections, and which events a compacted backfill range
still stores as rows (`KEPT_KINDS`, plus each account's first event).
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator.store.models.chain import (
    ChainAccount,
    ChainBlock,
    ChainCheckpoint,
    ChainEvent,
    ChainEventRange,
    ChainPosition,
    LstRateSample,
)
from chains.types import EventKind, PositionKind, VaultEvent

# Typed Core handles on the tables (SQLModel attributes type as plain values).
EV: Table = ChainEvent.__table__  # type: ignore[attr-defined]
POS: Table = ChainPosition.__table__  # type: ignore[attr-defined]
BLK: Table = ChainBlock.__table__  # type: ignore[attr-defined]
CP: Table = ChainCheckpoint.__table__  # type: ignore[attr-defined]
RATE: Table = LstRateSample.__table__  # type: ignore[attr-defined]
RNG: Table = ChainEventRange.__table__  # type: ignore[attr-defined]
ACC: Table = ChainAccount.__table__  # type: ignore[attr-defined]

# Reconciliation corrections live in the event table at log indexes no real log uses.
CORRECTION_LOG_INDEX = 1 << 40
RISK_LOWERING = frozenset({"deposit", "repay"})
# Kinds kept as event rows inside a compacted backfill range (beside each account's
# first event): liquidations are facts the reputation feed reads one by one. Every row
# with a claim id (`ref`) is kept too: the pending-claim hold pairs them.
KEPT_KINDS = frozenset({"liquidation"})
ACCOUNT_CHUNK = 500

Key = tuple[str, str, str]


def event_row(ev: VaultEvent) -> ChainEvent:
    return ChainEvent(
        chain=ev.chain,
        block_number=ev.block_number,
        block_hash=ev.block_hash,
        tx_hash=ev.tx_hash,
        log_index=ev.log_index,
        kind=ev.kind,
        account=ev.account,
        token=ev.token,
        amount=ev.amount,
        counterparty=ev.counterparty,
        debt_token=ev.debt_token,
        debt_amount=ev.debt_amount,
        adjust_kind=ev.adjust_kind,
        negative=ev.negative,
        pending=ev.kind in RISK_LOWERING,
        ref=ev.ref,
    )


def mapping_event(m: Any) -> VaultEvent:
    return VaultEvent(
        chain=m["chain"],
        block_number=m["block_number"],
        block_hash=m["block_hash"],
        tx_hash=m["tx_hash"],
        log_index=m["log_index"],
        kind=m["kind"],
        account=m["account"],
        token=m["token"],
        amount=m["amount"],
        counterparty=m["counterparty"],
        debt_token=m["debt_token"],
        debt_amount=m["debt_amount"],
        adjust_kind=m["adjust_kind"],
        negative=m["negative"],
        ref=m["ref"],
    )


def row_event(row: ChainEvent) -> VaultEvent:
    return VaultEvent(
        chain=row.chain,
        block_number=row.block_number,
        block_hash=row.block_hash,
        tx_hash=row.tx_hash,
        log_index=row.log_index,
        kind=cast(EventKind, row.kind),
        account=row.account,
        token=row.token,
        amount=row.amount,
        counterparty=row.counterparty,
        debt_token=row.debt_token,
        debt_amount=row.debt_amount,
        adjust_kind=cast(PositionKind | None, row.adjust_kind),
        negative=row.negative,
        ref=row.ref,
    )


def confirmed_amount(kind: str, head: int, pending: int) -> int:
    return max(0, head - pending) if kind == "collateral" else head + pending


async def checkpoint_row(s: AsyncSession, chain: str) -> ChainCheckpoint:
    """The chain's checkpoint row in this session, created when missing."""
    row = await s.get(ChainCheckpoint, chain)
    if row is None:
        row = ChainCheckpoint(chain=chain, indexed_block=-1, log_range=1)
        s.add(row)
    return row
