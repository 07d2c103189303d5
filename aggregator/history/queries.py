"""The answers of the history routes (aggregator/api_history.py) from the store.

Read-only. HF values that are infinite (no debt) are null with a `*_text` beside them,
as in the account views; tiers are names (chains.units.TIERS).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from aggregator.api import checksum_address
from aggregator.api_history import Window
from aggregator.history.config import HistoryConfig
from aggregator.store.history_repo import HistoryRepo, StoredAccountPoint
from chains.units import TIERS


def _hf(value: float) -> tuple[float | None, str]:
    if math.isfinite(value):
        return value, f"{value:.6f}"
    return None, "inf" if value > 0 else "-inf"


def account_point(p: StoredAccountPoint) -> dict[str, Any]:
    hf, hf_text = _hf(p.hf)
    hf_min, hf_min_text = _hf(p.hf_min)
    return {
        "t": p.t,
        "samples": p.samples,
        "hf": hf,
        "hf_text": hf_text,
        "hf_min": hf_min,
        "hf_min_text": hf_min_text,
        "bp_usd": p.bp,
        "tier": TIERS[p.tier],
        "tier_worst": TIERS[p.tier_worst],
        "collateral_usd": p.collateral_usd,
        "debt_usd": p.debt_usd,
        "requirement_usd": {
            "standard": p.req_standard,
            "portfolio": p.req_portfolio,
            "var": p.req_var,
        },
    }


class HistoryQueries:
    """The daemon's `HistoryApi`."""

    def __init__(
        self,
        cfg: HistoryConfig,
        repo: HistoryRepo,
        *,
        in_book: Callable[[str], bool],
        model: str,
    ) -> None:
        self._levels = [(lv.step_s, lv.keep_s) for lv in cfg.levels]
        self.repo = repo
        self._in_book = in_book
        self.model = model

    def levels(self) -> Sequence[tuple[int, int]]:
        return self._levels

    async def system(self, window: Window) -> dict[str, Any]:
        points = await self.repo.system_points(window.step_s, window.start, window.end)
        return {
            "resolution_s": window.step_s,
            "from": window.start,
            "to": window.end,
            "points": points,
        }

    async def account(self, address: str, window: Window) -> dict[str, Any] | None:
        rows = await self.repo.account_points(window.step_s, address, window.start, window.end)
        if not rows and not self._in_book(address) and not await self.repo.has_account(address):
            return None
        return {
            "account": checksum_address(address),
            "resolution_s": window.step_s,
            "from": window.start,
            "to": window.end,
            "model": self.model,
            "points": [account_point(p) for p in rows],
        }
