"""What the RPC layer raises, and the two signals its parts pass among themselves.

Callers see `RpcError` and its subclasses only. `EndpointFault` (transport or integrity
trouble with one endpoint) and `NodeError` (a JSON-RPC error object from a node) never
leave chains/rpc*: the failover loop turns the first into a demotion and a retry
elsewhere, the second into `RpcResponseError`, because a node's "execution reverted" or
getLogs range error is an answer, not an endpoint fault.
"""

from __future__ import annotations

from typing import Any


class RpcError(Exception):
    """Base class of everything the RPC client raises."""


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


class ChainMoved(RpcError):
    """A read anchored to a block found that block replaced when it finished: the node's
    block at `number` is no longer the one the caller read first (a reorg between two
    calls). Not a fault of any endpoint; the caller drops what it read and starts over."""

    def __init__(self, chain: str, number: int, expected: str, got: str) -> None:
        super().__init__(
            f"chain {chain!r}: block {number} changed during the read ({expected[:12]} -> "
            f"{got[:12]}); reorg in flight"
        )
        self.number, self.expected, self.got = number, expected, got


class RpcUnavailable(RpcError):
    """No endpoint produced a trustworthy answer within the retry budget."""

    def __init__(self, chain: str, method: str, causes: list[str], timed_out: bool) -> None:
        super().__init__(
            f"chain {chain!r}: {method} failed on every endpoint: " + "; ".join(causes[-6:])
        )
        self.causes, self.timed_out = causes, timed_out


class EndpointFault(Exception):
    """Transport or integrity problem with one endpoint; the caller fails over.

    `integrity` marks a wrong answer (lag, a lie, a malformed value): such a demotion
    is lifted only by passing the health check, never by the next successful request.
    """

    def __init__(self, reason: str, *, timed_out: bool = False, integrity: bool = False) -> None:
        super().__init__(reason)
        self.timed_out, self.integrity = timed_out, integrity


class Throttled(EndpointFault):
    """HTTP 429: the endpoint is throttled, not demoted."""

    def __init__(self, reason: str, retry_after: float | None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class NodeError(Exception):
    """A JSON-RPC error object from a node; the failover loop raises it as RpcResponseError."""

    def __init__(self, error: Any) -> None:
        super().__init__(str(error))
        self.error = error
