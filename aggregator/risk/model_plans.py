"""Liquidation plans under any margin model (docs/risk.md "Plans under the pushed model").

The standard model's plan has a closed form (risk/liquidation.py). Another model
(portfolio, VaR: `[portfolio] mode`) rates accounts by its own equity and requirement,
so its plan is searched numerically on that model's own pure evaluation:

- An account is planned when the model rates it below HF 1 (personalised by its
  maintenance reputation multiplier like the pushed HF: risk/reputation.py
  `personalise_result`; only HF is used here, so `mult` is the maintenance side).
- Candidates are (chain c, collateral t) with collateral t held on c. The liquidator
  repays R from c's largest debt row (by USD, ties to the lower asset index: the row
  the replay keeper repays) and seizes R (1 + bonus_t) / price_t units of t on c. When
  c holds no debt, R comes from the account's largest debt row on any chain: a
  cross-chain seize (docs/contracts.md), claimed where that debt is and settled on c.
- R is capped by min(close factor x total debt, the debt row's value, the holding's
  value / (1 + bonus_t)); the close factor follows the model's HF (`close_factor`).
- The plan is the smallest R over all candidates that brings the model's HF to
  `target_hf`; ties to the larger holding on that chain, then the lower chain, then
  asset (as the standard plan). No candidate reaches it: a full liquidation.

Monotonicity. Under the standard model HF(R) = (C_liq - (1+b) lt R) / (D - R) is a
linear fraction, monotone in R, so bisection alone would do. Under the portfolio and VaR
models it need not be: the equity falls by b R (the bonus), and the requirement is a
scenario maximum / expected shortfall of the remaining legs; when the seized collateral
hedges a derivative leg held at the venue (a short perp against spot ETH), seizing it
raises the requirement, and HF can rise then fall along R. So the search first scans a
grid of GRID points (cap j / GRID, j = 1..GRID) and takes the first grid point whose HF
reaches the target, then refines between it and the grid point before, which did not:
Illinois regula falsi (bisection where an end's HF is not finite), at most ROUNDS
rounds, to TOL of the cap or of the target HF. The result is always a point the model
was evaluated at and that reached the target (never an extrapolation); the only
approximation is that a crossing and recrossing inside one grid cell before the first
reaching grid point is not seen.

Derivative legs. A model reads the book through `PortfolioModel.books`-style access
(rows, amounts, account addresses); each candidate is evaluated as a synthetic account
carrying the real account's address, so the model's DerivativeSource returns the real
account's perps and options. A model's book must not name an address twice, so
candidates go in layers: layer k holds the k-th candidate of every account, one
evaluation per layer and search step.

Invariants: pure (the model, the book or a read-only view of it, the market data and
`now` are handed in; one `now` for every evaluation of a call); a plan never repays
more than its debt row nor seizes more than its holding, and respects the close factor;
a partial plan's HF, as evaluated, is >= target_hf.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from aggregator.config import RiskConfig
from aggregator.risk.book import COLLATERAL, DEBT
from aggregator.risk.liquidation import PLAN_FULL, PLAN_NONE, PLAN_PARTIAL, Plans, close_factor
from aggregator.risk.market import MarketData
from aggregator.risk.reputation import personalise_result

if TYPE_CHECKING:
    from aggregator.risk.model import MarginModel

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
GRID = 8
ROUNDS = 40
# Search precision: repay to TOL x cap, HF to TOL x target above it.
TOL = 1e-9


class BookRows(Protocol):
    """What the search reads of a book (PositionBook, or the what-if's FrozenBookView)."""

    r_side: NDArray[Any]
    r_chain: NDArray[Any]
    r_asset: NDArray[Any]
    r_amount: NDArray[Any]
    assets: Any
    chains: Any
    account_address: Any

    def rows_with_lengths(self, accounts: I64) -> tuple[I64, I64]: ...


class SyntheticBook:
    """Accounts copied from a book (their rows, in the same order), with amounts of
    their own: what a model evaluates a candidate liquidation on. Address i is the
    real account's, so the model's derivative legs are the real account's."""

    def __init__(self, base: BookRows, accounts: I64) -> None:
        rows, lengths = base.rows_with_lengths(accounts)
        self.source_rows = rows
        self.lengths = lengths
        self.start = np.cumsum(lengths) - lengths
        self.r_side = base.r_side[rows]
        self.r_chain = base.r_chain[rows]
        self.r_asset = base.r_asset[rows]
        self.base_amount = np.asarray(base.r_amount[rows], np.float64)
        self.r_amount = self.base_amount.copy()
        self.assets, self.chains = base.assets, base.chains
        self.account_address = [base.account_address[int(a)] for a in accounts]

    @property
    def n_accounts(self) -> int:
        return len(self.account_address)

    def rows_with_lengths(self, accounts: I64) -> tuple[I64, I64]:
        lengths = self.lengths[accounts]
        starts = np.repeat(self.start[accounts] - (np.cumsum(lengths) - lengths), lengths)
        return (starts + np.arange(int(lengths.sum()), dtype=np.int64)).astype(np.int64), lengths


@dataclass(frozen=True)
class Candidates:
    """Candidate liquidations: `pos` indexes the planned accounts; rows index the
    account's SyntheticBook of its layer; cap is the largest repay in USD."""

    pos: I64
    layer: I64
    slot: I64  # the account's position within its layer's SyntheticBook
    chain: I64
    asset: I64
    debt_row: I64  # row in the layer's SyntheticBook
    coll_row: I64
    debt_price: F64
    coll_price: F64
    bonus: F64
    value: F64  # the holding's USD value (tie-break)
    cap: F64


@dataclass(frozen=True)
class ModelPlans:
    """Plans of accounts `accounts` (book indices) under model `model`: their HF under
    it now, the plans (risk/liquidation.py's shape: kind, repay, chain, asset) and the
    model's HF after each partial plan (NaN otherwise)."""

    model: str
    accounts: I64
    hf: F64
    plans: Plans
    hf_after: F64


@dataclass(frozen=True)
class _Evaluator:
    """The model's HF of synthetic accounts: one `now`, the accounts' multipliers."""

    model: MarginModel
    market: MarketData
    im_factor: float
    warn_hf: float
    now: float

    def hf(self, book: Any, mult: F64 | None) -> F64:
        res = self.model.evaluate(
            book, self.market, np.arange(book.n_accounts, dtype=np.int64), self.now
        )
        if mult is not None:
            res = personalise_result(res, mult, self.im_factor, self.warn_hf)
        return np.asarray(res.hf, np.float64)


@dataclass
class _Layers:
    """Synthetic books, one per layer (layer k: the k-th candidate of each account), the
    planned accounts' positions each holds and their multipliers."""

    books: list[SyntheticBook]
    owners: list[I64]
    mult: list[F64 | None]

    def hf_at(self, ev: _Evaluator, cand: Candidates, idx: I64, repay: F64) -> F64:
        """HF of candidates `idx` (at most one per account and layer) after repaying
        `repay` USD each: one evaluation per layer involved."""
        out = np.full(idx.size, np.nan)
        for k, sb in enumerate(self.books):
            sel = np.flatnonzero(cand.layer[idx] == k)
            if sel.size == 0:
                continue
            j, r = idx[sel], repay[sel]
            sb.r_amount[:] = sb.base_amount
            dr, cr = cand.debt_row[j], cand.coll_row[j]
            sb.r_amount[dr] = np.maximum(sb.base_amount[dr] - r / cand.debt_price[j], 0.0)
            seized = r * (1.0 + cand.bonus[j]) / cand.coll_price[j]
            sb.r_amount[cr] = np.maximum(sb.base_amount[cr] - seized, 0.0)
            out[sel] = ev.hf(sb, self.mult[k])[cand.slot[j]]
        return out


def _debt_rows(sb: SyntheticBook, slot: int, price: F64) -> tuple[float, dict[int, tuple]]:
    """Account `slot`'s total debt (USD) and per chain its largest debt row:
    chain -> (USD, -asset, row); ties to the lower asset (the replay keeper's row)."""
    s0, n = int(sb.start[slot]), int(sb.lengths[slot])
    total = 0.0
    best: dict[int, tuple[float, int, int]] = {}
    for r in range(s0, s0 + n):
        if sb.r_side[r] != DEBT or not sb.base_amount[r] > 0:
            continue
        key = (float(sb.base_amount[r] * price[sb.r_asset[r]]), -int(sb.r_asset[r]), r)
        total += key[0]
        c = int(sb.r_chain[r])
        if c not in best or key > best[c]:
            best[c] = key
    return total, best


def _candidates(sb: SyntheticBook, own: I64, price: F64, bonus: F64, cf: F64) -> Candidates:
    """Every candidate of the accounts of `sb` (layer 0), in row order per account,
    numbered per account (`layer`: the candidate's rank, its layer)."""
    cols: dict[str, list[Any]] = {k: [] for k in Candidates.__dataclass_fields__}
    for slot in range(sb.n_accounts):
        total, best = _debt_rows(sb, slot, price)
        # A chain without debt seizes cross-chain, against the largest row anywhere.
        anywhere = max(best.values()) if best else None
        s0, rank = int(sb.start[slot]), 0
        for r in range(s0, s0 + int(sb.lengths[slot])):
            c, t = int(sb.r_chain[r]), int(sb.r_asset[r])
            if sb.r_side[r] != COLLATERAL or not sb.base_amount[r] > 0 or anywhere is None:
                continue
            d_value, _, d_row = best.get(c, anywhere)
            value = float(sb.base_amount[r] * price[t])
            cap = min(cf[own[slot]] * total, d_value, value / (1.0 + bonus[t]))
            if not (price[t] > 0 and cap > 0):
                continue
            row = (own[slot], rank, slot, c, t, d_row, r, price[sb.r_asset[d_row]], price[t],
                   bonus[t], value, cap)  # fmt: skip
            for k, v in zip(cols, row, strict=True):
                cols[k].append(v)
            rank += 1
    ints = {"pos", "layer", "slot", "chain", "asset", "debt_row", "coll_row"}
    arrays: dict[str, Any] = {
        k: np.array(v, np.int64 if k in ints else np.float64) for k, v in cols.items()
    }
    return Candidates(**arrays)


def _layered(
    c0: Candidates, base: SyntheticBook, owners0: I64, mult: F64 | None
) -> tuple[_Layers, Candidates]:
    """The candidates spread over layers (rank k -> layer k); their slots and rows
    moved to that layer's book (the same account rows, in the same order)."""
    depth = int(c0.layer.max()) + 1 if c0.layer.size else 0
    m = None if mult is None else np.asarray(mult, np.float64)
    layers = _Layers([base], [owners0], [None if m is None else m[owners0]])
    slot, debt_row, coll_row = c0.slot.copy(), c0.debt_row.copy(), c0.coll_row.copy()
    for k in range(1, depth):
        sel = np.flatnonzero(c0.layer == k)
        slots0 = np.unique(c0.slot[sel])  # positions in layer 0, ascending
        sb = SyntheticBook(base, slots0)
        own = owners0[slots0]
        layers.books.append(sb)
        layers.owners.append(own)
        layers.mult.append(None if m is None else m[own])
        slot[sel] = np.searchsorted(slots0, c0.slot[sel])
        shift = sb.start[slot[sel]] - base.start[c0.slot[sel]]
        debt_row[sel] += shift
        coll_row[sel] += shift
    cand = Candidates(
        c0.pos, c0.layer, slot, c0.chain, c0.asset, debt_row, coll_row, c0.debt_price,
        c0.coll_price, c0.bonus, c0.value, c0.cap,
    )  # fmt: skip
    return layers, cand


@dataclass
class _Bracket:
    """Per candidate: lo (HF below target, or not evaluated: 0) and hi (HF reached
    target; inf: not yet), with HF - target at each end."""

    lo: F64
    hi: F64
    f_lo: F64
    f_hi: F64
    hf_hi: F64


def _grid(ev: _Evaluator, layers: _Layers, cand: Candidates, target: float, hf0: F64) -> _Bracket:
    """The first grid point cap j / GRID reaching the target, per candidate; `hf0` the
    HF at R = 0 (the account's now), the lower end while no grid point failed."""
    nc = cand.pos.size
    b = _Bracket(np.zeros(nc), np.full(nc, np.inf), hf0 - target, np.full(nc, np.nan),
                 np.full(nc, np.nan))  # fmt: skip
    for step in range(1, GRID + 1):
        todo = np.flatnonzero(~np.isfinite(b.hi))
        if todo.size == 0:
            break
        r = cand.cap[todo] * (step / GRID)
        h = layers.hf_at(ev, cand, todo, r)
        hit = h >= target
        b.hi[todo[hit]], b.hf_hi[todo[hit]] = r[hit], h[hit]
        b.lo[todo[~hit]], b.f_lo[todo[~hit]] = r[~hit], h[~hit] - target
    b.f_hi[:] = b.hf_hi - target
    return b


def _refine(ev: _Evaluator, layers: _Layers, cand: Candidates, b: _Bracket, target: float) -> None:
    """Inside each bracketing cell: Illinois regula falsi (bisection where an end's
    HF is not finite), keeping HF(lo) < target <= HF(hi) at every step."""
    side = np.zeros(cand.pos.size, np.int8)  # the end kept last (Illinois halving)
    found = np.flatnonzero(np.isfinite(b.hi))
    tol = TOL * cand.cap
    for _ in range(ROUNDS):
        open_ = (b.hi[found] - b.lo[found] > tol[found]) & (b.hf_hi[found] - target > TOL * target)
        found = found[open_]
        if found.size == 0:
            return
        lo, hi, fa, fb = b.lo[found], b.hi[found], b.f_lo[found], b.f_hi[found]
        with np.errstate(invalid="ignore", divide="ignore"):
            x = hi - fb * (hi - lo) / (fb - fa)
        x = np.where(np.isfinite(x) & (x > lo) & (x < hi), x, 0.5 * (lo + hi))
        h = layers.hf_at(ev, cand, found, x)
        hit = h >= target
        j, k = found[hit], found[~hit]
        b.hi[j], b.hf_hi[j], b.f_hi[j] = x[hit], h[hit], h[hit] - target
        b.f_lo[j] = np.where(side[j] == 1, 0.5 * b.f_lo[j], b.f_lo[j])
        side[j] = 1
        b.lo[k], b.f_lo[k] = x[~hit], h[~hit] - target
        b.f_hi[k] = np.where(side[k] == -1, 0.5 * b.f_hi[k], b.f_hi[k])
        side[k] = -1


def _choose(cand: Candidates, b: _Bracket, n: int) -> dict[int, int]:
    """Per account position, its best reaching candidate: smallest repay, then the
    larger holding, then the lower chain, then asset."""
    best: dict[int, int] = {}
    for j in np.flatnonzero(np.isfinite(b.hi)).tolist():
        i = int(cand.pos[j])
        key = (b.hi[j], -cand.value[j], cand.chain[j], cand.asset[j])
        q = best.get(i)
        if q is None or key < (b.hi[q], -cand.value[q], cand.chain[q], cand.asset[q]):
            best[i] = j
    return best


def plan_accounts(
    model: MarginModel,
    book: BookRows,
    market: MarketData,
    accounts: I64,
    *,
    risk: RiskConfig,
    bonus: F64,
    mult: F64 | None = None,
    im_factor: float = 1.0,
    now: float | None = None,
) -> ModelPlans:
    """Plans of `accounts` (book indices, distinct) under `model` (see the module
    docstring). `bonus` per asset of the book; `mult` the accounts' maintenance
    reputation multipliers (aligned; None: all 1) with the model's IM factor; `now` the valuation
    time (default: the wall clock, read once)."""
    ev = _Evaluator(model, market, im_factor, risk.warn_hf, time.time() if now is None else now)
    accounts = np.asarray(accounts, np.int64)
    n = accounts.size
    price = np.asarray(market.price, np.float64)
    m = None if mult is None else np.asarray(mult, np.float64)
    # No accounts: no evaluation (a model need not accept an empty book).
    hf = ev.hf(SyntheticBook(book, accounts), m) if n else np.zeros(0)
    kind = np.full(n, PLAN_NONE, np.int8)
    repay = np.zeros(n)
    chain = np.full(n, -1, np.int16)
    asset = np.full(n, -1, np.int16)
    hf_after = np.full(n, np.nan)
    liq = np.flatnonzero(hf < 1.0)
    if liq.size:
        base = SyntheticBook(book, accounts[liq])
        cf = close_factor(hf, risk)
        layers, cand = _layered(_candidates(base, liq, price, bonus, cf), base, liq, m)
        kind[liq] = PLAN_FULL
        repay[liq] = [_debt_rows(base, s, price)[0] for s in range(liq.size)]
        b = _grid(ev, layers, cand, risk.target_hf, hf[cand.pos])
        _refine(ev, layers, cand, b, risk.target_hf)
        for i, j in _choose(cand, b, n).items():
            kind[i], repay[i], hf_after[i] = PLAN_PARTIAL, b.hi[j], b.hf_hi[j]
            chain[i], asset[i] = cand.chain[j], cand.asset[j]
    return ModelPlans(model.name, accounts, hf, Plans(kind, repay, chain, asset), hf_after)


def plan_view(
    mp: ModelPlans, i: int, *, chains: Any, symbols: Any, bonus: F64, target_hf: float
) -> dict[str, Any] | None:
    """Plan i of `mp` as the explanation's `liquidation` section (None: the model rates
    the account at or above HF 1). The shape of risk/explain.py `plan`, plus the model
    it is for, the debt asset repaid and the model's HF before and after."""
    p = mp.plans
    hf = float(mp.hf[i])
    head: dict[str, Any] = {"model": mp.model, "hf_before": hf if np.isfinite(hf) else None}
    if p.kind[i] == PLAN_PARTIAL:
        t = int(p.asset[i])
        after = float(mp.hf_after[i])
        return {
            **head,
            "kind": "partial",
            "repay_usd": float(p.repay[i]),
            "chain": chains[int(p.chain[i])],
            "asset": symbols[t],
            "seize_usd": float(p.repay[i] * (1 + bonus[t])),
            "target_hf": target_hf,
            "hf_after": after if np.isfinite(after) else None,
        }
    if p.kind[i] == PLAN_FULL:
        return {**head, "kind": "full", "repay_usd": float(p.repay[i]), "target_hf": target_hf}
    return None


__all__ = [
    "GRID",
    "ROUNDS",
    "TOL",
    "Candidates",
    "ModelPlans",
    "SyntheticBook",
    "plan_accounts",
    "plan_view",
]
