"""A JSON-RPC fault proxy on loopback, placed between a client and a real node.

It forwards requests to `upstream` and injects, per request and with seeded
probabilities: dropped connections, delays, HTTP 500 / 429, malformed JSON;
and, as standing modes, a lagging node (serves a head `lag_blocks` old and
nothing newer), wrong eth_call answers, logs of another address, headers with a
wrong parentHash and a wrong chain id; `forge_call` rewrites Multicall3 aggregate3
sub-results as the test says (a node that lies about state but not the sentinel).
`getlogs_max_range` makes it reject wide eth_getLogs queries with a provider-style
message.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode

RANGE_MESSAGES = {
    "infura": "query returned more than 10000 results. Try with this block range [{lo}, {hi}].",
    "wide": "block range is too wide",
    "max": "exceed maximum block range: {n}",
}


class FaultProxy:
    def __init__(
        self,
        upstream: str,
        *,
        seed: int = 0,
        drop: float = 0.0,
        delay: float = 0.0,
        delay_s: float = 0.5,
        http500: float = 0.0,
        http429: float = 0.0,
        malformed: float = 0.0,
        lag_blocks: int = 0,
        wrong_call: bool = False,
        getlogs_max_range: int | None = None,
        range_message: str = "infura",
        wrong_log_address: bool = False,
        wrong_parent: bool = False,
        chain_id: int | None = None,
        protect_methods: tuple[str, ...] = (),
        fail_methods: tuple[str, ...] = (),
        call_ahead: bool = False,
        mine_before_call: bool = False,
        forge_call: Callable[[list[tuple[bool, bytes]]], list[tuple[bool, bytes]]] | None = None,
    ) -> None:
        self.upstream = upstream
        self.rng = random.Random(seed)
        self.drop, self.delay, self.delay_s = drop, delay, delay_s
        self.http500, self.http429, self.malformed = http500, http429, malformed
        self.lag_blocks = lag_blocks
        self.wrong_call = wrong_call
        self.getlogs_max_range = getlogs_max_range
        self.range_message = range_message
        # Lies a hostile or broken node may tell: logs of another contract, headers whose
        # parentHash does not chain, another network's chain id.
        self.wrong_log_address = wrong_log_address
        self.wrong_parent = wrong_parent
        self.chain_id = chain_id
        # Methods never given random faults (e.g. anvil_* used by the test itself).
        self.protect_methods = protect_methods
        # Methods that always answer HTTP 500: one kind of call failing while the rest work.
        self.fail_methods = fail_methods
        # eth_call at a block number answered with the latest state (a node serving the
        # tip while it mines the next block, or mid-reorg); by block hash it is honest.
        self.call_ahead = call_ahead
        # A block mined upstream just before each eth_call at a block number: the node
        # moved on between a client's eth_blockNumber and its eth_call.
        self.mine_before_call = mine_before_call
        self.forge_call = forge_call
        self.stats: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FaultProxy:
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def set(self, **modes: Any) -> None:
        for key, value in modes.items():
            if not hasattr(self, key):
                raise AttributeError(f"FaultProxy has no mode {key!r}")
            setattr(self, key, value)

    async def _upstream(self, method: str, params: list[Any]) -> dict[str, Any]:
        assert self._session is not None
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        async with self._session.post(self.upstream, json=body) as resp:
            out: dict[str, Any] = await resp.json(content_type=None)
            return out

    def _roll(self, p: float) -> bool:
        return p > 0 and self.rng.random() < p

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            req = json.loads(raw)
        except ValueError:
            return web.Response(status=400, text="bad json")
        method = str(req.get("method"))
        self.requests[method] += 1
        rid = req.get("id")
        params = req.get("params") or []
        if method in self.fail_methods:
            self.stats["fail_method"] += 1
            return web.Response(status=500, text=f"{method} failed")
        if method not in self.protect_methods:
            if self._roll(self.drop):
                self.stats["drop"] += 1
                if request.transport is not None:
                    request.transport.close()
                return web.Response(status=500)
            if self._roll(self.delay):
                self.stats["delay"] += 1
                await asyncio.sleep(self.delay_s)
            if self._roll(self.http500):
                self.stats["http500"] += 1
                return web.Response(status=500, text="internal error")
            if self._roll(self.http429):
                self.stats["http429"] += 1
                return web.Response(
                    status=429, text="rate limited", headers={"Retry-After": "0.05"}
                )
            if self._roll(self.malformed):
                self.stats["malformed"] += 1
                return web.Response(
                    status=200, text='{"jsonrpc":"2.0","id":', content_type="application/json"
                )
        answer = await self._answer(method, params)
        answer["id"] = rid
        return web.json_response(answer)

    async def _answer(self, method: str, params: list[Any]) -> dict[str, Any]:
        early = self._range_error(method, params)
        if early is None and self.lag_blocks:
            early, params = await self._lag(method, params)
        if early is not None:
            return early
        if (
            method == "eth_call"
            and self.call_ahead
            and len(params) > 1
            and isinstance(params[1], str)
            and params[1].startswith("0x")
        ):
            self.stats["call_ahead"] += 1
            params = [params[0], "latest"]
            if self.mine_before_call:
                self.stats["mined_before_call"] += 1
                await self._upstream("evm_mine", [])
        if method == "eth_chainId" and self.chain_id is not None:
            self.stats["wrong_chain_id"] += 1
            return {"jsonrpc": "2.0", "result": hex(self.chain_id)}
        answer = await self._upstream(method, params)
        self._tamper(method, params, answer)
        return answer

    def _range_error(self, method: str, params: list[Any]) -> dict[str, Any] | None:
        """A provider's getLogs range cap: the error, in its words, for a wider query."""
        if method != "eth_getLogs" or self.getlogs_max_range is None:
            return None
        q = params[0]
        lo, hi = int(q["fromBlock"], 16), int(q["toBlock"], 16)
        if hi - lo + 1 <= self.getlogs_max_range:
            return None
        self.stats["range_error"] += 1
        n = self.getlogs_max_range
        msg = RANGE_MESSAGES[self.range_message].format(lo=hex(lo), hi=hex(lo + n - 1), n=n)
        return {"jsonrpc": "2.0", "error": {"code": -32005, "message": msg}}

    async def _lag(self, method: str, params: list[Any]) -> tuple[dict[str, Any] | None, list[Any]]:
        """A node `lag_blocks` behind: its own answer when the upstream's would show a
        newer block, else the (possibly narrowed) params to forward."""
        real = int((await self._upstream("eth_blockNumber", []))["result"], 16)
        lagged = max(0, real - self.lag_blocks)
        if method == "eth_blockNumber":
            self.stats["lag"] += 1
            return {"jsonrpc": "2.0", "result": hex(lagged)}, params
        if (
            method == "eth_getBlockByNumber" and params and params[0] not in ("latest", "pending")
        ) and int(params[0], 16) > lagged:
            self.stats["lag"] += 1
            return {"jsonrpc": "2.0", "result": None}, params
        if method == "eth_getLogs":
            q = dict(params[0])
            if int(q["toBlock"], 16) > lagged:
                # What makes a lagging node dangerous: a silently short answer.
                self.stats["lag"] += 1
                q["toBlock"] = hex(lagged)
                if int(q["fromBlock"], 16) > lagged:
                    return {"jsonrpc": "2.0", "result": []}, params
                return None, [q]
        return None, params

    def _tamper(self, method: str, params: list[Any], answer: dict[str, Any]) -> None:
        """The lying modes: wrong log addresses, parent hashes, eth_call words."""
        result = answer.get("result")
        if method == "eth_getLogs" and self.wrong_log_address and isinstance(result, list):
            for entry in result:
                self.stats["wrong_log_address"] += 1
                entry["address"] = "0x" + "de" * 20
        if (
            method == "eth_getBlockByNumber"
            and self.wrong_parent
            and isinstance(result, dict)
            and params[0] not in ("latest", "pending")
        ):
            self.stats["wrong_parent"] += 1
            result["parentHash"] = "0x" + "ab" * 32
        if method == "eth_call" and self.wrong_call and "result" in answer:
            self.stats["wrong_call"] += 1
            answer["result"] = _corrupt(answer["result"])
        if method == "eth_call" and self.forge_call is not None and "result" in answer:
            data = bytes.fromhex(str(answer["result"])[2:])
            try:
                (items,) = abi_decode(["(bool,bytes)[]"], data)
            except Exception:
                return  # not an aggregate3 answer
            self.stats["forge_call"] += 1
            forged = self.forge_call([(bool(ok), bytes(ret)) for ok, ret in items])
            answer["result"] = "0x" + abi_encode(["(bool,bytes)[]"], [forged]).hex()


def _corrupt(result: str) -> str:
    """A well-formed but wrong eth_call answer (every returned word becomes 7)."""
    data = bytes.fromhex(result[2:])
    try:
        (items,) = abi_decode(["(bool,bytes)[]"], data)
        forged = [(ok, (7).to_bytes(32, "big") if ok else ret) for ok, ret in items]
        return "0x" + abi_encode(["(bool,bytes)[]"], [forged]).hex()
    except Exception:
        return "0x" + (7).to_bytes(32, "big").hex()
