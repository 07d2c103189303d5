"""Classification of node answers to eth_sendRawTransaction.

Wording differs between clients (geth, erigon, nethermind, besu, reth, anvil); the
sender acts on the class, never on the raw message.
"""

from __future__ import annotations

import re
from enum import Enum


class SendErrorKind(Enum):
    ALREADY_KNOWN = "already_known"  # our exact bytes are in the pool: success
    NONCE_TOO_LOW = "nonce_too_low"  # the nonce is used: by us (mined) or someone else
    UNDERPRICED = "underpriced"  # replacement not bumped enough, or pool minimum
    FEE_TOO_LOW = "fee_too_low"  # max fee below the base fee (some nodes refuse)
    INSUFFICIENT_FUNDS = "insufficient_funds"  # keeper cannot pay gas * max fee
    NONCE_TOO_HIGH = "nonce_too_high"  # gap: the node misses an earlier nonce
    INVALID = "invalid"  # anything else the node refuses outright


_PATTERNS: list[tuple[SendErrorKind, re.Pattern[str]]] = [
    (
        SendErrorKind.ALREADY_KNOWN,
        re.compile(
            r"already known|known transaction|already imported|alreadyknown|"
            r"already in (the )?(mem)?pool|transaction already exists",
            re.I,
        ),
    ),
    (
        SendErrorKind.NONCE_TOO_LOW,
        re.compile(r"nonce too low|nonce is too low|oldnonce|old nonce|nonce has already", re.I),
    ),
    (
        SendErrorKind.UNDERPRICED,
        re.compile(r"underpriced|replacement fee too low|feetoolowtocompete", re.I),
    ),
    (
        SendErrorKind.FEE_TOO_LOW,
        re.compile(r"less than (the )?block base fee|max fee per gas less than|feecap", re.I),
    ),
    (
        SendErrorKind.INSUFFICIENT_FUNDS,
        re.compile(r"insufficient funds|insufficient balance|insufficientfunds", re.I),
    ),
    (SendErrorKind.NONCE_TOO_HIGH, re.compile(r"nonce too high|nonce gap", re.I)),
]


def classify_send_error(message: str) -> SendErrorKind:
    for kind, pattern in _PATTERNS:
        if pattern.search(message):
            return kind
    return SendErrorKind.INVALID


class PushError(Exception):
    """A push step failed in a way the caller should see (counted, retried later)."""


class BatchTooLarge(PushError):
    def __init__(self, estimate: int, budget: int) -> None:
        super().__init__(f"batch needs {estimate} gas, budget is {budget}")
        self.estimate, self.budget = estimate, budget


class BatchReverts(PushError):
    """eth_estimateGas says the batch would revert (e.g. NotKeeper): nothing was sent."""
