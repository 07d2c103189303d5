"""Reputation: a personal, bounded multiplier on an account's requirement from its own
indexed history across every chain (docs/reputation.md; issue 23, first step).

Inputs are plain facts about one account (`History`): when it was first seen in the
vault on any chain, the liquidations it suffered (time, chain, USD) and, when the
risk history is recorded, its episodes in warning or worse (start, end, worst tier)
and its HF samples. With `D` = `day_s` (86,400 s: one day), `now` the evaluation time and the
parameters of `Params` (defaults in brackets):

    age          = now - first_seen
    clean_start  = max(first_seen, time of the last liquidation)
    clean_days   = ((now - clean_start) - time in warning or worse since clean_start) / D
    reward       = min(1 - lower, reward_per_30d * max(0, clean_days - min_age_days) / 30)
                   (0 while age < min_age_days)
    penalty      = sum over liquidations   liquidation_penalty * 2^(-(now - t) / half_life)
                 + sum over episodes that reached liquidatable
                                           liquidatable_penalty * 2^(-(now - end) / half_life)
    score        = reward - penalty                       (higher is better)
    multiplier   = clip(1 - score, lower, upper)          [0.90 .. 1.30]
                   and >= 1 while age < min_age_days

The maintenance side (docs/reputation.md "Not procyclical"): each penalty is phased in
over the account's clean time since its cause (a liquidation's time, an episode's
start), clean(t) = (now - t) - time in warning or worse within [t, now):

    phase(c)     = 0 if c < hold, else min(1, (c - hold) / ramp)   [7 d, 30 d]
    penalty_mm   = the penalty's terms, each x phase(clean(its cause))
    reward_mm    = the reward, with what each liquidation took from it (by restarting
                   the clean clock) phased out with that liquidation (`_phased_reward`)
    maintenance multiplier = clip(1 - (reward_mm - penalty_mm), 1, upper)

Invariants (tested in tests/unit/risk/test_reputation.py):
- Only clean *time* counts, never activity: any number of events at or after the first
  one leaves `first_seen` and the clean clock unchanged, so deposit/withdraw or
  borrow/repay loops in one block or one hour do not move the score.
- An account younger than `min_age_days` (a fresh address, a sybil) is never better than
  neutral: its multiplier is >= 1.0. An account with no history is exactly 1.0.
- A liquidation on any chain raises the account's one (borrowing) multiplier at once
  (by `liquidation_penalty`, to `upper` with the defaults); the account's multipliers
  are numbers used on every chain.
- The multiplier is always in [lower, upper] with lower <= 1 <= upper; the maintenance
  multiplier in [1, max(multiplier, 1)]. It does not rise while the account is in
  warning or worse (the phase-in holds), so a penalty scored in a crash never raises a
  liquidation requirement mid-crash (tests/unit/risk/test_reputation_phasein.py).

With an attestation input ([reputation.attestation]), one more factor: the minimum
score of the counted on-chain attestations (aggregator/risk/attestation.py), weighted by
`penalty` when negative (at once) or `bonus` when positive (only for a mature account
whose other factors sum to >= 0), so an attestation alone never makes a fresh address
better than neutral.

Where the multipliers apply: a penalty raises the borrowing side (BP, credit) at once
(m > 1) and the maintenance side (HF, tier, liquidation) as it phases in (mm > 1); a
reward (m < 1) lowers only the borrowing requirement, and never past the liquidation
line. The standard model's haircut in USD (`personalise`), with V the collateral value:

    C_liq'    = V - mm (V - C_liq)
    C_borrow' = min(V - m (V - C_borrow), C_liq')

A pushed model (portfolio, var; `personalise_result`), with E the equity and R the
maintenance requirement: HF and tier by `model.health` from E and mm R, and
BP = max(0, E - max(im_factor m, mm) R). Without maintenance multipliers, mm =
max(m, 1) (every penalty at once, the first step's rule).

So a good history never delays a liquidation nor rates an account healthier than the
base model (HF and tier are the base ones for mm = 1: the portfolio stress replay at
m = 0.90 scaled the whole requirement and rated a leveraged LST loop healthy that the
stress took to -201 USD; docs/reputation.md), and borrowing on the reward stops at HF
1 (standard) or max(im_factor m, 1) (pushed). C' <= V for every m >= 0 (no account is
rated healthy with collateral worth less than its debt), the rows with m == mm == 1 are not
touched (bit for bit), and C', HF, BP are non-increasing in m and mm. Pure: no I/O,
no clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from numba import njit, prange
from numpy.typing import NDArray

from aggregator.config import RiskConfig
from aggregator.risk.attestation import Attestation, AttestationParams, combined_score, contribution
from aggregator.risk.kernels import account_sums, personal_rows, personal_sums
from aggregator.risk.liquidation import close_factor
from aggregator.risk.model import MarginResult, health
from aggregator.risk.standard import Totals
from chains.units import TIERS

DAY = 86_400.0
WARNING = TIERS.index("warning")
LIQUIDATABLE = TIERS.index("liquidatable")


@dataclass(frozen=True)
class Params:
    """The score's bounds and weights ([reputation] in the config)."""

    lower: float = 0.90
    upper: float = 1.30
    min_age_days: float = 90.0
    reward_per_30d: float = 0.01
    liquidation_penalty: float = 0.30
    liquidatable_penalty: float = 0.10
    half_life_days: float = 180.0
    # Seconds in one of the days above: 86,400 unless the clock runs compressed (the
    # crash replay sets 86,400 / compression, so every day-based figure is market time).
    day_s: float = DAY
    attestation: AttestationParams = field(default_factory=AttestationParams)
    # The maintenance side of a penalty is phased in (`phase`): nothing until the
    # account has spent `maintenance_hold_days` of clean time (out of warning or worse)
    # since the penalty's cause, then linearly to the full weight over
    # `maintenance_ramp_days` more clean days. 0 and 0: at once (the first step's rule).
    maintenance_hold_days: float = 7.0
    maintenance_ramp_days: float = 30.0

    def __post_init__(self) -> None:
        if not (0.0 < self.lower <= 1.0 <= self.upper):
            raise ValueError(
                f"reputation: need 0 < lower <= 1 <= upper, got lower={self.lower}, "
                f"upper={self.upper}"
            )
        for name in ("min_age_days", "reward_per_30d", "liquidation_penalty",
                     "liquidatable_penalty", "maintenance_hold_days",
                     "maintenance_ramp_days"):  # fmt: skip
            if not getattr(self, name) >= 0:
                raise ValueError(f"reputation: {name} must be >= 0")
        if self.half_life_days <= 0:
            raise ValueError("reputation: half_life_days must be > 0")
        if not (self.day_s > 0 and math.isfinite(self.day_s)):
            raise ValueError(f"reputation: day_s must be > 0 and finite, got {self.day_s}")


@dataclass(frozen=True)
class Liquidation:
    t: float
    chain: str
    usd: float


@dataclass(frozen=True)
class Episode:
    """A stretch in warning or worse: [start, end), `end` None while it lasts."""

    start: float
    end: float | None
    worst_tier: int


@dataclass(frozen=True)
class History:
    """What the index (and the risk history, when recorded) says about one account.
    `episodes` / `hf` are None when no risk history is available (features left out)."""

    first_seen: float | None = None
    liquidations: tuple[Liquidation, ...] = ()
    episodes: tuple[Episode, ...] | None = None
    hf: tuple[tuple[float, float], ...] | None = None  # (t, hf) samples, time order
    # (t, debt USD, BP USD) samples of the risk history, time order: credit use.
    credit: tuple[tuple[float, float, float], ...] | None = None
    attestations: tuple[Attestation, ...] = ()  # about this account, every chain


# Where a factor acts (`Factor.side`): "both" = a penalty, on the borrowing side at
# once and on the maintenance side as its phased `maintenance_contribution`;
# "borrowing" = a reward (lowers only the borrowing requirement; on the maintenance side
# it can only offset penalties, the maintenance multiplier is never below 1); "none" =
# shown only (weight 0).
SIDES = ("both", "borrowing", "none")


@dataclass(frozen=True)
class Factor:
    """One named input of the score: its value, the weight it is multiplied by, its
    contribution to the (borrowing) score and to the maintenance score (positive: lowers
    the multiplier), and the side it acts on (`SIDES`)."""

    name: str
    value: float | None
    unit: str
    weight: float
    contribution: float
    note: str = ""
    side: str = "none"
    maintenance_contribution: float = 0.0


@dataclass(frozen=True)
class Reputation:
    """`multiplier` scales the borrowing requirement (penalties at once, rewards),
    `maintenance_multiplier` (>= 1, <= max(multiplier, 1)) the maintenance one (HF,
    tier, liquidation), from the phased penalties."""

    account: str
    score: float
    multiplier: float
    age_days: float
    factors: tuple[Factor, ...] = field(default_factory=tuple)
    maintenance_score: float = 0.0
    maintenance_multiplier: float = 1.0

    def as_dict(self, params: Params) -> dict[str, object]:
        """JSON-able (no NaN/inf): the explanation's `reputation` section."""
        return {
            "score": self.score,
            "multiplier": self.multiplier,
            "maintenance_score": self.maintenance_score,
            "maintenance_multiplier": self.maintenance_multiplier,
            "bounds": [params.lower, params.upper],
            "age_days": self.age_days,
            "neutral": self.multiplier == 1.0 and self.maintenance_multiplier == 1.0,
            "maintenance_phase_in": {
                "hold_days": params.maintenance_hold_days,
                "ramp_days": params.maintenance_ramp_days,
            },
            "rule": "multiplier m = clip(1 - score, lower, upper), >= 1 before min_age_days; "
            "maintenance multiplier mm = clip(1 - maintenance_score, 1, upper) with each "
            "penalty phased in over clean time since its cause; "
            "C_liq' = V - mm (V - C_liq), C_borrow' = min(V - m (V - C_borrow), "
            "C_liq'); pushed models: HF = E / (mm R), BP = E - max(im_factor m, mm) R",
            "factors": [
                {
                    "name": f.name,
                    "value": f.value,
                    "unit": f.unit,
                    "weight": f.weight,
                    "side": f.side,
                    "contribution": f.contribution,
                    "maintenance_contribution": f.maintenance_contribution,
                    "note": f.note,
                }
                for f in self.factors
            ],
        }


def neutral(account: str) -> Reputation:
    return Reputation(account, 0.0, 1.0, 0.0, ())


def phase(clean_s: float, p: Params) -> float:
    """The share (0..1) of a penalty that reaches the maintenance side after `clean_s`
    seconds of clean time (out of warning or worse) since its cause: 0 before
    `maintenance_hold_days`, then linear to 1 over `maintenance_ramp_days` (a step at
    the hold when the ramp is 0; at once when both are 0)."""
    hold = p.maintenance_hold_days * p.day_s
    ramp = p.maintenance_ramp_days * p.day_s
    if clean_s < hold:
        return 0.0
    if ramp <= 0.0:
        return 1.0
    return min(1.0, (clean_s - hold) / ramp)


def clean_since(h: History, t: float, now: float) -> float:
    """Seconds of [t, now) the account spent out of warning or worse (all of it when
    no risk history is recorded). Constant while an episode lasts: the phase-in of a
    penalty's maintenance side holds while the account is in warning or worse."""
    if t >= now:
        return 0.0
    return max(0.0, (now - t) - _overlap(h.episodes or (), t, now))


def _overlap(episodes: Sequence[Episode], lo: float, hi: float) -> float:
    """Seconds of [lo, hi) covered by the episodes (they do not overlap each other)."""
    total = 0.0
    for e in episodes:
        end = hi if e.end is None else e.end
        total += max(0.0, min(end, hi) - max(e.start, lo))
    return total


def _decay(age_s: float, p: Params) -> float:
    return float(2.0 ** (-max(age_s, 0.0) / (p.half_life_days * p.day_s)))


def cure_times(episodes: Sequence[Episode]) -> list[float]:
    """Seconds from each ended downgrade to its cure (back to healthy)."""
    return [e.end - e.start for e in episodes if e.end is not None]


def hf_volatility(samples: Sequence[tuple[float, float]]) -> float | None:
    """Standard deviation of the log HF changes between consecutive finite samples
    (None with fewer than two changes)."""
    logs = [math.log(h) for _, h in samples if math.isfinite(h) and h > 0]
    if len(logs) < 3:
        return None
    return float(np.std(np.diff(np.array(logs)), ddof=1))


def credit_utilisation(samples: Sequence[tuple[float, float, float]]) -> float | None:
    """Mean share of the borrowing capacity in use, debt / (debt + BP), over the
    samples with any capacity (None without one): credit consumed against credit
    allocatable (the allocation is BP split over the chains)."""
    shares = [d / (d + b) for _, d, b in samples if d >= 0 and b >= 0 and d + b > 0]
    return sum(shares) / len(shares) if shares else None


def _reward(h: History, p: Params, now: float, clean_start: float) -> float:
    """The reward of a mature account whose clean clock started at `clean_start`."""
    bad_s = _overlap(h.episodes or (), clean_start, now)
    clean_days = max(0.0, (now - clean_start) - bad_s) / p.day_s
    return min(1.0 - p.lower, p.reward_per_30d * max(0.0, clean_days - p.min_age_days) / 30.0)


def _phased_reward(
    h: History,
    p: Params,
    now: float,
    *,
    first_seen: float,
    past: Sequence[Liquidation],
    phases: Sequence[float],
) -> float:
    """The reward on the maintenance side: a liquidation restarts the clean clock, and
    the reward it takes away is phased out with its penalty's phase-in, so a liquidation
    in a crash cannot raise the maintenance multiplier through the lost reward either.
    With R_j the reward counted from the j-th liquidation (time order; R_0 from
    first_seen): R_0 - sum_j phase_j (R_{j-1} - R_j), which is R_k (the reward) once
    every phase is 1, and R_0 while none has begun."""
    order = sorted(range(len(past)), key=lambda i: past[i].t)
    prev = _reward(h, p, now, first_seen)
    out = prev
    for i in order:
        r = _reward(h, p, now, max(first_seen, past[i].t))
        out -= phases[i] * (prev - r)
        prev = r
    return out


def _history_factors(h: History, p: Params, now: float) -> list[Factor]:
    """Factors from the risk history: liquidatable near misses (weighted), time in
    warning or worse, cure time and HF volatility (shown, already in the clean time or
    not weighted)."""
    if h.episodes is None:
        return [Factor("risk_history", None, "", 0.0, 0.0, "no risk history recorded")]
    near = [e for e in h.episodes if e.worst_tier >= LIQUIDATABLE]
    decays = [_decay(now - (now if e.end is None else e.end), p) for e in near]
    near_sum = sum(decays)
    # Maintenance side: each near miss phased in over the clean time since it began
    # (0 while it lasts: its own time is not clean).
    near_maint = sum(
        d * phase(clean_since(h, e.start, now), p) for d, e in zip(decays, near, strict=True)
    )
    cures = cure_times(h.episodes)
    bad_days = _overlap(h.episodes, -math.inf, now) / p.day_s
    vol = hf_volatility(h.hf or ())
    return [
        Factor("liquidatable_episodes", near_sum, "decayed count", -p.liquidatable_penalty,
               -p.liquidatable_penalty * near_sum,
               f"{len(near)} episode(s) reached liquidatable; maintenance side phased in "
               f"({near_maint:.3g} of {near_sum:.3g} decayed count)",
               "both", -p.liquidatable_penalty * near_maint),
        Factor("days_in_warning_or_worse", bad_days, "days", 0.0, 0.0,
               "counted by not counting as clean time; no penalty (a market-wide crash "
               "puts everyone there)"),
        Factor("cure_time_mean", sum(cures) / len(cures) / 3600.0 if cures else None, "hours",
               0.0, 0.0, f"{len(cures)} cured downgrade(s); informational"),
        Factor("hf_volatility", vol, "sd of log HF changes", 0.0, 0.0, "informational"),
        Factor("credit_utilisation", credit_utilisation(h.credit or ()),
               "debt / (debt + BP), mean", 0.0, 0.0,
               "credit consumed vs allocatable; informational (cheap to move, so unweighted)"),
    ]  # fmt: skip


def _attestation_factor(
    h: History, p: Params, *, mature: bool, behaviour: float, behaviour_mm: float
) -> Factor:
    """The on-chain attestations (aggregator/risk/attestation.py): the minimum counted
    score in bps, weighted by `penalty` when < 0 (at once) or `bonus` when > 0 (mature,
    behaviour >= 0 only; on the maintenance side, that side's behaviour score, so a
    liquidation in a crash does not take the bonus off the maintenance side at once)."""
    combined = combined_score(h.attestations, p.attestation)
    weight, contrib, note = contribution(combined, p.attestation, mature=mature,
                                         behaviour=behaviour)  # fmt: skip
    _, contrib_mm, _ = contribution(combined, p.attestation, mature=mature,
                                    behaviour=behaviour_mm)  # fmt: skip
    # A bad word is not the account's tier in a crash (no feedback loop): both sides at
    # once. A good word lowers only the borrowing side (offsets penalties there).
    side = "both" if contrib < 0 else "borrowing" if contrib > 0 else "none"
    return Factor("attestation", None if combined is None else combined / 10_000.0,
                  "min counted score / 10000", weight, contrib, note, side,
                  contrib_mm)  # fmt: skip


def score(account: str, h: History, p: Params, now: float) -> Reputation:
    """The account's score and multiplier (the module docstring's formula)."""
    first_seen = h.first_seen
    if first_seen is None or first_seen > now:
        if not (p.attestation.on and h.attestations):
            return neutral(account)
        # Attested but never seen: scored as an account first seen now (never better
        # than neutral; a bad attestation still shows and counts).
        first_seen = now
    age_s = now - first_seen
    past = [liq for liq in h.liquidations if liq.t <= now]
    last_liq = max((liq.t for liq in past), default=-math.inf)
    clean_start = max(first_seen, last_liq)
    bad_s = _overlap(h.episodes or (), clean_start, now)
    clean_days = max(0.0, (now - clean_start) - bad_s) / p.day_s
    mature = age_s >= p.min_age_days * p.day_s
    # Reward accrues only on clean days beyond the probation of min_age_days: no jump
    # at maturity, and a liquidation restarts the probation.
    earned = max(0.0, clean_days - p.min_age_days)
    reward = min(1.0 - p.lower, p.reward_per_30d * earned / 30.0) if mature else 0.0
    decays = [_decay(now - liq.t, p) for liq in past]
    liq_sum = sum(decays)
    # Maintenance side: each liquidation phased in over the clean time since it.
    phases = [phase(clean_since(h, liq.t, now), p) for liq in past]
    liq_maint = sum(d * f for d, f in zip(decays, phases, strict=True))
    reward_mm = 0.0
    if mature:
        reward_mm = _phased_reward(h, p, now, first_seen=first_seen, past=past, phases=phases)
    factors = [
        Factor("clean_days", clean_days, "days", p.reward_per_30d / 30.0, reward,
               f"beyond min_age_days ({p.min_age_days:g}), capped at 1 - lower; lowers "
               "the borrowing requirement only (on the maintenance side it offsets "
               "penalties; the reward a liquidation took is phased out with it)",
               "borrowing", reward_mm),
        Factor("liquidations", liq_sum, "decayed count", -p.liquidation_penalty,
               -p.liquidation_penalty * liq_sum,
               f"{len(past)} liquidation(s), {sum(x.usd for x in past):.2f} USD, chains "
               f"{sorted({x.chain for x in past})}; maintenance side phased in "
               f"({liq_maint:.3g} of {liq_sum:.3g} decayed count)",
               "both", -p.liquidation_penalty * liq_maint),
        Factor("days_since_last_liquidation",
               (now - last_liq) / p.day_s if past else None, "days", 0.0, 0.0, "informational"),
        *_history_factors(h, p, now),
    ]  # fmt: skip
    if p.attestation.on:
        behaviour = sum(f.contribution for f in factors)
        behaviour_mm = sum(f.maintenance_contribution for f in factors)
        factors.append(_attestation_factor(h, p, mature=mature, behaviour=behaviour,
                                           behaviour_mm=behaviour_mm))  # fmt: skip
    s = sum(f.contribution for f in factors)
    m = min(max(1.0 - s, p.lower), p.upper)
    if not mature:
        m = max(m, 1.0)
    # The maintenance multiplier: never below 1 (a reward only offsets penalties) and,
    # each penalty being phased (<= its full weight), never above max(m, 1).
    sm = sum(f.maintenance_contribution for f in factors)
    mm = min(max(1.0 - sm, 1.0), p.upper)
    return Reputation(account, s, m, age_s / p.day_s, tuple(factors), sm, mm)


def episodes_from_points(
    points: Sequence[tuple[float, int, int]], now: float
) -> tuple[Episode, ...]:
    """Episodes in warning or worse from risk-history points (t, tier, worst tier in the
    bucket), in time order: a point whose worst tier is warning or worse opens (or
    extends) an episode, the next point at healthy closes it. Resolution: the level's
    step (docs/reputation.md)."""
    out: list[Episode] = []
    start: float | None = None
    worst = 0
    for t, tier, tier_worst in points:
        if t > now:
            break
        if tier_worst >= WARNING or tier >= WARNING:
            if start is None:
                start, worst = t, 0
            worst = max(worst, tier_worst, tier)
            if tier < WARNING:  # the bucket ended healthy: cured within it
                out.append(Episode(start, t, worst))
                start = None
        elif start is not None:
            out.append(Episode(start, t, worst))
            start = None
    if start is not None:
        out.append(Episode(start, None, worst))
    return tuple(out)


def maintenance_of(
    mult: NDArray[np.float64], mmult: NDArray[np.float64] | None
) -> NDArray[np.float64]:
    """The maintenance multipliers: `mmult` when given, else max(m, 1) (the rule with
    every penalty at once)."""
    return np.maximum(mult, 1.0) if mmult is None else mmult


def personalise(
    t: Totals,
    mult: NDArray[np.float64],
    risk: RiskConfig,
    mmult: NDArray[np.float64] | None = None,
) -> Totals:
    """Totals `t` with each row whose multipliers are not exactly 1 rewritten (the module
    docstring's rule), `mult` the borrowing multipliers m and `mmult` the maintenance
    ones mm (None: max(m, 1)): C_liq' = V - mm (V - C_liq), C_borrow' = min(V - m (V -
    C_borrow), C_liq'), then HF, BP, tier and close factor by the kernel's own rules
    (HF = C_liq' / D, BP = max(C_borrow' - D, 0), tier = (HF < warn) + (HF < 1) + (V <
    D)). Rows with m == mm == 1 are the very same floats; `t` itself is not modified."""
    mm_all = maintenance_of(mult, mmult)
    rows = np.flatnonzero((mult != 1.0) | (mm_all != 1.0))
    if rows.size == 0:
        return t
    out = replace(t, cliq=t.cliq.copy(), cborrow=t.cborrow.copy(), hf=t.hf.copy(),
                  bp=t.bp.copy(), tier=t.tier.copy(), cf=t.cf.copy())  # fmt: skip
    v, d = t.vtot[rows], t.debt[rows]
    # The kernels' own rule (kernels.py `personal_sums`, the one definition); mm <= 1
    # leaves C_liq (so HF and tier) the very same floats.
    cl, cb = personal_rows(
        v, t.cliq[rows], t.cborrow[rows],
        np.ascontiguousarray(mult[rows]), np.ascontiguousarray(mm_all[rows]),
    )  # fmt: skip
    with np.errstate(divide="ignore", invalid="ignore"):
        hf = np.where(d > 0.0, cl / np.where(d > 0.0, d, 1.0), np.inf)
    out.cliq[rows], out.cborrow[rows], out.hf[rows] = cl, cb, hf
    out.bp[rows] = np.maximum(cb - d, 0.0)
    out.tier[rows] = (hf < risk.warn_hf).astype(np.int8) + (hf < 1.0) + (v < d)
    out.cf[rows] = close_factor(hf, risk)
    return out


@njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def personal_tick_kernel(  # noqa: PLR0917
    start, cnt, pc, pv, tab, nlp, crv, cix, idx, mult, mmult, warn_hf, hf, bp, tier,
):  # fmt: skip
    """After a tick, the accounts `idx` (a multiplier != 1) again, in parallel: the
    kernels' own sums (`account_sums`), then `personalise`'s arithmetic in the same
    order (sub, mul, sub; no fused multiply-add without fastmath), so the stored figures
    equal the per-account path's bit for bit. Degraded flags stay the tick's."""
    for j in prange(idx.size):
        a = idx[j]
        c_liq, c_bor, d_val, v_tot = account_sums(start[a], cnt[a], pc, pv, tab, nlp, crv, cix)
        cl, cb = personal_sums(c_liq, c_bor, v_tot, mult[a], mmult[a])
        h = cl / d_val if d_val > 0.0 else np.inf
        hf[a] = h
        bp[a] = max(cb - d_val, 0.0)
        tier[a] = (h < warn_hf) + (h < 1.0) + (v_tot < d_val)


def personalise_result(
    res: MarginResult,
    mult: NDArray[np.float64],
    im_factor: float,
    warn_hf: float,
    mmult: NDArray[np.float64] | None = None,
) -> MarginResult:
    """A pushed model's result (portfolio, var) with each account's multipliers applied
    (the module docstring's rule; `mmult` None: max(m, 1)): HF and tier by
    `model.health` from equity and mm x requirement, BP = max(0, E - max(im_factor m,
    mm) R). Rows with m == mm == 1, and rows with negative equity (insolvent whatever
    m; there a larger m would move HF towards 0), are the very same floats."""
    mm_all = maintenance_of(mult, mmult)
    rows = np.flatnonzero(((mult != 1.0) | (mm_all != 1.0)) & (res.equity_usd >= 0.0))
    if rows.size == 0:
        return res
    hf, bp, tier = res.hf.copy(), res.bp.copy(), res.tier.copy()
    m, eq, req = mult[rows], res.equity_usd[rows], res.requirement_usd[rows]
    mh = mm_all[rows]
    h, _, t = health(eq, mh * req, im_factor, warn_hf)
    hf[rows], tier[rows] = h, t
    bp[rows] = np.maximum(eq - np.maximum(im_factor * m, mh) * req, 0.0)
    # Fresh copies of this call: read-only, taken as they are by the result (as are
    # `res`'s own arrays: model.py `_frozen`), not copied once more.
    for a in (hf, bp, tier):
        a.setflags(write=False)
    return MarginResult.of(
        res.accounts, equity_usd=res.equity_usd, requirement_usd=res.requirement_usd,
        hf=hf, bp=bp, tier=tier, parts=dict(res.parts),
    )  # fmt: skip


__all__ = [
    "DAY",
    "SIDES",
    "Episode",
    "Factor",
    "History",
    "Liquidation",
    "Params",
    "Reputation",
    "clean_since",
    "credit_utilisation",
    "episodes_from_points",
    "hf_volatility",
    "maintenance_of",
    "neutral",
    "personal_tick_kernel",
    "personalise",
    "personalise_result",
    "phase",
    "score",
]
