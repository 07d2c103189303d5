"""Unified margin ledger and risk engine (DESIGN.md: risk model, credit allocation)."""
# ruff: noqa: E402  (numba's cache directory is set before any kernel module loads)

from aggregator.risk.jit_cache import configure as _configure_jit_cache

# Before any submodule decorates a kernel (jit_cache.py: why the cache is per source).
_configure_jit_cache()

from aggregator.risk.book import BookError, PositionBook, PositionRow, counted_amount
from aggregator.risk.credit import usd6_floor
from aggregator.risk.engine import RiskEngine
from aggregator.risk.market import MarketData, MissingInput, PriceInput
from aggregator.risk.standard import AccountHealth
from aggregator.risk.view import LedgerView
from chains.units import TIERS

__all__ = [
    "TIERS",
    "AccountHealth",
    "BookError",
    "LedgerView",
    "MarketData",
    "MissingInput",
    "PositionBook",
    "PositionRow",
    "PriceInput",
    "RiskEngine",
    "counted_amount",
    "usd6_floor",
]
