"""HTTP JSON price APIs (Coinbase, Binance, Kraken, CoinGecko, ...)."""

from __future__ import annotations

import asyncio
import json
import math
import time
from datetime import UTC, datetime
from typing import Any, ClassVar

import aiohttp

from oracles.config import HttpSourceConfig
from oracles.jsonpath import PathError, parse_path, resolve
from oracles.sources.base import HttpClient, PriceSource, SourceConfigError, SourceContext
from oracles.types import (
    BadPayload,
    HttpStatus,
    NonPositive,
    Observation,
    SourceOutcome,
    Stale,
    Timeout,
    TooLarge,
    Unreachable,
)

FUTURE_TOLERANCE_S = 60.0
# Unix seconds stay below 1e11 until the year 5138; bigger numbers are milliseconds.
MS_THRESHOLD = 1e11
CHUNK = 64 * 1024


class _Bad(Exception):
    pass


def parse_number(value: Any, what: str) -> float:
    """A finite float from a JSON number or numeric string; _Bad names what is wrong."""
    if isinstance(value, bool) or value is None:
        raise _Bad(f"{what} is {json.dumps(value)}, not a number")
    if isinstance(value, int | float):
        out = float(value)
    elif isinstance(value, str):
        try:
            out = float(value.strip())
        except ValueError:
            raise _Bad(f"{what} {value[:40]!r} is not a number") from None
    else:
        raise _Bad(f"{what} is a {type(value).__name__}, not a number")
    if not math.isfinite(out):
        raise _Bad(f"{what} {value!r} is not finite")
    return out


def parse_timestamp(value: Any, unit: str) -> float:
    if unit == "iso" or (unit == "auto" and isinstance(value, str) and not _numeric(value)):
        if not isinstance(value, str):
            raise _Bad(f"timestamp {value!r} is not an ISO 8601 string")
        try:
            dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise _Bad(f"timestamp {value[:40]!r} is not ISO 8601") from None
        if dt.tzinfo is None:
            # APIs that omit the offset publish UTC.
            dt = dt.replace(tzinfo=UTC)
        return dt.timestamp()
    num = parse_number(value, "timestamp")
    if unit == "ms" or (unit == "auto" and num > MS_THRESHOLD):
        num /= 1000.0
    return num


def _numeric(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


class HttpSource(PriceSource):
    kind: ClassVar[str] = "http"

    def __init__(self, cfg: HttpSourceConfig, client: HttpClient, headers: dict[str, str]) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.client = client
        self.headers = headers
        self.path = parse_path(cfg.path)
        self.ts_path = parse_path(cfg.timestamp_path) if cfg.timestamp_path else None
        self._last_request: float | None = None
        self._last: SourceOutcome | None = None
        self._lock = asyncio.Lock()

    def _label(self) -> str:
        return f"http {self.name} ({self.cfg.url})"

    async def fetch(self, now: float) -> SourceOutcome:
        async with self._lock:
            mono = time.monotonic()
            if (
                self._last is not None
                and self._last_request is not None
                and mono - self._last_request < self.cfg.min_interval_s
            ):
                # Rate limited by config: reuse the last answer, re-checked for age.
                return self._recheck(self._last, now)
            self._last_request = mono
            self._last = await self._request(now)
            return self._last

    def _recheck(self, last: SourceOutcome, now: float) -> SourceOutcome:
        if isinstance(last, Observation) and now - last.timestamp > self.cfg.max_age_s:
            return Stale(
                self.name,
                f"{self._label()}: cached value {last.value:g} from {last.timestamp:.0f} is "
                f"{now - last.timestamp:.0f}s old (max_age_s {self.cfg.max_age_s:g})",
            )
        return last

    async def _request(self, now: float) -> SourceOutcome:
        cfg, label = self.cfg, self._label()
        try:
            async with asyncio.timeout(cfg.timeout_s):
                async with self.client.session().get(
                    cfg.url,
                    headers=self.headers,
                    timeout=aiohttp.ClientTimeout(total=cfg.timeout_s),
                    allow_redirects=False,
                ) as resp:
                    if resp.status != 200:
                        return HttpStatus(self.name, f"{label}: HTTP {resp.status} {resp.reason}")
                    if resp.content_length is not None and resp.content_length > cfg.max_bytes:
                        return TooLarge(
                            self.name,
                            f"{label}: Content-Length {resp.content_length} exceeds "
                            f"max_bytes {cfg.max_bytes}",
                        )
                    body = bytearray()
                    async for chunk in resp.content.iter_chunked(CHUNK):
                        body += chunk
                        if len(body) > cfg.max_bytes:
                            return TooLarge(
                                self.name,
                                f"{label}: response exceeds max_bytes {cfg.max_bytes}",
                            )
        except TimeoutError:
            return Timeout(self.name, f"{label}: no complete answer within {cfg.timeout_s:g}s")
        except aiohttp.ClientError as exc:
            return Unreachable(self.name, f"{label}: {type(exc).__name__}: {exc}")
        return self._parse(bytes(body), now)

    def _parse(self, body: bytes, now: float) -> SourceOutcome:
        cfg, label = self.cfg, self._label()
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return BadPayload(self.name, f"{label}: not JSON ({exc}): {body[:80]!r}")
        try:
            raw = parse_number(resolve(doc, self.path, cfg.path), f"value at {cfg.path!r}")
            ts = now
            if self.ts_path is not None and cfg.timestamp_path is not None:
                ts = parse_timestamp(
                    resolve(doc, self.ts_path, cfg.timestamp_path), cfg.timestamp_unit
                )
        except (PathError, _Bad) as exc:
            return BadPayload(self.name, f"{label}: {exc}")
        if raw <= 0:
            return NonPositive(self.name, f"{label}: value {raw:g} at {cfg.path!r} is not positive")
        value = (1.0 / raw if cfg.invert else raw) * cfg.scale
        if not math.isfinite(value) or value <= 0:
            return BadPayload(self.name, f"{label}: value {raw:g} scales to {value}")
        age = now - ts
        if age > cfg.max_age_s:
            return Stale(
                self.name,
                f"{label}: value {value:g} timestamped {ts:.0f} is {age:.0f}s old "
                f"(max_age_s {cfg.max_age_s:g})",
            )
        if -age > FUTURE_TOLERANCE_S:
            return BadPayload(
                self.name, f"{label}: timestamp {ts:.0f} is {-age:.0f}s in the future"
            )
        return Observation(self.name, value, ts)


def resolve_headers(cfg: HttpSourceConfig, env: Any) -> dict[str, str]:
    headers = dict(cfg.headers)
    for header, var in cfg.headers_from_env.items():
        value = env.get(var)
        if not value:
            raise SourceConfigError(
                f"source {cfg.name!r}: header {header!r} needs environment variable {var!r}, "
                "which is not set"
            )
        headers[header] = value
    return headers


def build_http(cfg: HttpSourceConfig, ctx: SourceContext) -> HttpSource:
    return HttpSource(cfg, ctx.http, resolve_headers(cfg, ctx.env))
