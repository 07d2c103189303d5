"""Liquidation sizing: close factor and liquidation plans (docs/risk.md, "Liquidation").

An account with HF < 1 may be liquidated up to its close factor (`full_close_hf`
and below: all of it). Its plan repays the least debt that brings HF back to
`target_hf` by seizing one collateral (chain, asset):

    R = (target*D - C_liq) / (target - (1+bonus)*lt_eff)

feasible when the denominator is > 0 and R fits under both the close factor cap and
that holding's value / (1+bonus). The smallest feasible R wins (ties: larger holding
on that chain, then config order of chain, then asset); none -> a full liquidation.

With a reputation maintenance multiplier mm (risk/reputation.py; >= 1, max(m, 1) with
every penalty at once) C_liq is the personalised one and lt_eff the holding's personal
one, 1 - mm (1 - lt_eff) (kernels.py `personal_lt`, the one place), so the plan
restores the HF the keeper is pushed; mm = 1 (a reward never touches the liquidation
side) is the base plan bit for bit.

Another pushed model (portfolio, VaR) has no closed form: its plans are searched on
its own evaluation by risk/model_plans.py (the same close factor cap and ties; there
the debt row repaid, the candidate chain's largest or, on a chain without debt, the
largest anywhere (a cross-chain seize), caps R).

Invariants: pure functions of the book, the market data and the standard model's
tables; nothing stores a plan (each is computed when asked for), so the tick never
pays for them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from aggregator.config import RiskConfig
from aggregator.risk.book import PositionBook
from aggregator.risk.kernels import plan_kernel
from aggregator.risk.market import MarketData


class Caps(Protocol):
    """What sizing reads of a margin model's parameters (StandardModel has them)."""

    @property
    def risk(self) -> RiskConfig: ...
    def concentration(
        self, market: MarketData, coll: NDArray[np.float64]
    ) -> NDArray[np.float64]: ...
    @property
    def bonus(self) -> NDArray[np.float64]: ...
    @property
    def lt_tab(self) -> NDArray[np.float64]: ...


class AccountTotals(Protocol):
    """What sizing reads of the accounts' totals (standard.Totals has them). Protocols,
    so liquidation does not import the model that calls its close_factor."""

    @property
    def grp(self) -> NDArray[np.int16]: ...
    @property
    def debt(self) -> NDArray[np.float64]: ...
    @property
    def cliq(self) -> NDArray[np.float64]: ...
    @property
    def hf(self) -> NDArray[np.float64]: ...


PLAN_NONE, PLAN_PARTIAL, PLAN_FULL = 0, 1, 2


def close_factor(hf: NDArray[np.float64], risk: RiskConfig) -> NDArray[np.float64]:
    """Share of the debt a liquidator may repay at once, per account."""
    return np.where(hf < 1.0, np.where(hf < risk.full_close_hf, 1.0, risk.close_factor), 0.0)


@dataclass(frozen=True)
class Plans:
    """Plans of some accounts: kind (PLAN_*), repay in USD, chain and asset (-1: none)."""

    kind: NDArray[np.int8]
    repay: NDArray[np.float64]
    chain: NDArray[np.int16]
    asset: NDArray[np.int16]


@dataclass(frozen=True)
class Holdings:
    """What a plan may seize of some accounts: their book rows grouped by account
    (`lengths` each, in the accounts' order), the book's row columns they index, and the
    accounts' collateral summed over chains (one row per account, for the concentration
    term). A scenario passes rows without the frozen ones and its own sums."""

    rows: NDArray[np.int64]
    lengths: NDArray[np.int64]
    side: NDArray[np.int8]
    amount: NDArray[np.float64]
    asset: NDArray[np.int16]
    chain: NDArray[np.int16]
    coll: NDArray[np.float64]


def plans(
    model: Caps,
    book: PositionBook,
    market: MarketData,
    acc: NDArray[np.int64],
    r: AccountTotals,
    *,
    mult: NDArray[np.float64] | None = None,
) -> Plans:
    """Liquidation plans for accounts `acc` (sorted; `r` their totals, aligned; `mult`
    their maintenance reputation multipliers, aligned, None: all 1)."""
    liq = np.nonzero(r.hf < 1.0)[0]
    la = acc[liq]
    rows, lengths = book.rows_with_lengths(la) if liq.size else (np.zeros(0, np.int64),) * 2
    held = Holdings(
        rows, lengths, book.r_side, book.r_amount, book.r_asset, book.r_chain, book.coll[la]
    )
    return plans_of(model, market, held, r, mult=mult)


def plans_of(
    model: Caps,
    market: MarketData,
    held: Holdings,
    r: AccountTotals,
    *,
    mult: NDArray[np.float64] | None = None,
) -> Plans:
    """Liquidation plans of accounts with totals `r`; `held` covers, in order, those of
    them with HF < 1; `mult` the accounts' maintenance reputation multipliers (the
    liquidation side: risk/reputation.py; aligned with `r`; None: all 1)."""
    n = r.hf.size
    kind = np.full(n, PLAN_NONE, np.int8)
    repay = np.zeros(n)
    chain = np.full(n, -1, np.int16)
    asset = np.full(n, -1, np.int16)
    liq = np.nonzero(r.hf < 1.0)[0]
    if liq.size == 0:
        return Plans(kind, repay, chain, asset)
    kind[liq] = PLAN_FULL
    repay[liq] = r.debt[liq]
    cfg = model.risk
    vol_tab = cfg.z * market.sigma_tab * math.sqrt(cfg.horizon_days)
    p_repay, p_chain, p_asset = repay[liq], chain[liq], asset[liq]
    # Plan i reads row i of the concentration terms (from held.coll's rows).
    local = np.arange(liq.size, dtype=np.int64)
    found = plan_kernel(
        local, r.grp[liq], r.debt[liq], r.cliq[liq], close_factor(r.hf[liq], cfg), held.rows,
        held.lengths, held.side, held.amount, held.asset, held.chain,
        np.ascontiguousarray(model.concentration(market, held.coll)), market.price,
        model.bonus, vol_tab, model.lt_tab, cfg.target_hf, p_repay, p_chain, p_asset,
        np.ones(liq.size) if mult is None else np.ascontiguousarray(mult[liq], np.float64),
    )  # fmt: skip
    kind[liq[found]] = PLAN_PARTIAL
    repay[liq], chain[liq], asset[liq] = p_repay, p_chain, p_asset
    return Plans(kind, repay, chain, asset)


__all__ = [
    "PLAN_FULL",
    "PLAN_NONE",
    "PLAN_PARTIAL",
    "Holdings",
    "Plans",
    "close_factor",
    "plans",
    "plans_of",
]
