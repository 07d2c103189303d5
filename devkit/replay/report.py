"""What a replay measured, per model (the daemon's configured mode).

The recorder takes one sample per step: the daemon's rating of every book account
(tier, HF, borrowing power) and the market prices of the path at that step. Equity
is computed from the book's positions at market prices (no haircut), after the
keeper's liquidations (what each `Liquidated` event repaid and seized) and the
responders' cures (responders.py: what each mined repayment repaid).

Definitions (docs/replay.md):
- tiers reached: accounts rated that tier at least once.
- healthy -> negative equity: accounts rated healthy at a sample whose equity at the
  next step's prices was below zero (the rating they carried until the next push).
  Equity counts the account's derivative legs (perp P&L, option marks by Black-76 at
  the replay's implied vol and the option's tenor): the account's own equity, venue
  included. Liquidations touch only the vault's spot legs.
- false liquidation: a liquidation after which the account's pre-liquidation positions
  would have been back at HF >= 1 at the configured liquidation thresholds (plain
  `lt`, e-mode group's when all legs are in it) within `false_window_h` hours. The
  positions are the book's moved by every earlier liquidation and cure.
- margin: the model's haircut on the book's depositors (accounts without debt or
  derivative legs, never
  liquidated, a fixed mix of every collateral asset): 1 - sum(borrowing power) /
  sum(collateral at the prices the ratings came from) over them (with no debt the free
  borrowing power is the whole haircut collateral). Calm, peak and procyclicality are
  taken on its daily medians (`procyclicality`).
- liquidity queue (`liquidity_summary`): per step and pool-priced asset the daemon's
  queue L_t against the asset's sale curve (aggregator/risk/liquidity.py
  `queue_state`); `dust_impact` is the price impact a small sale meets behind the
  queue, the floor of every holder's liquidity haircut. A step is `saturated` for an
  asset when that floor is >= SATURATED (the asset counts for almost nothing in any
  holder's HF); `collapse_steps` are the steps whose sampled HF p25 is 0.
- bad debt: sum over accounts of max(0, debt - collateral) at the end, from the vaults
  (what the vaults lose; a hedge's gain sits at the venue, not in the vault);
  `derivatives.bad_debt_net_usd` nets each account's derivative value at the end.
- bad debt by cause (`bad_debt_causes`, per account with a vault deficit at the end;
  the causes add up to the gross bad debt): first `hedge_offset`, the part of the
  deficit the account's own derivative value at the venue covers (what "net of the
  derivative legs" removes); the rest, in this order: `cross_chain` (at the first
  step a chain held more of the account's debt than of its collateral, and no
  cross-chain claim of the keeper's (`liquidateRemote`, keeper.py) was ever mined for
  it: no liquidation on one chain covered that debt; an account the keeper did claim
  for falls to the causes below, a claim's finality wait being part of `slow_*`),
  `gap` (the account's vault equity went below zero at a step where at the step before
  its plain HF, configured `lt`, was still >= 1: no step in which to liquidate it),
  `slow_liquidated` (it sat below plain HF 1 with vault equity >= 0 for at least one
  step, was liquidated, but not enough in time: the plan's or close factor's size per
  round, the rating and push lag), `slow_unliquidated` (the same, never liquidated:
  the keeper's per-account failures and waits say why), `other` (no recorded entry into
  negative vault equity, or negative from the first step). The entry taken is the last
  one (the streak of negative vault equity the run ends in).
- remote liquidations (`liquidations.remote`): the keeper's cross-chain liquidations,
  counted in `liquidations` too (their step is the claim's, where the debt was repaid)
  and apart here; `pending_claims` are claims not settled at the end (debt repaid on
  D, collateral on C not seized: the liquidator is owed it). The holdings book a
  claim's repay when its `RemoteSeizeClaimed` is mined and its seizure at settlement,
  as the vaults do.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from aggregator.risk.portfolio import black76
from devkit.deploy import ASSET_BY_SYMBOL
from devkit.replay.keeper import KeeperStats, Liquidation
from devkit.replay.population import Account, Option, Perp
from devkit.replay.responders import Cure, CureStats

F64 = NDArray[np.float64]
TIER_NAMES = ("healthy", "warning", "liquidatable", "insolvent")
SATURATED = 0.99  # dust_impact from which a step counts as saturated for the asset
QUEUE_KEYS = ("queue_units", "queue_usd", "beyond_band_units", "queue_impact", "dust_impact")


@dataclass
class Holdings:
    """Positions per account as amounts (chain-summed), updated by liquidations.

    The amounts are derived from token units (`raw`), which liquidations move by their
    events' exact figures: a position repaid or seized in full is exactly 0, as in the
    vault, not a float residue that would read as a negative equity."""

    coll: dict[str, dict[str, float]]
    debt: dict[str, dict[str, float]]
    # Derivative legs at the venue: liquidations never touch them.
    perps: dict[str, tuple[Perp, ...]] = field(default_factory=dict)
    options: dict[str, tuple[Option, ...]] = field(default_factory=dict)
    # (side, account, symbol) -> token units; absent: taken from the amount when moved.
    raw: dict[tuple[str, str, str], int] = field(default_factory=dict)

    @classmethod
    def of(cls, book: list[Account]) -> Holdings:
        h = cls({}, {}, {a.address: a.perps for a in book if a.perps},
                {a.address: a.options for a in book if a.options})  # fmt: skip
        for a in book:
            for p in a.positions:
                h.move(p.side, a.address, p.symbol, p.raw)
        return h

    def copy(self) -> Holdings:
        """The spot positions copied (derivative legs shared: never moved)."""
        return Holdings({a: dict(v) for a, v in self.coll.items()},
                        {a: dict(v) for a, v in self.debt.items()},
                        self.perps, self.options, dict(self.raw))  # fmt: skip

    def move(self, side: str, account: str, symbol: str, delta_raw: int) -> None:
        """Add `delta_raw` token units to one position (negative: repaid or seized)."""
        amounts = (self.coll if side == "collateral" else self.debt).setdefault(account, {})
        scale = 10 ** ASSET_BY_SYMBOL[symbol].decimals
        key = (side, account, symbol)
        units = self.raw.get(key)
        if units is None:
            units = round(amounts.get(symbol, 0.0) * scale)
        self.raw[key] = units + delta_raw
        amounts[symbol] = self.raw[key] / scale

    def value(self, account: str, prices: Mapping[str, float]) -> tuple[float, float]:
        c = sum(v * prices[s] for s, v in self.coll.get(account, {}).items())
        d = sum(v * prices[s] for s, v in self.debt.get(account, {}).items())
        return c, d

    def derivatives_value(
        self, account: str, prices: Mapping[str, float], implied_vol: Mapping[str, float]
    ) -> float:
        """Perp P&L (no funding: the replay sets none) plus option marks: Black-76 at
        the underlying's price, `implied_vol` and the option's tenor (held: the daemon
        sees wall time to expiry, which a compressed replay hardly moves)."""
        v = sum(p.size * (prices[p.asset] - p.entry_price) for p in self.perps.get(account, ()))
        for o in self.options.get(account, ()):
            if o.asset not in implied_vol:
                raise ValueError(f"option on {o.asset} of {account}: no implied volatility")
            mark = black76(prices[o.asset], o.strike, o.tenor_days / 365.0,
                           implied_vol[o.asset], o.is_call)  # fmt: skip
            v += o.size * float(mark)
        return float(v)

    def equity(
        self, account: str, prices: Mapping[str, float], implied_vol: Mapping[str, float]
    ) -> float:
        c, d = self.value(account, prices)
        return c - d + self.derivatives_value(account, prices, implied_vol)


@dataclass
class Recorder:
    book: list[Account]
    lt: Mapping[str, float]  # asset -> liquidation threshold
    groups: list[tuple[frozenset[str], float]]  # e-mode (assets, lt)
    false_window_h: int = 168  # in steps (the caller divides by hours per step)
    steps_per_day: float = 24.0
    # The option legs' volatility (the replay's [portfolio] implied_vol, market units).
    implied_vol: Mapping[str, float] = field(default_factory=dict)
    holdings: Holdings = field(init=False)
    prices: list[dict[str, float]] = field(default_factory=list)
    tiers_seen: dict[str, set[str]] = field(default_factory=dict)
    margin: list[float] = field(default_factory=list)
    hf_pct: list[tuple[float, float, float]] = field(default_factory=list)
    # Per step: asset -> the daemon's liquidity queue figures (QUEUE_KEYS), {} if none.
    queue: list[dict[str, dict[str, float]]] = field(default_factory=list)
    # Rated healthy at the last sample: account -> its rated HF then (None if none).
    healthy_last: dict[str, float | None] = field(default_factory=dict)
    healthy_to_negative: set[str] = field(default_factory=set)
    # One row per healthy -> negative account, at its first such step (`h2n_row`).
    healthy_to_negative_rows: list[dict[str, Any]] = field(default_factory=list)
    # The prices the last sample's ratings came from (the daemon's, a step or two behind).
    rated_last: dict[str, float] = field(default_factory=dict)
    applied: int = 0
    # Claims (keeper.Claim.tx) whose repay is booked: at mining, before settlement.
    booked_claims: set[str] = field(default_factory=set)
    # Bad-debt causes (bad_debt_causes): per account with debt.
    cross_chain: set[str] = field(default_factory=set)
    negative_since: dict[str, int] = field(default_factory=dict)
    # (plain HF, daemon tier) at the step before the last entry into negative vault equity.
    before_negative: dict[str, tuple[float | None, str | None]] = field(default_factory=dict)
    below_lt_steps: dict[str, int] = field(default_factory=dict)
    rated_liquidatable_steps: dict[str, int] = field(default_factory=dict)
    _plain_last: dict[str, float] = field(default_factory=dict)
    _tier_last: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.holdings = Holdings.of(self.book)
        self.addresses = {a.address for a in self.book}
        self.shapes = {a.address: a.shape for a in self.book}
        # A written call is a liability the model margins: not a depositor's haircut.
        self.depositors = {
            a.address
            for a in self.book
            if all(p.side == "collateral" for p in a.positions) and not a.has_derivatives
        }
        self.borrowers = [
            a.address for a in self.book if any(p.side == "debt" for p in a.positions)
        ]

    def sample(
        self,
        prices: Mapping[str, float],
        ratings: Mapping[str, dict[str, Any]],
        rated_at: Mapping[str, float] | None = None,
        queue: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        """One step: `ratings` = account -> the daemon's health view (tier, hf, bp);
        `rated_at`: the prices those ratings were computed from (the daemon's own);
        `queue`: the daemon's liquidity queue per pool-priced asset (same ratings)."""
        self.prices.append(dict(prices))
        self.queue.append(
            {a: {k: float(v[k]) for k in QUEUE_KEYS} for a, v in (queue or {}).items()}
        )
        for a, hf in self.healthy_last.items():
            equity = self.holdings.equity(a, prices, self.implied_vol)
            if equity < 0:
                if a not in self.healthy_to_negative:
                    self.healthy_to_negative_rows.append(self.h2n_row(a, hf, equity))
                self.healthy_to_negative.add(a)
        self.healthy_last = {}
        bp_sum = coll_sum = 0.0
        hfs: list[float] = []
        # Value the depositors' collateral at the prices the ratings were computed from
        # (the daemon reads the feeds on its own schedule, a step or two behind): the
        # path's own prices would put one step's move into the margin.
        rated = dict(self.prices[-2] if len(self.prices) > 1 else prices)
        rated.update(rated_at or {})
        for a in self.addresses:
            r = ratings.get(a)
            if r is None:
                continue
            self.tiers_seen.setdefault(r["tier"], set()).add(a)
            if r["tier"] == "healthy":
                self.healthy_last[a] = None if r.get("hf") is None else float(r["hf"])
            if r.get("hf") is not None:
                hfs.append(float(r["hf"]))
            if a in self.depositors:
                # No debt: the free borrowing power is the whole haircut collateral.
                bp_sum += float(r.get("borrowing_power_usd") or 0.0)
                coll_sum += self.holdings.value(a, rated)[0]
        self.margin.append(1 - bp_sum / coll_sum if coll_sum > 0 else math.nan)
        q = np.percentile(hfs, [5, 25, 50]) if hfs else [math.nan] * 3
        self.hf_pct.append((float(q[0]), float(q[1]), float(q[2])))
        self._track_negative(prices, ratings)
        self.rated_last = rated

    def h2n_row(self, account: str, rated_hf: float | None, equity: float) -> dict[str, Any]:
        """Why a healthy account went negative between two samples: its rated HF, its
        largest collateral asset's price in the rating (the daemon's), at the rated step
        and at this one (the path's), and its equity now. `lag_move` is the price move
        the rating had not seen at the rated step; `step_move` the path's one-step move."""
        step = len(self.prices) - 1
        coll = self.holdings.coll.get(account, {})
        then, now = self.prices[-2], self.prices[-1]
        asset = max(coll, key=lambda s: coll[s] * then.get(s, 0.0)) if coll else None
        row: dict[str, Any] = {
            "account": account,
            "shape": self.shapes.get(account),
            "step": step,
            "rated_hf": None if rated_hf is None else round(rated_hf, 4),
            "equity_usd": round(equity, 2),
            "asset": asset,
            # It owed the vaults nothing (its spot legs are worth >= 0): what is negative is
            # its legs at the venue alone, e.g. a covered call whose WETH was seized.
            "no_vault_debt": not any(v > 0 for v in self.holdings.debt.get(account, {}).values()),
        }
        if asset is not None and asset in then and asset in now:
            seen = self.rated_last.get(asset, then[asset])
            row["lag_move"] = round(then[asset] / seen - 1, 4) if seen else None
            row["step_move"] = round(now[asset] / then[asset] - 1, 4) if then[asset] else None
        return row

    def _track_negative(
        self, prices: Mapping[str, float], ratings: Mapping[str, dict[str, Any]]
    ) -> None:
        """Per borrower: when its vault (spot) equity entered negative territory and what
        it looked like one step before; steps below plain HF 1 with equity >= 0."""
        step = len(self.prices) - 1
        if step == 0:
            self.cross_chain = {a.address for a in self.book if stranded_chains(a, prices)}
        for a in self.borrowers:
            coll = self.holdings.coll.get(a, {})
            debt = self.holdings.debt.get(a, {})
            c, d = self.holdings.value(a, prices)
            hf = self.plain_hf(coll, debt, prices)
            tier = (ratings.get(a) or {}).get("tier")
            if c - d < 0:
                if a not in self.negative_since:
                    self.negative_since[a] = step
                    self.before_negative[a] = (self._plain_last.get(a), self._tier_last.get(a))
            else:
                self.negative_since.pop(a, None)
                if hf < 1.0:
                    self.below_lt_steps[a] = self.below_lt_steps.get(a, 0) + 1
                if tier in ("liquidatable", "insolvent"):
                    self.rated_liquidatable_steps[a] = self.rated_liquidatable_steps.get(a, 0) + 1
            self._plain_last[a] = hf
            if tier is not None:
                self._tier_last[a] = tier

    def apply(self, keeper: KeeperStats) -> None:
        """Book the keeper's new liquidations into the holdings."""
        h = self.holdings
        for cl in keeper.claims:
            if cl.mined and cl.tx not in self.booked_claims and cl.account in self.addresses:
                h.move("debt", cl.account, cl.debt, -cl.repaid_raw)
                self.booked_claims.add(cl.tx)
        for x in keeper.liquidations[self.applied :]:
            if x.account in self.addresses:
                if x.remote_from is None:  # a remote one's repay was booked with its claim
                    h.move("debt", x.account, x.debt, -x.repaid_raw)
                h.move("collateral", x.account, x.collateral, -x.seized_raw)
        self.applied = len(keeper.liquidations)

    def apply_cures(self, cures: list[Cure]) -> None:
        """Book the responders' mined repayments into the holdings (like a
        liquidation's repay; the list itself is CureStats.cures)."""
        for c in cures:
            if c.account in self.addresses:
                self.holdings.move("debt", c.account, c.debt, -c.repaid_raw)

    def plain_hf(
        self, coll: Mapping[str, float], debt: Mapping[str, float], p: Mapping[str, float]
    ) -> float:
        d = sum(v * p[s] for s, v in debt.items())
        if d <= 0:
            return math.inf
        legs = {s for s, v in (*coll.items(), *debt.items()) if v > 0}
        for assets, lt in self.groups:
            if legs <= assets:
                return sum(v * p[s] for s, v in coll.items()) * lt / d
        return sum(v * p[s] * self.lt[s] for s, v in coll.items()) / d

    def false_liquidations(
        self, keeper: KeeperStats, book_positions: Holdings, cures: Sequence[Cure] = ()
    ) -> dict[str, int]:
        """Liquidations whose pre-liquidation positions recover to plain HF >= 1 within
        the window (positions replayed forward from the book through earlier events:
        the liquidations and the responders' mined `cures`):
        `count` (liquidations), `accounts`, and `above_lt_at_liquidation` (liquidations
        of positions whose plain HF was >= 1 at that very step: only the model's
        haircut made them liquidatable)."""
        h = book_positions.copy()
        count = above = 0
        accounts: set[str] = set()
        # A cure answering step s's ratings is sent after that step's keeper round: it
        # comes after step s's liquidations and before step s + 1's.
        events: list[tuple[float, Cure | Liquidation]] = [
            *((c.step + 0.5, c) for c in cures),
            *((x.step, x) for x in keeper.liquidations),
        ]
        events.sort(key=lambda e: e[0])
        for _, x in events:
            if x.account not in self.addresses:
                continue
            if isinstance(x, Cure):
                h.move("debt", x.account, x.debt, -x.repaid_raw)
                continue
            coll, debt = dict(h.coll[x.account]), dict(h.debt[x.account])
            end = min(len(self.prices), x.step + 1 + self.false_window_h)
            if self.plain_hf(coll, debt, self.prices[min(x.step, len(self.prices) - 1)]) >= 1.0:
                above += 1
            if any(
                self.plain_hf(coll, debt, self.prices[k]) >= 1.0 for k in range(x.step + 1, end)
            ):
                count += 1
                accounts.add(x.account)
            h.move("debt", x.account, x.debt, -x.repaid_raw)
            h.move("collateral", x.account, x.collateral, -x.seized_raw)
        return {"count": count, "accounts": len(accounts), "above_lt_at_liquidation": above}

    def procyclicality(self) -> dict[str, float]:
        return procyclicality(self.margin, self.steps_per_day)


def daily(margin: list[float], steps_per_day: float) -> F64:
    """The median of each market day's samples (a partial last day included): the
    per-step margin carries the sampling jitter between the daemon's ratings and the
    prices; a day's median keeps the margin's moves and drops that jitter."""
    m = np.array([x for x in margin if math.isfinite(x)], np.float64)
    w = max(1, round(steps_per_day))
    return np.array([float(np.median(m[k : k + w])) for k in range(0, m.size, w)], np.float64)


def procyclicality(margin: list[float], steps_per_day: float) -> dict[str, float]:
    """Of the margin path in market time, on daily medians: calm (first day), peak,
    peak / trough, and the largest rise over one and five days (margin points), as
    docs/procyclicality.md."""
    m = daily(margin, steps_per_day)
    if m.size == 0:
        return {}

    def rise(w: int) -> float:
        return float(max((m[w:] - m[:-w]).max(), 0.0)) if m.size > w else 0.0

    return {
        "calm": float(m[0]),
        "peak": float(m.max()),
        "peak_over_trough": float(m.max() / m.min()) if m.min() > 0 else math.nan,
        "max_1d_rise": rise(1),
        "max_5d_rise": rise(5),
    }


def build_report(
    *,
    episode: str,
    mode: str,
    rec: Recorder,
    keeper: KeeperStats,
    bad_debt_usd: float,
    negative_accounts: int,
    chains: Mapping[str, dict[str, int]],
    meta: Mapping[str, Any],
    vault_end: Mapping[str, tuple[float, float]] | None = None,
    cures: CureStats | None = None,
) -> dict[str, Any]:
    """`vault_end`: account -> (collateral, debt) USD read from the vaults at the end,
    for the derivative accounts' figures (`derivatives`); `cures`: the responders'
    (None: the replay ran without them)."""
    book = {a.address for a in rec.book}
    shape = {a.address: a.shape for a in rec.book}
    mine = [x for x in keeper.liquidations if x.account in book]
    by_shape: dict[str, int] = {}
    for x in mine:
        by_shape[shape[x.account]] = by_shape.get(shape[x.account], 0) + 1
    pc = rec.procyclicality()
    calm, peak = pc.get("calm", math.nan), pc.get("peak", math.nan)
    return {
        "episode": episode,
        "mode": mode,
        "accounts": len(rec.book),
        "tiers_reached": {t: len(rec.tiers_seen.get(t, ())) for t in TIER_NAMES},
        "liquidations": {
            "count": len(mine),
            "usd": round(sum(x.repaid_usd for x in mine), 2),
            "all_accounts_count": len(keeper.liquidations),
            "failures": dict(keeper.failures),
            "idle_rounds": dict(keeper.idle_rounds),
            "registry_waits": dict(keeper.waits),
            "plan_fallbacks": keeper.plan_fallbacks,
            "by_shape": dict(sorted(by_shape.items())),
            "derivative_accounts": keeper.derivative_liquidations,
            "remote": remote_figures(keeper, book),
            "claim_waits": dict(keeper.claim_waits),
        },
        "cures": (cures or CureStats()).figures(),
        "derivatives": derivative_figures(rec, vault_end or {}),
        "bad_debt_causes": bad_debt_causes(rec, keeper, vault_end or {}),
        "bad_debt_usd": round(bad_debt_usd, 2),
        "negative_equity_accounts_end": negative_accounts,
        "healthy_to_negative_equity": len(rec.healthy_to_negative),
        "healthy_to_negative_rows": rec.healthy_to_negative_rows,
        # Of those, the accounts that owed the vaults nothing: their venue legs went negative.
        "healthy_to_negative_venue_only": sum(
            bool(x["no_vault_debt"]) for x in rec.healthy_to_negative_rows
        ),
        "false_liquidations": rec.false_liquidations(
            keeper, Holdings.of(rec.book), (cures or CureStats()).cures
        ),
        "false_window_steps": rec.false_window_h,
        "liquidated_accounts": len({x.account for x in mine}),
        "liquidations_at_first_step": sum(1 for x in mine if x.step == 0),
        "margin": {"calm": calm, "peak": peak, "peak_over_calm": peak / calm if calm else math.nan},
        "procyclicality": pc,
        "liquidity": liquidity_summary(rec.queue, rec.hf_pct),
        "series": {
            "margin": rec.margin,
            "hf_p5_p25_p50": rec.hf_pct,
            "liquidity_queue": {
                a: {k: [(q.get(a) or {}).get(k) for q in rec.queue] for k in QUEUE_KEYS}
                for a in sorted({a for q in rec.queue for a in q})
            },
            "prices": {s: [p[s] for p in rec.prices] for s in (rec.prices[:1] or [{}])[0]},
        },
        "chains": dict(chains),
        **dict(meta),
    }


def remote_figures(keeper: KeeperStats, book: set[str]) -> dict[str, Any]:
    """The keeper's cross-chain liquidations (module docstring): settled ones of the
    book (`count`, `usd` repaid) and of every account, the claims unsettled at the end
    (`pending_claims`, the USD their mined claims repaid) and the settlements found
    already made (`already_settled`)."""

    remote = [x for x in keeper.liquidations if x.remote_from is not None]
    mine = [x for x in remote if x.account in book]
    pending = keeper.pending_claims
    owed = sum(c.repaid_raw / 10 ** ASSET_BY_SYMBOL[c.debt].decimals * c.debt_price
               for c in pending)  # fmt: skip
    return {
        "count": len(mine),
        "usd": round(sum(x.repaid_usd for x in mine), 2),
        "all_accounts_count": len(remote),
        "pending_claims": len(pending),
        "pending_repaid_usd": round(owed, 2),
        "already_settled": keeper.claims_already_settled,
    }


def liquidity_summary(
    queue: list[dict[str, dict[str, float]]], hf_pct: list[tuple[float, float, float]]
) -> dict[str, Any]:
    """Per asset over the steps: the largest queue (USD), how far it ran past the bands
    (units), the largest `dust_impact` and the saturated steps; and the collapse steps
    (sampled HF p25 == 0) (module docstring)."""
    assets: dict[str, dict[str, Any]] = {}
    for i, step in enumerate(queue):
        for a, v in step.items():
            s = assets.setdefault(a, {"max_queue_usd": 0.0, "max_beyond_band_units": 0.0,
                                      "max_dust_impact": 0.0, "saturated_steps": []})  # fmt: skip
            s["max_queue_usd"] = max(s["max_queue_usd"], v["queue_usd"])
            s["max_beyond_band_units"] = max(s["max_beyond_band_units"], v["beyond_band_units"])
            s["max_dust_impact"] = max(s["max_dust_impact"], v["dust_impact"])
            if v["dust_impact"] >= SATURATED:
                s["saturated_steps"].append(i)
    return {
        "assets": dict(sorted(assets.items())),
        "collapse_steps": [i for i, q in enumerate(hf_pct) if q[1] == 0.0],
    }


def stranded_chains(account: Account, prices: Mapping[str, float]) -> list[str]:
    """Chains holding more of the account's debt than of its collateral (USD at
    `prices`): a liquidation there cannot cover that debt, and no vault seizes
    collateral held on another chain."""
    coll: dict[str, float] = {}
    debt: dict[str, float] = {}
    for p in account.positions:
        side = coll if p.side == "collateral" else debt
        side[p.chain] = side.get(p.chain, 0.0) + p.amount * prices[p.symbol]
    return sorted(c for c, d in debt.items() if d > 0 and coll.get(c, 0.0) < d)


BAD_DEBT_CAUSES = (
    "hedge_offset", "cross_chain", "gap", "slow_liquidated", "slow_unliquidated", "other",
)  # fmt: skip


def bad_debt_causes(
    rec: Recorder, keeper: KeeperStats, vault_end: Mapping[str, tuple[float, float]]
) -> dict[str, Any]:
    """The end's vault deficit per account, split by cause (module docstring): totals
    (USD and accounts per cause), `gross_usd` (= the book's bad debt), `net_usd` (gross
    less the hedge offsets) and one row per account with a deficit."""
    totals = dict.fromkeys(BAD_DEBT_CAUSES, 0.0)
    counts = dict.fromkeys(BAD_DEBT_CAUSES, 0)
    last = rec.prices[-1] if rec.prices else {}
    liquidations: dict[str, int] = {}
    for x in keeper.liquidations:
        liquidations[x.account] = liquidations.get(x.account, 0) + 1
    remote = {x.account for x in keeper.liquidations if x.remote_from is not None}
    claimed = {cl.account for cl in keeper.claims if cl.mined}
    pending: dict[str, int] = {}
    for cl in keeper.pending_claims:
        pending[cl.account] = pending.get(cl.account, 0) + 1
    rows: list[dict[str, Any]] = []
    for a in rec.book:
        c, d = vault_end.get(a.address, (0.0, 0.0))
        deficit = d - c
        if deficit <= 0:
            continue
        value = (
            rec.holdings.derivatives_value(a.address, last, rec.implied_vol)
            if a.has_derivatives and last
            else 0.0
        )
        offset = min(deficit, max(0.0, value))
        rest = deficit - offset
        since = rec.negative_since.get(a.address)
        plain_before, tier_before = rec.before_negative.get(a.address, (None, None))
        n_liq = liquidations.get(a.address, 0)
        if a.address in rec.cross_chain and a.address not in claimed:
            cause = "cross_chain"
        elif since is None or since == 0 or plain_before is None:
            cause = "other"
        elif plain_before >= 1.0:
            cause = "gap"
        else:
            cause = "slow_liquidated" if n_liq else "slow_unliquidated"
        totals["hedge_offset"] += offset
        counts["hedge_offset"] += offset > 0
        if rest > 0:
            totals[cause] += rest
            counts[cause] += 1
        rows.append({
            "account": a.address,
            "shape": a.shape,
            "deficit_usd": round(deficit, 2),
            "hedge_offset_usd": round(offset, 2),
            "cause": cause if rest > 0 else "hedge_offset",
            "negative_from_step": since,
            "plain_hf_before": None if plain_before is None else round(plain_before, 4),
            "tier_before": tier_before,
            "liquidations": n_liq,
            "remote_liquidated": a.address in remote,
            "pending_claims": pending.get(a.address, 0),
            "steps_below_lt_solvent": rec.below_lt_steps.get(a.address, 0),
            "steps_rated_liquidatable_solvent": rec.rated_liquidatable_steps.get(a.address, 0),
            "keeper_failures": dict(keeper.account_failures.get(a.address, {})),
            "registry_waits": keeper.account_waits.get(a.address, 0),
        })  # fmt: skip
    gross = sum(totals.values())
    return {
        "usd": {k: round(v, 2) for k, v in totals.items()},
        "accounts": counts,
        "gross_usd": round(gross, 2),
        "net_usd": round(gross - totals["hedge_offset"], 2),
        "rows": sorted(rows, key=lambda r: -r["deficit_usd"]),
    }


def derivative_figures(
    rec: Recorder, vault_end: Mapping[str, tuple[float, float]]
) -> dict[str, Any]:
    """Of the accounts with derivative legs, at the last step's prices: how many, their
    derivative value (perp P&L + option marks), the vaults' deficit on them and that
    deficit net of each account's own derivative value (a hedge's gain would cover it
    only if the venue settled it into the vault, which nothing here does)."""
    if not rec.prices:
        return {}
    last = rec.prices[-1]
    accounts = [a.address for a in rec.book if a.has_derivatives]
    value = {a: rec.holdings.derivatives_value(a, last, rec.implied_vol) for a in accounts}
    gross = net = 0.0
    for a in accounts:
        c, d = vault_end.get(a, rec.holdings.value(a, last))
        gross += max(0.0, d - c)
        net += max(0.0, d - c - value[a])
    all_net = sum(max(0.0, d - c - value.get(a, 0.0)) for a, (c, d) in vault_end.items())
    return {
        "accounts": len(accounts),
        "value_usd_end": round(sum(value.values()), 2),
        "bad_debt_usd": round(gross, 2),
        "bad_debt_net_usd": round(net, 2),
        "book_bad_debt_net_usd": round(all_net, 2) if vault_end else None,
    }


def remote_rows(liq: dict[str, Any]) -> list[tuple[str, Any]]:
    """The render's rows on cross-chain liquidations (none in a report from before)."""
    r = liq.get("remote")
    if r is None:
        return []
    waits = ", ".join(f"{k} {v}" for k, v in liq.get("claim_waits", {}).items()) or "-"
    return [
        ("remote liquidations (count / USD repaid)", f"{r['count']} / {r['usd']:,.0f}"),
        ("claims unsettled at the end (count / USD repaid)",
         f"{r['pending_claims']} / {r['pending_repaid_usd']:,.0f}"),
        ("keeper waits for claims (rounds)", waits),
    ]  # fmt: skip


def render(rep: dict[str, Any]) -> str:
    liq, m = rep["liquidations"], rep["margin"]
    liquidity = rep.get("liquidity", {})
    failures = ", ".join(f"{k} {v}" for k, v in liq["failures"].items()) or "-"
    waits = ", ".join(f"{k} {v}" for k, v in liq.get("registry_waits", {}).items()) or "-"
    rows: list[tuple[str, Any]] = [
        ("episode / mode", f"{rep['episode']} / {rep['mode']}"),
        ("accounts (book)", rep["accounts"]),
        *((f"reached {t}", n) for t, n in rep["tiers_reached"].items()),
        ("liquidations (count)", liq["count"]),
        ("liquidations (USD repaid)", f"{liq['usd']:,.0f}"),
        *remote_rows(liq),
        ("keeper failures", failures),
        *cure_rows(rep.get("cures")),
        *reputation_rows(rep.get("reputation")),
        ("keeper waits for the registry (rounds)", waits),
        ("bad debt (USD)", f"{rep['bad_debt_usd']:,.0f}"),
        ("healthy -> negative equity", rep["healthy_to_negative_equity"]),
        (
            "false liquidations (events / accounts)",
            f"{rep['false_liquidations']['count']} / {rep['false_liquidations']['accounts']}",
        ),
        (
            "margin calm / peak / ratio",
            f"{m['calm']:.4f} / {m['peak']:.4f} / {m['peak_over_calm']:.3f}",
        ),
        ("procyclicality", ", ".join(f"{k} {v:.4f}" for k, v in rep["procyclicality"].items())),
        (
            "collapse steps (HF p25 = 0)",
            step_ranges(rep.get("liquidity", {}).get("collapse_steps")),
        ),
    ]
    rows += [
        (f"{a}: max queue USD / past band / dust impact, saturated steps",
         f"{v['max_queue_usd']:,.0f} / {v['max_beyond_band_units']:,.2f} / "
         f"{v['max_dust_impact']:.3f}, {step_ranges(v['saturated_steps'])}")
        for a, v in liquidity.get("assets", {}).items()
    ]  # fmt: skip
    rows += [
        (f"{c}: pushes / gas", f"{v['pushes']} / {v['gas']:,}") for c, v in rep["chains"].items()
    ]
    rows.append(("wall time (s)", rep.get("wall_s")))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def cure_rows(cures: dict[str, Any] | None) -> list[tuple[str, Any]]:
    if not cures or not cures.get("responders"):
        return [("responders", "none")]
    failed = ", ".join(f"{k} {v}" for k, v in cures["failures"].items()) or "-"
    return [
        ("responders' cures (count / accounts / USD)",
         f"{cures['count']} / {cures['accounts']} of {cures['responders']} / {cures['usd']:,.0f}"),
        ("cures failed; budget spent (accounts)", f"{failed}; {cures['budget_spent_accounts']}"),
    ]  # fmt: skip


def multiplier_range(borrowing: Sequence[float], maintenance: Sequence[float]) -> dict[str, Any]:
    """The book's reputation multipliers at the end (with --reputation): per side
    (borrowing: the haircut / margin; maintenance: the liquidation line, phased in) the
    min / median / max, and how many accounts sit above and below neutral (1.0)."""

    def side(ms: Sequence[float]) -> dict[str, Any]:
        a = np.asarray(ms, np.float64)
        if a.size == 0:
            return {"min": None, "p50": None, "max": None, "above_1": 0, "below_1": 0}
        return {"min": round(float(a.min()), 4), "p50": round(float(np.median(a)), 4),
                "max": round(float(a.max()), 4), "above_1": int((a > 1.0).sum()),
                "below_1": int((a < 1.0).sum())}  # fmt: skip

    return {"accounts": len(borrowing), "borrowing": side(borrowing),
            "maintenance": side(maintenance)}  # fmt: skip


def reputation_rows(rep: dict[str, Any] | None) -> list[tuple[str, Any]]:
    if not rep:
        return []

    def fmt(s: dict[str, Any]) -> str:
        if s["min"] is None:
            return "-"
        return (f"{s['min']:.3f} / {s['p50']:.3f} / {s['max']:.3f} "
                f"({s['above_1']} above 1, {s['below_1']} below)")  # fmt: skip

    return [
        ("reputation multiplier min / p50 / max", fmt(rep["borrowing"])),
        ("maintenance multiplier min / p50 / max", fmt(rep["maintenance"])),
    ]


def step_ranges(steps: list[int] | None) -> str:
    """Step numbers as ranges: [3, 4, 5, 9] -> "3-5, 9"; none -> "none"."""
    if steps is None:
        return "-"
    if not steps:
        return "none"
    runs: list[list[int]] = []
    for s in steps:
        if runs and s == runs[-1][1] + 1:
            runs[-1][1] = s
        else:
            runs.append([s, s])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def write(
    rep: dict[str, Any], rec: Recorder, times: np.ndarray, out_dir: Path
) -> tuple[Path, Path]:
    """JSON and chart (HF percentiles, margin, prices) under `out_dir`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    # "predictive+reputation" -> "<episode>-predictive-reputation" (no "+" in file names).
    stem = f"{rep['episode']}-{rep['mode']}".replace("+", "-")
    jpath = out_dir / f"{stem}.json"
    jpath.write_text(json.dumps(rep, indent=2, default=float) + "\n")
    days = (times[: len(rec.prices)] - times[0]) / 86400
    fig, ax = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    for sym in ("WETH", "WBTC", "wstETH", "USDC"):
        series = np.array([p[sym] for p in rec.prices])
        ax[0].plot(days, series / series[0], label=sym, lw=1)
    ax[0].set_ylabel("price / start")
    ax[0].legend(loc="lower left", fontsize=8)
    hf = np.array(rec.hf_pct)
    for j, lab in enumerate(("HF p5", "HF p25", "HF p50")):
        ax[1].plot(days, hf[:, j], label=lab, lw=1)
    ax[1].axhline(1.0, color="k", lw=0.5)
    ax[1].set_ylabel("system HF")
    ax[1].legend(loc="upper right", fontsize=8)
    ax[2].plot(days, rec.margin, lw=1)
    ax[2].set_ylabel("margin (1 - BP / collateral)")
    ax[2].set_xlabel("days into the episode")
    fig.suptitle(f"replay {rep['episode']} ({rep['mode']})")
    fig.tight_layout()
    ppath = out_dir / f"{stem}.png"
    fig.savefig(ppath, dpi=90)
    plt.close(fig)
    return jpath, ppath
