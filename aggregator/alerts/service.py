"""AlertService: the `alerts` job (snapshot -> pure step -> events to the webhooks),
the webhook sender tasks, and what `/v1/alerts`, `/readyz` and the metrics show.

Invariants: evaluation never waits on delivery (events are offered to bounded queues);
each sender is a supervised task (`alerts:webhook:<name>`); a failing webhook is a
readiness reason, an `agg_alert_webhook_failing` gauge and a `state` in /v1/alerts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aggregator.alerts.config import AlertsConfig
from aggregator.alerts.delivery import WebhookSender
from aggregator.alerts.snapshot import SnapshotCollector
from aggregator.alerts.state import AlertBook, AlertEvent
from aggregator.metrics import Metrics
from aggregator.supervisor import Supervisor


class AlertService:
    def __init__(
        self,
        cfg: AlertsConfig,
        collector: SnapshotCollector,
        metrics: Metrics,
        *,
        instance: str,
        leader: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.cfg = cfg
        self.collector = collector
        self.metrics = metrics
        self.book = AlertBook(list(cfg.rules), recent_limit=cfg.recent_limit)
        # Cluster mode: one instance evaluates the rules about the shared book and
        # chains (no duplicate messages); lease rules run on every instance.
        self._leader = leader
        self.senders = [
            WebhookSender(w, metrics, instance=instance, clock=clock, sleep=sleep)
            for w in cfg.webhooks
        ]
        for rule in cfg.rules:
            metrics.alert_active.labels(rule=rule.name).set(0)

    def start(self, supervisor: Supervisor) -> None:
        for sender in self.senders:
            # Not critical: a failing webhook is its own readiness reason (below).
            supervisor.spawn(f"alerts:webhook:{sender.name}", sender.run, critical=False)

    async def evaluate(self) -> None:
        """The `alerts` job."""
        snap = self.collector.take(self.book.accounts_watched())
        events = self.book.apply(snap, local_only=not self._leader())
        self.dispatch(events)

    def dispatch(self, events: list[AlertEvent]) -> None:
        for e in events:
            self.metrics.alert_events.labels(rule=e.alert.rule, status=e.status).inc()
            for sender in self.senders:
                if sender.wants(e.alert.rule):
                    sender.offer(e)
        counts = {r.name: 0 for r in self.cfg.rules}
        for a in self.book.active.values():
            counts[a.rule] = counts.get(a.rule, 0) + 1
        for rule, n in counts.items():
            self.metrics.alert_active.labels(rule=rule).set(n)

    def view(self, limit: int) -> dict[str, Any]:
        return {
            **self.book.view(limit),
            "webhooks": [s.view() for s in self.senders],
            "rules": [
                {"name": r.name, "kind": r.kind, "severity": r.severity} for r in self.cfg.rules
            ],
        }

    def readiness_reasons(self) -> list[str]:
        return [
            f"alerts: webhook {s.name} failing: {s.state.consecutive_given_up} messages given "
            f"up in a row ({s.state.last_error})"
            for s in self.senders
            if s.failing
        ]
