"""Adaptive eth_getLogs block range.

Providers cap a getLogs query by block span or by result count, and say so in
error messages of differing shapes. We take the range a message suggests when
it names one, else halve; on success we grow by ~12% after a few successes in a
row (growing fast would just re-hit the cap every other query).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SUFFIX = {"": 1, "k": 1_000, "m": 1_000_000}

# (pattern, how to turn the match into a span). A span of None means "a range
# error without a number": halve.
_SUGGESTED_RANGE = re.compile(
    r"try with this block range \[\s*(0x[0-9a-f]+)\s*,\s*(0x[0-9a-f]+)\s*\]", re.I
)
_MAX_RANGE = [
    re.compile(r"exceed(?:s|ed)? (?:the )?maximum block range:?\s*(\d+)", re.I),
    re.compile(r"max(?:imum)? (?:block )?range (?:is|of|allowed is)?\s*(\d+)([km]?)", re.I),
    re.compile(r"up to (?:a )?(\d+)([km]?) block range", re.I),
    re.compile(r"block range (?:should|must) (?:be )?(?:less than|<=?|at most)\s*(\d+)", re.I),
]
_RANGE_ERRORS = re.compile(
    r"block range is too (?:wide|large)|range too (?:wide|large)|too many blocks"
    r"|query returned more than \d+ results|more than \d+ (?:results|logs)"
    r"|log response size exceeded|response size exceeded|limit exceeded|query timeout"
    r"|too many results|exceeds? the range",
    re.I,
)


_SPAN_LIMIT = re.compile(
    r"block range is too (?:wide|large)|range too (?:wide|large)|too many blocks", re.I
)


def range_ceiling(message: str, requested: int) -> int | None:
    """A hard span limit the message reveals (a block-count cap, not a result-count cap).

    Result-count errors depend on how busy the blocks are, so they set no ceiling.
    """
    for pat in _MAX_RANGE:
        m = pat.search(message)
        if m:
            suffix = m.group(2) if m.lastindex and m.lastindex > 1 else ""
            return max(1, int(m.group(1)) * _SUFFIX[suffix.lower()])
    if _SPAN_LIMIT.search(message):
        return max(1, requested - 1)
    return None


def range_hint(message: str, requested: int) -> int | None:
    """The span to try next after a getLogs error `message`, or None if it is not a range error."""
    m = _SUGGESTED_RANGE.search(message)
    if m:
        lo, hi = int(m.group(1), 16), int(m.group(2), 16)
        if hi >= lo:
            return max(1, min(requested - 1, hi - lo + 1)) if requested > 1 else 1
    for pat in _MAX_RANGE:
        m = pat.search(message)
        if m:
            n = (
                int(m.group(1))
                * _SUFFIX[(m.group(2) if m.lastindex and m.lastindex > 1 else "").lower()]
            )
            if n >= 1:
                return max(1, min(requested - 1, n)) if requested > 1 else 1
    if _RANGE_ERRORS.search(message):
        return max(1, requested // 2)
    return None


@dataclass
class LogRange:
    """The current getLogs span of one chain (persisted in its checkpoint)."""

    maximum: int
    current: int
    successes: int = 0
    grow_after: int = 3
    # Learned from "max block range" style errors: growth never crosses it again.
    ceiling: int | None = None

    def __post_init__(self) -> None:
        if self.maximum < 1:
            raise ValueError("max_log_range must be >= 1")
        self.current = max(1, min(self.current, self.maximum))

    def succeeded(self) -> None:
        self.successes += 1
        limit = min(self.maximum, self.ceiling or self.maximum)
        if self.successes >= self.grow_after and self.current < limit:
            self.current = min(limit, self.current + max(1, self.current // 8))
            self.successes = 0

    def shrink_to(self, span: int) -> None:
        self.current = max(1, min(self.maximum, span))
        self.successes = 0

    def limit_to(self, ceiling: int) -> None:
        self.ceiling = max(1, ceiling if self.ceiling is None else min(self.ceiling, ceiling))
        self.shrink_to(min(self.current, self.ceiling))

    def halve(self) -> None:
        self.shrink_to(self.current // 2)
