"""An in-test ApiBackend: canned views, recorded calls, injectable failures, a live stream."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np

from aggregator.api import ApiError
from aggregator.api_views import margin_report
from aggregator.risk.whatif import WhatIfError
from aggregator.whatif import parse_request

KNOWN = "0x52908400098527886E0F7030069857D2E4169EE7"  # EIP-55 test vector (all-caps body)
DEBT_FREE = "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"  # EIP-55 vector, lowercased


class FakeBackend:
    """Implements ApiBackend with canned views; records calls; can be told to raise."""

    def __init__(self) -> None:
        self.ready: tuple[bool, list[str]] = (True, [])
        self.raise_in: str | None = None
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.subscribers: list[asyncio.Queue[dict[str, Any] | None]] = []
        self.opened = 0
        self.closed = 0
        self.views: dict[str, dict[str, Any]] = {
            KNOWN: {"account": KNOWN, "hf": 1.5, "tier": "healthy", "status": "ok"},
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed": {
                "account": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
                "hf": math.inf,
                "hf_text": "inf",
                "tier": "healthy",
                "status": "ok",
            },
        }
        self.liquidity_data: dict[str, Any] | None = {"slippages": [0.01], "assets": {}}
        # GET /v1/accounts/{address}/reputation: None is "disabled" (404).
        self.reputation_view: Callable[[str], dict[str, Any] | None] = lambda _a: None
        self.price_views: dict[str, dict[str, Any]] = {
            "WETH": {
                "asset": "WETH",
                "value": 3000.0,
                "status": "ok",
                "spread": math.nan,  # a source-less spread must not leak NaN
                "sources": [{"source": "a", "value": np.float32("nan"), "failure": "stale"}],
            }
        }

    def _hit(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        if self.raise_in == name:
            raise RuntimeError(f"backend exploded in {name}")

    def readiness(self) -> tuple[bool, list[str]]:
        self._hit("readiness")
        return self.ready

    def account_detail(self, address: str) -> dict[str, Any] | None:
        self._hit("account_detail", address)
        view = self.views.get(address)
        if view is None:
            return None
        return {
            **view,
            "chains": [{"chain": "a", "value": np.float64("inf"), "blocks": np.int64(7)}],
            "weights": (np.float64(0.8), -math.inf),
        }

    def account_health(self, address: str) -> dict[str, Any] | None:
        self._hit("account_health", address)
        return self.views.get(address)

    def account_health_body(self, address: str) -> bytes | None:
        # No fast path: every /health request takes the general route (account_health).
        return None

    def account_margin(self, address: str) -> dict[str, Any] | None:
        self._hit("account_margin", address)
        return None  # no portfolio feed: the margin route answers 404

    async def margin_report(self) -> dict[str, Any]:
        self._hit("margin_report")
        return await margin_report()

    def set_push_paused(self, paused: bool) -> dict[str, Any]:
        self._hit("set_push_paused", paused)
        return {"paused": paused, "enabled": False, "reason": "no pusher in this fake"}

    def list_accounts(
        self, tier: str | None, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        self._hit("list_accounts", tier, limit, cursor)
        items = [v for v in self.views.values() if tier is None or v["tier"] == tier]
        start = int(cursor or 0)
        page = items[start : start + limit]
        nxt = str(start + limit) if start + limit < len(items) else None
        return page, nxt

    async def whatif(self, body: Any) -> dict[str, Any]:
        """The real request checks against a tiny universe; an empty answer."""
        self._hit("whatif", body)
        try:
            req = parse_request(body, ["standard"])
            req.shocks.check(["WETH", "wstETH"], ["a"], {"wstETH": "WETH"})
        except WhatIfError as exc:
            raise ApiError(exc.status, exc.field, exc.message) from None
        return {
            "computed_at": 0.0, "accounts": 0, "scenario": req.scenario(), "prices": {},
            "models": {}, "unavailable": {},
        }  # fmt: skip

    def prices(self) -> dict[str, Any]:
        self._hit("prices")
        return {"prices": self.price_views}

    def price(self, asset: str) -> dict[str, Any] | None:
        self._hit("price", asset)
        return self.price_views.get(asset)

    def liquidity(self) -> dict[str, Any] | None:
        self._hit("liquidity")
        return self.liquidity_data

    def reputation(self, address: str) -> dict[str, Any] | None:
        self._hit("reputation", address)
        return self.reputation_view(address)

    def chains(self) -> list[dict[str, Any]]:
        self._hit("chains")
        return [{"name": "a", "head_block": 10, "lag": 0}]

    async def _subscription(self) -> AsyncIterator[dict[str, Any]]:
        q: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.subscribers.append(q)
        self.opened += 1
        try:
            while True:
                event = await q.get()
                if event is None:
                    raise RuntimeError("subscription source failed")
                yield event
                if event.get("event") == "shutdown":
                    return
        finally:
            self.subscribers.remove(q)
            self.closed += 1

    def subscribe(self) -> AsyncIterator[dict[str, Any]]:
        self._hit("subscribe")
        return self._subscription()

    def publish(self, event: dict[str, Any] | None) -> None:
        for q in self.subscribers:
            q.put_nowait(event)

    def metrics_text(self) -> bytes:
        self._hit("metrics_text")
        return b"# HELP agg_up test\nagg_up 1\n"
