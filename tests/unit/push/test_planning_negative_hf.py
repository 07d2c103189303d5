"""Portfolio and VaR health is equity / requirement, below 0 once equity is negative
(found by the replay: every push cycle of the chain failed on such an account). The
pusher plans HF 0 (the registry's "liquidate") with the insolvent tier, and NaN still
fails."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import numpy as np
import pytest

from aggregator.push.controller import OnchainArrays, TriggerRules
from aggregator.push.planning import plan_accounts
from aggregator.risk.view import LedgerView

RULES = TriggerRules(hf_deviation=0.02, credit_deviation=0.05, heartbeat_s=600)


@dataclass
class Ledger:
    hf: list[float]
    tier: list[int]
    addresses: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.addresses = [f"0x{i + 1:040x}" for i in range(len(self.hf))]
        self.account_index = {a: i for i, a in enumerate(self.addresses)}

    @property
    def n_accounts(self) -> int:
        return len(self.hf)

    def hf_array(self, n: int) -> np.ndarray:
        return np.array(self.hf[:n], np.float64)

    def tier_array(self, n: int) -> np.ndarray:
        return np.array(self.tier[:n], np.int8)

    def credit_array(self, chain: str, n: int) -> np.ndarray:
        return np.zeros(n, np.int64)

    def degraded_array(self, n: int) -> np.ndarray:
        return np.zeros(n, np.bool_)

    def unpriced_array(self, n: int) -> np.ndarray:
        return np.zeros(n, np.bool_)


def _plan(ledger: Ledger) -> dict[str, tuple[int, int]]:
    base = OnchainArrays()
    base.sync({}, None, ledger.account_index, ledger.addresses, ledger.n_accounts)
    planned = plan_accounts(
        cast(LedgerView, ledger), "alpha", base=base, onchain={},
        chain_ts=1_800_000_000, inflight={}, rules=RULES,
    )  # fmt: skip
    return {p.account: (p.entry.hf_1e9, p.entry.tier) for p in planned}


def test_negative_health_is_pushed_as_zero_and_insolvent() -> None:
    ledger = Ledger(hf=[1.5, -0.45, 0.8], tier=[0, 3, 2])
    got = _plan(ledger)
    a, b, c = ledger.addresses
    assert got[b] == (0, 3)
    assert got[a] == (1_500_000_000, 0) and got[c] == (800_000_000, 2)


def test_nan_health_still_fails() -> None:
    with pytest.raises(ValueError, match="hf must be"):
        _plan(Ledger(hf=[1.5, float("nan")], tier=[0, 0]))
