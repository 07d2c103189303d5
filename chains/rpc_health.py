"""The periodic health check: is each endpoint on our chain, and does it answer eth_call
truthfully?

eth_blockNumber alone proves nothing: a proxy or a broken node can serve a plausible
head while returning garbage for state reads. So every check reads eth_chainId and
eth_blockNumber and then the same two facts through Multicall3 `getChainId()` /
`getBlockNumber()` at the endpoint's own head; any disagreement is an integrity
demotion. One disagreement is honest: a node that mines between the two reads (anvil
does this) runs the eth_call at the tip's number in the *next* block's context, so
`getBlockNumber()` says head + 1. That answer passes only when a third read shows the
node's head has really reached head + 1; a node claiming a block it does not serve stays
demoted, and any other offset is a lie. Passing this check is the only way an
integrity-demoted endpoint comes back.

A URL serving another chain id is demoted while another endpoint serves the configured
one; when none does, `ChainIdMismatch` is raised (fatal: the config is wrong).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from chains.rpc_codec import (
    SEL_GET_BLOCK_NUMBER,
    SEL_GET_CHAIN_ID,
    decode_aggregate3,
    encode_aggregate3,
    hex_to_bytes,
    hex_to_int,
    word,
)
from chains.rpc_endpoint import Endpoint
from chains.rpc_errors import ChainIdMismatch, EndpointFault, NodeError, Throttled
from chains.rpc_pool import EndpointPool


class HealthCheck:
    def __init__(
        self,
        pool: EndpointPool,
        chain_id: int,
        multicall: str,
        interval_s: float,
        clock: Callable[[], float],
    ) -> None:
        self.pool = pool
        self.chain_id = chain_id
        self.multicall = multicall
        self.interval_s = interval_s
        self.clock = clock
        self._last = -1e18
        self._probe = encode_aggregate3(
            [(multicall, SEL_GET_CHAIN_ID), (multicall, SEL_GET_BLOCK_NUMBER)]
        )

    async def maybe_check(self) -> None:
        if self.clock() - self._last >= self.interval_s:
            await self.check()

    async def check(self) -> None:
        """Cross-check each endpoint, then demote endpoints lagging the best head."""
        self._last = self.clock()
        now = self.clock()

        async def one(ep: Endpoint) -> None:
            if not ep.usable(now):
                return  # still backing off (429, errors): probed once its retry time passes
            try:
                head = await self._cross_check(ep)
            except Throttled as exc:
                self.pool.throttle(ep, exc)
                return
            except EndpointFault as exc:
                self.pool.demote(ep, f"health check: {exc}", integrity=exc.integrity)
                return
            except NodeError as exc:
                self.pool.demote(ep, f"health check: node error {exc}", integrity=True)
                return
            self.pool.passed_health_check(ep, head)

        endpoints = self.pool.endpoints
        results = await asyncio.gather(*(one(ep) for ep in endpoints), return_exceptions=True)
        mismatched: list[tuple[Endpoint, ChainIdMismatch]] = []
        for ep, res in zip(endpoints, results, strict=True):
            if isinstance(res, ChainIdMismatch):
                mismatched.append((ep, res))
            elif isinstance(res, BaseException):
                raise res
        if mismatched:
            self.pool.demote_wrong_chain(mismatched)
        self.pool.check_lag()

    async def _cross_check(self, ep: Endpoint) -> int:
        """The endpoint's head, once its eth_chainId and eth_blockNumber agree with the
        same facts read through Multicall3; raises ChainIdMismatch or EndpointFault."""
        got_id = hex_to_int(await ep.raw("eth_chainId", []), "chain id")
        if got_id != self.chain_id:
            raise ChainIdMismatch(self.pool.chain, ep.url, self.chain_id, got_id)
        head = hex_to_int(await ep.raw("eth_blockNumber", []), "block number")
        raw = hex_to_bytes(
            await ep.raw(
                "eth_call", [{"to": self.multicall, "data": "0x" + self._probe.hex()}, hex(head)]
            ),
            "eth_call result",
        )
        results = decode_aggregate3(raw, 2)
        mc_id = word(results[0])
        mc_block = word(results[1])
        if mc_id != self.chain_id or not await self._block_agrees(ep, head, mc_block):
            raise EndpointFault(
                f"eth_call cross-check failed: Multicall3 getChainId()={mc_id} "
                f"getBlockNumber()={mc_block}, but eth_chainId={got_id} "
                f"eth_blockNumber={head}",
                integrity=True,
            )
        return head

    @staticmethod
    async def _block_agrees(ep: Endpoint, head: int, mc_block: int) -> bool:
        if mc_block == head:
            return True
        if mc_block != head + 1:
            return False
        later = hex_to_int(await ep.raw("eth_blockNumber", []), "block number")
        return later >= mc_block
