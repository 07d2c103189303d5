"""The risk-model seam: what every margin model implements, and its one result shape.

A model reads the shared position book (risk/book.py: counted amounts per account,
chain, asset and side) and the market data (risk/market.py: prices, volatilities)
and returns, for the accounts asked about, a `MarginResult`. The registry of models
is risk/registry.py (`MODELS`); the pushed model is chosen by config
(`[portfolio] mode`), and the engine adopts a non-standard model's HF, BP and tier
(`RiskEngine.adopt`) so credit allocation and the pusher carry them.

Every model derives HF, BP and tier from its equity and requirement the same way
(`health`): HF = equity / requirement (+inf with nothing required, -inf for negative
equity with nothing required), BP = max(0, equity - im_factor * requirement), tier =
warn / liquidatable / insolvent steps at warn_hf, 1 and equity 0.

Invariants of a result: every array has one entry per account of `accounts`, in that
order; tier codes index chains.units.TIERS; hf is +inf for an account with nothing
required; the arrays are read-only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from chains.units import TIERS

if TYPE_CHECKING:
    from aggregator.risk.book import PositionBook
    from aggregator.risk.market import MarketData


def _frozen(x: Any, dtype: Any) -> NDArray[Any]:
    """`x` as a read-only array of `dtype`: a copy, except an array that is already
    read-only, owns its data and has that dtype (a fresh figure its model marked so,
    or another result's): sharing it is the same, without a copy per result."""
    if (
        isinstance(x, np.ndarray)
        and not x.flags.writeable
        and x.flags.owndata
        and (dtype is None or x.dtype == np.dtype(dtype))
    ):
        return x
    a = np.array(x, dtype)
    a.setflags(write=False)
    return a


def health(
    equity: NDArray[np.float64],
    requirement: NDArray[np.float64],
    im_factor: float,
    warn_hf: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int8]]:
    """(hf, bp, tier) from equity and requirement (the module docstring's rule)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        hf = np.where(
            requirement > 0.0, equity / np.where(requirement > 0.0, requirement, 1.0), np.inf
        )
    hf = np.where((requirement <= 0.0) & (equity < 0.0), -np.inf, hf)
    # A requirement near the float limit overflows to inf here, and BP is then 0, as it
    # should be: no warning for it.
    with np.errstate(over="ignore"):
        bp = np.maximum(equity - im_factor * requirement, 0.0)
    tier = ((hf < warn_hf).astype(np.int8) + (hf < 1.0) + (equity < 0.0)).astype(np.int8)
    return hf, bp, tier


@dataclass(frozen=True)
class MarginResult:
    """Per-account figures of one model (see the module docstring's invariants).

    equity_usd: what the model counts on the account's side (collateral value in the
    standard model, equity in portfolio mode); requirement_usd: what it must cover
    (debt, or maintenance margin); parts: the model's own explanation figures.
    """

    accounts: NDArray[np.int64]
    equity_usd: NDArray[np.float64]
    requirement_usd: NDArray[np.float64]
    hf: NDArray[np.float64]
    bp: NDArray[np.float64]
    tier: NDArray[np.int8]
    parts: Mapping[str, NDArray[Any]] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        accounts: Any,
        *,
        equity_usd: Any,
        requirement_usd: Any,
        hf: Any,
        bp: Any,
        tier: Any,
        parts: Mapping[str, Any] | None = None,
    ) -> MarginResult:
        """A validated, read-only result from array-likes."""
        res = cls(
            _frozen(accounts, np.int64), _frozen(equity_usd, np.float64),
            _frozen(requirement_usd, np.float64), _frozen(hf, np.float64),
            _frozen(bp, np.float64), _frozen(tier, np.int8),
            {k: _frozen(v, None) for k, v in (parts or {}).items()},
        )  # fmt: skip
        res.validate()
        return res

    def validate(self) -> None:
        """Raise ValueError unless the result has the one shape every model returns."""
        n = self.accounts.shape
        arrays: dict[str, NDArray[Any]] = {
            "equity_usd": self.equity_usd, "requirement_usd": self.requirement_usd,
            "hf": self.hf, "bp": self.bp, "tier": self.tier, **self.parts,
        }  # fmt: skip
        for name, a in arrays.items():
            if a.shape != n:
                raise ValueError(f"margin result: {name} has shape {a.shape}, accounts {n}")
        if self.tier.size and not (self.tier.min() >= 0 and self.tier.max() < len(TIERS)):
            raise ValueError(f"margin result: tier codes must index {TIERS}")
        if np.isnan(self.hf).any() or (self.bp < 0).any():
            raise ValueError("margin result: hf must not be NaN and bp must be >= 0")


@dataclass(frozen=True)
class ModelSources:
    """Inputs beyond the book and the market data that some models need, supplied by
    the I/O layer (e.g. perp and option legs from the Markets events)."""

    derivatives: Any = None
    # The VaR model's calibration (risk/var_model.py `CalibrationSource`), kept fresh
    # by a scheduled job off the recompute loop (aggregator/var_feed.py).
    calibration: Any = None


class MarginModel(Protocol):
    """One margin model over the shared book and market data."""

    name: str

    def evaluate(
        self,
        book: PositionBook,
        market: MarketData,
        accounts: NDArray[np.int64],
        now: float | None = None,
    ) -> MarginResult:
        """Figures of the book's accounts `accounts` (indices) under `market`, valued
        at `now` (default: the wall clock; time-dependent models only)."""
        ...


__all__ = ["MarginModel", "MarginResult", "ModelSources", "health"]
