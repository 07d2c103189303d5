"""The request loop: a read with failover across the pool, and the one-shot send.

Invariants:
- Reads retry across endpoints for up to `max_rounds` rounds with jittered backoff,
  then raise `RpcUnavailable` listing every endpoint's cause.
- An answer rejected by `validate` (an `EndpointFault`) is never returned: the endpoint
  is demoted and the read goes to the next one, so a liar's answer never reaches the
  caller.
- A node's JSON-RPC error object is an answer, not an endpoint fault: it is raised to
  the caller as `RpcResponseError` and the endpoint counts as working.
- `min_head` keeps a read away from endpoints whose known head is below it, because a
  lagging node answers "no logs" / "no block" for blocks it has not seen.
- Sends never fail over: `send_once` tries the best endpoint once and surfaces its
  error, because after a timeout the transaction may or may not have been broadcast
  and only the pusher's nonce manager can decide what to do.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from chains.rpc_endpoint import Endpoint
from chains.rpc_errors import (
    EndpointFault,
    NodeError,
    RpcError,
    RpcResponseError,
    RpcUnavailable,
    Throttled,
)
from chains.rpc_pool import EndpointPool

EndpointCall = Callable[[Endpoint], Awaitable[Any]]


@dataclass
class _Failures:
    """What one `Failover.request` collected from the endpoints that failed it."""

    causes: list[str] = field(default_factory=list)
    timed_out: bool = False


# Marks "this endpoint gave no answer" (None is a valid JSON-RPC result).
_FAILED = object()


class Failover:
    def __init__(
        self,
        pool: EndpointPool,
        *,
        max_rounds: int,
        backoff_base_s: float,
        backoff_max_s: float,
    ) -> None:
        self.pool = pool
        self.chain = pool.chain
        self.max_rounds = max_rounds
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s

    async def request(
        self,
        method: str,
        params: list[Any],
        *,
        min_head: int | None = None,
        validate: Callable[[Any], Any] | None = None,
        call: EndpointCall | None = None,
    ) -> Any:
        """A read with failover. `validate` may raise EndpointFault to reject an answer;
        `call` replaces the plain request to an endpoint (e.g. a request plus a check
        of the same endpoint)."""
        if self.pool.closed:
            raise RpcError(f"chain {self.chain!r}: client is closed")
        failed = _Failures()
        for round_no in range(self.max_rounds):
            candidates = self.pool.candidates(min_head)
            if not candidates and min_head is not None:
                await self.pool.refresh_heads()
                candidates = self.pool.candidates(min_head)
            for ep in candidates:
                result = await self._ask(
                    ep, method, params, validate=validate, call=call, failed=failed
                )
                if result is not _FAILED:
                    return result
            if round_no + 1 < self.max_rounds:
                delay = min(self.backoff_max_s, self.backoff_base_s * 2**round_no)
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
        if not failed.causes:
            failed.causes.append(self.pool.none_usable(min_head))
        raise RpcUnavailable(self.chain, method, failed.causes, failed.timed_out)

    async def _ask(
        self,
        ep: Endpoint,
        method: str,
        params: list[Any],
        *,
        validate: Callable[[Any], Any] | None,
        call: EndpointCall | None,
        failed: _Failures,
    ) -> Any:
        """One endpoint's (validated) answer, or _FAILED after throttling or demoting it
        (the cause noted in `failed`). A node's JSON-RPC error is raised as
        RpcResponseError, the endpoint counted as working."""
        try:
            result = await (ep.raw(method, params) if call is None else call(ep))
            if validate is not None:
                result = validate(result)
        except Throttled as exc:
            self.pool.throttle(ep, exc)
            failed.causes.append(f"{ep.url}: {exc}")
            return _FAILED
        except EndpointFault as exc:
            failed.timed_out = failed.timed_out or exc.timed_out
            self.pool.demote(ep, f"{method}: {exc}", integrity=exc.integrity)
            failed.causes.append(f"{ep.url}: {exc}")
            return _FAILED
        except NodeError as exc:
            self.pool.succeeded(ep)
            raise RpcResponseError(self.chain, ep.url, method, exc.error) from None
        self.pool.succeeded(ep)
        return result

    async def send_once(self, method: str, params: list[Any]) -> Any:
        """`method` through the best endpoint once; every error is surfaced, never retried."""
        candidates = self.pool.candidates(None)
        if not candidates:
            raise RpcUnavailable(self.chain, method, ["no usable endpoint"], False)
        ep = candidates[0]
        try:
            return await ep.raw(method, params)
        except NodeError as exc:
            raise RpcResponseError(self.chain, ep.url, method, exc.error) from None
        except EndpointFault as exc:
            if isinstance(exc, Throttled):
                self.pool.throttle(ep, exc)
            else:
                self.pool.demote(ep, f"{method}: {exc}")
            raise RpcUnavailable(self.chain, method, [f"{ep.url}: {exc}"], exc.timed_out) from exc
