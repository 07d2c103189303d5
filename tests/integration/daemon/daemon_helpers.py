"""HTTP and waiting helpers for daemon tests (importable: tests/ is not a package)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from typing import Any

from aggregator.config import ApiConfig, AppConfig, StoreConfig
from aggregator.daemon import Daemon


def api_get(d: Daemon, path: str) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{d.api.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    ctype_json = body[:1] in (b"{", b"[")
    return status, json.loads(body) if ctype_json else body.decode()


async def aget(d: Daemon, path: str) -> tuple[int, Any]:
    return await asyncio.to_thread(api_get, d, path)


async def wait_until(predicate: Any, timeout: float = 90.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def wait_ready(d: Daemon, timeout: float = 180.0) -> None:
    async def ready() -> bool:
        ok, _ = d.status.readiness()
        # Ready allows a moment of ledger lag; tests read the ledger right after.
        return ok and d.ledger.ledger_settled()

    try:
        await wait_until(ready, timeout, "readiness")
    except AssertionError:
        raise AssertionError(f"daemon not ready: {d.status.readiness()[1]}") from None


def daemon_config(cfg: AppConfig, store_url: str) -> AppConfig:
    """The devnet config with a test's own store and a free API port."""
    return cfg.model_copy(update={"store": StoreConfig(url=store_url), "api": ApiConfig(port=0)})
