"""Prices every asset by a robust median of independent sources (oracles/)."""

from oracles.aggregate import AggregationRules, JumpGuard, aggregate, robust_median
from oracles.protocols import (
    BatchCaller,
    MappingRateProvider,
    PriceHistory,
    PricePoint,
    RateProvider,
    RateSnapshot,
)
from oracles.service import AssetPricing, OracleService, build_asset_pricing
from oracles.sources import SOURCE_KINDS, RateCap, SourceConfigError
from oracles.types import Observation, Price, PriceStatus, SourceFailure, SourceResult
from oracles.volatility import EwmaEstimator, VolatilitySettings

__all__ = [
    "SOURCE_KINDS",
    "AggregationRules",
    "AssetPricing",
    "BatchCaller",
    "EwmaEstimator",
    "JumpGuard",
    "MappingRateProvider",
    "Observation",
    "OracleService",
    "Price",
    "PriceHistory",
    "PricePoint",
    "PriceStatus",
    "RateCap",
    "RateProvider",
    "RateSnapshot",
    "SourceConfigError",
    "SourceFailure",
    "SourceResult",
    "VolatilitySettings",
    "aggregate",
    "build_asset_pricing",
    "robust_median",
]
