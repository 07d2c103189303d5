"""One JSON-RPC client per chain: JSON-RPC posted over our own aiohttp session to every
configured URL (not web3's providers, see `_Endpoint`), with failover.

An endpoint is demoted (and retried later with a jittered backoff) when it
errors, times out, answers HTTP 5xx / malformed JSON, lags behind the others'
head, or answers eth_call wrongly. The last check matters because a proxy or a
broken node can serve a plausible eth_blockNumber while returning garbage for
state reads, so every `call_batch` also carries a Multicall3 getChainId()
sentinel and the periodic health check compares Multicall3
getChainId()/getBlockNumber() with eth_chainId/eth_blockNumber.

Reads fail over automatically. Sends never do: `send_raw_transaction` tries one
endpoint once and surfaces its error, because a blind resend after a timeout can
double-spend a nonce's intent (the pusher owns that decision).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

from chains.types import MULTICALL3, BlockRef, ChainSettings

log = logging.getLogger(__name__)

BlockId = int | str


def selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


SEL_AGGREGATE3 = selector("aggregate3((address,bool,bytes)[])")
SEL_GET_CHAIN_ID = selector("getChainId()")
SEL_GET_BLOCK_NUMBER = selector("getBlockNumber()")
SEL_GET_TIMESTAMP = selector("getCurrentBlockTimestamp()")


class RpcError(Exception):
    """Base class of everything this module raises."""


class ChainIdMismatch(RpcError):
    """Fatal misconfiguration: a URL serves another chain than the one configured."""

    def __init__(self, chain: str, url: str, expected: int, got: int) -> None:
        super().__init__(
            f"chain {chain!r}: RPC endpoint {url} reports chain id {got}, expected {expected}; "
            "fix rpc_urls or chain_id in the config"
        )
        self.chain, self.url, self.expected, self.got = chain, url, expected, got


class RpcResponseError(RpcError):
    """The node answered with a JSON-RPC error object (not an endpoint fault)."""

    def __init__(self, chain: str, url: str, method: str, error: Any) -> None:
        self.code = error.get("code") if isinstance(error, dict) else None
        self.message = str(error.get("message", error)) if isinstance(error, dict) else str(error)
        self.data = error.get("data") if isinstance(error, dict) else None
        super().__init__(f"chain {chain!r}: {method} on {url} failed: {self.message}")
        self.url, self.method = url, method


class RpcUnavailable(RpcError):
    """No endpoint produced a trustworthy answer within the retry budget."""

    def __init__(self, chain: str, method: str, causes: list[str], timed_out: bool) -> None:
        super().__init__(
            f"chain {chain!r}: {method} failed on every endpoint: " + "; ".join(causes[-6:])
        )
        self.causes, self.timed_out = causes, timed_out


class EndpointFault(Exception):
    """Transport or integrity problem with one endpoint; the caller fails over."""

    def __init__(self, reason: str, *, timed_out: bool = False, integrity: bool = False) -> None:
        super().__init__(reason)
        self.timed_out, self.integrity = timed_out, integrity


class Throttled(EndpointFault):
    def __init__(self, reason: str, retry_after: float | None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


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


class _TokenBucket:
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


@dataclass
class _Failures:
    """What one `RpcClient.request` collected from the endpoints that failed it."""

    causes: list[str] = field(default_factory=list)
    timed_out: bool = False


# Marks "this endpoint gave no answer" (None is a valid JSON-RPC result).
_FAILED = object()


class _Endpoint:
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
        self.bucket = _TokenBucket(rate, clock)
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

    async def _post(self, method: str, params: list[Any]) -> Any:
        assert self._session is not None
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        async with self._session.post(self.url, json=body) as resp:
            return json.loads(await resp.read())

    async def raw(self, method: str, params: list[Any]) -> Any:
        await self._ensure_session()
        await self.bucket.acquire()
        self.requests += 1
        start = self.clock()
        try:
            async with asyncio.timeout(self.timeout_s):
                resp = await self._post(method, params)
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
        if not isinstance(resp, dict) or ("result" not in resp and "error" not in resp):
            raise EndpointFault(f"malformed JSON-RPC envelope: {str(resp)[:120]}")
        if resp.get("error") is not None:
            raise _NodeError(resp["error"])
        return resp["result"]

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


class _NodeError(Exception):
    def __init__(self, error: Any) -> None:
        super().__init__(str(error))
        self.error = error


def _hex_to_int(value: Any, what: str) -> int:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise EndpointFault(f"malformed {what}: {value!r}", integrity=True)
    try:
        return int(value, 16)
    except ValueError as exc:
        raise EndpointFault(f"malformed {what}: {value!r}", integrity=True) from exc


def _hex_to_bytes(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise EndpointFault(f"malformed {what}: {value!r}", integrity=True)
    try:
        return bytes.fromhex(value[2:])
    except ValueError as exc:
        raise EndpointFault(f"malformed {what}: {value!r}", integrity=True) from exc


def block_param(block: BlockId) -> str:
    if isinstance(block, bool):
        raise TypeError("block must be an int or a tag")
    if isinstance(block, int):
        if block < 0:
            raise ValueError(f"negative block number {block}")
        return hex(block)
    if block not in ("latest", "safe", "finalized", "earliest", "pending"):
        raise ValueError(f"unknown block tag {block!r}")
    return block


class RpcClient:
    """Failover JSON-RPC client for one chain."""

    def __init__(
        self,
        chain: str,
        chain_id: int,
        urls: Sequence[str],
        *,
        multicall: str = MULTICALL3,
        timeout_s: float = 10.0,
        rate_limit_per_s: float = 50.0,
        lag_tolerance: int = 3,
        max_batch: int = 200,
        max_rounds: int = 3,
        backoff_base_s: float = 0.25,
        backoff_max_s: float = 30.0,
        health_interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not urls:
            raise ValueError(f"chain {chain!r}: no rpc_urls")
        if len(set(urls)) != len(urls):
            raise ValueError(f"chain {chain!r}: duplicate rpc_urls {list(urls)}")
        self.chain = chain
        self.chain_id = chain_id
        self.multicall: str = to_checksum_address(multicall)
        self.lag_tolerance = lag_tolerance
        self.max_batch = max_batch
        self.max_rounds = max_rounds
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.health_interval_s = health_interval_s
        self.clock = clock
        self._endpoints = [_Endpoint(u, timeout_s, rate_limit_per_s, clock) for u in urls]
        self._last_health = -1e18
        self._best_seen: tuple[int, float] | None = None
        self._best_seen_ttl = max(30.0, 3 * health_interval_s)
        self._closed = False

    @classmethod
    def from_settings(cls, s: ChainSettings, **kwargs: Any) -> RpcClient:
        return cls(
            s.name,
            s.chain_id,
            s.rpc_urls,
            multicall=s.multicall,
            timeout_s=s.rpc_timeout_s,
            rate_limit_per_s=s.rpc_rate_limit_per_s,
            lag_tolerance=max(2, s.confirmations),
            **kwargs,
        )

    # ------------------------------------------------------------------ state

    def status(self) -> list[EndpointStatus]:
        now = self.clock()
        return [ep.status(now) for ep in self._endpoints]

    @property
    def head(self) -> int | None:
        heads = [ep.head for ep in self._endpoints if ep.state == "healthy" and ep.head]
        return max(heads) if heads else None

    @property
    def healthy_count(self) -> int:
        return sum(1 for ep in self._endpoints if ep.state == "healthy")

    def _demote(self, ep: _Endpoint, reason: str, *, integrity: bool = False) -> None:
        ep.failures += 1
        ep.errors += 1
        ep.last_error = reason
        delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** min(ep.failures - 1, 16))
        ep.retry_at = self.clock() + delay * random.uniform(0.5, 1.5)
        if integrity:
            ep.integrity_demoted = True
        if ep.state != "demoted":
            log.warning("chain %s: demoting RPC endpoint %s: %s", self.chain, ep.url, reason)
        ep.state = "demoted"

    def _throttle(self, ep: _Endpoint, exc: Throttled) -> None:
        ep.errors += 1
        ep.failures += 1
        ep.last_error = str(exc)
        delay = exc.retry_after
        if delay is None:
            delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** min(ep.failures - 1, 16))
            delay *= random.uniform(0.5, 1.5)
        ep.retry_at = self.clock() + delay
        # Slow this endpoint's bucket down; it recovers on later successes.
        ep.bucket.rate = max(0.5, ep.bucket.rate / 2)
        if ep.state == "healthy":
            ep.state = "throttled"

    def _succeeded(self, ep: _Endpoint) -> None:
        if ep.bucket.rate < ep.rate_limit:
            ep.bucket.rate = min(ep.rate_limit, ep.bucket.rate * 1.1)
        if ep.state != "healthy" and not ep.integrity_demoted:
            log.info("chain %s: RPC endpoint %s is healthy again", self.chain, ep.url)
            ep.state = "healthy"
            ep.failures = 0
        if ep.state == "healthy":
            ep.failures = 0

    def _candidates(self, min_head: int | None) -> list[_Endpoint]:
        now = self.clock()
        eps = [ep for ep in self._endpoints if min_head is None or (ep.head or 0) >= min_head]
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

    # --------------------------------------------------------------- requests

    async def request(
        self,
        method: str,
        params: list[Any],
        *,
        min_head: int | None = None,
        validate: Callable[[Any], Any] | None = None,
        call: Callable[[_Endpoint], Awaitable[Any]] | None = None,
    ) -> Any:
        """A read with failover. `validate` may raise EndpointFault to reject an answer;
        `call` replaces the plain request to an endpoint (e.g. a request plus a check
        of the same endpoint)."""
        if self._closed:
            raise RpcError(f"chain {self.chain!r}: client is closed")
        failed = _Failures()
        for round_no in range(self.max_rounds):
            candidates = self._candidates(min_head)
            if not candidates and min_head is not None:
                await self._refresh_heads()
                candidates = self._candidates(min_head)
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
            failed.causes.append(self._none_usable(min_head))
        raise RpcUnavailable(self.chain, method, failed.causes, failed.timed_out)

    async def _ask(
        self,
        ep: _Endpoint,
        method: str,
        params: list[Any],
        *,
        validate: Callable[[Any], Any] | None,
        call: Callable[[_Endpoint], Awaitable[Any]] | None,
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
            self._throttle(ep, exc)
            failed.causes.append(f"{ep.url}: {exc}")
            return _FAILED
        except EndpointFault as exc:
            failed.timed_out = failed.timed_out or exc.timed_out
            self._demote(ep, f"{method}: {exc}", integrity=exc.integrity)
            failed.causes.append(f"{ep.url}: {exc}")
            return _FAILED
        except _NodeError as exc:
            self._succeeded(ep)
            raise RpcResponseError(self.chain, ep.url, method, exc.error) from None
        self._succeeded(ep)
        return result

    def _none_usable(self, min_head: int | None) -> str:
        """Why no endpoint was even tried: each one's state, head and retry time."""
        now = self.clock()
        need = f" with head >= {min_head}" if min_head is not None else ""
        return f"no usable endpoint{need}: " + ", ".join(
            f"{ep.url} {ep.state} (head {ep.head}, retry in "
            f"{max(0.0, ep.retry_at - now):.1f}s, last error: {ep.last_error})"
            for ep in self._endpoints
        )

    async def _refresh_heads(self) -> None:
        now = self.clock()

        async def one(ep: _Endpoint) -> None:
            if ep.integrity_demoted or not ep.usable(now):
                return
            try:
                ep.head = _hex_to_int(await ep.raw("eth_blockNumber", []), "block number")
            except EndpointFault as exc:
                if isinstance(exc, Throttled):
                    self._throttle(ep, exc)
                else:
                    self._demote(ep, f"eth_blockNumber: {exc}", integrity=exc.integrity)
            except _NodeError as exc:
                self._demote(ep, f"eth_blockNumber: {exc}")
            else:
                self._succeeded(ep)

        await asyncio.gather(*(one(ep) for ep in self._endpoints))
        self._check_lag()

    # ------------------------------------------------------------- health

    async def connect(self) -> None:
        """Verify every reachable endpoint serves the configured chain id.

        Raises ChainIdMismatch (fatal: misconfiguration) naming chain, url,
        expected and got; unreachable endpoints are only demoted.
        """
        await self.check_health()

    async def maybe_check_health(self) -> None:
        if self.clock() - self._last_health >= self.health_interval_s:
            await self.check_health()

    async def check_health(self) -> None:
        """Cross-check each endpoint: eth_chainId, eth_blockNumber and the same facts
        read through Multicall3 eth_call; then demote endpoints lagging the best head."""
        self._last_health = self.clock()
        probe = self._encode_aggregate3(
            [(self.multicall, SEL_GET_CHAIN_ID), (self.multicall, SEL_GET_BLOCK_NUMBER)]
        )

        now = self.clock()

        async def one(ep: _Endpoint) -> None:
            if not ep.usable(now):
                return  # still backing off (429, errors): probed once its retry time passes
            try:
                head = await self._cross_check(ep, probe)
            except Throttled as exc:
                self._throttle(ep, exc)
                return
            except EndpointFault as exc:
                self._demote(ep, f"health check: {exc}", integrity=exc.integrity)
                return
            except _NodeError as exc:
                self._demote(ep, f"health check: node error {exc}", integrity=True)
                return
            ep.head = head
            ep.integrity_demoted = False
            ep.state = "healthy"
            ep.failures = 0

        results = await asyncio.gather(*(one(ep) for ep in self._endpoints), return_exceptions=True)
        mismatched: list[tuple[_Endpoint, ChainIdMismatch]] = []
        for ep, res in zip(self._endpoints, results, strict=True):
            if isinstance(res, ChainIdMismatch):
                mismatched.append((ep, res))
            elif isinstance(res, BaseException):
                raise res
        if mismatched:
            self._demote_wrong_chain(mismatched)
        self._check_lag()

    async def _cross_check(self, ep: _Endpoint, probe: bytes) -> int:
        """The endpoint's head, once its eth_chainId and eth_blockNumber agree with the
        same facts read through Multicall3; raises ChainIdMismatch or EndpointFault."""
        got_id = _hex_to_int(await ep.raw("eth_chainId", []), "chain id")
        if got_id != self.chain_id:
            raise ChainIdMismatch(self.chain, ep.url, self.chain_id, got_id)
        head = _hex_to_int(await ep.raw("eth_blockNumber", []), "block number")
        raw = _hex_to_bytes(
            await ep.raw(
                "eth_call", [{"to": self.multicall, "data": "0x" + probe.hex()}, hex(head)]
            ),
            "eth_call result",
        )
        results = self._decode_aggregate3(raw, 2)
        mc_id = _word(results[0])
        mc_block = _word(results[1])
        if mc_id != self.chain_id or mc_block != head:
            raise EndpointFault(
                f"eth_call cross-check failed: Multicall3 getChainId()={mc_id} "
                f"getBlockNumber()={mc_block}, but eth_chainId={got_id} "
                f"eth_blockNumber={head}",
                integrity=True,
            )
        return head

    def _demote_wrong_chain(self, mismatched: list[tuple[_Endpoint, ChainIdMismatch]]) -> None:
        """One endpoint serving another chain while another serves ours is a bad endpoint
        (a provider that switched networks, a DNS mix-up): demote it like any liar. When no
        endpoint serves the configured chain id the configuration is wrong: fatal."""
        if not any(
            ep.state == "healthy" and not ep.integrity_demoted
            for ep in self._endpoints
            if ep not in {m[0] for m in mismatched}
        ):
            raise mismatched[0][1]
        for ep, exc in mismatched:
            self._demote(ep, f"wrong chain: {exc}", integrity=True)

    def _check_lag(self) -> None:
        heads = [ep.head for ep in self._endpoints if ep.state == "healthy" and ep.head]
        now = self.clock()
        # Compare with the best head seen recently too: when the up-to-date
        # endpoints happen to fail this round, a lagging one must not look fine
        # just because it is the only one left to compare with.
        if self._best_seen is not None and now - self._best_seen[1] <= self._best_seen_ttl:
            heads.append(self._best_seen[0])
        if heads:
            best = max(heads)
            if (
                self._best_seen is None
                or best >= self._best_seen[0]
                or now - self._best_seen[1] > self._best_seen_ttl
            ):
                self._best_seen = (best, now)
            for ep in self._endpoints:
                if (
                    ep.state == "healthy"
                    and ep.head is not None
                    and best - ep.head > self.lag_tolerance
                ):
                    self._demote(
                        ep,
                        f"lagging: head {ep.head} is {best - ep.head} blocks behind {best}",
                        integrity=True,
                    )

    # ------------------------------------------------------------- eth reads

    async def block_number(self) -> int:
        """The chain head: the best head among endpoints that pass the checks."""
        await self.maybe_check_health()
        await self._refresh_heads()
        head = self.head
        if head is None:
            # Nothing healthy: fall back to the failover path (probes demoted endpoints).
            number: int = await self.request(
                "eth_blockNumber", [], validate=lambda r: _hex_to_int(r, "block number")
            )
            return number
        return head

    async def get_block(self, block: BlockId) -> BlockRef | None:
        """Header of `block`, or None when the node does not have it (beyond its head)."""
        min_head = block if isinstance(block, int) else None

        def validate(r: Any) -> BlockRef | None:
            if r is None:
                return None
            if not isinstance(r, dict):
                raise EndpointFault(f"malformed block: {str(r)[:80]}", integrity=True)
            ref = BlockRef(
                number=_hex_to_int(r.get("number"), "block number"),
                hash=str(r.get("hash")).lower(),
                parent_hash=str(r.get("parentHash")).lower(),
            )
            if isinstance(block, int) and ref.number != block:
                raise EndpointFault(f"asked for block {block}, got {ref.number}", integrity=True)
            return ref

        result: BlockRef | None = await self.request(
            "eth_getBlockByNumber",
            [block_param(block), False],
            min_head=min_head,
            validate=validate,
        )
        return result

    async def get_blocks(self, numbers: Sequence[int]) -> dict[int, BlockRef]:
        """Headers of `numbers`; consecutive ones must chain (parentHash = the previous
        hash). When they do not, every endpoint is asked for the broken pair: one whose own
        answers do not chain lies about headers and is demoted, then the headers are read
        again. A real reorg between two reads chains on a re-read, so it demotes nobody and
        the caller sees it as before."""
        # The block below the first is read too, so even a single header is checked.
        wanted = sorted({*numbers, *([min(numbers) - 1] if numbers and min(numbers) > 0 else [])})
        out = await self._fetch_blocks(wanted)
        broken = [n for n in wanted if n - 1 in out and out[n].parent_hash != out[n - 1].hash]
        if broken and await self._demote_unchained(broken[0]):
            out = await self._fetch_blocks(wanted)
        return {n: out[n] for n in numbers}

    async def _fetch_blocks(self, numbers: Sequence[int]) -> dict[int, BlockRef]:
        refs = await asyncio.gather(*(self.get_block(n) for n in numbers))
        out: dict[int, BlockRef] = {}
        for n, ref in zip(numbers, refs, strict=True):
            if ref is None:
                raise RpcUnavailable(
                    self.chain, "eth_getBlockByNumber", [f"block {n} not found"], False
                )
            out[n] = ref
        return out

    async def _demote_unchained(self, n: int) -> bool:
        """Ask each usable endpoint for blocks n - 1 and n; demote those whose two headers
        do not chain, twice in a row (a reorg between two reads chains the second time).
        True when one was demoted."""
        now = self.clock()
        demoted = False
        for ep in self._endpoints:
            if ep.integrity_demoted or not ep.usable(now):
                continue
            reason = ""
            for _attempt in range(2):
                try:
                    lo, hi = await asyncio.gather(
                        ep.raw("eth_getBlockByNumber", [hex(n - 1), False]),
                        ep.raw("eth_getBlockByNumber", [hex(n), False]),
                    )
                except (EndpointFault, _NodeError):
                    reason = ""  # transport trouble is judged by the normal path
                    break
                if not isinstance(lo, dict) or not isinstance(hi, dict):
                    reason = ""
                    break
                parent, prev = str(hi.get("parentHash")).lower(), str(lo.get("hash")).lower()
                if parent == prev:
                    reason = ""
                    break
                reason = (
                    f"headers do not chain: block {n} parentHash {parent}, block {n - 1} {prev}"
                )
            if reason:
                self._demote(ep, reason, integrity=True)
                demoted = True
        return demoted

    async def get_logs(
        self, address: str, topics: list[Any], from_block: int, to_block: int
    ) -> list[dict[str, Any]]:
        """eth_getLogs, only from endpoints whose head covers `to_block` (a lagging
        node would answer an empty list for blocks it has not seen)."""
        addr = address.lower()

        def validate(r: Any) -> list[dict[str, Any]]:
            if not isinstance(r, list):
                raise EndpointFault(f"malformed eth_getLogs result: {str(r)[:80]}", integrity=True)
            for entry in r:
                if not isinstance(entry, dict):
                    raise EndpointFault("malformed log entry", integrity=True)
                n = _hex_to_int(entry.get("blockNumber"), "log blockNumber")
                if not from_block <= n <= to_block or str(entry.get("address", "")).lower() != addr:
                    raise EndpointFault(
                        f"log outside the query (block {n}, address {entry.get('address')})",
                        integrity=True,
                    )
            return r

        params = [
            {
                "address": address,
                "topics": topics,
                "fromBlock": hex(from_block),
                "toBlock": hex(to_block),
            }
        ]

        async def logs_with_head_proof(ep: _Endpoint) -> Any:
            logs = await ep.raw("eth_getLogs", params)
            # The head we know for this endpoint may be stale: a node (or the node a
            # load balancer picked) that has not seen `to_block` answers getLogs with a
            # silently short list. Proof that it had the block when it answered: asked
            # after the logs, it must return that block.
            block = await ep.raw("eth_getBlockByNumber", [hex(to_block), False])
            if not isinstance(block, dict):
                ep.head = min(ep.head or 0, to_block - 1)
                raise EndpointFault(f"lagging: no block {to_block} after answering its logs")
            return logs

        result: list[dict[str, Any]] = await self.request(
            "eth_getLogs",
            params,
            min_head=to_block,
            validate=validate,
            call=logs_with_head_proof,
        )
        return result

    # ------------------------------------------------------------- multicall

    @staticmethod
    def _encode_aggregate3(calls: Sequence[tuple[str, bytes]]) -> bytes:
        return SEL_AGGREGATE3 + abi_encode(
            ["(address,bool,bytes)[]"], [[(to_checksum_address(t), True, d) for t, d in calls]]
        )

    @staticmethod
    def _decode_aggregate3(raw: bytes, expected: int) -> list[bytes | None]:
        try:
            (results,) = abi_decode(["(bool,bytes)[]"], raw)
        except Exception as exc:
            raise EndpointFault(f"undecodable aggregate3 result: {exc}", integrity=True) from exc
        if len(results) != expected:
            raise EndpointFault(
                f"aggregate3 returned {len(results)} results for {expected} calls", integrity=True
            )
        return [bytes(data) if ok else None for ok, data in results]

    async def call_batch(
        self,
        calls: Sequence[tuple[str, bytes]],
        block: int | str = "latest",
        *,
        block_hash: str | None = None,
    ) -> list[bytes | None]:
        """View calls (target, calldata) through Multicall3 aggregate3.

        Returns each call's return data, or None where that sub-call reverted.
        Large batches are chunked; "latest" is pinned to one block number first
        so every chunk reads the same state. `block_hash` (of block number `block`)
        pins the calls to exactly that block (EIP-1898): a node that no longer has it
        on its canonical chain answers an error instead of another block's state.
        """
        if not calls:
            return []
        if len(calls) > self.max_batch and not isinstance(block, int):
            block = await self.block_number()
        out: list[bytes | None] = []
        for start in range(0, len(calls), self.max_batch):
            chunk = calls[start : start + self.max_batch]
            out.extend(await self._call_chunk(chunk, block, block_hash))
        return out

    async def _call_chunk(
        self, calls: Sequence[tuple[str, bytes]], block: BlockId, block_hash: str | None = None
    ) -> list[bytes | None]:
        # The sentinel makes a wrong eth_call answer detectable on every batch.
        payload = self._encode_aggregate3([*calls, (self.multicall, SEL_GET_CHAIN_ID)])
        n = len(calls) + 1

        def validate(r: Any) -> list[bytes | None]:
            results = self._decode_aggregate3(_hex_to_bytes(r, "eth_call result"), n)
            sentinel = results[-1]
            if sentinel is None or len(sentinel) < 32 or _word(sentinel) != self.chain_id:
                raise EndpointFault(
                    f"eth_call answered wrongly: Multicall3 getChainId() sentinel returned "
                    f"{sentinel.hex() if sentinel else 'a revert'}, expected {self.chain_id}",
                    integrity=True,
                )
            return results[:-1]

        at: str | dict[str, Any] = block_param(block)
        if block_hash is not None:
            at = {"blockHash": block_hash, "requireCanonical": True}
        result: list[bytes | None] = await self.request(
            "eth_call",
            [{"to": self.multicall, "data": "0x" + payload.hex()}, at],
            min_head=block if isinstance(block, int) else None,
            validate=validate,
        )
        return result

    # ------------------------------------------------------------- sends

    async def send_raw_transaction(self, raw_tx: bytes) -> str:
        """Broadcast once through the best endpoint; every error is surfaced, never retried."""
        candidates = self._candidates(None)
        if not candidates:
            raise RpcUnavailable(
                self.chain, "eth_sendRawTransaction", ["no usable endpoint"], False
            )
        ep = candidates[0]
        try:
            result = await ep.raw("eth_sendRawTransaction", ["0x" + raw_tx.hex()])
        except _NodeError as exc:
            raise RpcResponseError(
                self.chain, ep.url, "eth_sendRawTransaction", exc.error
            ) from None
        except EndpointFault as exc:
            if isinstance(exc, Throttled):
                self._throttle(ep, exc)
            else:
                self._demote(ep, f"eth_sendRawTransaction: {exc}")
            raise RpcUnavailable(
                self.chain, "eth_sendRawTransaction", [f"{ep.url}: {exc}"], exc.timed_out
            ) from exc
        return str(result)

    async def close(self) -> None:
        self._closed = True
        for ep in self._endpoints:
            ep.closed = True
            if ep._session is not None and not ep._session.closed:
                await ep._session.close()

    async def __aenter__(self) -> RpcClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _word(data: bytes | None) -> int:
    if data is None or len(data) < 32:
        raise EndpointFault(f"expected a 32-byte word, got {data!r}", integrity=True)
    return int.from_bytes(data[:32], "big")


__all__ = [
    "BlockId",
    "ChainIdMismatch",
    "EndpointFault",
    "EndpointStatus",
    "RpcClient",
    "RpcError",
    "RpcResponseError",
    "RpcUnavailable",
    "block_param",
    "selector",
]
