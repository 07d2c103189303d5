"""Prometheus metrics, one registry per daemon (tests run several daemons in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.task_up = Gauge("agg_task_up", "1 while a supervised task runs", ["task"], registry=r)
        self.task_failures = Counter(
            "agg_task_failures", "Crashes of supervised tasks", ["task"], registry=r
        )
        self.chain_head = Gauge("agg_chain_head_block", "Chain head seen", ["chain"], registry=r)
        self.chain_indexed = Gauge(
            "agg_chain_indexed_block", "Last indexed block", ["chain"], registry=r
        )
        self.chain_confirmed = Gauge(
            "agg_chain_confirmed_block", "Last confirmed block", ["chain"], registry=r
        )
        self.chain_lag = Gauge("agg_chain_lag_blocks", "head - indexed", ["chain"], registry=r)
        self.chain_fatal = Gauge(
            "agg_chain_fatal",
            "1 when a chain stopped (deep reorg, wrong chain id)",
            ["chain"],
            registry=r,
        )
        self.chain_events = Counter(
            "agg_chain_events", "Vault events indexed", ["chain", "kind"], registry=r
        )
        self.reorgs = Counter("agg_chain_reorgs", "Reorgs handled", ["chain"], registry=r)
        self.reconcile_mismatch = Counter(
            "agg_reconcile_mismatches", "Stored vs on-chain mismatches", ["chain"], registry=r
        )
        self.endpoint_healthy = Gauge(
            "agg_rpc_endpoint_healthy", "1 healthy, 0 demoted", ["chain", "endpoint"], registry=r
        )
        self.price = Gauge("agg_price_usd", "Median price", ["asset"], registry=r)
        self.price_ok = Gauge(
            "agg_price_ok", "1 when the asset price status is ok", ["asset"], registry=r
        )
        self.price_age = Gauge("agg_price_age_seconds", "Age of the price", ["asset"], registry=r)
        self.source_failures = Counter(
            "agg_price_source_failures",
            "Rejected observations",
            ["asset", "source", "reason"],
            registry=r,
        )
        self.accounts = Gauge("agg_accounts", "Accounts by tier", ["tier"], registry=r)
        self.recompute_seconds = Histogram(
            "agg_recompute_seconds",
            "Full book recompute time",
            registry=r,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10),
        )
        self.backfill_blocks_per_s = Gauge(
            "agg_backfill_blocks_per_second", "Backfill speed", ["chain"], registry=r
        )
        self.backfill_eta_s = Gauge(
            "agg_backfill_eta_seconds", "Backfill ETA", ["chain"], registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
