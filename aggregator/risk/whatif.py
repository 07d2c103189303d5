"""What-if on the live book: a shock set applied to a snapshot of the ledger, for every
margin model the daemon evaluates (docs/whatif.md).

A shock set moves prices (per asset; an LST moves with its underlying and may de-peg on
top), scales every volatility the models use, and takes chains down: a down chain's
collateral counts 0 and cannot be seized, and its price sources are stale, which the
oracle's aggregation rules (oracles/aggregate.py) turn into a status per asset. An asset
that loses its quorum that way is valued at its last ok price (the current one: the move
is invisible to the ledger) and degrades its holders, exactly as the live ledger would.

Invariants:
- Pure: `whatif` reads the snapshot (book, pool, the standard model's tables, market
  data) and writes only arrays of its own. The live ledger's figures, pool, book and
  market data are unchanged by a what-if (tests/unit/risk/test_whatif.py checks it).
- The zero shock reproduces the current standard figures bit for bit: the same kernels
  (risk/kernels.py) over the same pool with the same column parameters, and the same
  reputation multipliers applied the engine's way (the snapshot's `mult`).
- A price falls by at most 100% (factor >= 0); volatilities scale by a factor > 0.
- Liquidation sizing is each model's own plan on the shocked book: risk/liquidation.py
  (standard model), risk/model_plans.py (any other model, searched on its own
  evaluation); a full liquidation seizes pro rata. The seized holdings exclude frozen
  collateral and the repay never exceeds what they cover.
- Liquidity is a seam (`Liquidity.sellable`): `DepthLiquidity` reads the asset's
  `depth_usd`; pool-based liquidity plugs in there.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
from numpy.typing import NDArray

from aggregator.risk.book import COLLATERAL, PositionBook
from aggregator.risk.kernels import freeze_kernel, refill_kernel, totals_kernel
from aggregator.risk.liquidation import PLAN_FULL, PLAN_PARTIAL, Holdings, Plans, plans_of
from aggregator.risk.market import MarketData
from aggregator.risk.model_plans import plan_accounts
from aggregator.risk.pool import Pool
from aggregator.risk.reputation import personalise_result
from chains.units import TIERS
from oracles.aggregate import AggregationRules, aggregate
from oracles.types import Observation, PriceStatus, SourceFailure, SourceOutcome, Stale

if TYPE_CHECKING:
    from aggregator.risk.model import MarginModel
    from aggregator.risk.standard import StandardModel

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
STANDARD = "standard"
LIQUIDATABLE = TIERS.index("liquidatable")
PLAN_NAMES = {PLAN_PARTIAL: "partial", PLAN_FULL: "full"}
_WORSE = {PriceStatus.OK: 0, PriceStatus.DISPUTED: 1, PriceStatus.UNAVAILABLE: 2}


# Largest relative rise of a price or a volatility a shock set may ask for (x1001).
MAX_RISE = 1000.0


class WhatIfError(ValueError):
    """A bad shock set; `field` names the request field (docs/whatif.md). `status`: 404
    when the field names something that does not exist here (an asset, an LST, a chain,
    a model), 400 for a malformed or out-of-range value."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status


def finite_number(name: str, v: Any) -> float:
    """`v` as a float, or WhatIfError naming `name` (bools, strings, NaN, inf refused)."""
    try:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ValueError(v)
        return float(v)
    except (ValueError, OverflowError):  # OverflowError: an int beyond any float
        raise WhatIfError(name, f"must be a finite number, got {str(v)[:64]!r}") from None


@dataclass(frozen=True)
class ShockSet:
    """Relative price shocks per asset, de-pegs per LST (against its underlying, on top
    of the underlying's shock), a relative volatility shift, and the chains down."""

    price: Mapping[str, float] = field(default_factory=dict)
    depeg: Mapping[str, float] = field(default_factory=dict)
    vol: float = 0.0
    chains_down: tuple[str, ...] = ()

    def check(
        self, symbols: Sequence[str], chains: Sequence[str], underlying: Mapping[str, str]
    ) -> None:
        """Raise WhatIfError naming the first bad field."""
        for what, table in (("shocks", self.price), ("depegs", self.depeg)):
            for sym, v in table.items():
                name = f"{what}.{sym[:32]}"
                if sym not in symbols:
                    known = ", ".join(symbols)
                    raise WhatIfError(name, f"unknown asset {sym[:32]!r}; known: {known}", 404)
                if what == "depegs" and sym not in underlying:
                    lsts = ", ".join(underlying) or "none"
                    raise WhatIfError(name, f"{sym} is not an LST; LSTs: {lsts}", 404)
                if not -1.0 <= finite_number(name, v) <= MAX_RISE:
                    raise WhatIfError(
                        name, f"must be between -1 (a fall of 100%) and {MAX_RISE:g}, got {v}"
                    )
        if not -1.0 < finite_number("vol", self.vol) <= MAX_RISE:
            raise WhatIfError("vol", f"must be > -1 and <= {MAX_RISE:g}, got {self.vol}")
        for i, c in enumerate(self.chains_down):
            if c not in chains:
                known = ", ".join(chains)
                raise WhatIfError(
                    f"chains_down[{i}]", f"chain {c[:32]!r} is not configured; known: {known}", 404
                )

    def factors(self, symbols: Sequence[str], underlying: Mapping[str, str]) -> F64:
        """Price factor per asset: (1 + own shock, else the underlying's) x (1 + de-peg)."""
        out = np.ones(len(symbols))
        for t, s in enumerate(symbols):
            shock = self.price.get(s)
            if shock is None and s in underlying:
                shock = self.price.get(underlying[s])
            out[t] = (1.0 + (shock or 0.0)) * (1.0 + self.depeg.get(s, 0.0))
        return out


# -- prices: feeds of down chains are stale --------------------------------------------
@dataclass(frozen=True)
class FeedSource:
    """One configured price source of an asset with its last answer (None: failing)."""

    name: str
    kind: str
    chain: str | None  # the chain it reads (a Chainlink feed); None: off-chain
    value: float | None
    failure: str | None = None


@dataclass(frozen=True)
class AssetFeeds:
    sources: tuple[FeedSource, ...]
    min_sources: int
    max_deviation: float
    rate_chain: str | None = None  # an LST's exchange-rate leg is read there


def feed_status(
    asset: str, feeds: AssetFeeds, down: frozenset[str]
) -> tuple[PriceStatus, str] | None:
    """The asset's status once the sources on `down` chains are stale, by the oracle's
    aggregation rules; None when none of its sources reads a down chain."""
    rate_down = feeds.rate_chain is not None and feeds.rate_chain in down
    if not rate_down and not any(s.chain in down for s in feeds.sources):
        return None
    status, reason = PriceStatus.UNAVAILABLE, "no market sources"
    if feeds.sources:
        outcomes: list[tuple[SourceOutcome, str]] = []
        for s in feeds.sources:
            if s.chain is not None and s.chain in down:
                outcomes.append((Stale(s.name, f"chain {s.chain} down"), s.kind))
            elif s.value is None:
                outcomes.append((SourceFailure(s.name, s.failure or "failing"), s.kind))
            else:
                outcomes.append((Observation(s.name, s.value, 0.0), s.kind))
        rules = AggregationRules(min_sources=feeds.min_sources, max_deviation=feeds.max_deviation)
        p = aggregate(asset, outcomes, rules, 0.0)
        stale = sorted({s.chain for s in feeds.sources if s.chain is not None and s.chain in down})
        status, reason = p.status, p.reason
        if stale:
            reason = f"{reason}; stale: chain {', '.join(stale)} down"
    if rate_down:
        # combine_lst: every leg must be there for an ok LST price.
        if status is PriceStatus.OK:
            status = PriceStatus.DISPUTED
        reason = "; ".join(x for x in (reason, f"rate leg: chain {feeds.rate_chain} down") if x)
    return status, reason


@dataclass(frozen=True)
class PriceScenario:
    """Per asset (config order): valuation before and after, factor, status after and
    why it changed (None: as live), volatility before and after."""

    before: F64
    after: F64
    factor: F64
    status_before: list[PriceStatus]
    status_after: list[PriceStatus]
    reason: list[str | None]
    sigma_before: F64
    sigma_after: F64


def scenario_market(
    market: MarketData,
    shocks: ShockSet,
    feeds: Mapping[str, AssetFeeds],
    underlying: Mapping[str, str],
) -> tuple[MarketData, PriceScenario]:
    """The shocked market data (a new object) and the per-asset price table."""
    symbols = market.symbols
    factor = shocks.factors(symbols, underlying)
    down = frozenset(shocks.chains_down)
    status = [PriceStatus(s) for s in market.status]
    after = market.price * factor
    reasons: list[str | None] = [None] * len(symbols)
    for t, sym in enumerate(symbols):
        f = feeds.get(sym)
        res = feed_status(sym, f, down) if f is not None and down else None
        if res is None or _WORSE[res[0]] <= _WORSE[status[t]]:
            continue
        if status[t] is PriceStatus.OK:
            # The ledger keeps valuing a not-ok asset at its last ok price: now's.
            after[t] = market.price[t]
        status[t], reasons[t] = res
    scale = 1.0 + shocks.vol
    out = market.scenario(after, status, scale)
    table = PriceScenario(
        market.price.copy(), after, factor, [PriceStatus(s) for s in market.status], status,
        reasons, market.sigma.copy(), out.sigma.copy(),
    )  # fmt: skip
    return out, table


# -- the book: chains down ---------------------------------------------------------------
@dataclass(frozen=True)
class Frozen:
    """The book with the down chains' collateral frozen: which rows are frozen, the
    accounts that hold any, and their collateral summed over the chains still up
    (summed from the rows in row order, as the book sums them)."""

    rows: NDArray[np.bool_]  # per book row
    accounts: I64  # sorted
    coll: F64  # len(accounts) x assets
    chains_down: tuple[str, ...] = ()
    # False: `accounts` and `coll` dropped (`rows_only`), only `rows` is there.
    complete: bool = True

    def rows_only(self) -> Frozen:
        """The frozen rows alone: what the other models' evaluation and plans read (a
        FrozenBookView sums the collateral again from the book when asked), without the
        frozen accounts' sums (~65 MB at 1M accounts with a big chain down) alive
        through their evaluation, the what-if's memory peak."""
        none = np.zeros(0, np.int64)
        return Frozen(self.rows, none, np.zeros((0, self.coll.shape[1])), self.chains_down, False)


def freeze(book: PositionBook, chains_down: Sequence[str]) -> Frozen:
    down = np.zeros(book.n_chains, np.bool_)
    down[[book.chain_index[c] for c in chains_down]] = True
    rows, acc, coll = freeze_kernel(
        book.r_account, book.r_chain, book.r_side, book.r_asset, book.r_amount, book.n, down,
        book.n_accounts, book.n_assets,
    )  # fmt: skip
    return Frozen(rows, acc, coll, tuple(chains_down))


class FrozenBookView:
    """What the portfolio and VaR models read of a book (PortfolioModel.books), with the
    frozen collateral at 0. Read-only: it delegates to the live book."""

    def __init__(self, book: PositionBook, frozen: Frozen) -> None:
        self._book = book
        self._frozen = frozen
        self.r_amount = np.where(frozen.rows, 0.0, book.r_amount[: book.n])
        self.r_side, self.r_chain, self.r_asset = book.r_side, book.r_chain, book.r_asset
        self.assets, self.chains = book.assets, book.chains
        self.account_address = book.account_address

    @property
    def n_accounts(self) -> int:
        return self._book.n_accounts

    @property
    def coll(self) -> F64:
        """Collateral summed over the chains still up (a copy: accounts x assets)."""
        fr = self._frozen if self._frozen.complete else freeze(self._book, self._frozen.chains_down)
        out = self._book.coll.copy()
        out[fr.accounts] = fr.coll
        return out

    @property
    def debt(self) -> F64:
        return self._book.debt

    def rows_with_lengths(self, accounts: I64) -> tuple[I64, I64]:
        return self._book.rows_with_lengths(accounts)


# -- the standard model over the whole book -----------------------------------------------
@dataclass(frozen=True)
class LedgerSnapshot:
    """References to the live ledger's parts, taken between two ledger writes (the
    daemon's event loop); nothing here writes through them. `frozen()` copies them for
    a what-if that runs while the ledger goes on writing."""

    book: PositionBook
    pool: Pool
    model: StandardModel
    market: MarketData
    # Each account's reputation multipliers (risk/reputation.py), borrowing and
    # maintenance side, None: all neutral (mmult None: max(m, 1)). A what-if applies
    # them as the engine does, so it shocks the figures that are pushed.
    mult: F64 | None = None
    mmult: F64 | None = None

    def multipliers(self) -> F64:
        n = self.book.n_accounts
        return np.ones(n) if self.mult is None else np.ascontiguousarray(self.mult[:n])

    def frozen(self) -> LedgerSnapshot:
        """A copy the ledger's later writes cannot reach, for a what-if off the event
        loop. Take it where `self` is consistent (between two ledger writes). Only what
        a ledger write changes in place is copied, and only the first `n_accounts`
        accounts and `n` rows (PositionBook.snapshot, Pool.snapshot; the standard
        model's tables and the market data, small, deep-copied); the rest (row ids,
        sorted key index, addresses) is shared with the live book, which never writes
        it in place; the dense sums are summed again from the snapshot's rows when read.
        The snapshot's book refuses writes. At 1M accounts ~125 MB (pool 60, counted
        amounts 40, multipliers 16, account list 8) where a deep copy of every array
        but the exact amounts took ~360 MB."""
        n = self.book.n_accounts

        def own(x: F64 | None) -> F64 | None:
            return None if x is None else np.array(x[:n], np.float64)

        return LedgerSnapshot(
            self.book.snapshot(), self.pool.snapshot(n), copy.deepcopy(self.model),
            copy.deepcopy(self.market), own(self.mult), own(self.mmult),
        )  # fmt: skip

    def maintenance(self) -> F64:
        n = self.book.n_accounts
        if self.mmult is None:
            return np.maximum(self.multipliers(), 1.0)
        return np.ascontiguousarray(self.mmult[:n])


@dataclass(frozen=True)
class StandardFigures:
    vtot: F64
    debt: F64
    cliq: F64
    hf: F64
    bp: F64
    tier: NDArray[np.int8]
    degraded: NDArray[np.bool_]
    grp: NDArray[np.int16]


def standard_figures(
    snap: LedgerSnapshot, market: MarketData, frozen: Frozen | None = None
) -> StandardFigures:
    """Every account's standard totals under `market`, in fresh arrays. With frozen
    collateral the pool's amounts and held-asset bits are copied and the frozen
    accounts' collateral amounts replaced: the same pairs in the same order (a fully
    frozen holding stays as a 0 pair, which adds exactly 0), so the kernel is the same."""
    n = snap.book.n_accounts
    model, pool = snap.model, snap.pool
    cols = model.prepare(market)
    pv, held = pool.pv, pool.held
    if frozen is not None and not frozen.complete:
        raise ValueError("standard_figures needs the frozen accounts' sums")
    if frozen is not None and frozen.accounts.size:
        acc = frozen.accounts
        pv, held = pool.pv[: pool.end].copy(), pool.held.copy()
        refill_kernel(
            pool.a_start, pool.a_cnt, pool.pc, pv, acc, frozen.coll, model.col_asset, model.ncoll
        )
        held[acc] = model.bits((frozen.coll > 0) | snap.book.debt_held(acc))
    f = StandardFigures(
        np.empty(n), np.empty(n), np.empty(n), np.empty(n), np.empty(n), np.empty(n, np.int8),
        np.empty(n, np.bool_), pool.grp[:n].copy(),
    )  # fmt: skip
    totals_kernel(
        pool.a_start, pool.a_cnt, pool.pc, pv, held, n, cols.tab, cols.nlp, cols.crv,
        cols.cix, cols.bad_bits, model.risk.warn_hf, f.vtot, f.debt, f.cliq, f.hf, f.bp,
        f.tier, f.degraded, snap.multipliers(), snap.maintenance(),
    )  # fmt: skip
    return f


# -- liquidations ------------------------------------------------------------------------
@dataclass(frozen=True)
class Liquidations:
    """Accounts liquidatable after the shock (sorted indices), their plan kind, repay,
    and every seized holding: position in `accounts`, chain, asset, USD."""

    accounts: I64
    kind: NDArray[np.int8]
    repay: F64
    s_pos: I64
    s_chain: I64
    s_asset: I64
    s_usd: F64

    def seize_usd(self) -> F64:
        """Seized USD per account (aligned with `accounts`)."""
        out = np.bincount(self.s_pos, weights=self.s_usd, minlength=self.accounts.size)
        return np.asarray(out, np.float64)


@dataclass(frozen=True)
class _Rows:
    """Seizable collateral rows of some accounts, grouped by account position."""

    rows: I64
    pos: I64
    lengths: I64
    value: F64


def _seizable(snap: LedgerSnapshot, acc: I64, frozen: Frozen | None, price: F64) -> _Rows:
    book = snap.book
    nr = book.n
    pos = np.full(book.n_accounts, -1, np.int64)
    pos[acc] = np.arange(acc.size)
    ra = book.r_account[:nr]
    ok = (pos[ra] >= 0) & (book.r_side[:nr] == COLLATERAL) & (book.r_amount[:nr] > 0)
    if frozen is not None:
        ok &= ~frozen.rows
    sel = np.flatnonzero(ok)
    p = pos[ra[sel]]
    order = np.argsort(p, kind="stable")
    sel, p = sel[order], p[order]
    value = book.r_amount[sel] * price[book.r_asset[sel]]
    return _Rows(sel, p, np.bincount(p, minlength=acc.size), value)


@dataclass(frozen=True)
class _PlanTotals:
    grp: NDArray[np.int16]
    debt: F64
    cliq: F64
    hf: F64


def _collateral_of(snap: LedgerSnapshot, acc: I64, frozen: Frozen | None) -> F64:
    coll = snap.book.collateral_of(acc)
    if frozen is not None and not frozen.complete:
        raise ValueError("the collateral needs the frozen accounts' sums")
    if frozen is not None and frozen.accounts.size:
        i = np.searchsorted(frozen.accounts, acc)
        i = np.minimum(i, frozen.accounts.size - 1)
        hit = frozen.accounts[i] == acc
        coll[hit] = frozen.coll[i[hit]]
    return np.asarray(coll, np.float64)


def liquidations(
    snap: LedgerSnapshot,
    market: MarketData,
    std: StandardFigures,
    acc: I64,
    frozen: Frozen | None,
    *,
    model_plans: Plans | None = None,
) -> Liquidations:
    """Plans of accounts `acc` (all liquidatable after the shock): risk/liquidation.py's
    (standard model, `model_plans` None) or another model's (aligned with `acc`); a
    full one seizes pro rata."""
    model = snap.model
    held = _seizable(snap, acc, frozen, market.price)
    bonus = model.bonus[snap.book.r_asset[held.rows]]
    debt = std.debt[acc]
    if model_plans is None:
        r = _PlanTotals(std.grp[acc], debt, std.cliq[acc], std.hf[acc])
        book = snap.book
        h = Holdings(
            held.rows, held.lengths, book.r_side, book.r_amount, book.r_asset, book.r_chain,
            _collateral_of(snap, acc, frozen),
        )  # fmt: skip
        p = plans_of(model, market, h, r, mult=snap.maintenance()[acc])
        kind, repay, target = p.kind, p.repay.copy(), debt
        p_chain, p_asset = p.chain.astype(np.int64), p.asset.astype(np.int64)
    else:
        p = model_plans
        kind, repay, target = p.kind, p.repay.copy(), debt
        p_chain, p_asset = p.chain.astype(np.int64), p.asset.astype(np.int64)
    partial = kind == PLAN_PARTIAL
    # Pro rata: seize f of every holding, f = min(1, target / sum(value / (1 + bonus))).
    cover = np.bincount(held.pos, weights=held.value / (1.0 + bonus), minlength=acc.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(cover > 0, np.minimum(1.0, target / np.where(cover > 0, cover, 1.0)), 0.0)
    repay = np.where(partial, repay, np.minimum(target, cover))
    pro = ~partial[held.pos]
    pp = np.flatnonzero(partial)
    chain = snap.book.r_chain[held.rows[pro]].astype(np.int64)
    asset = snap.book.r_asset[held.rows[pro]].astype(np.int64)
    return Liquidations(
        acc, kind, repay,
        np.concatenate([pp, held.pos[pro]]),
        np.concatenate([p_chain[pp], chain]),
        np.concatenate([p_asset[pp], asset]),
        np.concatenate([repay[pp] * (1.0 + model.bonus[p_asset[pp]]),
                        f[held.pos[pro]] * held.value[pro]]),
    )  # fmt: skip


# -- liquidity seam ------------------------------------------------------------------------
class Liquidity(Protocol):
    """How much of an asset sells on a chain: (price impact of selling `usd`, USD that
    sells within the slippage limit); (None, None) when unknown."""

    source: str

    def sellable(self, asset: str, chain: str, usd: float) -> tuple[float | None, float | None]: ...


class DepthLiquidity:
    """The asset's `depth_usd` and the haircut's linear impact (impact * usd / depth):
    what the standard model already assumes. The same for every chain."""

    source = "depth_usd"

    def __init__(
        self, depth: Mapping[str, float | None], impact: float, max_slippage: float
    ) -> None:
        self.depth = dict(depth)
        self.impact = impact
        self.max_slippage = max_slippage

    def sellable(self, asset: str, chain: str, usd: float) -> tuple[float | None, float | None]:
        d = self.depth.get(asset)
        if not d:
            return None, None
        if self.impact <= 0:
            return 0.0, math.inf
        return self.impact * usd / d, d * self.max_slippage / self.impact


# -- one model's outcome -------------------------------------------------------------------
@dataclass(frozen=True)
class ModelOutcome:
    """One model before and after the shock, per account (index order)."""

    name: str
    hf_before: F64
    tier_before: NDArray[np.int8]
    hf_after: F64
    tier_after: NDArray[np.int8]
    bad_debt: F64
    liquidations: Liquidations

    def newly_liquidatable(self) -> I64:
        """Accounts below liquidatable before and at or above it after, by repay
        descending (then index)."""
        liq = self.liquidations
        sel = self.tier_before[liq.accounts] < LIQUIDATABLE
        pos = np.flatnonzero(sel)
        order = np.lexsort((liq.accounts[pos], -liq.repay[pos]))
        return pos[order]


def _standard_outcome(
    snap: LedgerSnapshot,
    market: MarketData,
    before: StandardFigures,
    after: StandardFigures,
    frozen: Frozen | None,
) -> ModelOutcome:
    # tier >= liquidatable is HF < 1 here; both, so the plans' rows align with acc.
    acc = np.flatnonzero((after.tier >= LIQUIDATABLE) & (after.hf < 1.0)).astype(np.int64)
    liq = liquidations(snap, market, after, acc, frozen)
    bad = np.maximum(after.debt - after.vtot, 0.0)
    return ModelOutcome(STANDARD, before.hf, before.tier, after.hf, after.tier, bad, liq)


@dataclass(frozen=True)
class _ModelFigures:
    """What the answer keeps of one model's two evaluations (index order)."""

    hf_before: F64
    tier_before: NDArray[np.int8]
    hf_after: F64
    tier_after: NDArray[np.int8]
    bad_debt: F64


def _frozen_view(snap: LedgerSnapshot, frozen: Frozen | None) -> PositionBook:
    if frozen is None:
        return snap.book
    return cast(PositionBook, FrozenBookView(snap.book, frozen))


def _model_figures(
    model: MarginModel,
    snap: LedgerSnapshot,
    market: MarketData,
    *,
    frozen: Frozen | None,
    now: float | None,
    im_factor: float,
) -> _ModelFigures:
    """The model before and after the shock, of which only HF, tier and the bad debt
    are kept: each result's other figures (equity, requirement, BP, parts: ~56 MB each
    at 1M accounts) are dropped as soon as read. As the engine adopts a pushed model's
    result (HF and tier; BP is not shown)."""
    n = snap.book.n_accounts
    idx = np.arange(n, dtype=np.int64)
    mult = snap.multipliers() if snap.mult is not None else None
    mm = snap.maintenance()
    warn = snap.model.risk.warn_hf
    first = model.evaluate(snap.book, snap.market, idx, now)
    if mult is not None:
        first = personalise_result(first, mult[first.accounts], im_factor, warn,
                                   mm[first.accounts])  # fmt: skip
    hf_before, tier_before = first.hf, first.tier
    del first
    # The frozen view's amounts (a copy of the counted ones) only from here on: not
    # alive through the first evaluation.
    after = model.evaluate(_frozen_view(snap, frozen), market, idx, now)
    if mult is not None:
        after = personalise_result(after, mult[after.accounts], im_factor, warn,
                                   mm[after.accounts])  # fmt: skip
    bad = np.maximum(-after.equity_usd, 0.0)
    return _ModelFigures(hf_before, tier_before, after.hf, after.tier, bad)


def _model_outcome(
    name: str,
    model: MarginModel,
    figs: _ModelFigures,
    snap: LedgerSnapshot,
    market: MarketData,
    *,
    after_std: StandardFigures,
    frozen: Frozen | None,
    now: float | None,
) -> ModelOutcome:
    acc = np.flatnonzero(figs.tier_after >= LIQUIDATABLE).astype(np.int64)
    # The model's own plans, searched on its evaluation of the shocked book (frozen
    # collateral counts 0 there, so it is never a candidate to seize).
    mp = plan_accounts(
        model,
        cast(Any, _frozen_view(snap, frozen)),
        market,
        acc,
        risk=snap.model.risk,
        bonus=snap.model.bonus,
        now=now,
    )
    liq = liquidations(snap, market, after_std, acc, frozen, model_plans=mp.plans)
    return ModelOutcome(
        name, figs.hf_before, figs.tier_before, figs.hf_after, figs.tier_after, figs.bad_debt,
        liq,
    )  # fmt: skip


@dataclass(frozen=True)
class WhatIf:
    prices: PriceScenario
    standard: StandardFigures  # after the shock: collateral value and debt per account
    outcomes: dict[str, ModelOutcome]
    unavailable: dict[str, str]
    market: MarketData


@dataclass(frozen=True)
class Universe:
    """What the shock set is checked and applied against, from the config."""

    chains: Sequence[str]
    underlying: Mapping[str, str]  # LST -> its underlying
    feeds: Mapping[str, AssetFeeds]


def whatif(
    snap: LedgerSnapshot,
    shocks: ShockSet,
    universe: Universe,
    models: Mapping[str, MarginModel] | None = None,
    now: float | None = None,
    *,
    im_factor: float = 1.0,
) -> WhatIf:
    """The shock set on the snapshot: the standard model always, plus `models` (name ->
    model; one that cannot run, e.g. without its calibration, is reported with why).
    With reputation multipliers in the snapshot every model's figures carry them, as
    the engine applies them (`im_factor`: the pushed models' IM factor)."""
    shocks.check(snap.market.symbols, universe.chains, universe.underlying)
    market, prices = scenario_market(snap.market, shocks, universe.feeds, universe.underlying)
    down = shocks.chains_down
    others = {k: v for k, v in (models or {}).items() if k != STANDARD}
    failed: dict[str, str] = {}
    # The other models' evaluations first (the what-if's memory peak: a VaR model's
    # two evaluations of the whole book), while nothing else of the answer is alive
    # but their kept figures; they read only the frozen rows (the frozen accounts'
    # sums, below, are summed again for the standard model: the same kernel).
    frozen = freeze(snap.book, down).rows_only() if down else None
    figs: dict[str, _ModelFigures] = {}
    for name, model in others.items():
        try:
            figs[name] = _model_figures(
                model, snap, market, frozen=frozen, now=now, im_factor=im_factor
            )
        except (KeyError, ValueError, RuntimeError) as exc:
            failed[name] = str(exc)
    frozen = freeze(snap.book, down) if down else None
    before = standard_figures(snap, snap.market)
    after = standard_figures(snap, market, frozen)
    outcomes = {STANDARD: _standard_outcome(snap, market, before, after, frozen)}
    # The outcome keeps HF and tier of the shock-free figures; the rest (collateral,
    # debt, liquidation value, BP, flags, groups: ~40 MB at 1M accounts) goes now.
    del before
    if frozen is not None:
        frozen = frozen.rows_only()
    for name, f in figs.items():
        try:
            outcomes[name] = _model_outcome(
                name, others[name], f, snap, market, after_std=after, frozen=frozen, now=now
            )
        except (KeyError, ValueError, RuntimeError) as exc:
            failed[name] = str(exc)
    # In the models' order, whichever step a model failed at.
    unavailable = {name: failed[name] for name in others if name in failed}
    return WhatIf(prices, after, outcomes, unavailable, market)


# -- summaries ------------------------------------------------------------------------------
def transitions(
    before: NDArray[np.int8], after: NDArray[np.int8], collateral: F64, debt: F64
) -> tuple[I64, F64, F64]:
    """(accounts, collateral USD, debt USD) per (tier before, tier after), 4 x 4."""
    k = len(TIERS)
    cell = before.astype(np.int64) * k + after
    counts = np.bincount(cell, minlength=k * k).reshape(k, k)
    coll = np.bincount(cell, weights=collateral, minlength=k * k).reshape(k, k)
    dbt = np.bincount(cell, weights=debt, minlength=k * k).reshape(k, k)
    return counts.astype(np.int64), coll.astype(np.float64), dbt.astype(np.float64)


@dataclass(frozen=True)
class VolumeRow:
    asset: str
    chain: str
    seize_usd: float
    accounts: int
    impact: float | None
    sellable_usd: float | None


def volume(
    liq: Liquidations, symbols: Sequence[str], chains: Sequence[str], liquidity: Liquidity
) -> list[VolumeRow]:
    """Seized collateral per (asset, chain), largest first, against `liquidity`."""
    nc = len(chains)
    key = liq.s_asset * nc + liq.s_chain
    size = len(symbols) * nc
    usd = np.bincount(key, weights=liq.s_usd, minlength=size)
    cnt = np.bincount(key, minlength=size)
    rows = []
    for k in np.flatnonzero(cnt).tolist():
        sym, ch = symbols[k // nc], chains[k % nc]
        impact, sellable = liquidity.sellable(sym, ch, float(usd[k]))
        rows.append(VolumeRow(sym, ch, float(usd[k]), int(cnt[k]), impact, sellable))
    rows.sort(key=lambda r: (-r.seize_usd, r.asset, r.chain))
    return rows


__all__ = [
    "MAX_RISE",
    "PLAN_NAMES",
    "AssetFeeds",
    "DepthLiquidity",
    "FeedSource",
    "LedgerSnapshot",
    "Liquidations",
    "Liquidity",
    "ModelOutcome",
    "PriceScenario",
    "ShockSet",
    "StandardFigures",
    "Universe",
    "VolumeRow",
    "WhatIf",
    "WhatIfError",
    "feed_status",
    "finite_number",
    "freeze",
    "liquidations",
    "scenario_market",
    "standard_figures",
    "transitions",
    "volume",
    "whatif",
]
