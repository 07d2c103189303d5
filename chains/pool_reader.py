"""Uniswap v3 pool reader: validated pools, snapshots of their tick liquidity at a
pinned block, and the per-block refresh driven by Swap / Mint / Burn logs.

Interface (what the daemon and the impact side use):

    PoolSpec(chain, address, tokens=None, fee=None, factory=None, label="",
             token=None, counter_tokens=None)
        a pool to follow, with what it must be: its two tokens (any order) or one token
        and the allowed other ones, its fee tier, the factory that must have created it
    PoolMeta(chain, address, token0, token1, decimals0, decimals1, fee, tick_spacing)
        what validation read on chain (immutable for a deployed pool)
    PoolConfigError(ValueError)        a pool that is not what its spec says; names it
    PoolReadError(RpcError)            a pool answer that cannot be a pool's state; names it
    band_ticks(band) -> (below, above) ticks covering a relative price band
    PoolReader(client: RpcClient, *, band=0.2)
        await validate(specs) -> dict[address, PoolMeta]          (addresses lowercased)
        await pin(block=None) -> BlockRef                         ("latest" or a number)
        await read(metas, at: BlockRef, previous=None) -> dict[address, PoolSnapshot]
            (previous: the last snapshots, whose words/ticks are read with slot0)
    PoolWatcher(reader, metas, *, confirmations, full_refresh_s=300, max_gap=64, clock)
        await step() -> PoolUpdate(block, changed, reorg, full, dropped, previous)
            one refresh round (previous: the changed pools' snapshots before it)
        snapshots: dict[address, PoolSnapshot]                    the latest of each pool
        cursor: BlockRef | None                                   the block they hold at

On the devnet, `devkit.pools.quote_pool(state, chain, pool, token_in, amount_in, *,
block="latest") -> Quote` asks QuoterV2 for the same sale (cross-checks in tests).

Invariants:
- Validation reads token0/token1/fee/tickSpacing/factory and the tokens' decimals on
  chain, and requires factory.getPool(token0, token1, fee) to be the pool itself (a
  look-alike contract can claim anything, the factory's registry cannot be faked); any
  difference from the spec, a fee tier whose tick spacing is not the standard one, or
  a contract that does not answer like a pool is a `PoolConfigError` naming the chain
  and the pool.
- Every read of one `read()` is pinned to one block by hash (EIP-1898,
  requireCanonical; the RpcClient's Multicall3 batches with their chain-id sentinel):
  slot0 and liquidity, then the tickBitmap words covering the band around each pool's
  current tick, then `ticks(i)` of every initialised tick inside the band. The words
  and ticks of the previous snapshot are read with slot0 (a guess at the same block,
  so never stale); only words and ticks the guess missed cost more round trips, and
  only ticks whose bit is set in the new bitmap are kept. A node that
  no longer has the block on its canonical chain answers an error, never another
  block's state. A snapshot is complete inside [band_lower, band_upper] and says
  nothing beyond it.
- An answer that cannot be a pool's state (a revert, a short word, a price outside
  TickMath's range or inconsistent with the tick, a liquidity over 2^128, a bitmap bit
  whose tick is not initialised) is a `PoolReadError` naming the pool: a wrong depth
  is never passed on.
- The watcher reads at `head - confirmations` (the confirmed block, as the vault
  indexer's confirmed view). A snapshot's block is the block its state is known to
  hold at: read there, or read earlier and proven unchanged by the absence of
  Swap / Mint / Burn logs up to it.
- Reorg rules are the vault indexer's (chains/index_*.py): only positive evidence (our
  cursor's hash differs at its height) is a reorg; then every pool is read again at the
  new confirmed block. The headers of the range, read before the logs, must chain to
  the cursor (checked by `RpcClient.get_blocks`); a removed log, or a log whose
  blockHash differs from its header, is a reorg in flight: the round is dropped,
  nothing changes, the next round retries. The pinned read after the logs (a pinned
  no-op when no pool changed) proves the block still canonical, so logs and state are
  of one branch. The getLogs span adapts to the provider as the indexer's does
  (`chains.logrange`).
- A full refresh (every pool read again) happens on the first round, after a reorg,
  every `full_refresh_s`, and when the gap since the cursor exceeds `max_gap` blocks
  (reading every pool is then cheaper than the logs, and the answer is the same).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import is_hex_address, keccak

from chains.logrange import LogRange, range_ceiling, range_hint
from chains.pool_state import MAX_TICK, MIN_TICK, Q96, PoolSnapshot, TickLiquidity
from chains.rpc import SEL_GET_BLOCK_NUMBER, RpcClient, RpcError, RpcResponseError, selector
from chains.types import BlockRef

# Fee tier (hundredths of a bip) -> tick spacing, as the canonical factory enables them.
FEE_TICK_SPACING: dict[int, int] = {100: 1, 500: 10, 3000: 60, 10000: 200}
MIN_SQRT_RATIO = 4295128739
MAX_SQRT_RATIO = 1461446703485210103287273052203988822378723970342
LOG_TICK = math.log(1.0001)
MAX_BAND = 0.9

SEL_TOKEN0 = selector("token0()")
SEL_TOKEN1 = selector("token1()")
SEL_FEE = selector("fee()")
SEL_TICK_SPACING = selector("tickSpacing()")
SEL_FACTORY = selector("factory()")
SEL_GET_POOL = selector("getPool(address,address,uint24)")
SEL_DECIMALS = selector("decimals()")
SEL_SLOT0 = selector("slot0()")
SEL_LIQUIDITY = selector("liquidity()")
SEL_TICK_BITMAP = selector("tickBitmap(int16)")
SEL_TICKS = selector("ticks(int24)")

TOPIC_SWAP = "0x" + keccak(text="Swap(address,address,int256,int256,uint160,uint128,int24)").hex()
TOPIC_MINT = "0x" + keccak(text="Mint(address,address,int24,int24,uint128,uint256,uint256)").hex()
TOPIC_BURN = "0x" + keccak(text="Burn(address,int24,int24,uint128,uint256,uint256)").hex()
# One topic0 position holding a list: eth_getLogs ORs them.
POOL_TOPIC_FILTER: list[Any] = [[TOPIC_SWAP, TOPIC_MINT, TOPIC_BURN]]


class PoolConfigError(ValueError):
    """A configured pool is not what its spec says (or not a pool at all)."""


class PoolReadError(RpcError):
    """A pool answered something that cannot be its state."""


@dataclass(frozen=True)
class PoolSpec:
    """A pool to follow and what it must be (None: not checked). `tokens`: its two
    tokens, any order; or, when the config names only the asset, `token`: one of its
    tokens, and `counter_tokens`: what the other one may be (e.g. every configured
    token on the chain); `fee`: its fee tier; `factory`: the factory that deployed it."""

    chain: str
    address: str
    tokens: tuple[str, str] | None = None
    fee: int | None = None
    factory: str | None = None
    label: str = ""
    token: str | None = None
    counter_tokens: frozenset[str] | None = None

    def __post_init__(self) -> None:
        for what, addr in (("pool", self.address), ("factory", self.factory)):
            if addr is not None and not is_hex_address(addr):
                raise PoolConfigError(f"{self.name}: {what} is not an address: {addr!r}")
        listed = [*(self.tokens or ()), *([self.token] if self.token else [])]
        listed += sorted(self.counter_tokens or ())
        if not all(is_hex_address(t) for t in listed):
            raise PoolConfigError(f"{self.name}: tokens must be addresses: {listed!r}")
        if self.counter_tokens is not None and self.token is None:
            raise PoolConfigError(f"{self.name}: counter_tokens needs `token`")
        if self.fee is not None and self.fee not in FEE_TICK_SPACING:
            raise PoolConfigError(
                f"{self.name}: fee {self.fee} is not a fee tier "
                f"(expected one of {sorted(FEE_TICK_SPACING)})"
            )

    @property
    def name(self) -> str:
        label = f" ({self.label})" if self.label else ""
        return f"chain {self.chain!r} pool {self.address}{label}"


@dataclass(frozen=True)
class PoolMeta:
    """A validated pool's immutables, as read on chain (addresses lowercased)."""

    chain: str
    address: str
    token0: str
    token1: str
    decimals0: int
    decimals1: int
    fee: int
    tick_spacing: int
    label: str = ""

    @property
    def name(self) -> str:
        label = f" ({self.label})" if self.label else ""
        return f"chain {self.chain!r} pool {self.address}{label}"


@dataclass(frozen=True)
class PoolUpdate:
    """What one watcher round did: the block the snapshots now hold at, the pools read
    again (lowercased addresses), and why. `previous`: the snapshots the changed pools
    had before this round (what a liquidity-jump guard compares with); after a reorg
    they are the dropped branch's."""

    block: BlockRef | None
    changed: frozenset[str] = frozenset()
    reorg: bool = False
    full: bool = False
    dropped: str | None = None  # why the round changed nothing (a reorg in flight)
    previous: Mapping[str, PoolSnapshot] = field(default_factory=dict)


# ---------------------------------------------------------------- pure helpers


def band_ticks(band: float) -> tuple[int, int]:
    """Ticks below and above the current one that cover prices within -band / +band."""
    if not 0 < band <= MAX_BAND:
        raise ValueError(f"band must be in (0, {MAX_BAND}], got {band}")
    return math.ceil(-math.log(1 - band) / LOG_TICK), math.ceil(math.log(1 + band) / LOG_TICK)


def band_bounds(tick: int, below: int, above: int) -> tuple[int, int]:
    return max(MIN_TICK, tick - below), min(MAX_TICK, tick + above)


def word_positions(lower: int, upper: int, spacing: int) -> range:
    """tickBitmap words covering ticks [lower, upper] (compressed = floor(tick/spacing),
    word = compressed >> 8, as TickBitmap.position computes them)."""
    return range((lower // spacing) >> 8, ((upper // spacing) >> 8) + 1)


def ticks_in_word(word: int, bitmap: int, spacing: int) -> list[int]:
    """The initialised ticks a bitmap word marks, ascending."""
    out = []
    bits = bitmap
    while bits:
        low = bits & -bits
        bit = low.bit_length() - 1
        out.append((word * 256 + bit) * spacing)
        bits ^= low
    return out


def _word(raw: bytes | None, what: str) -> bytes:
    if raw is None:
        raise PoolReadError(f"{what} reverted")
    if len(raw) < 32:
        raise PoolReadError(f"{what} returned {len(raw)} bytes, expected a 32-byte word")
    return raw


def _decode(types: list[str], raw: bytes | None, what: str) -> tuple[Any, ...]:
    data = _word(raw, what)
    try:
        return tuple(abi_decode(types, data))
    except Exception as exc:
        raise PoolReadError(f"{what} is not ({', '.join(types)}): {exc}") from None


def decode_slot0(raw: bytes | None, what: str) -> tuple[int, int]:
    """(sqrtPriceX96, tick) of slot0, checked to be a price TickMath allows and
    consistent with the tick (within one tick: a swap ending on a boundary going down
    leaves tick one below)."""
    sqrt_price, tick = _decode(
        ["uint160", "int24", "uint16", "uint16", "uint16", "uint8", "bool"], raw, what
    )[:2]
    if not MIN_SQRT_RATIO <= sqrt_price < MAX_SQRT_RATIO:
        raise PoolReadError(f"{what}: sqrtPriceX96 {sqrt_price} outside TickMath's range")
    if not MIN_TICK <= tick <= MAX_TICK:
        raise PoolReadError(f"{what}: tick {tick} outside [{MIN_TICK}, {MAX_TICK}]")
    implied = 2 * math.log(sqrt_price / Q96) / LOG_TICK
    if abs(implied - tick) > 1.5:
        raise PoolReadError(
            f"{what}: tick {tick} does not match sqrtPriceX96 {sqrt_price} (tick {implied:.2f})"
        )
    return int(sqrt_price), int(tick)


def decode_tick(raw: bytes | None, what: str) -> tuple[int, int, bool]:
    """(liquidityGross, liquidityNet, initialized) of `ticks(i)`."""
    values = _decode(
        ["uint128", "int128", "uint256", "uint256", "int56", "uint160", "uint32", "bool"],
        raw,
        what,
    )
    return int(values[0]), int(values[1]), bool(values[7])


def _address(raw: bytes | None, what: str) -> str:
    (addr,) = _decode(["address"], raw, what)
    return str(addr).lower()


def _uint(raw: bytes | None, what: str, bits: int = 256) -> int:
    (value,) = _decode([f"uint{bits}"], raw, what)
    return int(value)


# ---------------------------------------------------------------- reader


@dataclass
class _Plan:
    """One pool's read in progress: slot0 (with the previous snapshot's words and ticks
    read alongside, a guess), then the words and ticks the guess missed."""

    meta: PoolMeta
    guess_words: list[int] = field(default_factory=list)
    guess_ticks: list[int] = field(default_factory=list)
    sqrt_price: int = 0
    tick: int = 0
    liquidity: int = 0
    lower: int = 0
    upper: int = 0
    words: range = range(0)
    bitmaps: dict[int, bytes | None] = field(default_factory=dict)
    tick_raw: dict[int, bytes | None] = field(default_factory=dict)
    initialised: list[int] = field(default_factory=list)

    @classmethod
    def guessing(cls, meta: PoolMeta, previous: PoolSnapshot | None) -> _Plan:
        """Read with slot0 what the previous snapshot needed, one word wider each side:
        a swap that stays near the price and no new tick makes this the only round trip."""
        if previous is None:
            return cls(meta)
        words = word_positions(previous.band_lower, previous.band_upper, meta.tick_spacing)
        return cls(
            meta,
            guess_words=list(range(words.start - 1, words.stop + 1)),
            guess_ticks=[t.index for t in previous.ticks],
        )


def _bitmap_call(address: str, word: int) -> tuple[str, bytes]:
    return address, SEL_TICK_BITMAP + abi_encode(["int16"], [word])


def _tick_call(address: str, tick: int) -> tuple[str, bytes]:
    return address, SEL_TICKS + abi_encode(["int24"], [tick])


class PoolReader:
    """Validation and pinned reads of Uniswap v3 pools on one chain."""

    def __init__(self, client: RpcClient, *, band: float = 0.2) -> None:
        self.client = client
        self.chain = client.chain
        self.band = band
        self.below, self.above = band_ticks(band)

    async def validate(self, specs: Sequence[PoolSpec]) -> dict[str, PoolMeta]:
        """Read each pool's immutables and check them against its spec (see the module
        docstring); returns address (lowercased) -> PoolMeta."""
        for s in specs:
            if s.chain != self.chain:
                raise PoolConfigError(f"{s.name}: given to the reader of chain {self.chain!r}")
        calls: list[tuple[str, bytes]] = []
        for s in specs:
            calls += [
                (s.address, SEL_TOKEN0),
                (s.address, SEL_TOKEN1),
                (s.address, SEL_FEE),
                (s.address, SEL_TICK_SPACING),
                (s.address, SEL_FACTORY),
            ]
        at = await self.pin()
        answers = await self.client.call_batch(calls, at.number, block_hash=at.hash)
        immutables = [self._immutables(s, answers[5 * i : 5 * i + 5]) for i, s in enumerate(specs)]
        follow: list[tuple[str, bytes]] = []
        for t0, t1, fee, _spacing, factory in immutables:
            follow += [(t0, SEL_DECIMALS), (t1, SEL_DECIMALS)]
            follow.append(
                (
                    factory,
                    SEL_GET_POOL + abi_encode(["address", "address", "uint24"], [t0, t1, fee]),
                )
            )
        more = await self.client.call_batch(follow, at.number, block_hash=at.hash)
        out: dict[str, PoolMeta] = {}
        for i, (s, imm) in enumerate(zip(specs, immutables, strict=True)):
            out[s.address.lower()] = self._meta(s, imm, more[3 * i : 3 * i + 3])
        return out

    def _immutables(self, s: PoolSpec, raw: list[bytes | None]) -> tuple[str, str, int, int, str]:
        try:
            t0 = _address(raw[0], "token0()")
            t1 = _address(raw[1], "token1()")
            fee = _uint(raw[2], "fee()", 24)
            spacing = int(_decode(["int24"], raw[3], "tickSpacing()")[0])
            factory = _address(raw[4], "factory()")
        except PoolReadError as exc:
            raise PoolConfigError(
                f"{s.name} does not answer like a Uniswap v3 pool: {exc}"
            ) from None
        self._check_tokens(s, t0, t1)
        if s.fee is not None and fee != s.fee:
            raise PoolConfigError(f"{s.name} has fee {fee}, expected {s.fee}")
        if FEE_TICK_SPACING.get(fee) != spacing:
            raise PoolConfigError(
                f"{s.name}: fee {fee} with tick spacing {spacing} is not a standard fee tier"
            )
        if s.factory is not None and factory != s.factory.lower():
            raise PoolConfigError(f"{s.name} was created by {factory}, expected {s.factory}")
        return t0, t1, fee, spacing, factory

    @staticmethod
    def _check_tokens(s: PoolSpec, t0: str, t1: str) -> None:
        if s.tokens is not None and {t0, t1} != {t.lower() for t in s.tokens}:
            raise PoolConfigError(
                f"{s.name} trades {t0}/{t1}, expected {s.tokens[0]}/{s.tokens[1]}"
            )
        if s.token is not None and s.token.lower() not in (t0, t1):
            raise PoolConfigError(f"{s.name} trades {t0}/{t1}, which lacks {s.token}")
        if s.token is not None and s.counter_tokens is not None:
            other = t1 if s.token.lower() == t0 else t0
            if other not in {t.lower() for t in s.counter_tokens}:
                raise PoolConfigError(
                    f"{s.name} trades {t0}/{t1}: {other} is none of the allowed counter tokens"
                )

    def _meta(
        self, s: PoolSpec, imm: tuple[str, str, int, int, str], raw: list[bytes | None]
    ) -> PoolMeta:
        t0, t1, fee, spacing, factory = imm
        try:
            d0 = _uint(raw[0], f"decimals() of token0 {t0}", 8)
            d1 = _uint(raw[1], f"decimals() of token1 {t1}", 8)
            registered = _address(raw[2], f"getPool() on factory {factory}")
        except PoolReadError as exc:
            raise PoolConfigError(f"{s.name}: {exc}") from None
        if registered != s.address.lower():
            # Only the factory's own pool for (token0, token1, fee) is trusted: a look-alike
            # contract could report any tokens and any state.
            raise PoolConfigError(
                f"{s.name} is not the pool its factory {factory} registers for "
                f"{t0}/{t1} fee {fee} (that is {registered})"
            )
        return PoolMeta(s.chain, s.address.lower(), t0, t1, d0, d1, fee, spacing, s.label)

    async def pin(self, block: int | None = None) -> BlockRef:
        """The block (number and hash) a read is pinned to: `block`, or the head."""
        number = block if block is not None else await self.client.block_number()
        ref = await self.client.get_block(number)
        if ref is None:
            raise PoolReadError(f"chain {self.chain!r}: block {number} not found")
        return ref

    async def read(
        self,
        metas: Iterable[PoolMeta],
        at: BlockRef,
        previous: Mapping[str, PoolSnapshot] | None = None,
    ) -> dict[str, PoolSnapshot]:
        """Snapshots of `metas` at block `at` (every call pinned to its hash). With
        `previous` snapshots (address -> snapshot) their words and ticks are read in the
        first round trip; only what that guess missed costs another."""
        prev = previous or {}
        plans = [_Plan.guessing(m, prev.get(m.address)) for m in metas]
        if not plans:
            return {}
        for m in (p.meta for p in plans):
            if m.chain != self.chain:
                raise PoolConfigError(f"{m.name}: given to the reader of chain {self.chain!r}")
        await self._read_first(plans, at)
        await self._read_words(plans, at)
        ticks = await self._read_ticks(plans, at)
        return {p.meta.address: self._snapshot(p, ticks[i], at) for i, p in enumerate(plans)}

    async def _batch(self, calls: list[tuple[str, bytes]], at: BlockRef) -> list[bytes | None]:
        if not calls:
            return []  # the guess covered it: no round trip
        return await self.client.call_batch(calls, at.number, block_hash=at.hash)

    async def _read_first(self, plans: list[_Plan], at: BlockRef) -> None:
        calls: list[tuple[str, bytes]] = []
        for p in plans:
            a = p.meta.address
            calls += [(a, SEL_SLOT0), (a, SEL_LIQUIDITY)]
            calls += [_bitmap_call(a, w) for w in p.guess_words]
            calls += [_tick_call(a, t) for t in p.guess_ticks]
        raw = iter(await self._batch(calls, at))
        for p in plans:
            name = p.meta.name
            p.sqrt_price, p.tick = decode_slot0(next(raw), f"{name}: slot0()")
            p.liquidity = _uint(next(raw), f"{name}: liquidity()", 128)
            p.bitmaps = {w: next(raw) for w in p.guess_words}
            p.tick_raw = {t: next(raw) for t in p.guess_ticks}
            p.lower, p.upper = band_bounds(p.tick, self.below, self.above)
            p.words = word_positions(p.lower, p.upper, p.meta.tick_spacing)

    async def _read_words(self, plans: list[_Plan], at: BlockRef) -> None:
        missing = [(p, w) for p in plans for w in p.words if w not in p.bitmaps]
        raw = await self._batch([_bitmap_call(p.meta.address, w) for p, w in missing], at)
        for (p, w), data in zip(missing, raw, strict=True):
            p.bitmaps[w] = data
        for p in plans:
            for w in p.words:
                bitmap = _uint(p.bitmaps[w], f"{p.meta.name}: tickBitmap({w})")
                p.initialised += [
                    t
                    for t in ticks_in_word(w, bitmap, p.meta.tick_spacing)
                    if p.lower <= t <= p.upper
                ]

    async def _read_ticks(self, plans: list[_Plan], at: BlockRef) -> list[list[TickLiquidity]]:
        missing = [(p, t) for p in plans for t in p.initialised if t not in p.tick_raw]
        raw = await self._batch([_tick_call(p.meta.address, t) for p, t in missing], at)
        for (p, t), data in zip(missing, raw, strict=True):
            p.tick_raw[t] = data
        out: list[list[TickLiquidity]] = []
        for p in plans:
            ticks = []
            for t in p.initialised:
                what = f"{p.meta.name}: ticks({t})"
                gross, net, initialized = decode_tick(p.tick_raw[t], what)
                if not initialized or gross == 0:
                    raise PoolReadError(f"{what}: marked in tickBitmap but not initialised")
                ticks.append(TickLiquidity(t, net))
            out.append(ticks)
        return out

    @staticmethod
    def _snapshot(p: _Plan, ticks: list[TickLiquidity], at: BlockRef) -> PoolSnapshot:
        m = p.meta
        return PoolSnapshot(
            chain=m.chain,
            address=m.address,
            token0=m.token0,
            token1=m.token1,
            decimals0=m.decimals0,
            decimals1=m.decimals1,
            fee=m.fee,
            tick_spacing=m.tick_spacing,
            sqrt_price_x96=p.sqrt_price,
            tick=p.tick,
            liquidity=p.liquidity,
            ticks=tuple(ticks),
            band_lower=p.lower,
            band_upper=p.upper,
            block_number=at.number,
            block_hash=at.hash,
        )


# ---------------------------------------------------------------- watcher


class PoolWatcher:
    """Keeps every pool of one chain fresh at the confirmed block (see the module
    docstring for the reorg rules). Not concurrent: one `step()` at a time."""

    def __init__(
        self,
        reader: PoolReader,
        metas: Iterable[PoolMeta],
        *,
        confirmations: int,
        full_refresh_s: float = 300.0,
        max_gap: int = 64,
        max_log_range: int = 2000,
        clock: Callable[[], float] = time.monotonic,
        min_block: int = 0,
    ) -> None:
        if confirmations < 0 or max_gap < 1 or full_refresh_s <= 0:
            raise ValueError("confirmations >= 0, max_gap >= 1 and full_refresh_s > 0 required")
        self.reader = reader
        self.client = reader.client
        self.metas = {m.address: m for m in metas}
        self.confirmations = confirmations
        self.full_refresh_s = full_refresh_s
        self.max_gap = max_gap
        self.clock = clock
        self.range = LogRange(max_log_range, max_log_range)
        self.snapshots: dict[str, PoolSnapshot] = {}
        self.cursor: BlockRef | None = None
        self._last_full = -math.inf
        # The chain's configured start block: nothing below it is read. A fork answers
        # for its pre-fork blocks with the parent chain's state and chain id, which the
        # multicall sentinel would take for a lying endpoint and demote.
        self.min_block = min_block

    async def step(self) -> PoolUpdate:
        head = await self.client.block_number()
        target_n = max(0, head - self.confirmations)
        cur = self.cursor
        if target_n < self.min_block:
            return PoolUpdate(cur, dropped=f"confirmed block {target_n} is below start block "
                              f"{self.min_block}")  # fmt: skip
        if cur is not None and target_n <= cur.number:
            # Nothing newer is confirmed; a reorg shows up once it is.
            return PoolUpdate(cur)
        due = self.clock() - self._last_full >= self.full_refresh_s
        if cur is None or due or target_n - cur.number > self.max_gap:
            return await self._full(await self.reader.pin(target_n), reorg=False)
        headers = await self.client.get_blocks(list(range(cur.number, target_n + 1)))
        if headers[cur.number].hash != cur.hash:
            # Positive evidence: our cursor's block is no longer canonical.
            return await self._full(await self.reader.pin(target_n), reorg=True)
        if headers[cur.number + 1].parent_hash != cur.hash:
            return PoolUpdate(cur, dropped="headers do not extend the cursor (reorg in flight)")
        changed = await self._changed(cur.number + 1, target_n, headers)
        if isinstance(changed, str):
            return PoolUpdate(cur, dropped=changed)
        return await self._apply(cur, headers[target_n], changed)

    async def _changed(
        self, start: int, end: int, headers: Mapping[int, BlockRef]
    ) -> set[str] | str:
        """Pools with a Swap/Mint/Burn log in [start, end], or why the round is dropped."""
        changed: set[str] = set()
        for entry in await self._logs(start, end):
            n = int(str(entry.get("blockNumber")), 16)
            if entry.get("removed") or str(entry.get("blockHash", "")).lower() != headers[n].hash:
                return f"log in block {n} is stale (reorg in flight)"
            changed.add(str(entry["address"]).lower())
        return changed

    async def _apply(self, cur: BlockRef, at: BlockRef, changed: set[str]) -> PoolUpdate:
        """Read the changed pools at `at`; the others are proven unchanged up to it."""
        try:
            fresh = await self.reader.read(
                [self.metas[a] for a in sorted(changed)], at, self.snapshots
            )
            if not fresh:
                # Nothing to read, but the restamp below still needs proof that the
                # block is canonical *after* the logs were read: a pinned no-op.
                await self.client.call_batch(
                    [(self.client.multicall, SEL_GET_BLOCK_NUMBER)], at.number, block_hash=at.hash
                )
        except RpcResponseError as exc:
            # requireCanonical: the block left the chain between the header and the read.
            return PoolUpdate(cur, dropped=f"pinned read refused ({exc.message})")
        previous = {a: self.snapshots[a] for a in fresh if a in self.snapshots}
        for addr, snap in self.snapshots.items():
            if addr not in fresh:
                self.snapshots[addr] = replace(snap, block_number=at.number, block_hash=at.hash)
        self.snapshots.update(fresh)
        self.cursor = at
        return PoolUpdate(at, frozenset(fresh), previous=previous)

    async def _full(self, at: BlockRef, *, reorg: bool) -> PoolUpdate:
        try:
            # After a reorg the old snapshots are another branch's: only a guess.
            fresh = await self.reader.read(self.metas.values(), at, self.snapshots)
        except RpcResponseError as exc:
            return PoolUpdate(self.cursor, dropped=f"pinned read refused ({exc.message})")
        previous, self.snapshots = self.snapshots, fresh
        self.cursor = at
        self._last_full = self.clock()
        return PoolUpdate(at, frozenset(fresh), reorg=reorg, full=True, previous=previous)

    async def _logs(self, start: int, end: int) -> list[dict[str, Any]]:
        """Swap/Mint/Burn logs of every pool over [start, end], in spans the provider
        accepts (shrunk on its range errors as the indexer's are)."""
        out: list[dict[str, Any]] = []
        pools = sorted(self.metas)
        while start <= end:
            stop = min(end, start + self.range.current - 1)
            span = stop - start + 1
            try:
                out += await self.client.get_logs(pools, POOL_TOPIC_FILTER, start, stop)
            except RpcResponseError as exc:
                hint = range_hint(exc.message, span)
                if hint is None or span == 1:
                    raise
                self.range.shrink_to(hint)
                ceiling = range_ceiling(exc.message, span)
                if ceiling is not None:
                    self.range.limit_to(ceiling)
                continue
            self.range.succeeded()
            start = stop + 1
        return out
