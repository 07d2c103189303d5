"""Unified margin ledger: DESIGN.md "Risk model, standard cross-margin mode" and
"Per-chain credit allocation", vectorised over the whole book.

The kernel works on a sparse account x column pool (counted amounts summed over
chains, one column per asset and mode), so a price tick is one parallel pass over
it for every account at once, and one event recomputes one account through the very
same per-account code.
Per-chain detail (liquidation chain choice, explanations) comes from the position
rows. See docs/risk.md for the formulas, the choices where DESIGN.md is silent, and
worked examples that the tests replay.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

# numba's OpenMP pool spins idle workers for a while after each parallel tick by
# default; on a box where another process wants the second core that stalled the next
# tick and every event behind it by a scheduler slice (~25 ms instead of ~2 ms at 100k
# accounts). Passive waiting costs microseconds per launch. Must be set before the
# OpenMP runtime starts, i.e. before the first parallel kernel runs.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
from numba import njit, prange
from numpy.typing import NDArray

from aggregator.config import AppConfig, AssetConfig, CorrelationGroup, CreditConfig, RiskConfig
from aggregator.risk.book import COLLATERAL, SIDES, PositionBook, PositionRow, normalise_address

PriceStatus = Literal["ok", "disputed", "unavailable"]
PRICE_STATUSES: tuple[PriceStatus, ...] = ("ok", "disputed", "unavailable")
TIERS = ("healthy", "warning", "liquidatable", "insolvent")
HEALTHY, WARNING, LIQUIDATABLE, INSOLVENT = range(4)
PLAN_NONE, PLAN_PARTIAL, PLAN_FULL = 0, 1, 2
USD6 = 1_000_000
# HealthRegistry stores credit as uint128 USD6; the engine works in int64 and caps the
# per-account budget here (4.6e12 USD), far above any real account, so the int64
# arithmetic that guarantees sum(credit) <= BP can never overflow.
CREDIT_CAP_USD6 = 2**62
_CHUNK = 1 << 17
_NO_ROWS = np.zeros(0, np.int64)


class MissingInput(RuntimeError):
    """An input the formulas need (e.g. a volatility) has not been provided."""


@dataclass(frozen=True)
class PriceInput:
    """One asset's price from the oracle layer. `value` may be None when never known."""

    value: float | None
    status: PriceStatus = "ok"
    timestamp: float | None = None
    sources: Any = None
    # The oracle's last ok price (kept across restarts in its history).
    last_good: float | None = None


@dataclass(frozen=True)
class AccountHealth:
    account: str
    collateral_usd: float
    c_liq: float
    c_borrow: float
    debt_usd: float
    hf: float
    bp: float
    tier: str
    degraded: bool
    close_factor: float


@dataclass
class _Risk:
    grp: NDArray[np.int16]
    vtot: NDArray[np.float64]
    debt: NDArray[np.float64]
    cliq: NDArray[np.float64]
    cborrow: NDArray[np.float64]
    hf: NDArray[np.float64]
    bp: NDArray[np.float64]
    tier: NDArray[np.int8]
    degraded: NDArray[np.bool_]
    cf: NDArray[np.float64]


@dataclass
class _Detail:
    value: NDArray[np.float64]
    sigma: NDArray[np.float64]
    vol: NDArray[np.float64]
    conc: NDArray[np.float64]
    lt_cap: NDArray[np.float64]
    ltv_cap: NDArray[np.float64]
    lt_eff: NDArray[np.float64]
    ltv_eff: NDArray[np.float64]


def usd6_floor(x: NDArray[np.float64]) -> NDArray[np.int64]:
    """floor(x * 10**6) that never exceeds the exact product, so credit <= the float BP.

    Below 2**52 micro-dollars (4.5e9 USD) it is exact: a Veltkamp split (39 + 14 bits)
    makes both partial products exact and the sign of the remainder decides the floor.
    Above, integers are sparse in float64; the product is shrunk by 2**-50 (well over
    its rounding error) and truncated, which stays below the exact value.
    """
    v = np.clip(np.asarray(x, np.float64), 0.0, CREDIT_CAP_USD6 / USD6)
    c = v * 16385.0
    hi = c - (c - v)
    lo = v - hi
    a = hi * USD6
    b = lo * USD6
    f = np.floor(a + b)
    a -= f
    a += b
    f[a < 0] -= 1.0
    big = f >= 2.0**52
    if big.any():
        f[big] = np.floor((a[big] + f[big]) * (1.0 - 2.0**-50))
    return np.clip(f, 0, CREDIT_CAP_USD6).astype(np.int64)


# Positions per account in the pool: at most this many spare slots are reserved when
# an event moves an account's segment, so the next new asset usually fits in place.
_SLACK = 2


@njit(inline="always")
def _position(c, q, tab, nlp, c_liq, c_bor, d_val):  # noqa: PLR0917
    """Add one (column, amount) pair to an account's C_liq, C_borrow and debt.

    `tab` rows per column: linear weights (p*lt_eff, p*ltv_eff, debt price) and the
    amount up to which that column is linear. A depth-set column is linear until the
    concentration term pushes 1 - h below the lt cap: below that amount its lt_eff is
    the cap itself, above it the exact formula runs (`nlp`: price, impact/depth, vol
    term, lt, ltv, lt - ltv). The branch is almost never taken, so it costs a compare.
    Every kernel adds positions through this one function, in segment order, so all
    paths agree bit for bit.
    """
    if q <= tab[c, 3]:
        c_liq += tab[c, 0] * q
        c_bor += tab[c, 1] * q
        d_val += tab[c, 2] * q
    else:
        v = q * nlp[c, 0]
        h = v * nlp[c, 1] + nlp[c, 2]
        lte = max(min(1.0 - h, nlp[c, 3]), 0.0)
        lve = max(min(lte - nlp[c, 5], nlp[c, 4]), 0.0)
        c_liq += v * lte
        c_bor += v * lve
    return c_liq, c_bor, d_val


@njit(inline="always")
def _account_sums(s0, cnt, pc, pv, tab, nlp):  # noqa: PLR0917
    """C_liq, C_borrow, debt and collateral value of one account's pool segment."""
    c_liq = 0.0
    c_bor = 0.0
    d_val = 0.0
    for i in range(s0, s0 + cnt):
        c_liq, c_bor, d_val = _position(pc[i], pv[i], tab, nlp, c_liq, c_bor, d_val)
    return c_liq, c_bor, d_val, _account_value(s0, cnt, pc, pv, nlp)


@njit(inline="always")
def _account_value(s0, cnt, pc, pv, nlp):
    """Collateral value of one account: the v_tot of _account_sums, same order."""
    v_tot = 0.0
    for i in range(s0, s0 + cnt):
        v_tot += pv[i] * nlp[pc[i], 0]
    return v_tot


@njit(inline="always")
def _tick_finish(  # noqa: PLR0917
    a, s0, k, c_liq, c_bor, d_val, pc, pv, nlp, held, bad_bits, warn_hf, hf, bp, tier,
    degraded,
):  # fmt: skip
    h = c_liq / d_val if d_val > 0.0 else np.inf
    hf[a] = h
    bp[a] = max(c_bor - d_val, 0.0)
    t = (h < warn_hf) + (h < 1.0)
    if h < 1.0:
        t += _account_value(s0, k, pc, pv, nlp) < d_val
    tier[a] = t
    degraded[a] = bad_bits != 0 and (held[a] & bad_bits) != 0


@njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def _tick_kernel(  # noqa: PLR0917
    start, cnt, pc, pv, held, n, tab, nlp, bad_bits, warn_hf, hf, bp, tier, degraded,
):  # fmt: skip
    """Every account at once: HF, BP, tier and degraded.

    Accounts go in pairs, their positions interleaved: each account's sums are a chain
    of dependent additions, and two independent chains keep the CPU busy while one
    waits (~1.3x on one core). Each account still adds its own positions in segment
    order, so the results equal the one-account path bit for bit.
    Only what every account needs is written (18 bytes an account) to keep the
    memory traffic of the tick down. An account with HF < 1 also gets its collateral
    value (second walk over its segment, still in cache: insolvency) and its C_liq
    and debt (for its liquidation plan); those are the only writes to liq_*.
    """
    for p in prange((n + 1) // 2):
        a = 2 * p
        b = a + 1
        sa, ka = start[a], cnt[a]
        sb, kb = (start[b], cnt[b]) if b < n else (sa, 0)
        m = min(ka, kb)
        la, ba, da = 0.0, 0.0, 0.0
        lb, bb, db = 0.0, 0.0, 0.0
        for j in range(m):
            la, ba, da = _position(pc[sa + j], pv[sa + j], tab, nlp, la, ba, da)
            lb, bb, db = _position(pc[sb + j], pv[sb + j], tab, nlp, lb, bb, db)
        for j in range(m, ka):
            la, ba, da = _position(pc[sa + j], pv[sa + j], tab, nlp, la, ba, da)
        for j in range(m, kb):
            lb, bb, db = _position(pc[sb + j], pv[sb + j], tab, nlp, lb, bb, db)
        _tick_finish(
            a, sa, ka, la, ba, da, pc, pv, nlp, held, bad_bits, warn_hf, hf, bp, tier,
            degraded,
        )  # fmt: skip
        if b < n:
            _tick_finish(
                b, sb, kb, lb, bb, db, pc, pv, nlp, held, bad_bits, warn_hf, hf, bp, tier,
                degraded,
            )  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy")
def _accounts_kernel(  # noqa: PLR0917
    start, cnt, pc, pv, held, acc, tab, nlp, bad_bits, warn_hf,
    vtot, dval, cliq, cbor, hf, bp, tier, degraded,
):  # fmt: skip
    """The same per-account sums for the accounts `acc` (an event, an explanation, the
    HF < 1 accounts of a tick), with every total and the full tier. Same operations in
    the same order as _tick_kernel, so both agree bit for bit."""
    for i in range(acc.size):
        a = acc[i]
        c_liq, c_bor, d_val, v_tot = _account_sums(start[a], cnt[a], pc, pv, tab, nlp)
        h = c_liq / d_val if d_val > 0.0 else np.inf
        vtot[i] = v_tot
        dval[i] = d_val
        cliq[i] = c_liq
        cbor[i] = c_bor
        hf[i] = h
        bp[i] = max(c_bor - d_val, 0.0)
        # insolvent implies HF < 1 implies HF < warn (lt_eff <= 1): tier is a count.
        tier[i] = (h < warn_hf) + (h < 1.0) + (v_tot < d_val)
        degraded[i] = bad_bits != 0 and (held[a] & bad_bits) != 0


@njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def _plan_kernel(  # noqa: PLR0917
    la, grp, debt, cliq, cf, rows, lengths, r_side, r_amount, r_asset, r_chain, coll,
    price, k, bonus, vol_tab, lt_tab, target, repay, chain, asset,
):  # fmt: skip
    """Liquidation plan of each HF < 1 account `la[i]` (its book rows grouped in
    `rows`, `lengths[i]` each): the feasible (chain, asset) with the smallest repay,
    ties to the larger holding on that chain, then the lower chain, then asset.
    Returns whether a partial plan was found per account (else: full)."""
    found = np.zeros(la.size, np.bool_)
    first = np.cumsum(lengths) - lengths
    # Each account's rows are random reads into the book: latency-bound, so it pays
    # to spread them over the threads.
    for i in prange(la.size):
        a = la[i]
        j0 = first[i]
        g = grp[i] + 1
        d = debt[i]
        num = target * d - cliq[i]
        best_r = np.inf
        best_v = 0.0
        best_c = -1
        best_t = -1
        for j in range(j0, j0 + lengths[i]):
            r = rows[j]
            if r_side[r] != 0 or r_amount[r] <= 0.0:
                continue
            t = r_asset[r]
            c = r_chain[r]
            lte = 1.0 - (vol_tab[g, t] + k[t] * (coll[a, t] * price[t]))
            lte = min(max(lte, 0.0), lt_tab[g, t])
            b = bonus[t]
            den = target - (1.0 + b) * lte
            if not den > 0.0:
                continue
            rr = num / den
            value = r_amount[r] * price[t]
            if not (rr <= cf[i] * d and rr <= value / (1.0 + b)):
                continue
            if best_c >= 0:
                if rr != best_r:
                    better = rr < best_r
                elif value != best_v:
                    better = value > best_v
                elif c != best_c:
                    better = c < best_c
                else:
                    better = t < best_t
                if not better:
                    continue
            best_r, best_v, best_c, best_t = rr, value, c, t
        if best_c >= 0:
            found[i] = True
            repay[i] = best_r
            chain[i] = best_c
            asset[i] = best_t
    return found


class RiskEngine:
    def __init__(
        self,
        chains: Sequence[str],
        assets: Sequence[AssetConfig],
        groups: Sequence[CorrelationGroup] = (),
        risk: RiskConfig | None = None,
        credit: CreditConfig | None = None,
    ) -> None:
        if not chains:
            raise ValueError("chains: at least one chain is required")
        if not assets:
            raise ValueError("assets: at least one asset is required")
        self.risk_cfg = risk or RiskConfig()
        self.credit_cfg = credit or CreditConfig()
        self.chains = list(chains)
        self.asset_cfgs = list(assets)
        self.symbols = [a.symbol for a in assets]
        self.groups = list(groups)
        T, C, G = len(self.symbols), len(self.chains), len(self.groups)
        if T > 62:
            raise ValueError(f"assets: at most 62 are supported (bit sets per account), got {T}")
        self.book = PositionBook(self.chains, self.symbols, [a.decimals for a in assets])
        sym = self.book.asset_index

        for name, weight in self.credit_cfg.weights.items():
            if name not in self.book.chain_index:
                raise ValueError(f"credit.weights.{name}: unknown chain {name!r}")
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"credit.weights.{name}: must be finite and >= 0, got {weight}")
        self.lt = np.array([a.lt for a in assets])
        self.ltv = np.array([a.ltv for a in assets])
        self.bonus = np.array([a.liquidation_bonus for a in assets])
        impact = self.risk_cfg.impact
        self.k = np.array([impact / a.depth_usd if a.depth_usd else 0.0 for a in assets])

        self.member = np.zeros((G, T), bool)
        self.group_ref = np.zeros(G, np.int64)
        for g, grp in enumerate(self.groups):
            for s in grp.assets:
                if s not in sym:
                    raise ValueError(f"correlation_groups[{g}].assets: unknown asset {s!r}")
                self.member[g, sym[s]] = True
            if grp.reference not in sym:
                raise ValueError(
                    f"correlation_groups[{g}].reference: unknown asset {grp.reference!r}"
                )
            self.group_ref[g] = sym[grp.reference]
        # Caps per mode: row 0 is standard, row g+1 is e-mode of group g (group caps on
        # its members, asset caps elsewhere).
        self._lt_tab = np.tile(self.lt, (G + 1, 1))
        self._ltv_tab = np.tile(self.ltv, (G + 1, 1))
        for g, grp in enumerate(self.groups):
            self._lt_tab[g + 1, self.member[g]] = grp.lt
            self._ltv_tab[g + 1, self.member[g]] = grp.ltv
        self._gap_tab = self._lt_tab - self._ltv_tab

        self.sigma = np.full(T, np.nan)
        self.rel_sigma = np.full((G, T), np.nan)
        self._sigma_tab = np.full((G + 1, T), np.nan)

        self.price = np.zeros(T)  # last good (ok) price; 0 until one is seen
        self.has_price = np.zeros(T, bool)
        self.status: list[PriceStatus] = ["unavailable"] * T
        self.price_input: list[PriceInput | None] = [None] * T
        self._bad = np.ones(T, bool)

        w = np.array([self.credit_cfg.weights.get(c, 1.0) for c in self.chains], float)
        self.weights = w
        self.static_share = w / w.sum() if w.sum() > 0 else np.zeros(C)
        self._demand: dict[int, deque[tuple[float, int, float]]] = {}

        # Kernel matrix layout (see _prepare): collateral columns, one per asset
        # (standard caps) and one per (group, member) pair (e-mode caps); then one
        # debt column per asset.
        pairs = [(t, g) for g in range(G) for t in np.flatnonzero(self.member[g]).tolist()]
        cols = [(t, -1) for t in range(T)] + pairs
        self._col_asset = np.array([t for t, _ in cols], np.int64)
        self._col_group = np.array([g for _, g in cols], np.int64)
        self._std_col = np.array([cols.index((t, -1)) for t in range(T)], np.int64)
        self._em_cols = [(cols.index((t, g)), t, g) for t, g in pairs]
        self._ncoll = T + len(pairs)
        self._ncols = self._ncoll + T
        self._pow2 = np.left_shift(1, np.arange(T, dtype=np.int64))
        self._gbits = [int(self.member[g].astype(np.int64) @ self._pow2) for g in range(G)]

        # Pool of (column, amount) pairs: each account owns a segment (a_start, a_cap)
        # holding its a_cnt occupied columns, in account order after a load, so a tick
        # streams through it like a CSR matrix. An event that needs more room moves the
        # account's segment to the end; compaction reclaims the holes (_place).
        self._cdt = np.uint8 if self._ncols < 255 else np.uint16
        self.pc = np.zeros(0, self._cdt)
        self.pv = np.zeros(0)
        self._pool_end = 0
        self._holes = 0
        self._acap = 0
        self._alloc(0)
        self.computed_at: float | None = None
        self._prepared = False
        # Compile (or load from numba's on-disk cache) the kernel now, at daemon start,
        # rather than on the first price tick.
        self._tab = np.zeros((self._ncols, 4))
        self._nlp = np.zeros((self._ncols, 6))
        self._bad_bits = 0
        self._risk(np.zeros(1, np.int64))
        _tick_kernel(
            self.a_start, self.a_cnt, self.pc, self.pv, self.held_bits, 0, self._tab,
            self._nlp, 0, 1.0, self.r_hf, self.r_bp, self.r_tier, self.r_degraded,
        )  # fmt: skip

    @classmethod
    def from_config(cls, cfg: AppConfig) -> RiskEngine:
        return cls(cfg.chain_names, cfg.assets, cfg.correlation_groups, cfg.risk, cfg.credit)

    # -- per-account result arrays --------------------------------------------
    # Allocated (and grown with amortised capacity) by _alloc from _FIELDS.
    r_grp: NDArray[np.int16]
    held_bits: NDArray[np.int64]
    r_hf: NDArray[np.float64]
    r_bp: NDArray[np.float64]
    r_tier: NDArray[np.int8]
    r_degraded: NDArray[np.bool_]
    a_start: NDArray[np.int64]
    a_cnt: NDArray[Any]
    a_cap: NDArray[Any]
    credit: NDArray[np.int64]
    prev_credit: NDArray[np.int64]
    # Holes in the pool below this many slots are not worth an O(book) compaction.
    _COMPACT_MIN = 1 << 16
    _FIELDS: tuple[tuple[str, Any, Any], ...] = (
        ("r_grp", np.int16, -1),
        ("held_bits", np.int64, 0),
        ("r_hf", np.float64, np.inf),
        ("r_bp", np.float64, 0.0),
        ("r_tier", np.int8, HEALTHY),
        ("r_degraded", np.bool_, False),
        ("a_start", np.int64, 0),
        ("a_cnt", None, 0),
        ("a_cap", None, 0),
    )

    def _alloc(self, need: int) -> None:
        if need <= self._acap and self._acap:
            return
        cap = max(1024, 2 * self._acap, need)
        C = len(self.chains)
        for name, dtype, fill in self._FIELDS:
            new = np.full(cap, fill, dtype or self._cdt)
            if self._acap:
                new[: self._acap] = getattr(self, name)
            setattr(self, name, new)
        for name, width in (("credit", C), ("prev_credit", C)):
            new2 = np.zeros((cap, width), np.int64)
            if self._acap:
                new2[: self._acap] = getattr(self, name)
            setattr(self, name, new2)
        self._acap = cap

    def _grow_pool(self, need: int) -> None:
        if need <= self.pv.size:
            return
        cap = max(1 << 16, 2 * self.pv.size, need)
        pc = np.zeros(cap, self._cdt)
        pv = np.zeros(cap)
        pc[: self._pool_end] = self.pc[: self._pool_end]
        pv[: self._pool_end] = self.pv[: self._pool_end]
        self.pc, self.pv = pc, pv

    def _segments(self, acc: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """(pool index of every occupied slot of `acc` in order, its account position)."""
        cnt = self.a_cnt[acc].astype(np.int64)
        total = int(cnt.sum())
        first = np.cumsum(cnt) - cnt
        pos = np.repeat(np.arange(acc.size), cnt)
        return np.repeat(self.a_start[acc], cnt) + (np.arange(total) - first[pos]), pos

    def _place(
        self,
        idx: NDArray[np.int64],
        count: NDArray[np.int64],
        cols: NDArray[np.int64],
        vals: NDArray[np.float64],
    ) -> None:
        """Write accounts' occupied (column, amount) pairs (row-major, `count` each) into
        their pool segments, moving to the end of the pool those that outgrew theirs."""
        start = self.a_start[idx].copy()
        move = np.flatnonzero(count > self.a_cap[idx])
        if move.size:
            # A bulk load lays accounts out back to back; an event leaves a little room.
            slack = 0 if idx.size > 64 else _SLACK
            cap = np.minimum(count[move] + slack, self._ncols)
            self._holes += int(self.a_cap[idx[move]].sum())
            new = self._pool_end + np.cumsum(cap) - cap
            end = self._pool_end + int(cap.sum())
            self._grow_pool(end)
            start[move] = new
            self.a_start[idx[move]] = new
            self.a_cap[idx[move]] = cap
            self._pool_end = end
        self.a_cnt[idx] = count
        first = np.cumsum(count) - count
        row = np.repeat(np.arange(idx.size), count)
        at = np.repeat(start, count) + (np.arange(cols.size) - first[row])
        self.pc[at] = cols
        self.pv[at] = vals
        if self._holes > max(self._COMPACT_MIN, self._pool_end // 2):
            self._compact()

    def _compact(self) -> None:
        """Lay every account's segment out back to back again. O(book), and only after
        events have moved as many slots as the book holds, so amortised O(1) each."""
        n = self.book.n_accounts
        acc = np.arange(n, dtype=np.int64)
        src, _ = self._segments(acc)
        cnt = self.a_cnt[:n].astype(np.int64)
        cap = max(1 << 16, 2 * src.size)
        pc = np.zeros(cap, self._cdt)
        pv = np.zeros(cap)
        pc[: src.size] = self.pc[src]
        pv[: src.size] = self.pv[src]
        self.pc, self.pv = pc, pv
        self.a_start[:n] = np.cumsum(cnt) - cnt
        self.a_cap[:n] = self.a_cnt[:n]
        self._pool_end = src.size
        self._holes = 0

    @property
    def X(self) -> NDArray[np.float64]:
        """The kernel matrix, dense (accounts x columns): for inspection and tests."""
        n = self.book.n_accounts
        x = np.zeros((self._acap, self._ncols))
        src, pos = self._segments(np.arange(n, dtype=np.int64))
        x[pos, self.pc[src]] = self.pv[src]
        return x

    # -- inputs ---------------------------------------------------------------
    def _asset(self, symbol: str, what: str) -> int:
        t = self.book.asset_index.get(symbol)
        if t is None:
            raise KeyError(f"{what}: unknown asset {symbol!r}")
        return t

    def set_prices(self, prices: Mapping[str, PriceInput]) -> None:
        """Record prices. Valuation always uses the last `ok` price of an asset (the
        oracle's `last_good` when this engine has seen none yet); a non-ok status keeps
        that value but makes holders degraded. An asset never priced is worth nothing
        here, so the pusher holds its holders back (`unpriced_accounts`)."""
        for symbol, p in prices.items():
            t = self._asset(symbol, "prices")
            if p.status not in PRICE_STATUSES:
                raise ValueError(f"prices.{symbol}.status: {p.status!r} not in {PRICE_STATUSES}")
            if p.status == "ok":
                if p.value is None or not math.isfinite(p.value) or p.value <= 0:
                    raise ValueError(
                        f"prices.{symbol}.value: an ok price must be > 0, got {p.value}"
                    )
                self.price[t] = p.value
                self.has_price[t] = True
            elif p.value is not None and (not math.isfinite(p.value) or p.value < 0):
                raise ValueError(f"prices.{symbol}.value: must be finite and >= 0, got {p.value}")
            elif (
                not self.has_price[t]
                and p.last_good is not None
                and math.isfinite(p.last_good)
                and p.last_good > 0
            ):
                # A fresh process whose first round is not ok (a jump to confirm): the
                # last ok price is the one the previous process valued at, not zero.
                self.price[t] = p.last_good
                self.has_price[t] = True
            self.status[t] = p.status
            self.price_input[t] = p
            self._bad[t] = p.status != "ok"
        self._prepared = False

    def unpriced_accounts(self, n: int) -> NDArray[np.bool_]:
        """Accounts (of the first n) holding an asset this engine has no price for:
        their figures count that asset at zero, as collateral or as debt."""
        missing = ~self.has_price.astype(np.bool_)
        bits = int(missing.astype(np.int64) @ self._pow2)
        if not bits:
            return np.zeros(n, np.bool_)
        return (self.held_bits[:n] & bits) != 0

    def set_volatility(
        self,
        sigma: Mapping[str, float],
        relative: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        """Daily volatilities (EWMA of log returns, from the oracle layer).

        `relative[group][asset]` is the volatility of p(asset)/p(group reference); the
        reference itself is 0 by definition. A group member without one falls back to
        its USD volatility (keeps the group caps, loses the de-peg-only benefit).
        """
        for symbol, s in sigma.items():
            t = self._asset(symbol, "volatility")
            if not math.isfinite(s) or s < 0:
                raise ValueError(f"volatility.{symbol}: must be finite and >= 0, got {s}")
            self.sigma[t] = s
        names = {g.name: i for i, g in enumerate(self.groups)}
        for gname, per_asset in (relative or {}).items():
            if gname not in names:
                raise KeyError(f"relative volatility: unknown correlation group {gname!r}")
            g = names[gname]
            for symbol, s in per_asset.items():
                t = self._asset(symbol, f"relative volatility.{gname}")
                if not self.member[g, t]:
                    raise ValueError(f"relative volatility.{gname}.{symbol}: not in the group")
                if not math.isfinite(s) or s < 0:
                    raise ValueError(
                        f"relative volatility.{gname}.{symbol}: must be finite and >= 0, got {s}"
                    )
                self.rel_sigma[g, t] = s
        self._sigma_tab[0] = self.sigma
        for g in range(len(self.groups)):
            row = self.sigma.copy()
            rel = self.rel_sigma[g].copy()
            ref = self.group_ref[g]
            if np.isnan(rel[ref]):
                rel[ref] = 0.0
            use = self.member[g] & ~np.isnan(rel)
            row[use] = rel[use]
            self._sigma_tab[g + 1] = row
        self._prepared = False

    def _require_inputs(self) -> None:
        missing = [s for s, v in zip(self.symbols, self.sigma, strict=True) if np.isnan(v)]
        if missing:
            raise MissingInput(
                f"no volatility for asset(s) {', '.join(missing)}: call set_volatility first"
            )

    # -- positions --------------------------------------------------------------
    def load_positions(self, rows: Iterable[PositionRow]) -> int:
        n = self.book.load(rows)
        self._alloc(self.book.n_accounts)
        for lo in range(0, self.book.n_accounts, _CHUNK):
            self._refresh(slice(lo, min(self.book.n_accounts, lo + _CHUNK)))
        return n

    def apply_position(self, row: PositionRow) -> str:
        """One position change (both views, absolute): updates the row and recomputes
        risk and liquidation plan of that account only. Returns the account address.
        (Before the first volatility input only the book changes; recompute() then
        raises MissingInput.)"""
        a = self.book.set(row)
        self._alloc(self.book.n_accounts)
        acc = np.array([a], np.int64)
        self._refresh(acc)
        if not np.isnan(self.sigma).any():
            self._recompute_idx(acc)
        return self.book.account_address[a]

    def _refresh(self, acc: slice | NDArray[np.int64]) -> None:
        """Re-derive the kernel's matrix rows, e-mode group and held-asset bits of
        `acc` from the book (only positions change these, prices never do)."""
        coll, debt = self.book.coll[acc], self.book.debt[acc]
        dbits = (debt > 0).astype(np.int64) @ self._pow2
        hbits = ((coll > 0) | (debt > 0)).astype(np.int64) @ self._pow2
        grp = np.full(coll.shape[0], -1, np.int16)
        for g in range(len(self.groups)):
            ok = (dbits != 0) & ((dbits & ~self._gbits[g]) == 0) & (grp < 0)
            grp[ok] = g
        x = np.zeros((coll.shape[0], self._ncols))
        x[:, self._std_col] = coll
        x[:, self._ncoll :] = debt
        for j, t, g in self._em_cols:
            rows = grp == g
            x[rows, j] = coll[rows, t]
            x[rows, self._std_col[t]] = 0.0
        idx = np.arange(acc.start, acc.stop) if isinstance(acc, slice) else acc
        rows, cols = np.nonzero(x)  # row-major: each row's columns in column order
        count = np.bincount(rows, minlength=x.shape[0])
        self._place(np.asarray(idx, np.int64), count, cols, x[rows, cols])
        self.r_grp[acc] = grp
        self.held_bits[acc] = hbits

    # -- kernel -----------------------------------------------------------------
    def _prepare(self) -> None:
        """Per-column parameters for the current prices and volatilities.

        Matrix columns: one per asset (standard caps), one per (group, member) pair
        (e-mode caps, relative sigma), then one per asset of debt. Each column has
        fixed parameters, so the kernel needs only (column, amount) per position.
        """
        self._require_inputs()
        cfg = self.risk_cfg
        t, gi = self._col_asset, self._col_group + 1
        vol = cfg.z * self._sigma_tab[gi, t] * math.sqrt(cfg.horizon_days)
        lt, ltv = self._lt_tab[gi, t], self._ltv_tab[gi, t]
        p = self.price[t]
        nc = self._ncoll
        lte = np.clip(1.0 - vol, 0.0, lt)
        ltve = np.clip(lte - (lt - ltv), 0.0, ltv)
        tab = np.zeros((self._ncols, 4))
        tab[:nc, 0] = p * lte
        tab[:nc, 1] = p * ltve
        tab[nc:, 2] = self.price
        tab[:, 3] = np.inf
        # A depth-set column is exactly linear (lt_eff = lt) while 1 - vol - k*v stays
        # above lt; the 1e-12 margin dwarfs the rounding of that test, so an amount
        # near the edge takes the exact branch rather than a misjudged linear one.
        kp = self.k[t] * p
        nl = kp > 0
        tab[:nc, 3][nl] = (1.0 - vol[nl] - lt[nl] - 1e-12) / kp[nl]
        nlp = np.zeros((self._ncols, 6))
        nlp[:nc] = np.stack([p, self.k[t], vol, lt, ltv, lt - ltv], axis=1)
        self._tab = np.ascontiguousarray(tab)
        self._nlp = np.ascontiguousarray(nlp)
        self._bad_bits = int(self._bad.astype(np.int64) @ self._pow2)
        self._prepared = True

    def _detail(self, coll: NDArray[np.float64], grp: NDArray[np.int16]) -> _Detail:
        """Per (account, asset) breakdown for a few accounts (explain, plans)."""
        gi = grp.astype(np.int64) + 1
        sq = math.sqrt(self.risk_cfg.horizon_days)
        value = coll * self.price
        sigma = self._sigma_tab[gi]
        vol = self.risk_cfg.z * sigma * sq
        conc = self.k * value
        lt_cap, ltv_cap = self._lt_tab[gi], self._ltv_tab[gi]
        lt_eff = np.clip(1.0 - (vol + conc), 0.0, lt_cap)
        ltv_eff = np.clip(lt_eff - (lt_cap - ltv_cap), 0.0, ltv_cap)
        return _Detail(value, sigma, vol, conc, lt_cap, ltv_cap, lt_eff, ltv_eff)

    def _risk(self, acc: NDArray[np.int64]) -> _Risk:
        """Every total and the full tier of accounts `acc`, from the parameters of the
        last preparation (so they match what the last tick or event stored)."""
        n = acc.size
        r = _Risk(
            self.r_grp[acc], np.empty(n), np.empty(n), np.empty(n), np.empty(n),
            np.empty(n), np.empty(n), np.empty(n, np.int8), np.empty(n, np.bool_),
            np.empty(n),
        )  # fmt: skip
        if n:
            cfg = self.risk_cfg
            _accounts_kernel(
                self.a_start, self.a_cnt, self.pc, self.pv, self.held_bits,
                np.ascontiguousarray(acc, np.int64), self._tab, self._nlp, self._bad_bits,
                cfg.warn_hf, r.vtot, r.debt, r.cliq, r.cborrow, r.hf, r.bp, r.tier,
                r.degraded,
            )  # fmt: skip
            r.cf[:] = self._close_factor(r.hf)
        return r

    def _close_factor(self, hf: NDArray[np.float64]) -> NDArray[np.float64]:
        cfg = self.risk_cfg
        return np.where(hf < 1.0, np.where(hf < cfg.full_close_hf, 1.0, cfg.close_factor), 0.0)

    def _store(self, sl: NDArray[np.int64], r: _Risk) -> None:
        self.r_hf[sl] = r.hf
        self.r_bp[sl] = r.bp
        self.r_tier[sl] = r.tier
        self.r_degraded[sl] = r.degraded

    def _plans(
        self,
        acc: NDArray[np.int64],
        hf: NDArray[np.float64],
        debt: NDArray[np.float64],
        cliq: NDArray[np.float64],
        grp: NDArray[np.int16],
    ) -> tuple[NDArray[np.int8], NDArray[np.float64], NDArray[np.int16], NDArray[np.int16]]:
        """Liquidation plans for accounts `acc` (sorted; HF, debt, C_liq and e-mode
        group aligned with them).

        R = (target*D - C_liq) / (target - (1+bonus)*lt_eff) per collateral (chain, asset);
        a candidate is feasible when the denominator is > 0 and R fits under both the
        close factor cap and value on that chain / (1+bonus). The smallest feasible R
        wins (ties: larger holding on that chain, then config order); none -> full.
        """
        n = acc.size
        kind = np.full(n, PLAN_NONE, np.int8)
        repay = np.zeros(n)
        chain = np.full(n, -1, np.int16)
        asset = np.full(n, -1, np.int16)
        liq = np.nonzero(hf < 1.0)[0]
        if liq.size == 0:
            return kind, repay, chain, asset
        kind[liq] = PLAN_FULL
        repay[liq] = debt[liq]
        la = acc[liq]
        book = self.book
        rows, lengths = book.rows_with_lengths(la)
        cfg = self.risk_cfg
        vol_tab = cfg.z * self._sigma_tab * math.sqrt(cfg.horizon_days)
        p_repay, p_chain, p_asset = repay[liq], chain[liq], asset[liq]
        found = _plan_kernel(
            la, grp[liq], debt[liq], cliq[liq], self._close_factor(hf[liq]), rows, lengths,
            book.r_side, book.r_amount, book.r_asset, book.r_chain, book.coll, self.price,
            self.k, self.bonus, vol_tab, self._lt_tab, cfg.target_hf, p_repay, p_chain,
            p_asset,
        )  # fmt: skip
        kind[liq[found]] = PLAN_PARTIAL
        repay[liq], chain[liq], asset[liq] = p_repay, p_chain, p_asset
        return kind, repay, chain, asset

    def _recompute_idx(self, acc: NDArray[np.int64]) -> None:
        if not self._prepared:
            self._prepare()
        self._store(acc, self._risk(acc))

    def recompute(self) -> None:
        """Every account at once (after a price or volatility tick): one parallel pass
        writing HF, BP, tier (insolvency included) and degraded in place.

        Liquidation plans are not part of it: nothing reads a stored plan, so each is
        computed when asked for (`explain`, GET /v1/accounts/{address}) from the same
        inputs; per tick they cost ~30% of the tick for the ~1% of accounts below 1."""
        self._prepare()
        n = self.book.n_accounts
        self._alloc(n)
        cfg = self.risk_cfg
        _tick_kernel(
            self.a_start, self.a_cnt, self.pc, self.pv, self.held_bits, n, self._tab,
            self._nlp, self._bad_bits, cfg.warn_hf, self.r_hf, self.r_bp, self.r_tier,
            self.r_degraded,
        )  # fmt: skip
        self.computed_at = time.time()

    def recompute_account(self, address: str) -> None:
        self._recompute_idx(np.array([self._idx(address)], np.int64))

    # -- credit -------------------------------------------------------------------
    def record_consumption(self, address: str, chain: str, usd: float, ts: float) -> None:
        """A Borrowed/Withdrawn event consumed `usd` of credit on `chain` at `ts`."""
        c = self.book.chain_index.get(chain)
        if c is None:
            raise KeyError(f"consumption: unknown chain {chain!r}")
        if not math.isfinite(usd) or usd < 0:
            raise ValueError(f"consumption on {chain} for {address}: usd must be >= 0, got {usd}")
        a = self._idx(address, create=True)
        self._demand.setdefault(a, deque()).append((float(ts), c, float(usd)))

    def _demand_of(self, a: int, now: float) -> NDArray[np.float64]:
        u = np.zeros(len(self.chains))
        q = self._demand.get(a)
        if not q:
            return u
        horizon = now - self.credit_cfg.demand_window_s
        while q and q[0][0] < horizon:
            q.popleft()
        if not q:
            del self._demand[a]
            return u
        for ts, c, usd in q:
            if ts <= now:
                u[c] += usd
        return u

    def _shares(
        self, acc: NDArray[np.int64], now: float
    ) -> dict[int, tuple[NDArray[np.float64], NDArray[np.float64]]]:
        """Demand-policy shares for the accounts (positions in `acc`) that consumed
        credit within the window: {i: (consumption per chain, shares)}. Every other
        account uses the static shares."""
        out: dict[int, tuple[NDArray[np.float64], NDArray[np.float64]]] = {}
        if self.credit_cfg.policy != "demand" or not self._demand:
            return out
        s = self.credit_cfg.demand_share
        cand = np.fromiter(self._demand.keys(), np.int64, len(self._demand))
        for i in np.flatnonzero(np.isin(acc, cand)).tolist():
            u = self._demand_of(int(acc[i]), now)
            u[self.weights <= 0] = 0.0  # a chain with weight 0 gets no credit at all
            if u.sum() > 0:
                out[i] = (u, (1.0 - s) * self.static_share + s * u / u.sum())
        return out

    def _credit(
        self,
        acc: NDArray[np.int64],
        bp: NDArray[np.float64],
        degraded: NDArray[np.bool_],
        now: float,
    ) -> tuple[
        NDArray[np.int64],
        NDArray[np.int64],
        dict[int, tuple[NDArray[np.float64], NDArray[np.float64]]],
        NDArray[np.int64],
    ]:
        """(credit, allocation before the degraded cap, demand shares, budget)."""
        budget = usd6_floor(bp)
        budget_f = budget.astype(np.float64)
        demand = self._shares(acc, now)
        n, C = acc.size, len(self.chains)
        raw = np.empty((C, n), np.int64)
        for c in range(C):
            raw[c] = np.floor(budget_f * self.static_share[c])
        for i, (_u, share) in demand.items():
            raw[:, i] = np.floor(budget_f[i] * share)
        # Float products can land one unit high; take any excess back, largest chain first.
        excess = raw.sum(axis=0) - budget
        while (excess > 0).any():
            over = np.flatnonzero(excess > 0)
            col = np.argmax(raw[:, over], axis=0)
            take = np.minimum(excess[over], raw[col, over])
            raw[col, over] -= take
            excess[over] -= take
        raw_t = raw.T
        credit = raw_t.copy()
        dg = np.flatnonzero(degraded)
        if dg.size:
            credit[dg] = np.minimum(raw_t[dg], self.prev_credit[acc[dg]])
        return credit, raw_t, demand, budget

    def allocate_credit(
        self, now: float | None = None, accounts: Sequence[str] | None = None
    ) -> None:
        """Split each account's BP into per-chain USD6 credit (sum <= BP); a degraded
        account's credit per chain is min(new, previous). The result becomes the new
        `previous` (override with set_previous_credit from what is on chain)."""
        now = time.time() if now is None else now
        n = self.book.n_accounts
        if accounts is None:
            for lo in range(0, n, _CHUNK):
                sl = slice(lo, min(n, lo + _CHUNK))
                acc = np.arange(sl.start, sl.stop, dtype=np.int64)
                credit = self._credit(acc, self.r_bp[sl], self.r_degraded[sl], now)[0]
                self.credit[sl] = credit
                self.prev_credit[sl] = credit
            return
        acc = np.array(sorted({self._idx(a) for a in accounts}), np.int64)
        credit = self._credit(acc, self.r_bp[acc], self.r_degraded[acc], now)[0]
        self.credit[acc] = credit
        self.prev_credit[acc] = credit

    def set_previous_credit(self, address: str, credit_usd6: Mapping[str, int]) -> None:
        a = self._idx(address, create=True)
        for chain, v in credit_usd6.items():
            c = self.book.chain_index.get(chain)
            if c is None:
                raise KeyError(f"previous credit for {address}: unknown chain {chain!r}")
            if type(v) is not int or v < 0:
                raise ValueError(f"previous credit for {address} on {chain}: must be an int >= 0")
            self.prev_credit[a, c] = min(v, CREDIT_CAP_USD6)

    def credit_of(self, address: str) -> dict[str, int]:
        a = self._idx(address)
        return {c: int(self.credit[a, i]) for i, c in enumerate(self.chains)}

    # -- queries --------------------------------------------------------------------
    def _idx(self, address: str, create: bool = False) -> int:
        addr = normalise_address(address)
        a = self.book.account_index.get(addr)
        if a is None:
            if not create:
                raise KeyError(f"unknown account {addr}")
            a = self.book._add_account(addr)
            self._alloc(self.book.n_accounts)
        return a

    def health(self, address: str) -> AccountHealth:
        """The account's stored HF, BP, tier and degraded flag (what the last tick or
        event wrote, and what credit and the pusher use) with its current totals."""
        a = self._idx(address)
        return replace(
            self.standard_health(address),
            hf=float(self.r_hf[a]),
            bp=float(self.r_bp[a]),
            tier=TIERS[int(self.r_tier[a])],
            degraded=bool(self.r_degraded[a]),
            close_factor=float(self._close_factor(self.r_hf[a : a + 1])[0]),
        )

    def standard_health(self, address: str) -> AccountHealth:
        """The standard cross-margin figures of one account, recomputed by the kernel
        from the last prepared inputs: what `health()` returns unless a portfolio-mode
        deployment has replaced the stored HF, BP and tier (PortfolioFeed.override)."""
        a = self._idx(address)
        r = self._risk(np.array([a], np.int64))
        return AccountHealth(
            account=self.book.account_address[a],
            collateral_usd=float(r.vtot[0]),
            c_liq=float(r.cliq[0]),
            c_borrow=float(r.cborrow[0]),
            debt_usd=float(r.debt[0]),
            hf=float(r.hf[0]),
            bp=float(r.bp[0]),
            tier=TIERS[int(r.tier[0])],
            degraded=bool(r.degraded[0]),
            close_factor=float(r.cf[0]),
        )

    def accounts_by_tier(
        self, tier: str, limit: int = 100, cursor: int = 0
    ) -> tuple[list[str], int | None]:
        """Accounts in `tier` in book order from `cursor`; returns (page, next cursor)."""
        if tier not in TIERS:
            raise ValueError(f"tier: {tier!r} not in {TIERS}")
        if limit <= 0 or cursor < 0:
            raise ValueError("limit must be > 0 and cursor >= 0")
        n = self.book.n_accounts
        hits = np.nonzero(self.r_tier[cursor:n] == TIERS.index(tier))[0] + cursor
        page = hits[:limit]
        nxt = int(page[-1]) + 1 if hits.size > limit else None
        return [self.book.account_address[int(i)] for i in page], nxt

    def tier_counts(self) -> dict[str, int]:
        counts = np.bincount(self.r_tier[: self.book.n_accounts], minlength=len(TIERS))
        return {t: int(counts[i]) for i, t in enumerate(TIERS)}

    # -- explanation -------------------------------------------------------------
    def explain(self, address: str, now: float | None = None) -> dict[str, Any]:
        """Every number for one account, recomputed from the current inputs by the same
        kernel as recompute()/allocate_credit(), as a JSON-able dict (no NaN/inf)."""
        self._require_inputs()
        now = time.time() if now is None else now
        book = self.book
        a = self._idx(address)
        acc = np.array([a], np.int64)
        coll, debt = book.coll[acc], book.debt[acc]
        self._prepare()
        r = self._risk(acc)
        kind, repay, pchain, passet = self._plans(acc, r.hf, r.debt, r.cliq, r.grp)
        credit, raw, demand, budget = self._credit(acc, r.bp, r.degraded, now)
        dem, share = demand.get(0, (None, self.static_share))
        d = self._detail(coll, r.grp)
        g = int(r.grp[0])

        positions: dict[str, list[dict[str, Any]]] = {c: [] for c in self.chains}
        rows = book.rows_of(a)
        for row in sorted(
            rows.tolist(), key=lambda x: (book.r_chain[x], book.r_asset[x], book.r_side[x])
        ):
            t, ci, s = int(book.r_asset[row]), int(book.r_chain[row]), int(book.r_side[row])
            head, conf = book.exact(row)
            counted = min(head, conf) if s == COLLATERAL else max(head, conf)
            amount = float(book.r_amount[row])
            positions[self.chains[ci]].append(
                {
                    "asset": self.symbols[t],
                    "side": SIDES[s],
                    "head": str(head),
                    "confirmed": str(conf),
                    "counted": str(counted),
                    "counted_rule": "min(head, confirmed)"
                    if s == COLLATERAL
                    else "max(head, confirmed)",
                    "amount": _decimal(counted, book.decimals[t]),
                    "value_usd": amount * float(self.price[t]),
                }
            )

        assets: dict[str, Any] = {}
        for t, symbol in enumerate(self.symbols):
            if coll[0, t] == 0 and debt[0, t] == 0:
                continue
            pin = self.price_input[t]
            in_group = g >= 0 and bool(self.member[g, t])
            entry: dict[str, Any] = {
                "price": {
                    "used_usd": float(self.price[t]) if self.has_price[t] else None,
                    "status": self.status[t],
                    "reported_usd": None if pin is None else pin.value,
                    "timestamp": None if pin is None else pin.timestamp,
                    "sources": None if pin is None else pin.sources,
                    "valued_at": "last ok price" if self.status[t] != "ok" else "current",
                },
                "collateral_amount": float(coll[0, t]),
                "debt_amount": float(debt[0, t]),
                "debt_value_usd": float(debt[0, t] * self.price[t]),
            }
            if coll[0, t] > 0:
                entry["collateral"] = {
                    "value_usd": float(d.value[0, t]),
                    "sigma": float(d.sigma[0, t]),
                    "sigma_kind": (
                        f"relative to {self.groups[g].reference}"
                        if in_group
                        and (t == self.group_ref[g] or not np.isnan(self.rel_sigma[g, t]))
                        else "usd"
                    ),
                    "haircut": {
                        "vol_term": float(d.vol[0, t]),
                        "concentration_term": float(d.conc[0, t]),
                        "depth_usd": self.asset_cfgs[t].depth_usd,
                        "total": float(d.vol[0, t] + d.conc[0, t]),
                    },
                    "caps": {
                        "source": f"group:{self.groups[g].name}" if in_group else "asset",
                        "lt": float(d.lt_cap[0, t]),
                        "ltv": float(d.ltv_cap[0, t]),
                    },
                    "lt_eff": float(d.lt_eff[0, t]),
                    "ltv_eff": float(d.ltv_eff[0, t]),
                    "c_liq_usd": float(d.value[0, t] * d.lt_eff[0, t]),
                    "c_borrow_usd": float(d.value[0, t] * d.ltv_eff[0, t]),
                }
            assets[symbol] = entry

        hf = float(r.hf[0])
        plan: dict[str, Any] | None = None
        if kind[0] == PLAN_PARTIAL:
            t = int(passet[0])
            plan = {
                "kind": "partial",
                "repay_usd": float(repay[0]),
                "chain": self.chains[int(pchain[0])],
                "asset": self.symbols[t],
                "seize_usd": float(repay[0] * (1 + self.bonus[t])),
                "target_hf": self.risk_cfg.target_hf,
            }
        elif kind[0] == PLAN_FULL:
            plan = {
                "kind": "full",
                "repay_usd": float(repay[0]),
                "target_hf": self.risk_cfg.target_hf,
            }

        chains_credit = {}
        for i, c in enumerate(self.chains):
            chains_credit[c] = {
                "weight": float(self.weights[i]),
                "static_share": float(self.static_share[i]),
                "recent_consumption_usd": 0.0 if dem is None else float(dem[i]),
                "share": float(share[i]),
                "allocated_usd6": int(raw[0, i]),
                "previous_usd6": int(self.prev_credit[a, i]),
                "credit_usd6": int(credit[0, i]),
                "credit_usd": _decimal(int(credit[0, i]), 6),
                "capped_by_previous": bool(credit[0, i] < raw[0, i]),
            }
        return {
            "account": book.account_address[a],
            "mode": "emode" if g >= 0 else "standard",
            "group": self.groups[g].name if g >= 0 else None,
            "positions": positions,
            "assets": assets,
            "collateral_value_usd": float(r.vtot[0]),
            "c_liq_usd": float(r.cliq[0]),
            "c_borrow_usd": float(r.cborrow[0]),
            "debt_usd": float(r.debt[0]),
            "hf": hf if math.isfinite(hf) else "inf",
            "borrowing_power_usd": float(r.bp[0]),
            "tier": TIERS[int(r.tier[0])],
            "degraded": bool(r.degraded[0]),
            "degraded_assets": [
                self.symbols[t]
                for t in range(len(self.symbols))
                if self._bad[t] and (coll[0, t] > 0 or debt[0, t] > 0)
            ],
            "close_factor": float(r.cf[0]),
            "liquidation": plan,
            "credit": {
                "policy": self.credit_cfg.policy,
                "demand_share": self.credit_cfg.demand_share,
                "demand_window_s": self.credit_cfg.demand_window_s,
                "budget_usd6": int(budget[0]),
                "rule": "credit_c = floor(budget * share_c); degraded: min(that, previous_c)",
                "chains": chains_credit,
            },
            "params": {
                "z": self.risk_cfg.z,
                "horizon_days": self.risk_cfg.horizon_days,
                "impact": self.risk_cfg.impact,
                "warn_hf": self.risk_cfg.warn_hf,
                "target_hf": self.risk_cfg.target_hf,
            },
        }


def _decimal(amount: int, decimals: int) -> str:
    """Exact decimal string of a raw integer amount."""
    if decimals == 0:
        return str(amount)
    whole, frac = divmod(amount, 10**decimals)
    frac_s = str(frac).rjust(decimals, "0").rstrip("0")
    return f"{whole}.{frac_s}" if frac_s else str(whole)
