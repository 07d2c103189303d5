"""Unified margin ledger: DESIGN.md "Risk model, standard cross-margin mode" and
"Per-chain credit allocation", vectorised over the whole book.

RiskEngine composes the rooms of risk/: the position book (book.py), the pooled
account x column matrix the kernels stream through (pool.py, kernels.py), the
market data (market.py), the standard model's tables (standard.py), liquidation
sizing (liquidation.py), credit allocation (credit.py) and the explanation
(explain.py). A price tick is one parallel pass over the pool for every account at
once; one event recomputes one account through the very same per-account code.

Invariants: the stored figures (r_hf, r_bp, r_tier, r_degraded, credit) are what the
last tick or event wrote, or what a pushed model put there (`adopt`); readers outside
risk/ use the read-only LedgerView (risk/view.py). See docs/risk.md for the formulas.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from aggregator.config import AppConfig, AssetConfig, CorrelationGroup, CreditConfig, RiskConfig
from aggregator.risk import explain as explanation
from aggregator.risk.book import EncodedRows, PositionBook, PositionRow, normalise_address
from aggregator.risk.credit import CreditAllocator
from aggregator.risk.kernels import tick_kernel
from aggregator.risk.liquidation import Plans, close_factor, plans
from aggregator.risk.liquidity import AssetPools, queue_state
from aggregator.risk.market import MarketData, MissingInput, PriceInput
from aggregator.risk.model import MarginResult
from aggregator.risk.pool import Pool, grown
from aggregator.risk.reputation import (
    Params,
    Reputation,
    personal_tick_kernel,
    personalise,
    personalise_result,
)
from aggregator.risk.standard import AccountHealth, StandardModel, Totals
from chains.units import TIERS

_CHUNK = 1 << 17


@dataclass(frozen=True)
class PreparedReputation:
    """`RiskEngine.prepare_reputation`'s result: the multipliers not exactly 1 by
    address, and, for the first `n_accounts` of the book, their rows and values."""

    params: Params
    explain: Callable[[str], Reputation]
    multipliers: dict[str, float]
    n_accounts: int
    idx: NDArray[np.int64]
    mult: NDArray[np.float64]
    # The maintenance multipliers (>= 1) of the same accounts, by address and aligned
    # with `mult`.
    maintenance: dict[str, float]
    mmult: NDArray[np.float64]


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
        if len(assets) > 62:
            raise ValueError(
                f"assets: at most 62 are supported (bit sets per account), got {len(assets)}"
            )
        self.risk_cfg = risk or RiskConfig()
        self.credit_cfg = credit or CreditConfig()
        self.chains = list(chains)
        self.asset_cfgs = list(assets)
        self.symbols = [a.symbol for a in assets]
        self.groups = list(groups)
        self.book = PositionBook(self.chains, self.symbols, [a.decimals for a in assets])
        self.credits = CreditAllocator(self.chains, self.credit_cfg)
        self.model = StandardModel(assets, self.groups, self.risk_cfg)
        self.market = MarketData(self.symbols, self.groups, self.book.asset_index)
        self.pool = Pool(self.model.ncols)
        self.r_hf = np.zeros(0)
        self.r_bp = np.zeros(0)
        self.r_tier = np.zeros(0, np.int8)
        self.r_degraded = np.zeros(0, np.bool_)
        # Per-account reputation multipliers (risk/reputation.py), borrowing side
        # (r_mult) and maintenance side (r_mmult): exactly 1 unless a [reputation] feed
        # set them, and then only accounts not exactly 1 are touched.
        self.r_mult = np.ones(0)
        self.r_mmult = np.ones(0)
        self._mult: dict[str, float] = {}
        self._mmult: dict[str, float] = {}
        self._explain_rep: Callable[[str], Reputation] | None = None
        self.reputation_params: Params | None = None
        self._acap = 0
        self._alloc(0)
        self.computed_at: float | None = None
        self._cols = self.model.empty_columns()
        self._prepared = False
        # Compile (or load from numba's on-disk cache) the kernels now, at daemon start,
        # rather than on the first price tick.
        self._risk(np.zeros(1, np.int64))
        self._tick(0)

    @classmethod
    def from_config(cls, cfg: AppConfig) -> RiskEngine:
        return cls(cfg.chain_names, cfg.assets, cfg.correlation_groups, cfg.risk, cfg.credit)

    def _alloc(self, need: int) -> None:
        if need <= self._acap and self._acap:
            return
        cap = max(1024, 2 * self._acap, need)
        self.pool.resize(cap)
        self.credits.resize(cap)
        self.r_hf = grown(self.r_hf, cap, np.inf, np.float64)
        self.r_bp = grown(self.r_bp, cap, 0.0, np.float64)
        self.r_tier = grown(self.r_tier, cap, TIERS.index("healthy"), np.int8)
        self.r_degraded = grown(self.r_degraded, cap, False, np.bool_)
        self.r_mult = grown(self.r_mult, cap, 1.0, np.float64)
        self.r_mmult = grown(self.r_mmult, cap, 1.0, np.float64)
        self._acap = cap

    # -- pool inspection (tests) ----------------------------------------------------
    @property
    def X(self) -> NDArray[np.float64]:
        """The kernel matrix, dense (accounts x columns): for inspection and tests."""
        return self.pool.dense(self.book.n_accounts)

    @property
    def credit(self) -> NDArray[np.int64]:
        return self.credits.credit

    @property
    def price(self) -> NDArray[np.float64]:
        return self.market.price

    @property
    def r_grp(self) -> NDArray[np.int16]:
        return self.pool.grp

    @property
    def a_cnt(self) -> NDArray[Any]:
        return self.pool.a_cnt

    @property
    def _holes(self) -> int:
        return self.pool.holes

    @property
    def _pool_end(self) -> int:
        return self.pool.end

    @property
    def _COMPACT_MIN(self) -> int:
        return self.pool.compact_min

    @_COMPACT_MIN.setter
    def _COMPACT_MIN(self, value: int) -> None:
        self.pool.compact_min = value

    def _compact(self) -> None:
        self.pool.compact(self.book.n_accounts)

    # -- inputs -----------------------------------------------------------------
    def set_prices(self, prices: Mapping[str, PriceInput]) -> None:
        """Record prices (risk/market.py). An asset never priced is worth nothing here,
        so the pusher holds its holders back (`unpriced_accounts`)."""
        self.market.set_prices(prices)
        self._prepared = False

    def set_volatility(
        self,
        sigma: Mapping[str, float],
        relative: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        """Daily volatilities, USD and relative to a group reference (risk/market.py)."""
        self.market.set_volatility(sigma, relative)
        self._prepared = False

    def set_pools(self, pools: Mapping[str, AssetPools]) -> None:
        """This round's pools per asset (risk/liquidity.py), already through the guards:
        the concentration term of those assets becomes their pools' price impact."""
        for symbol, ap in pools.items():
            t = self.market.asset(symbol, "pools")
            for i, sale in enumerate(ap.used):
                side = sale.pool.decimals0 if sale.sells_token0 else sale.pool.decimals1
                if side != self.model.decimals[t]:
                    raise ValueError(
                        f"pools.{symbol}.used[{i}]: pool {sale.pool.address} sells a token of "
                        f"{side} decimals, {symbol} has {self.model.decimals[t]}"
                    )
        self.market.set_pools(pools)
        self._prepared = False

    def unpriced_accounts(self, n: int) -> NDArray[np.bool_]:
        """Accounts (of the first n) holding an asset this engine has no price for:
        their figures count that asset at zero, as collateral or as debt."""
        bits = int(self.model.bits(~self.market.has_price.astype(np.bool_)))
        if not bits:
            return np.zeros(n, np.bool_)
        return (self.pool.held[:n] & bits) != 0

    # -- positions ----------------------------------------------------------------
    def load_positions(self, rows: Iterable[PositionRow]) -> int:
        return self._loaded(self.book.load(rows))

    def encode_positions(self, rows: Sequence[PositionRow]) -> EncodedRows:
        """One batch of a streamed bulk load, validated and encoded (book.py `encode`)."""
        return self.book.encode(rows)

    def load_encoded(self, parts: list[EncodedRows]) -> int:
        """The streamed batches into the book, as load_positions would their rows."""
        return self._loaded(self.book.load_encoded(parts))

    def apply_encoded(self, parts: list[EncodedRows]) -> int:
        """Many position changes at once (absolute, as `apply_position` takes them):
        the rows written, then only the accounts they touch re-derived (and
        recomputed once volatilities are known). Returns how many accounts."""
        touched = self.book.update_encoded(parts)
        self._alloc(self.book.n_accounts)
        if touched.size:
            self._refresh(touched)
            if self.market.has_volatility:
                self._recompute_idx(touched)
        return int(touched.size)

    def export_book(self) -> tuple[list[str], EncodedRows]:
        """A copy of the book's accounts and rows (book.py `export_rows`)."""
        return self.book.export_rows()

    def restore_book(self, addresses: list[str], rows: EncodedRows) -> int:
        """An exported book into this engine's empty one, as load_encoded would the
        rows it came from (book.py `import_rows`)."""
        return self._loaded(self.book.import_rows(addresses, rows))

    def _loaded(self, n: int) -> int:
        na = self.book.n_accounts
        self._alloc(na)
        if self.pool.end == 0:
            # A first load (the start-up's): every account laid out in one pass, as
            # the chunks below would (the last chunk, when small, with spare slots).
            last = (na - 1) // _CHUNK * _CHUNK if na else 0
            slack_from = na
            if self.pool.slack(_CHUNK):
                slack_from = 0
            elif self.pool.slack(na - last):
                slack_from = last
            self.model.layout(
                self.pool, self.book.coll[:na], self.book.debt[:na], slack_from=slack_from
            )
            self._set_mult(np.arange(na))
            return n
        for lo in range(0, na, _CHUNK):
            self._refresh(slice(lo, min(na, lo + _CHUNK)))
        return n

    def apply_position(self, row: PositionRow) -> str:
        """One position change (both views, absolute): updates the row and recomputes
        that account only. Returns the account address. (Before the first volatility
        input only the book changes; recompute() then raises MissingInput.)"""
        a = self.book.set(row)
        self._alloc(self.book.n_accounts)
        acc = np.array([a], np.int64)
        self._refresh(acc)
        if self.market.has_volatility:
            self._recompute_idx(acc)
        return self.book.account_address[a]

    def _refresh(self, acc: slice | NDArray[np.int64]) -> None:
        """Re-derive the pool rows, e-mode group and held-asset bits of `acc`."""
        r = self.model.rows(self.book.coll[acc], self.book.debt[acc])
        idx = np.arange(acc.start, acc.stop) if isinstance(acc, slice) else acc
        self.pool.place(np.asarray(idx, np.int64), r.count, r.cols, r.vals, self.book.n_accounts)
        self.pool.grp[acc] = r.grp
        self.pool.held[acc] = r.held
        self._set_mult(idx)

    def _set_mult(self, idx: NDArray[np.int64]) -> None:
        """The reputation multipliers of accounts `idx` (1 unless a feed set them)."""
        if self._mult:
            for i in np.asarray(idx).tolist():
                a = self.book.account_address[i]
                self.r_mult[i] = self._mult.get(a, 1.0)
                self.r_mmult[i] = self._mmult.get(a, 1.0)

    # -- kernel ---------------------------------------------------------------------
    def _prepare(self) -> None:
        self._cols = self.model.prepare(self.market)
        self._prepared = True

    def _risk(self, acc: NDArray[np.int64]) -> Totals:
        """Every total and the full tier of accounts `acc`, from the parameters of the
        last preparation (so they match what the last tick or event stored), with each
        account's reputation multiplier applied (risk/reputation.py `personalise`)."""
        r = self.model.totals(self.pool, acc, self._cols)
        if self._mult:
            r = personalise(r, self.r_mult[acc], self.risk_cfg, self.r_mmult[acc])
        return r

    def totals(self, acc: NDArray[np.int64]) -> Totals:
        """Every standard total of accounts `acc` as the last tick or event stored them."""
        if not self._prepared:
            self._prepare()
        return self._risk(acc)

    def fresh_totals(self, acc: NDArray[np.int64]) -> Totals:
        """`_risk` after preparing the current inputs (explanations)."""
        self._prepare()
        return self._risk(acc)

    def plans(self, acc: NDArray[np.int64], r: Totals) -> Plans:
        """Liquidation plans of accounts `acc` (their totals `r`): risk/liquidation.py,
        with each account's maintenance reputation multiplier (the plan the keeper's
        tier needs)."""
        mult = self.r_mmult[acc] if self._mult else None
        return plans(self.model, self.book, self.market, acc, r, mult=mult)

    def _store(self, sl: NDArray[np.int64], r: Totals) -> None:
        self.r_hf[sl] = r.hf
        self.r_bp[sl] = r.bp
        self.r_tier[sl] = r.tier
        self.r_degraded[sl] = r.degraded

    def _recompute_idx(self, acc: NDArray[np.int64]) -> None:
        if not self._prepared:
            self._prepare()
        self._store(acc, self._risk(acc))

    def _tick(self, n: int) -> None:
        p, c = self.pool, self._cols
        tick_kernel(
            p.a_start, p.a_cnt, p.pc, p.pv, p.held, n, c.tab, c.nlp, c.crv, c.cix,
            c.bad_bits, self.risk_cfg.warn_hf, self.r_hf, self.r_bp, self.r_tier,
            self.r_degraded,
        )  # fmt: skip

    def recompute(self) -> None:
        """Every account at once (after a price or volatility tick): one parallel pass
        writing HF, BP, tier and degraded in place (no plans: risk/liquidation.py); two
        with pools, the first only to find the book's liquidation queue."""
        n = self.book.n_accounts
        if self.market.liquidity.pools:
            # The queue is what the book would liquidate with no queue at all. Rated
            # with the queue it creates itself, it fed itself: a liquidatable account
            # deepened everyone's impact, more became liquidatable, until the sale left
            # the pools' bands and a quarter of the book sat at HF 0 for five steps
            # after a 4% ETH hour (2023-03 replay, step 23). One pass without the queue
            # picks the sellers, the second rates everyone behind them.
            self.market.set_liquidating(np.zeros(len(self.symbols)))
            self._pass(n)
            self.market.set_liquidating(self.liquidating(n))
        self._pass(n)
        self.computed_at = time.time()

    def _pass(self, n: int) -> None:
        self._prepare()
        self._alloc(n)
        self._tick(n)
        if self._mult:
            # The tick kernel knows no multiplier: rewrite the personalised rows.
            idx = np.flatnonzero((self.r_mult[:n] != 1.0) | (self.r_mmult[:n] != 1.0))
            p, c = self.pool, self._cols
            personal_tick_kernel(
                p.a_start, p.a_cnt, p.pc, p.pv, c.tab, c.nlp, c.crv, c.cix, idx, self.r_mult,
                self.r_mmult, self.risk_cfg.warn_hf, self.r_hf, self.r_bp, self.r_tier,
            )  # fmt: skip

    def liquidating(self, n: int) -> NDArray[np.float64]:
        """Units of each asset held as collateral by the first n accounts whose stored
        tier is liquidatable or insolvent: what the book's liquidators sell ahead of
        any one account (`recompute` calls it after a pass without any queue, so the
        queue never counts its own impact; risk.md "Liquidity weighting")."""
        sel = self.r_tier[:n] >= TIERS.index("liquidatable")
        return np.asarray(self.book.coll[:n][sel].sum(axis=0), np.float64)

    def liquidity_queue(self) -> dict[str, dict[str, float]]:
        """Per pool-priced asset the queue L_t of the last recompute against its sale
        curve (risk/liquidity.py `queue_state`): what a replay records per step."""
        return queue_state(
            self.model.curves(self.market), self.market.liquidity.liquidating,
            self.market.price, self.symbols,
        )  # fmt: skip

    def recompute_account(self, address: str) -> None:
        self._recompute_idx(np.array([self.index_of(address)], np.int64))

    def adopt(self, result: MarginResult, im_factor: float | None = None) -> int:
        """A pushed model's HF, BP and tier replace the stored ones of its accounts (so
        credit and the pusher carry them); degraded flags stay the ledger's. With
        reputation multipliers set and the model's `im_factor` given, each account's
        requirement is scaled by its multiplier first (risk/reputation.py)."""
        result.validate()
        if self._mult and im_factor is not None:
            result = personalise_result(
                result,
                self.r_mult[result.accounts],
                im_factor,
                self.risk_cfg.warn_hf,
                self.r_mmult[result.accounts],
            )
        acc = result.accounts
        self.r_hf[acc] = result.hf
        self.r_bp[acc] = result.bp
        self.r_tier[acc] = result.tier
        return int(acc.size)

    # -- reputation -------------------------------------------------------------------
    def set_reputation(
        self,
        params: Params,
        multipliers: Mapping[str, float],
        explain: Callable[[str], Reputation],
        maintenance: Mapping[str, float] | None = None,
    ) -> None:
        """Every account's reputation multipliers (risk/reputation.py), replacing the
        previous set: an account left out is neutral (1.0). `multipliers` the borrowing
        side, `maintenance` the maintenance side (None: max(m, 1), every penalty at
        once; given, an account left out of it is at 1). `explain(address)` gives the
        factors behind an account's multipliers (the same inputs, so the same numbers).
        The stored figures follow at the next recompute (tick or event).
        `prepare_reputation` then `install_reputation`, in one go."""
        self.install_reputation(self.prepare_reputation(params, multipliers, explain, maintenance))

    def prepare_reputation(
        self,
        params: Params,
        multipliers: Mapping[str, float],
        explain: Callable[[str], Reputation],
        maintenance: Mapping[str, float] | None = None,
    ) -> PreparedReputation:
        """The heavy, read-only half of `set_reputation` (checks, address normalisation,
        book indexes): it only reads the book (dict look-ups and the address list's
        length, atomic under the GIL), so the feed runs it in a worker thread while the
        event loop goes on applying events. Raises before anything is installed when
        a multiplier is outside the bounds, a maintenance multiplier outside [1,
        max(m, 1)] (so it is != 1 only where m > 1) or an address is malformed."""
        mult = {normalise_address(a): float(m) for a, m in multipliers.items() if m != 1.0}
        vals = np.fromiter(mult.values(), np.float64, len(mult))
        bad = np.flatnonzero(~((vals >= params.lower) & (vals <= params.upper)))
        if bad.size:
            addr = list(mult)[int(bad[0])]
            raise ValueError(f"reputation: multiplier {mult[addr]} of {addr} outside the bounds")
        mx = {normalise_address(a): float(m) for a, m in (maintenance or {}).items()}
        # Without maintenance multipliers: max(m, 1), every penalty at once; with them,
        # an account left out is at 1 (as one left out of `multipliers` is).
        if maintenance is None:
            mm = {a: max(m, 1.0) for a, m in mult.items()}
        else:
            mm = {a: mx.get(a, 1.0) for a in mult}
        mvals = np.fromiter(mm.values(), np.float64, len(mm))
        off = [a for a, x in mx.items() if x != 1.0 and a not in mult]
        bad = np.flatnonzero(~((mvals >= 1.0) & (mvals <= np.maximum(vals, 1.0))))
        if off or bad.size:
            addr = off[0] if off else list(mm)[int(bad[0])]
            raise ValueError(
                f"reputation: maintenance multiplier {mx[addr]} of {addr} outside "
                f"[1, max(m, 1)] (m = {mult.get(addr, 1.0)})"
            )
        n = len(self.book.account_address)
        get = self.book.account_index.get
        idx = np.fromiter((get(a, -1) for a in mult), np.int64, len(mult))
        known = (idx >= 0) & (idx < n)
        return PreparedReputation(
            params, explain, mult, n, idx[known], vals[known], mm, mvals[known]
        )

    def install_reputation(self, prep: PreparedReputation) -> None:
        """The quick half, on the event loop: vectorised writes of the prepared rows,
        plus the accounts the book gained since `prepare_reputation` (looked up one by
        one; a handful between two reads). At 1M accounts all personalised this is a
        few ms (bench/reputation.py) where the one-call version held the loop ~5 s."""
        self.reputation_params = prep.params
        self._explain_rep = prep.explain
        self._mult = prep.multipliers
        self._mmult = prep.maintenance
        n = self.book.n_accounts
        self._alloc(n)
        self.r_mult[:] = 1.0
        self.r_mmult[:] = 1.0
        self.r_mult[prep.idx] = prep.mult
        self.r_mmult[prep.idx] = prep.mmult
        if n > prep.n_accounts and prep.multipliers:
            # Many only when the book was loaded in between (start-up).
            get, mget = prep.multipliers.get, prep.maintenance.get
            tail = self.book.account_address[prep.n_accounts : n]
            self.r_mult[prep.n_accounts : n] = np.fromiter(
                (get(a, 1.0) for a in tail), np.float64, len(tail)
            )
            self.r_mmult[prep.n_accounts : n] = np.fromiter(
                (mget(a, 1.0) for a in tail), np.float64, len(tail)
            )

    def reputation_multipliers(self) -> NDArray[np.float64] | None:
        """A copy of every account's (borrowing) multiplier (book order); None when
        none is set."""
        return self.r_mult[: self.book.n_accounts].copy() if self._mult else None

    def reputation_maintenance(self) -> NDArray[np.float64] | None:
        """A copy of every account's maintenance multiplier (book order); None when
        none is set."""
        return self.r_mmult[: self.book.n_accounts].copy() if self._mult else None

    def reputation_of(self, address: str) -> Reputation | None:
        """The account's reputation; None when no feed ever set one (disabled)."""
        if self._explain_rep is None:
            return None
        return self._explain_rep(normalise_address(address))

    # -- credit ---------------------------------------------------------------------
    def record_consumption(self, address: str, chain: str, usd: float, ts: float) -> None:
        """A Borrowed/Withdrawn event consumed `usd` of credit on `chain` at `ts`."""
        c = self.credits.consumption_chain(address, chain, usd)
        self.credits.record_consumption(self.index_of(address, create=True), c, usd, ts)

    def allocate_credit(
        self, now: float | None = None, accounts: Sequence[str] | None = None
    ) -> None:
        """Split each account's BP into per-chain USD6 credit (risk/credit.py)."""
        now = time.time() if now is None else now
        n = self.book.n_accounts
        if accounts is None:
            for lo in range(0, n, _CHUNK):
                sl = slice(lo, min(n, lo + _CHUNK))
                acc = np.arange(sl.start, sl.stop, dtype=np.int64)
                self.credits.allocate(sl, acc, self.r_bp[sl], self.r_degraded[sl], now)
            return
        acc = np.array(sorted({self.index_of(a) for a in accounts}), np.int64)
        self.credits.allocate(acc, acc, self.r_bp[acc], self.r_degraded[acc], now)

    def set_previous_credit(self, address: str, credit_usd6: Mapping[str, int]) -> None:
        self.credits.set_previous(self.index_of(address, create=True), address, credit_usd6)

    def credit_of(self, address: str) -> dict[str, int]:
        return self.credits.credit_of(self.index_of(address))

    # -- queries ----------------------------------------------------------------------
    def index_of(self, address: str, create: bool = False) -> int:
        addr = normalise_address(address)
        a = self.book.account_index.get(addr)
        if a is None:
            if not create:
                raise KeyError(f"unknown account {addr}")
            a = self.book.add_account(addr)
            self._alloc(self.book.n_accounts)
        return a

    _idx = index_of

    def health(self, address: str) -> AccountHealth:
        """The account's stored HF, BP, tier and degraded flag (what the last tick or
        event wrote, and what credit and the pusher use) with its current totals."""
        a = self.index_of(address)
        return replace(
            self.standard_health(address),
            hf=float(self.r_hf[a]),
            bp=float(self.r_bp[a]),
            tier=TIERS[int(self.r_tier[a])],
            degraded=bool(self.r_degraded[a]),
            close_factor=float(close_factor(self.r_hf[a : a + 1], self.risk_cfg)[0]),
        )

    def standard_health(self, address: str) -> AccountHealth:
        """The standard cross-margin figures of one account, recomputed by the kernel
        from the last prepared inputs (with its reputation multiplier, when one is set):
        what `health()` returns unless a pushed model has replaced the stored HF, BP
        and tier (`adopt`)."""
        a = self.index_of(address)
        return AccountHealth.of(self.book.account_address[a], self._risk(np.array([a], np.int64)))

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

    def explain(self, address: str, now: float | None = None) -> dict[str, Any]:
        """Every number for one account, recomputed from the current inputs by the same
        kernels as recompute()/allocate_credit(), as a JSON-able dict (no NaN/inf)."""
        return explanation.explain(self, address, now)


__all__ = ["AccountHealth", "MissingInput", "PreparedReputation", "PriceInput", "RiskEngine"]
