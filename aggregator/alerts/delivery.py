"""Webhook delivery: bodies (pure), and one queue + sender task per webhook.

Invariants:
- Each webhook sends in event order from its own bounded queue; one slow or failing
  webhook never delays another, nor the evaluation (`offer` never waits).
- At most `max_per_minute` POSTs start in any 60 s window (a message over the limit
  waits; only a full queue drops, counted).
- A failed attempt (non-2xx, timeout, connection error) is retried after
  backoff_s * 2**k (jittered, capped at max_backoff_s) up to max_attempts; then the
  message is given up. Every failure is counted; `failing_after` give-ups in a row
  mark the webhook failing until a message is delivered.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from aggregator.alerts.config import WebhookConfig
from aggregator.alerts.state import AlertEvent
from aggregator.api_common import dumps
from aggregator.metrics import Metrics

log = logging.getLogger(__name__)

_EMOJI = {"firing": ":rotating_light:", "resolved": ":white_check_mark:"}


def json_body(event: AlertEvent, instance: str) -> dict[str, Any]:
    """The generic JSON body (docs/operations.md "Alerts")."""
    d = event.as_dict()
    return {
        "version": 1,
        "status": event.status,
        "key": d["key"],
        "rule": d["rule"],
        "kind": d["kind"],
        "severity": d["severity"],
        "subject": d["subject"],
        "message": d["message"],
        "details": d["details"],
        "started_at": d["started_at"],
        "resolved_at": d["resolved_at"],
        "instance": instance,
    }


def slack_body(event: AlertEvent, instance: str) -> dict[str, Any]:
    """A Slack-compatible body: `text` (fallback, notifications) and `blocks`."""
    a = event.alert
    head = f"[{event.status.upper()}] {a.severity} {a.rule}: {a.message}"
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(a.started_at))
    context = f"key `{a.key}` · since {since} · instance {instance}"
    if event.resolved_at is not None:
        context += " · resolved " + time.strftime("%H:%M:%S UTC", time.gmtime(event.resolved_at))
    return {
        "text": head,
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"{_EMOJI[event.status]} *{head}*"},
            },
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
        ],
    }


BODIES: dict[str, Callable[[AlertEvent, str], dict[str, Any]]] = {
    "json": json_body,
    "slack": slack_body,
}


@dataclass
class WebhookState:
    sent_total: int = 0
    failed_attempts_total: int = 0
    given_up_total: int = 0
    dropped_total: int = 0
    consecutive_given_up: int = 0
    last_error: str | None = None
    last_success_at: float | None = None


class DeliveryError(Exception):
    pass


class WebhookSender:
    def __init__(
        self,
        cfg: WebhookConfig,
        metrics: Metrics,
        *,
        instance: str,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.metrics = metrics
        self.instance = instance
        self.state = WebhookState()
        self.queue: asyncio.Queue[AlertEvent] = asyncio.Queue(cfg.max_queue)
        self._clock = clock
        self._sleep = sleep
        self._starts: deque[float] = deque()
        self._body = BODIES[cfg.format]
        metrics.alert_webhook_failing.labels(webhook=self.name).set(0)

    def wants(self, rule: str) -> bool:
        return not self.cfg.rules or rule in self.cfg.rules

    def offer(self, event: AlertEvent) -> bool:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.state.dropped_total += 1
            self.metrics.alert_dropped.labels(webhook=self.name).inc()
            log.error("alert webhook %s: queue full, dropped %s", self.name, event.alert.key)
            return False
        return True

    @property
    def failing(self) -> bool:
        return self.state.consecutive_given_up >= self.cfg.failing_after

    def view(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "format": self.cfg.format,
            "state": "failing" if self.failing else "ok",
            "queued": self.queue.qsize(),
            **{k: v for k, v in vars(self.state).items()},
        }

    async def run(self) -> None:
        """The supervised sender loop."""
        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                event = await self.queue.get()
                await self._deliver(session, event)

    async def _rate_limit(self) -> None:
        window = 60.0
        while True:
            now = self._clock()
            while self._starts and now - self._starts[0] >= window:
                self._starts.popleft()
            if len(self._starts) < self.cfg.max_per_minute:
                self._starts.append(now)
                return
            await self._sleep(window - (now - self._starts[0]))

    async def _deliver(self, session: aiohttp.ClientSession, event: AlertEvent) -> None:
        body = self._body(event, self.instance)
        for attempt in range(self.cfg.max_attempts):
            await self._rate_limit()
            try:
                await self._post(session, body)
            except (DeliveryError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
                self.state.failed_attempts_total += 1
                self.state.last_error = f"{type(exc).__name__}: {exc}"[:300]
                self.metrics.alert_delivery_failures.labels(webhook=self.name).inc()
                if attempt + 1 < self.cfg.max_attempts:
                    delay = min(self.cfg.max_backoff_s, self.cfg.backoff_s * 2**attempt)
                    await self._sleep(delay * (0.5 + random.random() / 2))
                continue
            self.state.sent_total += 1
            self.state.consecutive_given_up = 0
            self.state.last_success_at = time.time()
            self.metrics.alert_deliveries.labels(webhook=self.name).inc()
            self.metrics.alert_webhook_failing.labels(webhook=self.name).set(0)
            return
        self.state.given_up_total += 1
        self.state.consecutive_given_up += 1
        self.metrics.alert_given_up.labels(webhook=self.name).inc()
        if self.failing:
            self.metrics.alert_webhook_failing.labels(webhook=self.name).set(1)
        log.error(
            "alert webhook %s: gave up on %s %s after %d attempts (%s)",
            self.name, event.status, event.alert.key, self.cfg.max_attempts, self.state.last_error,
        )  # fmt: skip

    async def _post(self, session: aiohttp.ClientSession, body: dict[str, Any]) -> None:
        # The URL is resolved per attempt (url_env may be fixed without a restart) and
        # never logged: a Slack URL is a secret.
        # The API's encoder: a non-finite number is null, never an invalid "NaN".
        headers = {"Content-Type": "application/json"}
        async with session.post(self.cfg.resolve_url(), data=dumps(body), headers=headers) as resp:
            if not 200 <= resp.status < 300:
                text = (await resp.text())[:200]
                raise DeliveryError(f"HTTP {resp.status}: {text}")
