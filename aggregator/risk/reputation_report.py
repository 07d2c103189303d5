"""Reputation capital-efficiency report: what a cohort with a clean year-long history
saves against neutral accounts, on a generated population (docs/reputation.md
"Capital efficiency"; `aggregator reputation report`).

The population is generated from a seed (the same seed, the same report): books over
the reference file's chains, assets and market (risk/reference_portfolios.toml, the
one `aggregator margin report` uses) and, per account, a history synthesised as the
daemon would see it, then folded by the same pure functions the feed uses
(`episodes_from_points` over daily risk-history points, `History`, `score`). The books
go through the risk engine twice: neutral (no reputation) and with every account's
multiplier installed (`set_reputation`, the daemon's path), so the figures are the
ones the daemon would push. Cohorts:

- `clean_year`: first seen 365..730 days ago, never in warning, never liquidated;
- `new`: first seen 0..90 days ago (the sybil rule: never better than neutral);
- `warned`: 120..730 days old, 1..4 stretches in warning (1..10 days), a third of
  them reaching liquidatable;
- `liquidated`: 120..730 days old, 1..2 liquidations on random chains.

Safety (`personal_stress`): the portfolio stress replay of risk/capital.py with every
account at the multiplier `lower`, funded to personal HF 1.0, warn_hf, im_factor and to
the reward's borrowing limit, rated by the engine's rule: no account rated healthy may
end with negative equity.

Invariants: pure (no I/O, no clock; `NOW` is a fixed time); the safety checks of the
report (no account with collateral worth less than its debt rated better than
insolvent; every personal borrowing haircut >= lower x the neutral one; the stress
replay) are computed, not assumed, and `passed` is False if any fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from aggregator.risk.book import PositionRow
from aggregator.risk.capital import ReferenceFile, load_reference
from aggregator.risk.engine import RiskEngine
from aggregator.risk.market import PriceInput
from aggregator.risk.reputation import (
    DAY,
    History,
    Liquidation,
    Params,
    Reputation,
    episodes_from_points,
    score,
)
from chains.units import TIERS

COHORTS = (("clean_year", 0.30), ("new", 0.30), ("warned", 0.25), ("liquidated", 0.15))
WARNING, LIQUIDATABLE = TIERS.index("warning"), TIERS.index("liquidatable")
NOW = 2_000_000_000.0  # the reference market has no calendar: any fixed time will do


@dataclass(frozen=True)
class Synth:
    """One generated account: its cohort, history and spot rows."""

    account: str
    cohort: str
    history: History
    rows: list[PositionRow]


def _points(rng: np.random.Generator, first: float, now: float, n_eps: int) -> list:
    """Daily risk-history points (t, tier, worst tier in the day) from `first` to `now`
    with `n_eps` stretches in warning, a third of them reaching liquidatable."""
    days = int((now - first) // DAY)
    tier = np.zeros(days + 1, np.int64)
    worst = np.zeros(days + 1, np.int64)
    for _ in range(n_eps):
        start = int(rng.integers(0, max(days - 10, 1)))
        length = int(rng.integers(1, 11))
        tier[start : start + length] = WARNING
        worst[start : start + length] = WARNING
        if rng.random() < 1 / 3:
            worst[start + length // 2] = LIQUIDATABLE
    return [(first + d * DAY, int(tier[d]), int(worst[d])) for d in range(days + 1)]


def _hf_samples(rng: np.random.Generator, points: list) -> tuple[tuple[float, float], ...]:
    hf = {0: 1.6, WARNING: 1.05, LIQUIDATABLE: 0.97}
    return tuple((t, hf[w] * float(rng.uniform(0.97, 1.03))) for t, _, w in points)


def _history(rng: np.random.Generator, cohort: str, chains: list[str], now: float) -> History:
    if cohort == "new":
        return History(now - float(rng.uniform(0, 90)) * DAY, (), (), ())
    lo = 365.0 if cohort == "clean_year" else 120.0
    first = now - float(rng.uniform(lo, 730.0)) * DAY
    n_eps = int(rng.integers(1, 5)) if cohort == "warned" else 0
    pts = _points(rng, first, now, n_eps)
    liqs: tuple[Liquidation, ...] = ()
    if cohort == "liquidated":
        liqs = tuple(
            Liquidation(float(rng.uniform(first, now)), str(rng.choice(chains)),
                        float(rng.uniform(500.0, 50_000.0)))
            for _ in range(int(rng.integers(1, 3)))
        )  # fmt: skip
    return History(first, liqs, episodes_from_points(pts, now), _hf_samples(rng, pts))


def population(ref: ReferenceFile, n: int, seed: int, now: float = NOW) -> list[Synth]:
    """`n` accounts: cohorts in the COHORTS shares, books of 1..3 collateral holdings
    (1k..200k USD each) and a debt of 10..95% of their borrowing capacity (ltv)."""
    rng = np.random.default_rng(seed)
    price = ref.market.prices
    coll = [a for a in ref.assets if a.symbol in price and a.ltv > 0]
    debt = [a for a in ref.assets if a.symbol in price and a.borrowable]
    if not coll or not debt:
        raise ValueError("reference: need priced collateral (ltv > 0) and a borrowable asset")
    names = [c for c, _ in COHORTS]
    shares = np.array([s for _, s in COHORTS])
    out = []
    for i in range(n):
        acc = f"0x{0x5E000000 + i:040x}"
        cohort = names[int(rng.choice(len(names), p=shares / shares.sum()))]
        rows = []
        cap = 0.0
        picks = rng.choice(len(coll), size=int(rng.integers(1, min(3, len(coll)) + 1)),
                           replace=False)  # fmt: skip
        for k in picks.tolist():
            a = coll[k]
            usd = float(rng.uniform(1_000.0, 200_000.0))
            units = int(usd / price[a.symbol] * 10**a.decimals)
            rows.append(PositionRow(acc, str(rng.choice(ref.chains)), a.symbol, "collateral",
                                    units, units))  # fmt: skip
            cap += units / 10**a.decimals * price[a.symbol] * a.ltv
        d = debt[int(rng.integers(0, len(debt)))]
        held = {r.asset for r in rows}
        if d.symbol not in held:
            units = int(cap * float(rng.uniform(0.10, 0.95)) / price[d.symbol] * 10**d.decimals)
            rows.append(PositionRow(acc, str(rng.choice(ref.chains)), d.symbol, "debt",
                                    units, units))  # fmt: skip
        out.append(Synth(acc, cohort, _history(rng, cohort, ref.chains, now), rows))
    return out


@dataclass(frozen=True)
class CohortFigures:
    cohort: str
    accounts: int
    multiplier: dict[str, float]  # min, p10, p50, p90, max, mean
    bp_neutral_usd: float
    bp_personal_usd: float
    haircut_neutral_usd: float  # sum of V - C_borrow: the requirement on borrowing
    haircut_personal_usd: float
    tiers_neutral: dict[str, int]
    tiers_personal: dict[str, int]

    @property
    def bp_change_usd(self) -> float:
        return self.bp_personal_usd - self.bp_neutral_usd

    @property
    def haircut_saved_usd(self) -> float:
        return self.haircut_neutral_usd - self.haircut_personal_usd

    def to_json(self) -> dict[str, Any]:
        pct = lambda a, b: 100.0 * a / b if b else 0.0  # noqa: E731
        return {
            **vars(self),
            "bp_change_usd": self.bp_change_usd,
            "bp_change_pct": pct(self.bp_change_usd, self.bp_neutral_usd),
            "haircut_saved_usd": self.haircut_saved_usd,
            "haircut_saved_pct": pct(self.haircut_saved_usd, self.haircut_neutral_usd),
        }


@dataclass(frozen=True)
class ReputationReport:
    seed: int
    accounts: int
    params: Params
    cohorts: list[CohortFigures]
    histogram: list[tuple[float, float, int]]  # [lo, hi) bins of the multiplier, count
    unsafe_rated: int  # V < D and rated better than insolvent (must be 0)
    haircut_below_lower: int  # personal haircut < lower x neutral (must be 0)
    stress: PersonalStress  # the portfolio stress replay at m = lower

    @property
    def passed(self) -> bool:
        return self.unsafe_rated == 0 and self.haircut_below_lower == 0 and self.stress.passed

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "accounts": self.accounts,
            "bounds": [self.params.lower, self.params.upper],
            # The cohorts are behaviour-only (no attestations): those parameters only.
            "params": {k: v for k, v in vars(self.params).items() if k != "attestation"},
            "cohorts": [c.to_json() for c in self.cohorts],
            "histogram": [{"lo": lo, "hi": hi, "accounts": k} for lo, hi, k in self.histogram],
            "unsafe_rated": self.unsafe_rated,
            "haircut_below_lower": self.haircut_below_lower,
            "stress": {
                "multiplier": self.stress.multiplier,
                "accounts": self.stress.accounts,
                "healthy": self.stress.healthy,
                "violations": self.stress.violations,
            },
            "passed": self.passed,
        }


def _engine(ref: ReferenceFile, rows: list[PositionRow]) -> RiskEngine:
    eng = RiskEngine(ref.chains, ref.assets, ref.correlation_groups, ref.risk)
    eng.set_prices({s: PriceInput(p) for s, p in ref.market.prices.items()})
    eng.set_volatility(ref.market.sigma, ref.market.relative_sigma)
    eng.load_positions(rows)
    eng.recompute()
    return eng


def _quantiles(m: np.ndarray) -> dict[str, float]:
    if m.size == 0:
        return {}
    q = np.quantile(m, [0.0, 0.1, 0.5, 0.9, 1.0])
    return {"min": float(q[0]), "p10": float(q[1]), "p50": float(q[2]), "p90": float(q[3]),
            "max": float(q[4]), "mean": float(m.mean())}  # fmt: skip


def reputation_report(
    ref: ReferenceFile | None = None,
    *,
    accounts: int = 10_000,
    seed: int = 23,
    params: Params | None = None,
) -> ReputationReport:
    ref = ref or load_reference()
    p = params or Params()
    pop = population(ref, accounts, seed)
    rows = [r for s in pop for r in s.rows]
    neutral, rated = _engine(ref, rows), _engine(ref, rows)
    reps: dict[str, Reputation] = {s.account: score(s.account, s.history, p, NOW) for s in pop}
    mults = {a: r.multiplier for a, r in reps.items()}
    maint = {a: r.maintenance_multiplier for a, r in reps.items()}
    rated.set_reputation(p, mults, lambda a: reps[a], maint)
    rated.recompute()
    per: dict[str, list[tuple[float, Any, Any]]] = {c: [] for c, _ in COHORTS}
    unsafe = below = 0
    for s in pop:
        b, r = neutral.health(s.account), rated.health(s.account)
        per[s.cohort].append((mults[s.account], b, r))
        if r.collateral_usd < r.debt_usd and r.tier != "insolvent":
            unsafe += 1
        v = b.collateral_usd
        if v - r.c_borrow < p.lower * (v - b.c_borrow) - 1e-9 * max(v, 1.0):
            below += 1
    cohorts = []
    for name, items in per.items():
        m = np.array([x[0] for x in items])
        cohorts.append(CohortFigures(
            name, len(items), _quantiles(m),
            sum(b.bp for _, b, _ in items), sum(r.bp for _, _, r in items),
            sum(b.collateral_usd - b.c_borrow for _, b, _ in items),
            sum(r.collateral_usd - r.c_borrow for _, _, r in items),
            {t: sum(b.tier == t for _, b, _ in items) for t in TIERS},
            {t: sum(r.tier == t for _, _, r in items) for t in TIERS},
        ))  # fmt: skip
    k = max(1, round((p.upper - p.lower) / 0.05))
    edges = np.linspace(p.lower, p.upper, k + 1)
    allm = np.array(list(mults.values()))
    # [lo, hi) bins, the last one closed: every multiplier is in exactly one.
    idx = np.minimum(np.searchsorted(edges, allm, side="right") - 1, k - 1)
    counts = np.bincount(idx, minlength=k)
    hist = [(float(edges[i]), float(edges[i + 1]), int(counts[i])) for i in range(k)]
    stress = personal_stress(ref, p.lower)
    return ReputationReport(seed, accounts, p, cohorts, hist, unsafe, below, stress)


# -- portfolio stress replay with the multiplier -------------------------------------------
@dataclass(frozen=True)
class PersonalStress:
    """The portfolio stress replay (risk/capital.py) of accounts with multiplier
    `multiplier`: each reference portfolio funded to the personal HF E / (max(m, 1) MM)
    of 1.0, warn_hf and im_factor, and to the borrowing limit of the multiplier (BP = 0:
    E = max(im_factor m, max(m, 1)) MM), rated by the engine's rule
    (`personalise_result`), then the stress applied."""

    multiplier: float
    accounts: int
    healthy: int
    violations: list[dict[str, Any]]  # rated healthy, negative equity after the stress

    @property
    def passed(self) -> bool:
        return not self.violations


def personal_stress(ref: ReferenceFile | None = None, multiplier: float = 0.90) -> PersonalStress:
    from aggregator.risk.capital import stress_replay
    from aggregator.risk.model import MarginResult, health
    from aggregator.risk.reputation import personalise_result

    ref = ref or load_reference()
    m, mh, im = multiplier, max(multiplier, 1.0), ref.portfolio.im_factor
    hfs = (*(h * mh for h in (1.0, ref.risk.warn_hf, im)), max(im * m, mh))
    rep = stress_replay(ref, hfs)
    rows = [r for r in rep.rows if r.funded.startswith("PM")]
    eq = np.array([r.equity_before for r in rows])
    mm = np.array([r.mm for r in rows])
    h, bp, t = health(eq, mm, im, ref.risk.warn_hf)
    res = MarginResult.of(np.arange(eq.size), equity_usd=eq, requirement_usd=mm,
                          hf=h, bp=bp, tier=t)  # fmt: skip
    tier = personalise_result(res, np.full(eq.size, m), im, ref.risk.warn_hf).tier
    healthy = tier == TIERS.index("healthy")
    bad = [
        {"portfolio": r.name, "funded": r.funded, "equity_before": r.equity_before,
         "equity_after": r.equity_after}
        for r, ok in zip(rows, healthy, strict=True) if ok and r.equity_after < 0
    ]  # fmt: skip
    return PersonalStress(m, len(rows), int(healthy.sum()), bad)


# -- text rendering (CLI) --------------------------------------------------------------------------
def render(rep: ReputationReport) -> str:
    from aggregator.tables import table

    out = [
        f"Reputation capital efficiency: {rep.accounts:,} generated accounts (seed "
        f"{rep.seed}), multiplier bounds {rep.params.lower:.2f}..{rep.params.upper:.2f}",
        "",
    ]
    rows = []
    for c in rep.cohorts:
        j = c.to_json()
        q = c.multiplier
        rows.append([
            c.cohort, f"{c.accounts:,}",
            f"{q.get('min', 1):.3f} / {q.get('p50', 1):.3f} / {q.get('max', 1):.3f}",
            f"{c.bp_neutral_usd:,.0f}", f"{c.bp_personal_usd:,.0f}",
            f"{c.bp_change_usd:+,.0f} ({j['bp_change_pct']:+.1f}%)",
            f"{c.haircut_saved_usd:+,.0f} ({j['haircut_saved_pct']:+.1f}%)",
        ])  # fmt: skip
    out.append(table(["cohort", "accounts", "multiplier min/p50/max", "BP neutral USD",
                      "BP personal USD", "BP change", "haircut saved"], rows))  # fmt: skip
    out += ["", "multiplier distribution (all accounts):"]
    bins = [[f"{lo:.2f}", f"{hi:.2f}", f"{k:,}"] for lo, hi, k in rep.histogram]
    out.append(table(["from", "to", "accounts"], bins))
    out += [
        "",
        f"safety: {rep.unsafe_rated} account(s) with collateral < debt rated better than "
        f"insolvent; {rep.haircut_below_lower} personal haircut(s) below lower x neutral",
        f"portfolio stress replay at m = {rep.stress.multiplier:.2f}: {rep.stress.accounts} "
        f"funded portfolios, {rep.stress.healthy} rated healthy, "
        f"{len(rep.stress.violations)} of them at negative equity after the stress",
        "PASSED" if rep.passed else "FAILED",
    ]
    return "\n".join(out)


__all__ = ["COHORTS", "CohortFigures", "PersonalStress", "ReputationReport", "personal_stress",
           "population", "render", "reputation_report"]  # fmt: skip
