"""Alert delivery against a real aiohttp receiver on loopback: the generic JSON and the
Slack-compatible bodies, retries with exponential backoff after failures, giving up and
the visible failing state (metric, /v1/alerts view, readiness), recovery, the per-webhook
rate limit, and end to end through the service: one firing and one resolved message for
a condition that held over several evaluations. Time is a fake clock: no test waits for
a backoff or a rate-limit window."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from aggregator.alerts.config import AlertsConfig, PriceStatusRule, WebhookConfig
from aggregator.alerts.delivery import WebhookSender
from aggregator.alerts.rules import Snapshot
from aggregator.alerts.service import AlertService
from aggregator.alerts.state import AlertBook, AlertEvent
from aggregator.metrics import Metrics

PATIENCE_S = 20.0  # wide: the machine is shared


class Receiver:
    """A webhook endpoint that fails its first `fail_first` requests with a 500."""

    def __init__(self) -> None:
        self.fail_first = 0
        self.requests = 0
        self.bodies: list[dict[str, Any]] = []
        self.content_types: list[str] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.requests <= self.fail_first:
            return web.Response(status=500, text="receiver down")
        self.content_types.append(request.headers.get("Content-Type", ""))
        self.bodies.append(await request.json())
        return web.Response(text="ok")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rec.url = f"http://127.0.0.1:{port}/hook"
    yield rec
    await runner.cleanup()


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def events(n: int, status: str = "disputed") -> list[AlertEvent]:
    book = AlertBook([PriceStatusRule(name="prices", severity="critical")])
    out: list[AlertEvent] = []
    prices: dict[str, tuple[str, str]] = {}
    for k in range(n):
        prices[f"A{k}"] = (status, "spread 3%")
        out += book.apply(Snapshot(now=float(k), prices=dict(prices)))
    return out


def sender(url: str, fake: FakeTime, metrics: Metrics, **kw: Any) -> WebhookSender:
    cfg = WebhookConfig(name="ops", url=url, **kw)
    return WebhookSender(cfg, metrics, instance="test-1", clock=fake.clock, sleep=fake.sleep)


def sample(metrics: Metrics, name: str, webhook: str = "ops") -> float:
    value = metrics.registry.get_sample_value(name, {"webhook": webhook})
    return 0.0 if value is None else value


async def run_until(s: WebhookSender, cond: Any) -> None:
    task = asyncio.create_task(s.run())
    try:
        async with asyncio.timeout(PATIENCE_S):
            while not cond():  # noqa: ASYNC110 (polls state the sender task changes)
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_json_body_after_retries_with_backoff(receiver: Receiver) -> None:
    receiver.fail_first = 2
    fake, metrics = FakeTime(), Metrics()
    s = sender(receiver.url, fake, metrics, backoff_s=1.0, max_backoff_s=60.0)
    (event,) = events(1)
    s.offer(event)
    await run_until(s, lambda: s.state.sent_total == 1)
    assert receiver.requests == 3
    # Two failed attempts, each followed by a jittered 1 s * 2**k wait.
    assert len(fake.sleeps) == 2
    assert 0.5 <= fake.sleeps[0] <= 1.0 and 1.0 <= fake.sleeps[1] <= 2.0
    assert sample(metrics, "agg_alert_delivery_failures_total") == 2
    assert sample(metrics, "agg_alert_deliveries_total") == 1
    assert s.view()["state"] == "ok" and "HTTP 500" in (s.state.last_error or "")
    (body,) = receiver.bodies
    assert receiver.content_types == ["application/json"]
    assert body == {
        "version": 1,
        "status": "firing",
        "key": "prices:A0",
        "rule": "prices",
        "kind": "price_status",
        "severity": "critical",
        "subject": "A0",
        "message": "price A0 is disputed (spread 3%)",
        "details": {"status": "disputed", "reason": "spread 3%"},
        "started_at": 0.0,
        "resolved_at": None,
        "instance": "test-1",
    }


async def test_slack_body_firing_and_resolved(receiver: Receiver) -> None:
    fake, metrics = FakeTime(), Metrics()
    cfg = WebhookConfig(name="slack", url=receiver.url, format="slack")
    s = WebhookSender(cfg, metrics, instance="i", clock=fake.clock, sleep=fake.sleep)
    book = AlertBook([PriceStatusRule(name="prices")])
    for e in book.apply(Snapshot(now=10.0, prices={"WETH": ("unavailable", "")})):
        s.offer(e)
    for e in book.apply(Snapshot(now=70.0, prices={"WETH": ("ok", "")})):
        s.offer(e)
    await run_until(s, lambda: len(receiver.bodies) == 2)
    firing, resolved = receiver.bodies
    assert set(firing) == {"text", "blocks"}
    assert firing["text"] == "[FIRING] warning prices: price WETH is unavailable"
    assert resolved["text"].startswith("[RESOLVED] warning prices:")
    section, context = firing["blocks"]
    assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
    assert "[FIRING]" in section["text"]["text"]
    assert context["type"] == "context" and "prices:WETH" in context["elements"][0]["text"]
    assert "resolved" in resolved["blocks"][1]["elements"][0]["text"]


async def test_given_up_is_visible_until_a_delivery_succeeds(receiver: Receiver) -> None:
    receiver.fail_first = 10**6
    fake, metrics = FakeTime(), Metrics()
    cfg = AlertsConfig(
        rules=[PriceStatusRule(name="prices")],
        webhooks=[WebhookConfig(name="ops", url=receiver.url, max_attempts=3)],
    )
    service = AlertService(
        cfg, collector=None, metrics=metrics, instance="i", clock=fake.clock, sleep=fake.sleep
    )  # type: ignore[arg-type]
    (s,) = service.senders
    first, second = events(2)
    s.offer(first)
    await run_until(s, lambda: s.state.given_up_total == 1)
    assert receiver.requests == 3
    assert sample(metrics, "agg_alert_delivery_failures_total") == 3
    assert sample(metrics, "agg_alert_given_up_total") == 1
    assert sample(metrics, "agg_alert_webhook_failing") == 1
    assert service.view(10)["webhooks"][0]["state"] == "failing"
    (reason,) = service.readiness_reasons()
    assert "webhook ops failing" in reason and "HTTP 500" in reason
    receiver.fail_first = 0
    s.offer(second)
    await run_until(s, lambda: s.state.sent_total == 1)
    assert sample(metrics, "agg_alert_webhook_failing") == 0
    assert service.readiness_reasons() == []
    assert [b["key"] for b in receiver.bodies] == ["prices:A1"]


async def test_rate_limit_per_webhook(receiver: Receiver) -> None:
    fake, metrics = FakeTime(), Metrics()
    s = sender(receiver.url, fake, metrics, max_per_minute=2)
    for e in events(5):
        s.offer(e)
    await run_until(s, lambda: len(receiver.bodies) == 5)
    # Order kept; every third send waited for the 60 s window to move on.
    assert [b["key"] for b in receiver.bodies] == [f"prices:A{k}" for k in range(5)]
    assert fake.sleeps == [60.0, 60.0]
    assert fake.now == 1120.0


async def test_full_queue_drops_and_counts(receiver: Receiver) -> None:
    fake, metrics = FakeTime(), Metrics()
    s = sender(receiver.url, fake, metrics, max_queue=2)
    accepted = [s.offer(e) for e in events(3)]
    assert accepted == [True, True, False]
    assert sample(metrics, "agg_alert_dropped_total") == 1


class FakeCollector:
    def __init__(self) -> None:
        self.prices: dict[str, tuple[str, str]] = {}
        self.now = 0.0

    def take(self, watched: set[str]) -> Snapshot:
        self.now += 10.0
        return Snapshot(now=self.now, prices=dict(self.prices))


async def test_service_sends_one_firing_and_one_resolved(receiver: Receiver) -> None:
    metrics = Metrics()
    cfg = AlertsConfig(
        rules=[PriceStatusRule(name="prices"), PriceStatusRule(name="other")],
        webhooks=[
            WebhookConfig(name="ops", url=receiver.url, rules=["prices"]),
        ],
    )
    collector = FakeCollector()
    service = AlertService(cfg, collector, metrics, instance="i")  # type: ignore[arg-type]
    (s,) = service.senders
    collector.prices = {"WETH": ("disputed", "")}
    for _ in range(4):  # the condition holds over four evaluations
        await service.evaluate()
    collector.prices = {"WETH": ("ok", "")}
    await service.evaluate()
    await service.evaluate()
    await run_until(s, lambda: len(receiver.bodies) >= 2)
    await asyncio.sleep(0.05)
    # Only the rule routed to this webhook, once firing and once resolved.
    assert [(b["key"], b["status"]) for b in receiver.bodies] == [
        ("prices:WETH", "firing"),
        ("prices:WETH", "resolved"),
    ]
    view = service.view(10)
    assert view["active"] == []
    assert [e["status"] for e in view["recent"]] == ["resolved", "resolved", "firing", "firing"]
    assert (
        metrics.registry.get_sample_value(
            "agg_alert_events_total", {"rule": "prices", "status": "firing"}
        )
        == 1
    )
