"""Prometheus metrics, one registry per daemon (tests run several daemons in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        # Registration order is the order of the /metrics output: keep the groups so.
        self._chain_metrics(r)
        self._ledger_metrics(r)
        self._api_metrics(r)
        self._totals: dict[tuple[int, tuple[str, ...]], float] = {}
        self._pusher_metrics(r)
        self._volatility_metrics(r)
        self._cluster_metrics(r)
        self._history_alert_metrics(r)
        self._liquidity_metrics(r)
        self._snapshot_metrics(r)

    def _chain_metrics(self, r: CollectorRegistry) -> None:
        """Supervised tasks, indexers, RPC endpoints."""
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
            "agg_chain_events", "Vault events indexed", ["chain"], registry=r
        )
        self.reorgs = Counter("agg_chain_reorgs", "Reorgs handled", ["chain"], registry=r)
        self.reconcile_mismatch = Counter(
            "agg_reconcile_mismatches", "Stored vs on-chain mismatches", ["chain"], registry=r
        )
        self.endpoint_healthy = Gauge(
            "agg_rpc_endpoint_healthy", "1 healthy, 0 demoted", ["chain", "endpoint"], registry=r
        )

    def _liquidity_metrics(self, r: CollectorRegistry) -> None:
        """Pools the guards set aside this round, assets on the depth_usd fallback."""
        self.pool_ignored = Gauge(
            "agg_pool_ignored",
            "1 for a pool set aside this round (stale, price_deviation, liquidity_moved, "
            "no_oracle_price)",
            ["asset", "chain", "pool", "reason"],
            registry=r,
        )
        self.liquidity_fallback = Gauge(
            "agg_liquidity_fallback",
            "1 when an asset with configured pools uses depth_usd this round",
            ["asset"],
            registry=r,
        )

    def _ledger_metrics(self, r: CollectorRegistry) -> None:
        """Prices, accounts, the ledger's recompute, backfill progress."""
        self.price = Gauge("agg_price_usd", "Median price", ["asset"], registry=r)
        self.price_ok = Gauge(
            "agg_price_ok", "1 when the asset price status is ok", ["asset"], registry=r
        )
        self.price_capped = Gauge(
            "agg_price_capped",
            "1 while an LST's growth cap fails its guard (valued at the lower of market "
            "and live rate; credit may not rise)",
            ["asset"],
            registry=r,
        )
        self.price_age = Gauge("agg_price_age_seconds", "Age of the price", ["asset"], registry=r)
        self.source_failures = Counter(
            "agg_price_source_failures",
            "Rejected observations",
            ["asset", "source", "reason"],
            registry=r,
        )
        self.accounts = Gauge("agg_accounts", "Accounts by tier", ["tier"], registry=r)
        self.ledger_lag = Gauge(
            "agg_ledger_lag_seconds",
            "Age of the oldest indexed change not yet in the ledger (0: none)",
            registry=r,
        )
        self.claims_pending = Gauge(
            "agg_seize_claims_pending",
            "Cross-chain seize claims held in the ledger, not settled on any chain yet",
            registry=r,
        )
        self.vouchers = Counter(
            "agg_seize_vouchers",
            "POST /v1/claims answers by outcome (signed, not_final, refused)",
            ["outcome"],
            registry=r,
        )
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

    def _api_metrics(self, r: CollectorRegistry) -> None:
        """API latency, RPC errors, price status (fed by api.py and the metrics job)."""
        self.api_request_seconds = Histogram(
            "agg_api_request_seconds",
            "API request latency by route template, method and status",
            ["route", "method", "status"],
            registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.rpc_requests = Counter(
            "agg_rpc_requests", "RPC requests sent", ["chain", "endpoint"], registry=r
        )
        self.rpc_errors = Counter(
            "agg_rpc_errors", "RPC requests that failed", ["chain", "endpoint"], registry=r
        )
        self.price_status = Gauge(
            "agg_price_status",
            "1 for the asset's current price status",
            ["asset", "status"],
            registry=r,
        )

    def _pusher_metrics(self, r: CollectorRegistry) -> None:
        """HealthRegistry pusher (aggregator/push/service.py, docs/pusher.md)."""
        self.pusher_sent = Counter(
            "agg_pusher_pushes_sent", "Update batches broadcast", ["chain"], registry=r
        )
        self.pusher_failed = Counter(
            "agg_pusher_pushes_failed", "Update batches not sent", ["chain"], registry=r
        )
        self.pusher_cycle_failures = Counter(
            "agg_pusher_cycle_failures", "Failed push cycles", ["chain"], registry=r
        )
        self.pusher_entries = Counter(
            "agg_pusher_entries", "Account entries sent in batches", ["chain"], registry=r
        )
        self.pusher_confirmed = Counter(
            "agg_pusher_confirmed", "Update transactions confirmed", ["chain"], registry=r
        )
        self.pusher_gas_used = Counter(
            "agg_pusher_gas_used", "Gas used by confirmed updates", ["chain"], registry=r
        )
        self.pusher_replacements = Counter(
            "agg_pusher_replacements", "Stuck transactions replaced", ["chain"], registry=r
        )
        self.pusher_rebroadcasts = Counter(
            "agg_pusher_rebroadcasts",
            "Sent updates no node held any more, sent again unchanged",
            ["chain"],
            registry=r,
        )
        self.pusher_reorgs = Counter(
            "agg_pusher_reorged", "Mined updates removed by a reorg", ["chain"], registry=r
        )
        self.pusher_pending = Gauge(
            "agg_pusher_pending_txs", "Update transactions not final yet", ["chain"], registry=r
        )
        self.pusher_gap_fills = Counter(
            "agg_pusher_gap_fills",
            "Nonces below the lowest open update filled with zero-value self-transfers",
            ["chain"],
            registry=r,
        )
        self.pusher_nonce_gap = Gauge(
            "agg_pusher_nonce_gap",
            "Nonces missing below the lowest open update (0: none); filled after "
            "pusher.gap_fill_after_s",
            ["chain"],
            registry=r,
        )
        self.pusher_nonce = Gauge(
            "agg_pusher_next_nonce", "Next nonce of the keeper", ["chain"], registry=r
        )
        self.pusher_keeper_balance = Gauge(
            "agg_pusher_keeper_balance_eth", "Keeper balance (native units)", ["chain"], registry=r
        )
        self.pusher_keeper_low = Gauge(
            "agg_pusher_keeper_low", "1 below pusher.min_keeper_balance_eth", ["chain"], registry=r
        )
        self.pusher_paused = Gauge("agg_pusher_paused", "1 while pushing is paused", registry=r)

    def _volatility_metrics(self, r: CollectorRegistry) -> None:
        """Predictive volatility and the [apc] tools (aggregator/vol_forecast.py)."""
        self.vol_ewma = Gauge(
            "agg_volatility_ewma", "Daily EWMA volatility of the asset", ["asset"], registry=r
        )
        self.vol_forecast = Gauge(
            "agg_volatility_forecast",
            "Last usable h-step GARCH forecast (daily sigma)",
            ["asset"],
            registry=r,
        )
        self.vol_used = Gauge(
            "agg_volatility_used",
            "Daily volatility the haircut uses (max(EWMA, forecast) after [apc])",
            ["asset"],
            registry=r,
        )
        self.vol_fallback = Gauge(
            "agg_volatility_fallback",
            "1 for the reason the forecast is not used (EWMA applies)",
            ["asset", "reason"],
            registry=r,
        )
        self.vol_stress = Gauge(
            "agg_volatility_stress", "1 while the asset is in [apc] stress", ["asset"], registry=r
        )
        self.vol_fits = Counter(
            "agg_volatility_fits", "Forecast fits by outcome", ["asset", "outcome"], registry=r
        )
        self.vol_fit_seconds = Histogram(
            "agg_volatility_fit_seconds",
            "Time of one vol_forecast job's fits (worker thread)",
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30),
        )

    def _cluster_metrics(self, r: CollectorRegistry) -> None:
        """Leases of the multi-instance deployment (aggregator/cluster, docs/deployment.md)."""
        self.cluster_lease_held = Gauge(
            "agg_cluster_lease_held", "1 while this instance holds the lease", ["lease"], registry=r
        )
        self.cluster_takeovers = Counter(
            "agg_cluster_lease_takeovers",
            "Leases this instance took over from another instance",
            ["lease"],
            registry=r,
        )
        self.cluster_acquisitions = Counter(
            "agg_cluster_lease_acquisitions", "Lease tenures started here", ["lease"], registry=r
        )
        self.cluster_handoffs = Counter(
            "agg_cluster_lease_handoffs",
            "Lease tenures handed back here to spread the work across instances",
            ["lease"],
            registry=r,
        )
        self.cluster_losses = Counter(
            "agg_cluster_lease_losses",
            "Lease tenures that ended here without a clean release",
            ["lease"],
            registry=r,
        )

    def _history_alert_metrics(self, r: CollectorRegistry) -> None:
        """Risk history (aggregator/history) and alerts (aggregator/alerts)."""
        self.history_points = Counter(
            "agg_history_points", "Account points written to the history", registry=r
        )
        self.history_deferred = Gauge(
            "agg_history_deferred",
            "Accounts that moved but were left for a later history run (per-run cap)",
            registry=r,
        )
        self.history_run_seconds = Gauge(
            "agg_history_run_seconds", "Duration of the last history run", registry=r
        )
        self.alert_events = Counter(
            "agg_alert_events", "Alerts fired or resolved", ["rule", "status"], registry=r
        )
        self.alert_active = Gauge("agg_alert_active", "Active alerts", ["rule"], registry=r)
        self.alert_deliveries = Counter(
            "agg_alert_deliveries", "Alert messages delivered", ["webhook"], registry=r
        )
        self.alert_delivery_failures = Counter(
            "agg_alert_delivery_failures",
            "Failed alert delivery attempts (each retry counts)",
            ["webhook"],
            registry=r,
        )
        self.alert_given_up = Counter(
            "agg_alert_given_up",
            "Alert messages given up after every attempt failed",
            ["webhook"],
            registry=r,
        )
        self.alert_dropped = Counter(
            "agg_alert_dropped",
            "Alert messages dropped (webhook queue full)",
            ["webhook"],
            registry=r,
        )
        self.alert_webhook_failing = Gauge(
            "agg_alert_webhook_failing",
            "1 while the webhook's last messages were given up",
            ["webhook"],
            registry=r,
        )

    def _snapshot_metrics(self, r: CollectorRegistry) -> None:
        """The book snapshot (aggregator/book_snapshot.py)."""
        self.book_snapshot_loads = Counter(
            "agg_book_snapshot_loads",
            "Start-up reads of the book snapshot by result (loaded; else why the full "
            "load ran: missing, corrupt, format, config, store)",
            ["result"],
            registry=r,
        )
        self.book_snapshot_writes = Counter(
            "agg_book_snapshot_writes",
            "Book snapshot writes by result (written, skipped, failed)",
            ["result"],
            registry=r,
        )
        self.book_snapshot_written_at = Gauge(
            "agg_book_snapshot_written_timestamp_seconds",
            "Unix time of the last book snapshot written or loaded (0: none)",
            registry=r,
        )

    def snapshot_load(self, result: str, written_at: float | None = None) -> None:
        self.book_snapshot_loads.labels(result=result).inc()
        if written_at is not None:
            self.book_snapshot_written_at.set(written_at)

    def snapshot_write(self, result: str, written_at: float | None = None) -> None:
        self.book_snapshot_writes.labels(result=result).inc()
        if written_at is not None:
            self.book_snapshot_written_at.set(written_at)

    def advance(self, counter: Counter, total: float, *labels: str) -> None:
        """Feed a counter from a running total kept elsewhere (indexer and RPC status
        objects count for themselves; the counter only ever moves up)."""
        key = (id(counter), labels)
        delta = total - self._totals.get(key, 0.0)
        if delta > 0:
            counter.labels(*labels).inc(delta)
            self._totals[key] = total

    def render(self) -> bytes:
        return generate_latest(self.registry)
