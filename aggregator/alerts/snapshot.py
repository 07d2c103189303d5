"""SnapshotCollector: reads the daemon's parts into an `alerts.rules.Snapshot`.

Invariants:
- Read-only: every part is read through its public view (LedgerView, price and chain
  status callables), never changed.
- Tier moves are found by comparing the ledger's tier array with the previous
  snapshot's (vectorised); the first snapshot and new accounts have no move.
- An update "landed" when the pusher's confirmed count rose; the clock of a chain
  whose pusher never landed anything starts at the collector's creation (a fresh start
  is not an alert before `max_age_s`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from aggregator.alerts.rules import ChainFacts, LeaseFacts, Snapshot, TierMove
from aggregator.risk.view import LedgerView
from chains.indexer import ChainIndexer
from oracles.types import Price


class SnapshotCollector:
    def __init__(
        self,
        view: LedgerView,
        *,
        prices: Callable[[], Mapping[str, Price]],
        indexers: Mapping[str, ChainIndexer],
        pusher: Callable[[str], Mapping[str, Any]],
        leases: Callable[[str], Mapping[str, Any] | None],
        chains: Sequence[str],
        ready: Callable[[], bool],
        keeper_min_eth: float,
        checksum: Callable[[str], str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.view = view
        self._prices = prices
        self._indexers = indexers  # live: chains start and stop under their leases
        self._pusher = pusher
        self._leases = leases
        self._chains = list(chains)
        self._ready = ready
        self._keeper_min_eth = keeper_min_eth
        self._checksum = checksum
        self._clock = clock
        self._tiers: np.ndarray | None = None
        self._landed: dict[str, tuple[int, float]] = {}
        self._held: set[str] = set()
        self._started = clock()

    def take(self, watched: set[str]) -> Snapshot:
        now = self._clock()
        moves, tiers = self._tier_moves(watched)
        leases, lost = self._lease_facts()
        return Snapshot(
            now=now,
            prices=self._price_facts(),
            chains={c: self._chain_facts(c, now) for c in self._chains},
            tier_moves=moves,
            account_tiers=tiers,
            leases=leases,
            lost_leases=lost,
            keeper_min_eth=self._keeper_min_eth,
        )

    def _price_facts(self) -> dict[str, tuple[str, str]]:
        if not self._ready():
            return {}  # before the first refresh every price is "unavailable": no news
        return {sym: (str(p.status), p.reason or "") for sym, p in self._prices().items()}

    def _tier_moves(self, watched: set[str]) -> tuple[list[TierMove], dict[str, int]]:
        if not self._ready():
            return [], {}
        view = self.view
        n = view.n_accounts
        tier = np.array(view.tier_array(n), np.int8)
        prev = self._tiers
        self._tiers = tier
        moves: list[TierMove] = []
        if prev is not None:
            m = min(prev.size, n)
            idx = np.flatnonzero(tier[:m] > prev[:m])
            if idx.size:
                coll, debt = view.values_usd_of(idx)
                hf = view.hf_array(n)[idx]
                for j, i in enumerate(idx.tolist()):
                    address = self._checksum(view.address(i))
                    moves.append(
                        TierMove(
                            address, int(prev[i]), int(tier[i]),
                            float(coll[j]), float(debt[j]), float(hf[j]),
                        )
                    )  # fmt: skip
        tiers: dict[str, int] = {}
        for address in watched | {mv.account for mv in moves}:
            at = view.find_account(address)
            if at is not None and at < n:
                tiers[address] = int(tier[at])
        return moves, tiers

    def _chain_facts(self, chain: str, now: float) -> ChainFacts:
        indexer = self._indexers.get(chain)
        st = None if indexer is None else indexer.status
        push = self._pusher(chain)
        landed_age = bal = None
        if push.get("enabled"):
            confirmed = int((push.get("sender") or {}).get("confirmed_total", 0))
            last = self._landed.get(chain)
            if last is None:
                last = (confirmed, self._started)
            elif confirmed > last[0]:
                last = (confirmed, now)
            self._landed[chain] = last
            landed_age = now - last[1]
            bal = push.get("keeper_balance_eth")
        return ChainFacts(
            head=0 if st is None else st.head_block,
            indexed=0 if st is None else st.indexed_block,
            fatal=False if st is None else bool(st.fatal),
            landed_age_s=landed_age,
            keeper_balance_eth=None if bal is None else float(bal),
        )

    def _lease_facts(self) -> tuple[dict[str, LeaseFacts], frozenset[str]]:
        facts: dict[str, LeaseFacts] = {}
        for chain in self._chains:
            view = self._leases(chain)
            if view is None:
                continue
            for kind in ("index", "push"):
                row = view[kind]
                facts[row["lease"]] = LeaseFacts(
                    held_here=bool(row["held_here"]), live=bool(row["live"]), holder=row["holder"]
                )
        held = {name for name, f in facts.items() if f.held_here}
        lost = frozenset(self._held - held)
        self._held = held
        return facts, lost
