"""Unified margin ledger and risk engine (DESIGN.md: risk model, credit allocation)."""

from aggregator.risk.book import BookError, PositionBook, PositionRow, counted_amount
from aggregator.risk.engine import (
    TIERS,
    AccountHealth,
    MissingInput,
    PriceInput,
    RiskEngine,
    usd6_floor,
)

__all__ = [
    "TIERS",
    "AccountHealth",
    "BookError",
    "MissingInput",
    "PositionBook",
    "PositionRow",
    "PriceInput",
    "RiskEngine",
    "counted_amount",
    "usd6_floor",
]
