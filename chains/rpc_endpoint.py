"""One RPC URL: its transport (JSON-RPC posted over our own aiohttp session), its rate
limit and the health facts the pool keeps about it.

`Endpoint.raw` classifies every failure: transport trouble (timeout, connection drop,
HTTP 5xx, a body that is not JSON or not a JSON-RPC envelope) is an `EndpointFault`,
HTTP 429 is `Throttled`, and a JSON-RPC error object is a `NodeError` (an answer, not
a fault). Judging the endpoint (demote, throttle, recover) is the pool's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import msgspec

from chains.rpc_errors import EndpointFault, NodeError, RpcError, Throttled

EndpointState = Literal["healthy", "demoted", "throttled"]


@dataclass(frozen=True)
class EndpointStatus:
    """Plain data for /v1/chains and metrics."""

    url: str
    state: EndpointState
    last_error: str | None
    latency_ms: float | None
    head: int | None
    failures: int
    requests: int
    errors: int
    retry_in_s: float


class TokenBucket:
    def __init__(self, rate: float, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.clock = clock
        self.stamp = clock()

    async def acquire(self) -> None:
        while True:
            now = self.clock()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            await asyncio.sleep((1 - self.tokens) / self.rate)


class Endpoint:
    def __init__(self, url: str, timeout_s: float, rate: float, clock: Callable[[], float]):
        self.url = url
        # JSON-RPC is posted directly on our own session. web3's AsyncHTTPProvider
        # passes every request through a process-wide threading.Lock taken in a
        # thread pool; a request cancelled by a timeout while waiting for it can
        # leave that lock held and deadlock every later RPC in the process.
        self._ids = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None
        self.closed = False
        self.timeout_s = timeout_s
        self.rate_limit = rate
        self.bucket = TokenBucket(rate, clock)
        self.clock = clock
        self.state: EndpointState = "healthy"
        self.integrity_demoted = False
        self.retry_at = 0.0
        self.last_error: str | None = None
        self.latency: float | None = None
        self.head: int | None = None
        self.failures = 0
        self.requests = 0
        self.errors = 0

    def usable(self, now: float) -> bool:
        return self.state == "healthy" or now >= self.retry_at

    async def _ensure_session(self) -> None:
        # A keep-alive session per endpoint saves a handshake per call, which
        # dominates latency against a local node.
        if self.closed:
            raise RpcError(f"RPC endpoint {self.url}: client is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                raise_for_status=True, timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            )

    async def _post(
        self, method: str, params: list[Any], decoder: msgspec.json.Decoder[Any] | None
    ) -> Any:
        assert self._session is not None
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        async with self._session.post(self.url, json=body) as resp:
            text = await resp.read()
        if decoder is None:
            return json.loads(text)
        try:
            envelope = decoder.decode(text)
        except msgspec.ValidationError as exc:
            # JSON, but not the shape the method answers: a wrong answer, not a
            # transport fault. msgspec names the field (e.g. `$.result[3].blockHash`).
            raise EndpointFault(f"malformed {method} answer: {exc}", integrity=True) from exc
        except msgspec.DecodeError as exc:
            raise EndpointFault(f"malformed JSON response: {exc}") from exc
        return msgspec.structs.asdict(envelope)

    async def raw(
        self, method: str, params: list[Any], *, decoder: msgspec.json.Decoder[Any] | None = None
    ) -> Any:
        """The `result` of one call. With `decoder` (a msgspec decoder of the whole
        JSON-RPC envelope, a Struct with `result` and `error` fields defaulting to
        msgspec.UNSET) the answer is decoded into its typed result in one pass."""
        await self._ensure_session()
        await self.bucket.acquire()
        self.requests += 1
        start = self.clock()
        try:
            async with asyncio.timeout(self.timeout_s):
                resp = await self._post(method, params, decoder)
        except TimeoutError as exc:
            raise EndpointFault(f"timeout after {self.timeout_s}s", timed_out=True) from exc
        except aiohttp.ClientResponseError as exc:
            if exc.status == 429:
                retry_after = None
                if exc.headers is not None:
                    with contextlib.suppress(TypeError, ValueError):
                        retry_after = float(exc.headers.get("Retry-After", ""))
                raise Throttled("HTTP 429 Too Many Requests", retry_after) from exc
            raise EndpointFault(f"HTTP {exc.status} {exc.message}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise EndpointFault(f"{type(exc).__name__}: {exc}") from exc
        except (ValueError, UnicodeDecodeError) as exc:
            # json.JSONDecodeError is a ValueError: the body was not JSON.
            raise EndpointFault(f"malformed JSON response: {exc}") from exc
        elapsed = self.clock() - start
        self.latency = elapsed if self.latency is None else 0.8 * self.latency + 0.2 * elapsed
        if not isinstance(resp, dict) or (
            resp.get("result", msgspec.UNSET) is msgspec.UNSET
            and resp.get("error", msgspec.UNSET) is msgspec.UNSET
        ):
            raise EndpointFault(f"malformed JSON-RPC envelope: {str(resp)[:120]}")
        if resp.get("error") not in (None, msgspec.UNSET):
            raise NodeError(resp["error"])
        result = resp.get("result", msgspec.UNSET)
        if result is msgspec.UNSET:
            raise EndpointFault(f"malformed JSON-RPC envelope: no result: {str(resp)[:120]}")
        return result

    async def close(self) -> None:
        self.closed = True
        if self._session is not None and not self._session.closed:
            await self._session.close()

    def status(self, now: float) -> EndpointStatus:
        return EndpointStatus(
            url=self.url,
            state=self.state,
            last_error=self.last_error,
            latency_ms=None if self.latency is None else round(self.latency * 1000, 3),
            head=self.head,
            failures=self.failures,
            requests=self.requests,
            errors=self.errors,
            retry_in_s=max(0.0, self.retry_at - now) if self.state != "healthy" else 0.0,
        )
