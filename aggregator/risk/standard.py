"""Standard cross-margin model: DESIGN.md "Risk model, standard cross-margin mode".

Per asset and mode (standard, or e-mode of one correlation group) a column of the
pooled book with fixed parameters for the current prices and volatilities:
lt_eff = clip(1 - z*sigma*sqrt(h) - conc, 0, lt_cap), ltv_eff = clip(lt_eff - (lt - ltv),
0, ltv_cap), where conc is `impact` times the price impact of selling the account's
amount through the asset's pools after the book's liquidations (risk/impact.py), or
impact * value / depth_usd for an asset without a usable pool. HF = C_liq / debt,
BP = max(C_borrow - debt, 0), tier = (HF < warn) + (HF < 1) + (collateral value < debt).
docs/risk.md has the formulas and examples.

Invariants: an account is in e-mode of the first group that contains every asset it
owes (`rows`); its pairs are laid out in column order; every figure comes from the
kernels of risk/kernels.py, so the engine's tick, its per-account path and
`evaluate` (the model seam) agree bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from aggregator.config import AppConfig, AssetConfig, CorrelationGroup, RiskConfig
from aggregator.risk.book import PositionBook
from aggregator.risk.impact import COLS, EMPTY, impact_many, max_within
from aggregator.risk.kernels import accounts_kernel, layout_kernel
from aggregator.risk.liquidation import close_factor
from aggregator.risk.liquidity import AssetCurve, asset_curves
from aggregator.risk.market import MarketData, group_tables
from aggregator.risk.model import MarginResult, ModelSources
from aggregator.risk.pool import SLACK, Pool
from chains.units import TIERS


@dataclass(frozen=True)
class Columns:
    """Per-column kernel parameters for one set of prices and volatilities."""

    tab: NDArray[np.float64]  # p*lt_eff, p*ltv_eff, debt price, linear-up-to amount
    nlp: NDArray[np.float64]  # price, k (or impact), vol term, lt, ltv, lt - ltv, sold first
    bad_bits: int  # held-asset bits whose price is not ok (degraded)
    crv: NDArray[np.float64]  # the sale curves' rows, all assets (risk/impact.py)
    cix: NDArray[np.int64]  # per column: first row in crv and row count (0: no curve)


@dataclass
class Totals:
    """Every total and the full tier of a few accounts (aligned with their indices)."""

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


@dataclass(frozen=True)
class AccountHealth:
    """One account's standard figures (or the stored ones, see RiskEngine.health)."""

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

    @classmethod
    def of(cls, account: str, r: Totals) -> AccountHealth:
        """The first account of totals `r`."""
        return cls(
            account=account,
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


@dataclass
class Detail:
    """Per (account, asset) haircut breakdown for a few accounts (explanations)."""

    value: NDArray[np.float64]
    sigma: NDArray[np.float64]
    vol: NDArray[np.float64]
    conc: NDArray[np.float64]
    lt_cap: NDArray[np.float64]
    ltv_cap: NDArray[np.float64]
    lt_eff: NDArray[np.float64]
    ltv_eff: NDArray[np.float64]


@dataclass(frozen=True)
class Rows:
    """Pool pairs of some accounts (row-major, `count` each) and their derived bits."""

    grp: NDArray[np.int16]
    held: NDArray[np.int64]
    count: NDArray[np.int64]
    cols: NDArray[np.int64]
    vals: NDArray[np.float64]


class StandardModel:
    """Parameter tables and column layout of the standard model, and its kernels."""

    name = "standard"

    def __init__(
        self, assets: Sequence[AssetConfig], groups: Sequence[CorrelationGroup], risk: RiskConfig
    ) -> None:
        self.risk = risk
        self.groups = list(groups)
        T, G = len(assets), len(self.groups)
        index = {a.symbol: t for t, a in enumerate(assets)}
        self.member, self.group_ref = group_tables(self.groups, index)
        self.lt = np.array([a.lt for a in assets])
        self.ltv = np.array([a.ltv for a in assets])
        self.bonus = np.array([a.liquidation_bonus for a in assets])
        self.decimals = [a.decimals for a in assets]
        self.depths = [a.depth_usd for a in assets]
        self._curves: tuple[Any, list[AssetCurve]] | None = None
        self.k = np.array([risk.impact / a.depth_usd if a.depth_usd else 0.0 for a in assets])
        # Caps per mode: row 0 is standard, row g+1 is e-mode of group g (group caps on
        # its members, asset caps elsewhere).
        self.lt_tab = np.tile(self.lt, (G + 1, 1))
        self.ltv_tab = np.tile(self.ltv, (G + 1, 1))
        for g, grp in enumerate(self.groups):
            self.lt_tab[g + 1, self.member[g]] = grp.lt
            self.ltv_tab[g + 1, self.member[g]] = grp.ltv
        # Column layout: collateral columns, one per asset (standard caps) and one per
        # (group, member) pair (e-mode caps); then one debt column per asset.
        pairs = [(t, g) for g in range(G) for t in np.flatnonzero(self.member[g]).tolist()]
        cols = [(t, -1) for t in range(T)] + pairs
        self.col_asset = np.array([t for t, _ in cols], np.int64)
        self.col_group = np.array([g for _, g in cols], np.int64)
        self.std_col = np.array([cols.index((t, -1)) for t in range(T)], np.int64)
        self.em_cols = [(cols.index((t, g)), t, g) for t, g in pairs]
        self.ncoll = T + len(pairs)
        self.ncols = self.ncoll + T
        self.pow2 = np.left_shift(1, np.arange(T, dtype=np.int64))
        self.gbits = [int(self.member[g].astype(np.int64) @ self.pow2) for g in range(G)]

    @classmethod
    def from_config(cls, cfg: AppConfig, sources: ModelSources | None = None) -> StandardModel:
        return cls(cfg.assets, cfg.correlation_groups, cfg.risk)

    def bits(self, mask: NDArray[np.bool_]) -> NDArray[np.int64]:
        """Asset bit sets of boolean (accounts x assets) or (assets,) masks."""
        return np.asarray(mask.astype(np.int64) @ self.pow2)

    def rows(self, coll: NDArray[np.float64], debt: NDArray[np.float64]) -> Rows:
        """Mode, held-asset bits and pool pairs of accounts from their book amounts
        (only positions change these, prices never do)."""
        dbits = self.bits(debt > 0)
        grp = np.full(coll.shape[0], -1, np.int16)
        for g in range(len(self.groups)):
            ok = (dbits != 0) & ((dbits & ~self.gbits[g]) == 0) & (grp < 0)
            grp[ok] = g
        x = np.zeros((coll.shape[0], self.ncols))
        x[:, self.std_col] = coll
        x[:, self.ncoll :] = debt
        for j, t, g in self.em_cols:
            sel = grp == g
            x[sel, j] = coll[sel, t]
            x[sel, self.std_col[t]] = 0.0
        r, c = np.nonzero(x)  # row-major: each row's columns in column order
        count = np.bincount(r, minlength=x.shape[0])
        return Rows(grp, self.bits((coll > 0) | (debt > 0)), count, c, x[r, c])

    def layout(
        self,
        pool: Pool,
        coll: NDArray[np.float64],
        debt: NDArray[np.float64],
        *,
        slack_from: int,
    ) -> None:
        """A bulk load's layout of a fresh pool (nothing placed yet) for accounts
        0..len(coll)-1: what `rows` then `Pool.place` (and the group and held bits)
        give, accounts from `slack_from` on placed as a small batch (`SLACK` spare
        slots each, `Pool.slack`), in
        one compiled pass (kernels.py `layout_kernel`) without the dense accounts x
        columns matrix `rows` builds (0.5-0.7 s of a 1M-account start,
        docs/performance.md "Start-up"). Tested equal to that path, array for array."""
        if pool.end:
            raise ValueError("layout needs a fresh pool")
        n = coll.shape[0]
        slack = SLACK
        # Each nonzero amount is exactly one pair (its standard or its e-mode column).
        pairs = int(np.count_nonzero(coll)) + int(np.count_nonzero(debt))
        need = pairs + slack * max(0, n - slack_from)
        pool._grow(need)
        end = layout_kernel(
            np.ascontiguousarray(coll), np.ascontiguousarray(debt), n,
            np.array(self.gbits, np.int64).reshape(len(self.groups)), self.member,
            self.col_asset, self.col_group, self.ncoll, self.ncols, pool.a_start,
            pool.a_cnt, pool.a_cap, pool.grp, pool.held, pool.pc, pool.pv, 0, slack_from,
            slack,
        )  # fmt: skip
        if not pairs <= end <= need:
            raise AssertionError(f"pool layout: ends at {end}, {pairs} pairs written")
        pool.end = int(end)

    def curves(self, market: MarketData) -> list[AssetCurve]:
        """Per asset its sale curve through this round's pools at the current prices (or
        why the depth fallback applies); rebuilt only when pools or prices change."""
        liq = market.liquidity
        key = (liq.version, market.price.tobytes(), market.has_price.tobytes())
        if self._curves is None or self._curves[0] != key:
            curves = asset_curves(
                liq, market.price, market.has_price, market.asset_index, self.decimals,
                depths=self.depths,
            )  # fmt: skip
            self._curves = (key, curves)
        return self._curves[1]

    def concentration(self, market: MarketData, coll: NDArray[np.float64]) -> NDArray[np.float64]:
        """Concentration terms of accounts' collateral amounts coll (accounts x assets):
        the kernels' `concentration`, vectorised (the same numba arithmetic)."""
        conc = self.k * (coll * market.price)
        after = market.liquidity.liquidating
        for t, ac in enumerate(self.curves(market)):
            if ac.curve is None:
                continue
            q = np.ascontiguousarray(coll[:, t], np.float64)
            pi = np.empty(q.size)
            tab = ac.curve.table
            impact_many(q, after[t], tab, 0, tab.shape[0], market.price[t], pi)
            conc[:, t] = self.risk.impact * np.maximum(pi, 0.0)
        return conc

    def _curve_columns(
        self, market: MarketData, vol: NDArray[np.float64], lt: NDArray[np.float64],
        nlp: NDArray[np.float64], tab: NDArray[np.float64],
    ) -> tuple[NDArray[np.float64], NDArray[np.int64]]:  # fmt: skip
        """Point the collateral columns of pool-priced assets at their curves: their k
        becomes `impact`, and they stay linear up to the largest amount whose
        concentration term keeps 1 - h >= lt (+ the same 1e-12 margin as depth)."""
        cix = np.zeros((self.ncols, 2), np.int64)
        tables, row = [], 0
        after = market.liquidity.liquidating
        for t, ac in enumerate(self.curves(market)):
            if ac.curve is None:
                continue
            ct = ac.curve.table
            tables.append(ct)
            for c in np.flatnonzero(self.col_asset[: self.ncoll] == t).tolist():
                cix[c] = (row, ct.shape[0])
                nlp[c, 1] = self.risk.impact
                nlp[c, 6] = after[t]
                room = 1.0 - vol[c] - lt[c] - 1e-12
                if self.risk.impact > 0:
                    level = room / self.risk.impact
                    tab[c, 3] = max_within(level, after[t], ct, 0, ct.shape[0], market.price[t])
                else:
                    tab[c, 3] = np.inf
            row += ct.shape[0]
        crv = np.concatenate(tables) if tables else EMPTY.copy()
        return np.ascontiguousarray(crv), cix

    def prepare(self, market: MarketData) -> Columns:
        """Per-column parameters for the current prices and volatilities. Each column
        has fixed parameters, so the kernel needs only (column, amount) per position."""
        market.require_inputs()
        cfg = self.risk
        t, gi = self.col_asset, self.col_group + 1
        vol = cfg.z * market.sigma_tab[gi, t] * math.sqrt(cfg.horizon_days)
        lt, ltv = self.lt_tab[gi, t], self.ltv_tab[gi, t]
        p = market.price[t]
        nc = self.ncoll
        lte = np.clip(1.0 - vol, 0.0, lt)
        ltve = np.clip(lte - (lt - ltv), 0.0, ltv)
        tab = np.zeros((self.ncols, 4))
        tab[:nc, 0] = p * lte
        tab[:nc, 1] = p * ltve
        tab[nc:, 2] = market.price
        tab[:, 3] = np.inf
        # A depth-set column is exactly linear (lt_eff = lt) while 1 - vol - k*v stays
        # above lt; the 1e-12 margin dwarfs the rounding of that test, so an amount
        # near the edge takes the exact branch rather than a misjudged linear one.
        kp = self.k[t] * p
        nl = kp > 0
        tab[:nc, 3][nl] = (1.0 - vol[nl] - lt[nl] - 1e-12) / kp[nl]
        nlp = np.zeros((self.ncols, 7))
        nlp[:nc, :6] = np.stack([p, self.k[t], vol, lt, ltv, lt - ltv], axis=1)
        crv, cix = self._curve_columns(market, vol, lt, nlp, tab)
        bad = int(self.bits(market.bad))
        return Columns(np.ascontiguousarray(tab), np.ascontiguousarray(nlp), bad, crv, cix)

    def empty_columns(self) -> Columns:
        """All-zero parameters: what the kernels see before the first preparation."""
        return Columns(
            np.zeros((self.ncols, 4)), np.zeros((self.ncols, 7)), 0, np.zeros((0, COLS)),
            np.zeros((self.ncols, 2), np.int64),
        )  # fmt: skip

    def detail(
        self, market: MarketData, coll: NDArray[np.float64], grp: NDArray[np.int16]
    ) -> Detail:
        """Per (account, asset) breakdown for a few accounts."""
        gi = grp.astype(np.int64) + 1
        sq = math.sqrt(self.risk.horizon_days)
        value = coll * market.price
        sigma = market.sigma_tab[gi]
        vol = self.risk.z * sigma * sq
        conc = self.concentration(market, coll)
        lt_cap, ltv_cap = self.lt_tab[gi], self.ltv_tab[gi]
        lt_eff = np.clip(1.0 - (vol + conc), 0.0, lt_cap)
        ltv_eff = np.clip(lt_eff - (lt_cap - ltv_cap), 0.0, ltv_cap)
        return Detail(value, sigma, vol, conc, lt_cap, ltv_cap, lt_eff, ltv_eff)

    def totals(self, pool: Pool, acc: NDArray[np.int64], cols: Columns) -> Totals:
        """Every total and the full tier of accounts `acc` of `pool` under `cols`."""
        n = acc.size
        r = Totals(
            pool.grp[acc], np.empty(n), np.empty(n), np.empty(n), np.empty(n),
            np.empty(n), np.empty(n), np.empty(n, np.int8), np.empty(n, np.bool_),
            np.empty(n),
        )  # fmt: skip
        if n:
            accounts_kernel(
                pool.a_start, pool.a_cnt, pool.pc, pool.pv, pool.held,
                np.ascontiguousarray(acc, np.int64), cols.tab, cols.nlp, cols.crv, cols.cix,
                cols.bad_bits, self.risk.warn_hf, r.vtot, r.debt, r.cliq, r.cborrow, r.hf,
                r.bp, r.tier, r.degraded,
            )  # fmt: skip
            r.cf[:] = close_factor(r.hf, self.risk)
        return r

    def evaluate(
        self,
        book: PositionBook,
        market: MarketData,
        accounts: NDArray[np.int64],
        now: float | None = None,
    ) -> MarginResult:
        """The model seam: the standard figures of `accounts`, from a pool of their own
        laid out exactly as the engine lays each account out."""
        cols = self.prepare(market)
        r = self.rows(book.coll[accounts], book.debt[accounts])
        n = accounts.size
        pool = Pool(self.ncols)
        pool.resize(n)
        idx = np.arange(n, dtype=np.int64)
        pool.place(idx, r.count, r.cols, r.vals, n)
        pool.grp[:n], pool.held[:n] = r.grp, r.held
        t = self.totals(pool, idx, cols)
        parts = {"c_liq_usd": t.cliq, "c_borrow_usd": t.cborrow, "degraded": t.degraded}
        return MarginResult.of(
            accounts, equity_usd=t.vtot, requirement_usd=t.debt, hf=t.hf, bp=t.bp,
            tier=t.tier, parts=parts,
        )  # fmt: skip


__all__ = ["AccountHealth", "Columns", "Detail", "Rows", "StandardModel", "Totals"]
