"""SnapshotCollector over a real ledger: tier moves found by comparing tier arrays
(none on the first snapshot), the watched accounts' current tiers, the pusher's landed
clock, keeper balance, chain lag and lost leases."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from aggregator.alerts.config import AccountTierDownRule
from aggregator.alerts.snapshot import SnapshotCollector
from aggregator.alerts.state import AlertBook
from aggregator.api import checksum_address
from aggregator.risk import PositionRow, PriceInput
from aggregator.risk.view import LedgerView
from chains.units import TIERS
from tests.unit.risk.helpers import ADDRS, CHAINS, SYMBOLS, engine

E18 = 10**18
PRICES = dict(zip(SYMBOLS, [1.0, 1.0, 60_000.0, 3_000.0, 3_500.0, 3_300.0], strict=True))
A, B = ADDRS[0], ADDRS[1]


class Parts:
    def __init__(self) -> None:
        self.now = 100.0
        self.confirmed = 0
        self.balance = 1.0
        self.status = SimpleNamespace(head_block=50, indexed_block=50, fatal=False)
        self.lease: dict[str, Any] = {
            "index": {"lease": "index:ethereum", "held_here": True, "live": True, "holder": "me"},
            "push": {"lease": "push:ethereum", "held_here": False, "live": True, "holder": "x"},
        }

    def pusher(self, chain: str) -> dict[str, Any]:
        if chain != CHAINS[0]:
            return {"enabled": False}
        return {
            "enabled": True,
            "keeper_balance_eth": self.balance,
            "sender": {"confirmed_total": self.confirmed},
        }

    def leases(self, chain: str) -> dict[str, Any] | None:
        return self.lease if chain == CHAINS[0] else None


def test_collector() -> None:
    eng = engine()
    eng.set_prices({s: PriceInput(p) for s, p in PRICES.items()})
    eng.set_volatility({s: 0.02 for s in SYMBOLS})
    eng.load_positions(
        [
            PositionRow(A, CHAINS[0], "WETH", "collateral", 100 * E18, 100 * E18),
            PositionRow(A, CHAINS[1], "USDC", "debt", 200_000 * 10**6, 200_000 * 10**6),
            PositionRow(B, CHAINS[1], "USDC", "collateral", 10**9, 10**9),
        ]
    )
    eng.recompute()
    parts = Parts()
    view = LedgerView(eng)
    col = SnapshotCollector(
        view,
        prices=lambda: {},
        indexers={CHAINS[0]: SimpleNamespace(status=parts.status)},
        pusher=parts.pusher,
        leases=parts.leases,
        chains=CHAINS,
        ready=lambda: True,
        keeper_min_eth=0.05,
        checksum=checksum_address,
        clock=lambda: parts.now,
    )
    first = col.take(set())
    assert first.tier_moves == [] and first.lost_leases == frozenset()
    assert first.chains[CHAINS[0]].landed_age_s == 0.0
    assert first.chains[CHAINS[1]].landed_age_s is None
    assert view.tier(view.find_account(A)) == "healthy"  # type: ignore[arg-type]

    # WETH -40%: A goes from healthy to a worse tier; B does not move.
    eng.set_prices({"WETH": PriceInput(1_800.0)})
    eng.recompute()
    parts.now, parts.balance = 400.0, 0.01
    parts.status.head_block = 80
    parts.lease["index"] = {**parts.lease["index"], "held_here": False, "live": False}
    snap = col.take(set())
    (move,) = snap.tier_moves
    assert move.account == checksum_address(A) and move.from_tier == 0 and move.to_tier >= 2
    assert abs(move.collateral_usd - 180_000.0) < 1e-6 and abs(move.debt_usd - 200_000.0) < 1e-6
    assert snap.account_tiers == {checksum_address(A): move.to_tier}
    alpha = snap.chains[CHAINS[0]]
    assert (alpha.head, alpha.indexed, alpha.landed_age_s, alpha.keeper_balance_eth) == (
        80, 50, 300.0, 0.01,
    )  # fmt: skip
    assert snap.lost_leases == frozenset({"index:ethereum"})

    # The alert book asks for its watched account's tier on every later snapshot.
    book = AlertBook([AccountTierDownRule(name="big", min_usd=100_000)])
    (fired,) = book.apply(snap)
    assert fired.alert.details["to_tier"] == TIERS[move.to_tier]
    parts.confirmed, parts.now = 1, 500.0  # an update landed
    later = col.take(book.accounts_watched())
    assert later.tier_moves == [] and later.account_tiers == {checksum_address(A): move.to_tier}
    assert later.chains[CHAINS[0]].landed_age_s == 0.0
    assert later.lost_leases == frozenset()
    eng.set_prices({"WETH": PriceInput(3_000.0)})
    eng.recompute()
    (resolved,) = book.apply(col.take(book.accounts_watched()))
    assert resolved.status == "resolved"
