"""Liquid staking token exchange-rate readers (wstETH, rETH, cbETH, ERC-4626).

All reads of one `read()` go through a single Multicall3 batch together with
getBlockNumber()/getCurrentBlockTimestamp(), so every sample carries the block
and timestamp its rate was actually read at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import is_hex_address, to_checksum_address

from chains.rpc import SEL_GET_BLOCK_NUMBER, SEL_GET_TIMESTAMP, RpcError, selector
from chains.store import RateStore
from chains.types import RateSample


class _BatchCaller(Protocol):
    multicall: str

    async def call_batch(
        self, calls: Sequence[tuple[str, bytes]], block: int | str = "latest"
    ) -> list[bytes | None]: ...

    async def request(self, method: str, params: list[Any]) -> Any: ...


@dataclass(frozen=True)
class RateKind:
    """How to read one LST kind: the view call and whether it needs decimals first."""

    call: bytes
    erc4626: bool = False


# The registry: config `kind` string -> reader. Fixed-rate getters return 1e18-scaled values.
RATE_KINDS: dict[str, RateKind] = {
    "wsteth": RateKind(selector("stEthPerToken()")),
    "reth": RateKind(selector("getExchangeRate()")),
    "cbeth": RateKind(selector("exchangeRate()")),
    "erc4626": RateKind(selector("convertToAssets(uint256)"), erc4626=True),
}
SEL_DECIMALS = selector("decimals()")
SEL_ASSET = selector("asset()")


class RateReadError(RpcError):
    pass


@dataclass(frozen=True)
class LstSource:
    """One rate to read: `asset` is the label samples are stored under (e.g. "wstETH")."""

    asset: str
    kind: str
    address: str

    def __post_init__(self) -> None:
        if self.kind not in RATE_KINDS:
            raise ValueError(
                f"asset {self.asset!r}: unknown rate kind {self.kind!r}; "
                f"expected one of {sorted(RATE_KINDS)}"
            )
        if not is_hex_address(self.address):
            raise ValueError(f"asset {self.asset!r}: not an address: {self.address!r}")


def _uint(raw: bytes | None, what: str) -> int:
    if raw is None:
        raise RateReadError(f"{what} reverted")
    if len(raw) < 32:
        raise RateReadError(f"{what} returned {len(raw)} bytes, expected a uint256")
    return int(abi_decode(["uint256"], raw[:32])[0])


class LstRateReader:
    """Reads LST rates on one chain and stores the samples."""

    def __init__(self, chain: str, client: _BatchCaller, store: RateStore | None = None) -> None:
        self.chain = chain
        self.client = client
        self.store = store
        # ERC-4626 share/asset decimals never change for a deployed vault: read once.
        self._decimals: dict[str, tuple[int, int]] = {}

    async def _vault_decimals(self, sources: Sequence[LstSource], block: int | str) -> None:
        todo = [
            s for s in sources if RATE_KINDS[s.kind].erc4626 and s.address not in self._decimals
        ]
        if not todo:
            return
        calls: list[tuple[str, bytes]] = []
        for s in todo:
            calls += [(s.address, SEL_DECIMALS), (s.address, SEL_ASSET)]
        answers = await self.client.call_batch(calls, block)
        underlying: list[tuple[str, bytes]] = []
        for i, s in enumerate(todo):
            asset_raw = answers[2 * i + 1]
            if asset_raw is None or len(asset_raw) < 32:
                raise RateReadError(
                    f"chain {self.chain!r} {s.asset}: asset() reverted on {s.address}"
                )
            underlying.append((to_checksum_address(asset_raw[12:32]), SEL_DECIMALS))
        under_dec = await self.client.call_batch(underlying, block)
        for i, s in enumerate(todo):
            share = _uint(
                answers[2 * i], f"chain {self.chain!r} {s.asset}: decimals() on {s.address}"
            )
            asset_d = _uint(under_dec[i], f"chain {self.chain!r} {s.asset}: underlying decimals()")
            if share > 77 or asset_d > 77:
                raise RateReadError(
                    f"chain {self.chain!r} {s.asset}: absurd decimals {share}/{asset_d}"
                )
            self._decimals[s.address] = (share, asset_d)

    async def read_at_time(self, source: LstSource, timestamp: float) -> RateSample | None:
        """The rate as the chain had it at `timestamp` (unix s): read at the last block at
        or before it; None when the chain starts later. Not stored: a sample of the past
        is evidence for the cap's guard (oracles/cap_guard.py), not a new observation."""
        block = await self._block_at(timestamp)
        if block is None:
            return None
        return (await self.read([source], block, store=False))[0]

    async def _block_at(self, timestamp: float) -> int | None:
        async def ts_of(n: int) -> int:
            b = await self.client.request("eth_getBlockByNumber", [hex(n), False])
            if not isinstance(b, dict) or "timestamp" not in b:
                raise RateReadError(f"chain {self.chain!r}: no header for block {n}")
            return int(str(b["timestamp"]), 16)

        head = int(str(await self.client.request("eth_blockNumber", [])), 16)
        if await ts_of(0) > timestamp:
            return None
        lo, hi = 0, head  # invariant: ts(lo) <= timestamp
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if await ts_of(mid) <= timestamp:
                lo = mid
            else:
                hi = mid - 1
        return lo

    async def read(
        self, sources: Sequence[LstSource], block: int | str = "latest", *, store: bool = True
    ) -> list[RateSample]:
        """One sample per source, read in one batch; stored when a store was given.

        A reverting or zero rate is an error naming the asset and contract,
        never a silently dropped sample.
        """
        if not sources:
            return []
        await self._vault_decimals(sources, block)
        calls: list[tuple[str, bytes]] = [
            (self.client.multicall, SEL_GET_BLOCK_NUMBER),
            (self.client.multicall, SEL_GET_TIMESTAMP),
        ]
        for s in sources:
            kind = RATE_KINDS[s.kind]
            data = kind.call
            if kind.erc4626:
                data += abi_encode(["uint256"], [10 ** self._decimals[s.address][0]])
            calls.append((s.address, data))
        answers = await self.client.call_batch(calls, block)
        number = _uint(answers[0], f"chain {self.chain!r}: Multicall3 getBlockNumber()")
        ts = _uint(answers[1], f"chain {self.chain!r}: Multicall3 getCurrentBlockTimestamp()")
        samples = []
        for s, raw in zip(sources, answers[2:], strict=True):
            what = f"chain {self.chain!r} {s.asset} ({s.kind}) rate on {s.address}"
            rate = _uint(raw, what)
            if rate == 0:
                raise RateReadError(f"{what} is zero")
            scale = 10 ** self._decimals[s.address][1] if RATE_KINDS[s.kind].erc4626 else 10**18
            samples.append(RateSample(s.asset, self.chain, number, ts, rate, scale))
        if store and self.store is not None:
            await self.store.add_rate_samples(samples)
        return samples

    async def latest(self) -> dict[str, RateSample]:
        if self.store is None:
            raise RuntimeError("LstRateReader was built without a store")
        return await self.store.latest_rates(self.chain)
