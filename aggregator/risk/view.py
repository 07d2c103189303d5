"""LedgerView: the read-only, typed query interface over the ledger.

The API, the pusher and the daemon read the ledger through this view, never through
the engine's arrays: what they may ask is listed here, and nothing they get back can
change the ledger (arrays are read-only numpy views, mappings are proxies).

Invariants: account indices are the book's (stable for the life of the process, new
accounts appended); vectorised reads cover the first `n` accounts; the figures are
the stored ones (last tick or event, or a pushed model's, see RiskEngine.adopt).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from aggregator.risk.book import SIDES
from aggregator.risk.engine import RiskEngine
from aggregator.risk.kernels import chain_unit_sums_kernel
from aggregator.risk.liquidity_view import (
    chain_curves,
    collateral_at_risk,
    liquidity_report,
    sale_impact,
)
from aggregator.risk.standard import AccountHealth
from aggregator.risk.whatif import LedgerSnapshot
from chains.units import TIERS


def _ro(a: NDArray[Any]) -> NDArray[Any]:
    v = a.view()
    v.flags.writeable = False
    return v


class LedgerView:
    """Read-only queries over one RiskEngine's ledger."""

    def __init__(self, engine: RiskEngine) -> None:
        self._eng = engine

    # -- the book's accounts and its vocabulary ------------------------------------
    @property
    def n_accounts(self) -> int:
        return self._eng.book.n_accounts

    @property
    def chains(self) -> tuple[str, ...]:
        return tuple(self._eng.chains)

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(self._eng.symbols)

    def has_asset(self, symbol: str) -> bool:
        return symbol in self._eng.book.asset_index

    def price_usd(self, symbol: str) -> float | None:
        """The asset's valuation price (its last valued one); None if never priced."""
        t = self._eng.book.asset_index[symbol]
        return float(self._eng.market.price[t]) if self._eng.market.has_price[t] else None

    def chain_position(self, chain: str) -> int:
        """Index of `chain` in `chains` (KeyError if unknown)."""
        return self._eng.credits.chain_index[chain]

    @property
    def addresses(self) -> Sequence[str]:
        """Account addresses by index (lower-case), live. Typed read-only rather than
        wrapped: the pusher walks it per account, where a wrapper's call would cost."""
        return self._eng.book.account_address

    def address(self, i: int) -> str:
        return self._eng.book.account_address[i]

    @property
    def account_index(self) -> Mapping[str, int]:
        """Lower-case address -> account index, a live read-only mapping."""
        return MappingProxyType(self._eng.book.account_index)

    def find_account(self, address: str) -> int | None:
        return self._eng.book.find_account(address)

    def head_amount(self, i: int, chain: str, asset: str, side: str) -> int:
        """The head view's raw amount of account i's position (0 if it has none)."""
        book = self._eng.book
        key = book.key(i, book.chain_index[chain], book.asset_index[asset], SIDES.index(side))
        r = book.lookup(key)
        return 0 if r < 0 else book.exact(r)[0]

    # -- one account's stored figures ------------------------------------------------
    def hf(self, i: int) -> float:
        return float(self._eng.r_hf[i])

    def bp(self, i: int) -> float:
        return float(self._eng.r_bp[i])

    def tier(self, i: int) -> str:
        return TIERS[int(self._eng.r_tier[i])]

    def degraded(self, i: int) -> bool:
        return bool(self._eng.r_degraded[i])

    def stored(self, i: int) -> tuple[float, float, str, list[int], bool]:
        """Account i's HF, BP, tier, credit per chain (USD6, `chains` order) and
        degraded flag in one call: the API's health route reads exactly these, per
        request, so it pays one lookup instead of five."""
        e = self._eng
        return (
            float(e.r_hf[i]),
            float(e.r_bp[i]),
            TIERS[int(e.r_tier[i])],
            e.credit[i].tolist(),
            bool(e.r_degraded[i]),
        )

    def credit_usd6(self, i: int) -> list[int]:
        """Account i's credit per chain (USD6, in `chains` order)."""
        return [int(v) for v in self._eng.credit[i].tolist()]

    def health(self, address: str) -> AccountHealth:
        return self._eng.health(address)

    def standard_health(self, address: str) -> AccountHealth:
        return self._eng.standard_health(address)

    def explain(self, address: str, now: float | None = None) -> dict[str, Any]:
        return self._eng.explain(address, now)

    def snapshot(self) -> LedgerSnapshot:
        """The live book, pool, standard model tables and market data for a what-if
        (risk/whatif.py), which only reads them. Use it between two ledger writes: in
        the daemon, synchronously on the event loop, where every write happens."""
        e = self._eng
        return LedgerSnapshot(
            e.book,
            e.pool,
            e.model,
            e.market,
            e.reputation_multipliers(),
            e.reputation_maintenance(),
        )

    # -- pool liquidity (risk/liquidity_view.py) -----------------------------------
    @property
    def asset_decimals(self) -> Sequence[int]:
        """Token decimals per asset, in `symbols` order (what sale curves are built with)."""
        return tuple(int(d) for d in self._eng.model.decimals)

    def liquidity_report(self) -> dict[str, Any]:
        """Per asset and chain: sellable within 1/2/5% impact vs the collateral the
        stored tiers put at risk, and the pools the guards set aside this round."""
        eng = self._eng
        curves = chain_curves(eng.market, eng.model.decimals)
        at_risk = collateral_at_risk(eng.book, eng.r_tier, eng.book.n_accounts)
        report = liquidity_report(curves, at_risk, eng.symbols, eng.chains, eng.market.price)
        ignored = {
            eng.symbols[t]: [{"chain": i.chain, "pool": i.pool, "reason": i.reason}
                             for i in ap.ignored]
            for t, ap in eng.market.liquidity.pools.items() if ap.ignored
        }  # fmt: skip
        return report | {"ignored": ignored}

    def sale_impact(self, sells: Mapping[tuple[str, str], float]) -> dict[str, Any]:
        """For the what-if: impact of selling sells[(asset, chain)] units per chain and
        per asset across every chain (risk/liquidity_view.py `sale_impact`)."""
        eng = self._eng
        for asset, chain in sells:
            if asset not in eng.book.asset_index:
                raise KeyError(f"sells: unknown asset {asset!r}")
            if chain not in eng.book.chain_index:
                raise KeyError(f"sells.{asset}: unknown chain {chain!r}")
        return sale_impact(chain_curves(eng.market, eng.model.decimals), sells)

    # -- many accounts at once (read-only views) -----------------------------------
    def hf_array(self, n: int) -> NDArray[np.float64]:
        return _ro(self._eng.r_hf[:n])

    def bp_array(self, n: int) -> NDArray[np.float64]:
        return _ro(self._eng.r_bp[:n])

    def tier_array(self, n: int) -> NDArray[np.int8]:
        return _ro(self._eng.r_tier[:n])

    def degraded_array(self, n: int) -> NDArray[np.bool_]:
        return _ro(self._eng.r_degraded[:n])

    def credit_array(self, chain: str, n: int) -> NDArray[np.int64]:
        """Credit (USD6) on `chain` of the first n accounts."""
        return _ro(self._eng.credit[:n, self.chain_position(chain)])

    def unpriced_array(self, n: int) -> NDArray[np.bool_]:
        """Which of the first n accounts hold an asset without any price."""
        return _ro(self._eng.unpriced_accounts(n))

    def tier_counts(self) -> dict[str, int]:
        return self._eng.tier_counts()

    # -- values for the risk history (aggregator/history) ----------------------------
    def values_usd(self, n: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(collateral value, debt value) in USD of the first n accounts: counted
        amounts (summed over chains) at the last good prices."""
        book, price = self._eng.book, self._eng.market.price
        return (
            np.einsum("ij,j->i", book.coll[:n], price),
            np.einsum("ij,j->i", book.debt[:n], price),
        )

    def values_usd_of(
        self, idx: NDArray[np.int64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(collateral value, debt value) in USD of accounts `idx` (as `values_usd`)."""
        book, price = self._eng.book, self._eng.market.price
        return book.coll[idx] @ price, book.debt[idx] @ price

    def chain_values_usd(self) -> dict[str, tuple[float, float]]:
        """chain -> (collateral value, debt value) in USD over the whole book."""
        book, price = self._eng.book, self._eng.market.price
        na = book.n_assets
        # Amounts summed per (chain, side, asset) first, priced after: no per-row gather
        # (one compiled pass over the rows; the same sums as a bincount of the slots).
        units = chain_unit_sums_kernel(
            book.r_chain, book.r_side, book.r_asset, book.r_amount, book.n, book.n_chains, na
        )
        usd = units.reshape(book.n_chains, 2, na) @ price
        return {c: (float(usd[i, 0]), float(usd[i, 1])) for i, c in enumerate(book.chains)}

    def standard_debt_usd(self, idx: NDArray[np.int64]) -> NDArray[np.float64]:
        """The standard model's requirement (its HF denominator, the haircut-free debt)
        of accounts `idx`, from the last preparation's parameters."""
        return np.asarray(self._eng.totals(idx).debt, np.float64)

    def accounts_by_tier(
        self, tier: str, limit: int = 100, cursor: int = 0
    ) -> tuple[list[str], int | None]:
        return self._eng.accounts_by_tier(tier, limit, cursor)


__all__ = ["LedgerView"]
