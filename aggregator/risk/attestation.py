"""The attestation input of the reputation score (docs/reputation.md "Attestations"):
which on-chain attestations count, and what they say together. Pure: no I/O, no clock.

An attestation (contracts/AttestationRegistry.sol) is (chain, uid, attester, subject,
score in signed basis points -10000..10000, expiry, revoked), read at a block whose
timestamp is `as_of`. One counts when all of these hold:

- its attester is allow-listed (`AttestationParams.attesters`, lowercase);
- it is the attester's latest about the subject on its chain (highest uid): a new
  attestation supersedes the previous one, and revoking the latest does not bring an
  older one back (the contract's `latestUid`);
- it is not revoked and not expired: `as_of < expiry`, with `as_of` the *block*
  timestamp of the read, never the wall clock;
- its chain was read this run (`trusted`), or it says something bad (score < 0): while
  a chain's registry cannot be read, its last known attestations may still raise a
  multiplier but never lower one (a revocation we cannot see must not keep a bonus).

Several counted attestations (several attesters, several chains) combine to the
**minimum** score, the most conservative: one allow-listed attester's bad word is enough
to raise the multiplier, a good one helps only if no counted attestation says worse.

Invariants (tests/unit/risk/test_attestation.py): the combined score is None when
nothing counts, else in [-10000, 10000]; adding a counted attestation never raises the
combined score; the order of the input does not matter.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

SCORE_MIN = -10_000
SCORE_MAX = 10_000
BPS = 10_000.0


@dataclass(frozen=True)
class AttestationParams:
    """[reputation.attestation]: an empty allow-list turns the factor off."""

    attesters: frozenset[str] = field(default_factory=frozenset)
    bonus: float = 0.05
    penalty: float = 0.30

    def __post_init__(self) -> None:
        if not 0.0 <= self.bonus <= 1.0 or not 0.0 <= self.penalty <= 10.0:
            raise ValueError("reputation.attestation: need 0 <= bonus <= 1, 0 <= penalty <= 10")
        if any(a != a.lower() for a in self.attesters):
            raise ValueError("reputation.attestation: attesters must be lowercase here")

    @property
    def on(self) -> bool:
        return bool(self.attesters)


@dataclass(frozen=True)
class Attestation:
    chain: str
    uid: int
    attester: str  # lowercase
    score_bps: int
    expiry: int
    revoked: bool
    as_of: float  # block timestamp of the read this record comes from
    trusted: bool = True  # False: its chain failed this run (last known record)


COUNTED = "counted"


def status(a: Attestation, latest_uid: int, p: AttestationParams) -> str:
    """Why `a` counts or not ("counted" or the reason); `latest_uid` is the highest uid
    of (chain, attester, subject)."""
    if a.attester not in p.attesters:
        return "attester not allow-listed"
    if a.uid != latest_uid:
        return "superseded by a later attestation of the same attester"
    if a.revoked:
        return "revoked"
    if not a.as_of < a.expiry:
        return "expired (block time)"
    if not a.trusted and a.score_bps >= 0:
        return "chain unreadable this run: only a negative score counts"
    return COUNTED


def latest_uids(atts: Iterable[Attestation]) -> dict[tuple[str, str], int]:
    """(chain, attester) -> highest uid, for one subject's attestations."""
    out: dict[tuple[str, str], int] = {}
    for a in atts:
        key = (a.chain, a.attester)
        out[key] = max(out.get(key, 0), a.uid)
    return out


def statuses(atts: Sequence[Attestation], p: AttestationParams) -> list[str]:
    latest = latest_uids(atts)
    return [status(a, latest[(a.chain, a.attester)], p) for a in atts]


def counted(atts: Sequence[Attestation], p: AttestationParams) -> list[Attestation]:
    return [a for a, s in zip(atts, statuses(atts, p), strict=True) if s == COUNTED]


def combined_score(atts: Sequence[Attestation], p: AttestationParams) -> int | None:
    """The minimum score over the counted attestations, None when none counts."""
    scores = [a.score_bps for a in counted(atts, p)]
    return min(scores) if scores else None


def contribution(
    combined: int | None, p: AttestationParams, *, mature: bool, behaviour: float
) -> tuple[float, float, str]:
    """(weight, contribution to the score, note) of the combined score `combined`.

    Negative: weight `penalty`, at once, whatever the account's age. Positive: weight
    `bonus`, but only for a mature account (age >= min_age_days) whose behaviour score
    (the other factors) is >= 0: a friendly attester can neither make a fresh address
    (a sybil) better than neutral nor cancel a liquidation."""
    if combined is None:
        return 0.0, 0.0, "no counted attestation"
    x = max(SCORE_MIN, min(SCORE_MAX, combined)) / BPS
    if x == 0.0:
        return 0.0, 0.0, "score 0: no opinion"
    if x < 0.0:
        return p.penalty, p.penalty * x, "min over counted attestations; a bad word counts at once"
    if not mature:
        return 0.0, 0.0, "fresh account (age < min_age_days): a good word cannot help"
    if behaviour < 0.0:
        return 0.0, 0.0, "behaviour score < 0: a good word does not offset it"
    return p.bonus, p.bonus * x, "min over counted attestations"


__all__ = [
    "COUNTED",
    "SCORE_MAX",
    "SCORE_MIN",
    "Attestation",
    "AttestationParams",
    "combined_score",
    "contribution",
    "counted",
    "latest_uids",
    "status",
    "statuses",
]
