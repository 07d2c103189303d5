"""Facts the oracle layer produces: observations, typed failures, prices."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, ClassVar


@dataclass(frozen=True)
class Observation:
    """One source's answer, already converted to a price in quote units (USD)."""

    source: str
    value: float
    # Unix seconds the source says the value is from (or when we fetched it
    # when the source has no timestamp).
    timestamp: float
    detail: str = ""


@dataclass(frozen=True)
class SourceFailure:
    """Why a source gave no usable value. `reason` names the source and the value."""

    kind: ClassVar[str] = "failure"
    source: str
    reason: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.reason}"


class Stale(SourceFailure):
    kind = "stale"


class NonPositive(SourceFailure):
    kind = "non_positive"


class OutOfBounds(SourceFailure):
    kind = "out_of_bounds"


class SequencerDown(SourceFailure):
    kind = "sequencer_down"


class Timeout(SourceFailure):
    kind = "timeout"


class HttpStatus(SourceFailure):
    kind = "http_status"


class BadPayload(SourceFailure):
    kind = "bad_payload"


class TooLarge(SourceFailure):
    kind = "too_large"


class Unreachable(SourceFailure):
    """Connection refused / reset / DNS: the source could not be asked at all."""

    kind = "unreachable"


class Reverted(SourceFailure):
    kind = "reverted"


class ChainError(SourceFailure):
    """The RPC round trip for the chain failed (every feed of that chain gets this)."""

    kind = "chain_error"


class SourceCrashed(SourceFailure):
    """The source raised instead of answering (a bug or an unexpected error);
    contained so one broken source cannot stop the round."""

    kind = "error"


class NoData(SourceFailure):
    """A rate provider has no sample yet."""

    kind = "no_data"


class Dependency(SourceFailure):
    """A derived value could not be formed because an input price is not usable."""

    kind = "dependency"


FAILURE_KINDS: dict[str, type[SourceFailure]] = {
    cls.kind: cls
    for cls in (
        Stale,
        NonPositive,
        OutOfBounds,
        SequencerDown,
        Timeout,
        HttpStatus,
        BadPayload,
        TooLarge,
        Unreachable,
        Reverted,
        ChainError,
        NoData,
        Dependency,
        SourceCrashed,
    )
}

SourceOutcome = Observation | SourceFailure


class PriceStatus(StrEnum):
    OK = "ok"
    # A value exists but the protocol cannot defend it: quorum lost after outlier
    # removal, an unconfirmed jump, or one leg of an LST price missing.
    DISPUTED = "disputed"
    UNAVAILABLE = "unavailable"
    # An LST whose growth cap failed its guard (oracles/cap_guard.py): valued at the
    # lower of the market median and the live rate, but credit may not rise on it.
    CAPPED = "capped"


@dataclass(frozen=True)
class SourceResult:
    """One line of a price breakdown: a source's value or its failure."""

    source: str
    kind: str
    value: float | None
    timestamp: float | None
    failure: str | None = None
    reason: str | None = None
    # True when the value is among those the final median was taken over.
    used: bool = False

    @staticmethod
    def of(outcome: SourceOutcome, kind: str, used: bool = False) -> SourceResult:
        if isinstance(outcome, Observation):
            return SourceResult(
                outcome.source,
                kind,
                outcome.value,
                outcome.timestamp,
                reason=outcome.detail or None,
                used=used,
            )
        return SourceResult(outcome.source, kind, None, None, outcome.kind, outcome.reason)


@dataclass(frozen=True)
class Price:
    asset: str
    status: PriceStatus
    # None when unavailable. For `disputed` it is the best estimate, for display.
    value: float | None
    # The oldest timestamp among the observations used (a price is as old as its
    # oldest input); None when unavailable.
    timestamp: float | None
    # When this round was computed (unix seconds).
    computed_at: float
    # (max - min) / value over the observations used.
    spread: float | None
    sources: tuple[SourceResult, ...]
    reason: str = ""
    # Last accepted (ok) price, kept for display only; never use it as fresh.
    last_good_value: float | None = None
    last_good_timestamp: float | None = None
    # Set while a jump beyond jump_threshold waits for the next round to agree.
    pending_value: float | None = None
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        """Only `ok` prices may be used for borrowing power."""
        return self.status is PriceStatus.OK and self.value is not None

    @property
    def valued(self) -> bool:
        """`ok` and `capped` prices value positions (a `capped` one may not raise credit)."""
        return self.status in (PriceStatus.OK, PriceStatus.CAPPED) and self.value is not None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready breakdown (for the API and logs)."""
        out = asdict(self)
        out["status"] = self.status.value
        return out
