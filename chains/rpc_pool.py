"""The endpoints of one chain and their judgement: demotion, throttling, recovery, lag.

Invariants:
- A transport demotion (timeout, drop, 5xx, malformed body) recovers on the endpoint's
  next successful request; an integrity demotion (lag, wrong answer, wrong chain)
  recovers only through the health check (`HealthCheck`), so a liar is never asked
  again on the strength of answering *something*.
- Demoted endpoints are retried after a jittered exponential backoff
  (base * 2^failures, x0.5-1.5, capped); HTTP 429 throttles until Retry-After (or the
  backoff) and halves the endpoint's rate, which recovers 10% per success.
- An endpoint is lagging when its head is more than `lag_tolerance` blocks behind the
  best head of the others *or the best seen recently*: when the up-to-date endpoints
  fail in the same round, the laggard must not look fine for lack of comparison.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence

from chains.rpc_codec import hex_to_int
from chains.rpc_endpoint import Endpoint, EndpointStatus
from chains.rpc_errors import ChainIdMismatch, EndpointFault, NodeError, Throttled

log = logging.getLogger(__name__)


class EndpointPool:
    def __init__(
        self,
        chain: str,
        urls: Sequence[str],
        *,
        timeout_s: float,
        rate_limit_per_s: float,
        lag_tolerance: int,
        backoff_base_s: float,
        backoff_max_s: float,
        best_seen_ttl: float,
        clock: Callable[[], float],
    ) -> None:
        self.chain = chain
        self.lag_tolerance = lag_tolerance
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.clock = clock
        self.endpoints = [Endpoint(u, timeout_s, rate_limit_per_s, clock) for u in urls]
        self._best_seen: tuple[int, float] | None = None
        self._best_seen_ttl = best_seen_ttl
        self.closed = False

    # ------------------------------------------------------------------ state

    def status(self) -> list[EndpointStatus]:
        now = self.clock()
        return [ep.status(now) for ep in self.endpoints]

    @property
    def head(self) -> int | None:
        heads = [ep.head for ep in self.endpoints if ep.state == "healthy" and ep.head]
        return max(heads) if heads else None

    @property
    def healthy_count(self) -> int:
        return sum(1 for ep in self.endpoints if ep.state == "healthy")

    def backoff(self, failures: int) -> float:
        """The un-jittered retry delay after `failures` failures in a row."""
        return min(self.backoff_max_s, self.backoff_base_s * 2 ** min(failures - 1, 16))

    # -------------------------------------------------------------- judgement

    def demote(self, ep: Endpoint, reason: str, *, integrity: bool = False) -> None:
        ep.failures += 1
        ep.errors += 1
        ep.last_error = reason
        ep.retry_at = self.clock() + self.backoff(ep.failures) * random.uniform(0.5, 1.5)
        if integrity:
            ep.integrity_demoted = True
        if ep.state != "demoted":
            log.warning("chain %s: demoting RPC endpoint %s: %s", self.chain, ep.url, reason)
        ep.state = "demoted"

    def throttle(self, ep: Endpoint, exc: Throttled) -> None:
        ep.errors += 1
        ep.failures += 1
        ep.last_error = str(exc)
        delay = exc.retry_after
        if delay is None:
            delay = self.backoff(ep.failures) * random.uniform(0.5, 1.5)
        ep.retry_at = self.clock() + delay
        # Slow this endpoint's bucket down; it recovers on later successes.
        ep.bucket.rate = max(0.5, ep.bucket.rate / 2)
        if ep.state == "healthy":
            ep.state = "throttled"

    def fault(self, ep: Endpoint, what: str, exc: EndpointFault) -> None:
        """Throttle on 429, else demote (integrity when the fault says so)."""
        if isinstance(exc, Throttled):
            self.throttle(ep, exc)
        else:
            self.demote(ep, f"{what}: {exc}", integrity=exc.integrity)

    def succeeded(self, ep: Endpoint) -> None:
        if ep.bucket.rate < ep.rate_limit:
            ep.bucket.rate = min(ep.rate_limit, ep.bucket.rate * 1.1)
        if ep.state != "healthy" and not ep.integrity_demoted:
            log.info("chain %s: RPC endpoint %s is healthy again", self.chain, ep.url)
            ep.state = "healthy"
            ep.failures = 0
        if ep.state == "healthy":
            ep.failures = 0

    def passed_health_check(self, ep: Endpoint, head: int) -> None:
        """The only way out of an integrity demotion."""
        ep.head = head
        ep.integrity_demoted = False
        ep.state = "healthy"
        ep.failures = 0

    def demote_wrong_chain(self, mismatched: list[tuple[Endpoint, ChainIdMismatch]]) -> None:
        """One endpoint serving another chain while another serves ours is a bad endpoint
        (a provider that switched networks, a DNS mix-up): demote it like any liar. When no
        endpoint serves the configured chain id the configuration is wrong: fatal."""
        if not any(
            ep.state == "healthy" and not ep.integrity_demoted
            for ep in self.endpoints
            if ep not in {m[0] for m in mismatched}
        ):
            raise mismatched[0][1]
        for ep, exc in mismatched:
            self.demote(ep, f"wrong chain: {exc}", integrity=True)

    def check_lag(self) -> None:
        heads = [ep.head for ep in self.endpoints if ep.state == "healthy" and ep.head]
        now = self.clock()
        # Compare with the best head seen recently too: when the up-to-date
        # endpoints happen to fail this round, a lagging one must not look fine
        # just because it is the only one left to compare with.
        if self._best_seen is not None and now - self._best_seen[1] <= self._best_seen_ttl:
            heads.append(self._best_seen[0])
        if not heads:
            return
        best = max(heads)
        if (
            self._best_seen is None
            or best >= self._best_seen[0]
            or now - self._best_seen[1] > self._best_seen_ttl
        ):
            self._best_seen = (best, now)
        for ep in self.endpoints:
            lag = best - ep.head if ep.head is not None else 0
            if ep.state == "healthy" and ep.head is not None and lag > self.lag_tolerance:
                self.demote(
                    ep,
                    f"lagging: head {ep.head} is {lag} blocks behind {best}",
                    integrity=True,
                )

    # -------------------------------------------------------------- choosing

    def candidates(self, min_head: int | None) -> list[Endpoint]:
        now = self.clock()
        eps = [ep for ep in self.endpoints if min_head is None or (ep.head or 0) >= min_head]
        healthy = sorted(
            (ep for ep in eps if ep.state == "healthy"), key=lambda e: e.latency or 0.0
        )
        # Demoted endpoints get a probe once their backoff expires; integrity
        # demotions (wrong answers, lag) only come back through check_health.
        due = sorted(
            (
                ep
                for ep in eps
                if ep.state != "healthy" and ep.usable(now) and not ep.integrity_demoted
            ),
            key=lambda e: e.retry_at,
        )
        return healthy + due

    def probeable(self) -> list[Endpoint]:
        """Endpoints that may be asked outside the failover loop (head refresh, header
        cross-examination): not integrity-demoted, not backing off."""
        now = self.clock()
        return [ep for ep in self.endpoints if not ep.integrity_demoted and ep.usable(now)]

    def none_usable(self, min_head: int | None) -> str:
        """Why no endpoint was even tried: each one's state, head and retry time."""
        now = self.clock()
        need = f" with head >= {min_head}" if min_head is not None else ""
        return f"no usable endpoint{need}: " + ", ".join(
            f"{ep.url} {ep.state} (head {ep.head}, retry in "
            f"{max(0.0, ep.retry_at - now):.1f}s, last error: {ep.last_error})"
            for ep in self.endpoints
        )

    async def refresh_heads(self) -> None:
        async def one(ep: Endpoint) -> None:
            try:
                ep.head = hex_to_int(await ep.raw("eth_blockNumber", []), "block number")
            except EndpointFault as exc:
                self.fault(ep, "eth_blockNumber", exc)
            except NodeError as exc:
                self.demote(ep, f"eth_blockNumber: {exc}")
            else:
                self.succeeded(ep)

        await asyncio.gather(*(one(ep) for ep in self.probeable()))
        self.check_lag()

    async def close(self) -> None:
        self.closed = True
        for ep in self.endpoints:
            await ep.close()
