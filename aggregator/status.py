"""What the daemon says about itself: /readyz reasons and the gauges refreshed by the
`metrics` job.

Invariants:
- Ready means every reason list is empty: no fatal or syncing chain, no unhealthy task
  or job, a ledger lagging no more than `scheduler.ledger_lag_unready_s`, every price
  usable after a first refresh, no impossible stored position awaiting repair, and the
  pusher's own reasons.
- Read-only: it reports the parts' state and changes none of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aggregator.jobs import Jobs
from aggregator.ledger import Ledger
from aggregator.metrics import Metrics
from aggregator.supervisor import Supervisor
from chains.indexer import ChainIndexer
from chains.rpc import RpcClient
from oracles.service import OracleService
from oracles.types import PriceStatus


@dataclass(frozen=True)
class Status:
    indexers: Mapping[str, ChainIndexer]  # live: chains start and stop under their leases
    clients: Mapping[str, RpcClient]
    supervisor: Supervisor
    jobs: Jobs
    ledger: Ledger
    oracle: OracleService
    metrics: Metrics
    impossible: Callable[[], Mapping[str, set[str]]]
    tier_counts: Callable[[], Mapping[str, int]]
    pusher_reasons: Callable[[], list[str]]
    lag_limit_s: float
    # Alert webhooks that keep failing (aggregator/alerts/service.py).
    alert_reasons: Callable[[], list[str]] = list

    def readiness(self) -> tuple[bool, list[str]]:
        reasons = self._chain_reasons()
        reasons += [
            f"task {t.name}: {t.state} ({t.last_error})" for t in self.supervisor.unhealthy()
        ]
        reasons += self.jobs.unhealthy()
        lag = self.ledger.ledger_lag_s()
        if lag > self.lag_limit_s:
            # Indexed but not yet in the ledger: what the API shows lags the chain.
            reasons.append(
                f"ledger: {self.ledger.waiting()} accounts waiting for recompute, the oldest "
                f"change for {lag:.1f}s (limit {self.lag_limit_s:g}s)"
            )
        reasons += self._price_reasons()
        impossible = self.impossible()
        if impossible:
            reasons.append(
                "store: impossible stored positions awaiting repair from the chain: "
                + ", ".join(f"{c} {sorted(a)}" for c, a in sorted(impossible.items()))
            )
        reasons += self.pusher_reasons()
        reasons += self.alert_reasons()
        return not reasons, reasons

    def _chain_reasons(self) -> list[str]:
        reasons = []
        for name, indexer in self.indexers.items():
            st = indexer.status
            if st.fatal:
                reasons.append(f"chain {name}: FATAL {st.fatal_reason}")
            elif not st.caught_up:
                reasons.append(
                    f"chain {name}: syncing (indexed {st.indexed_block}, head {st.head_block})"
                )
        return reasons

    def _price_reasons(self) -> list[str]:
        if not self.ledger.prices_ready:
            return ["prices: no refresh completed yet"]
        return [
            f"price {sym}: {p.status} ({p.reason})"
            for sym, p in self.oracle.prices().items()
            if not p.usable
        ]

    async def refresh_metrics(self) -> None:
        """The `metrics` job: chain and endpoint gauges, tier counts, counters fed from
        the indexers' and RPC clients' own totals, and price age between refreshes (a
        price that stops refreshing must be seen ageing)."""
        m = self.metrics
        for name, indexer in self.indexers.items():
            st = indexer.status
            m.chain_head.labels(chain=name).set(st.head_block)
            m.chain_indexed.labels(chain=name).set(st.indexed_block)
            m.chain_confirmed.labels(chain=name).set(st.confirmed_block)
            m.chain_lag.labels(chain=name).set(max(0, st.head_block - st.indexed_block))
            m.chain_fatal.labels(chain=name).set(1 if st.fatal else 0)
            for ep in self.clients[name].status():
                m.endpoint_healthy.labels(chain=name, endpoint=ep.url).set(
                    1 if ep.state == "healthy" else 0
                )
        for tier, n in self.tier_counts().items():
            m.accounts.labels(tier=tier).set(n)
        self._counters()
        self._price_ages()

    def _counters(self) -> None:
        m = self.metrics
        for name, indexer in self.indexers.items():
            m.advance(m.chain_events, indexer.status.events_total, name)
            m.advance(m.reorgs, indexer.status.reorgs, name)
        for name, client in self.clients.items():
            for ep in client.status():
                m.advance(m.rpc_requests, ep.requests, name, ep.url)
                m.advance(m.rpc_errors, ep.errors, name, ep.url)

    def _price_ages(self) -> None:
        m = self.metrics
        now = time.time()
        for sym, p in self.oracle.prices().items():
            if p.timestamp is not None:
                m.price_age.labels(asset=sym).set(max(0.0, now - p.timestamp))
            for status in PriceStatus:
                m.price_status.labels(asset=sym, status=str(status)).set(
                    1 if p.status == status else 0
                )


__all__ = ["Status"]
