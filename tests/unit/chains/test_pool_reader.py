"""Pool reader without a chain: decoding, the band and its words, validation and the
read pipeline against an in-memory pool that answers the calls a real one would."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from eth_abi import decode, encode
from hypothesis import given, settings
from hypothesis import strategies as st

from chains.pool_reader import (
    SEL_DECIMALS,
    SEL_FACTORY,
    SEL_FEE,
    SEL_GET_POOL,
    SEL_LIQUIDITY,
    SEL_SLOT0,
    SEL_TICK_BITMAP,
    SEL_TICK_SPACING,
    SEL_TICKS,
    SEL_TOKEN0,
    SEL_TOKEN1,
    PoolConfigError,
    PoolMeta,
    PoolReader,
    PoolReadError,
    PoolSpec,
    PoolWatcher,
    band_ticks,
    decode_slot0,
    decode_tick,
    ticks_in_word,
    word_positions,
)
from chains.pool_state import MAX_TICK, MIN_TICK
from chains.rpc import RpcResponseError
from chains.types import BlockRef

T0 = "0x" + "11" * 20
T1 = "0x" + "22" * 20
FACTORY = "0x" + "fa" * 20
POOL = "0x" + "99" * 20
AT = BlockRef(100, "0x" + "ab" * 32, "0x" + "aa" * 32)


def sqrt_price_at(tick: int) -> int:
    return int(math.sqrt(1.0001**tick) * 2**96)


def slot0(sqrt_price: int, tick: int) -> bytes:
    return encode(
        ["uint160", "int24", "uint16", "uint16", "uint16", "uint8", "bool"],
        [sqrt_price, tick, 0, 1, 1, 0, True],
    )


def tick_info(gross: int, net: int, initialized: bool = True) -> bytes:
    return encode(
        ["uint128", "int128", "uint256", "uint256", "int56", "uint160", "uint32", "bool"],
        [gross, net, 0, 0, 0, 0, 0, initialized],
    )


# ------------------------------------------------------------------ band and words


def position(tick: int, spacing: int) -> tuple[int, int]:
    """TickBitmap.position from the Solidity source: compressed rounds toward -inf."""
    compressed = int(tick / spacing)  # Solidity division truncates toward zero
    if tick < 0 and tick % spacing != 0:
        compressed -= 1
    return compressed >> 8, compressed % 256


def test_band_ticks_cover_exactly_the_price_band() -> None:
    for band in (0.01, 0.05, 0.2, 0.5, 0.9):
        below, above = band_ticks(band)
        assert 1.0001**-below <= 1 - band < 1.0001 ** -(below - 1)
        assert 1.0001**above >= 1 + band > 1.0001 ** (above - 1)
    for bad in (0.0, -0.1, 0.95):
        with pytest.raises(ValueError, match="band"):
            band_ticks(bad)


@given(
    st.integers(MIN_TICK, MAX_TICK),
    st.integers(0, 30_000),
    st.sampled_from([1, 10, 60, 200]),
)
def test_words_are_exactly_those_holding_a_tick_of_the_band(
    tick: int, width: int, spacing: int
) -> None:
    lower, upper = max(MIN_TICK, tick - width), min(MAX_TICK, tick + width)
    # Every spaced tick in the band, positioned the Solidity way.
    first = -(-lower // spacing) * spacing
    expected = {position(t, spacing)[0] for t in range(first, upper + 1, spacing)}
    got = set(word_positions(lower, upper, spacing))
    assert expected <= got
    # At most the partial words at both ends are extra, never a word beyond them.
    assert got <= {position(lower, spacing)[0], position(upper, spacing)[0]} | expected


@given(st.integers(-(2**15), 2**15 - 1), st.integers(0, 2**256 - 1), st.sampled_from([1, 60]))
def test_ticks_in_word_reads_every_set_bit(word: int, bitmap: int, spacing: int) -> None:
    expected = [(word * 256 + b) * spacing for b in range(256) if bitmap >> b & 1]
    assert ticks_in_word(word, bitmap, spacing) == expected
    for t in expected:
        assert position(t, spacing) == (word, (t // spacing) % 256)


# ------------------------------------------------------------------ decoding


def test_slot0_decodes_and_checks_price_against_tick() -> None:
    for tick in (-200_000, -1, 0, 1, 75_000, 887_000):
        assert decode_slot0(slot0(sqrt_price_at(tick), tick), "p") == (sqrt_price_at(tick), tick)
    with pytest.raises(PoolReadError, match="does not match"):
        decode_slot0(slot0(sqrt_price_at(1000), 1200), "pool X slot0()")
    with pytest.raises(PoolReadError, match="outside TickMath"):
        decode_slot0(slot0(1, 0), "p")
    with pytest.raises(PoolReadError, match="pool X slot0\\(\\) reverted"):
        decode_slot0(None, "pool X slot0()")
    with pytest.raises(PoolReadError, match="6 bytes"):
        decode_slot0(b"\x00" * 6, "p")
    # A word that is no int24: the padding of a signed value must be its sign.
    bad = bytearray(slot0(sqrt_price_at(5), 5))
    bad[32] = 0x7F
    with pytest.raises(PoolReadError, match="is not"):
        decode_slot0(bytes(bad), "p")


def test_tick_info_decodes_signed_liquidity_net() -> None:
    assert decode_tick(tick_info(10**20, -(10**20)), "t") == (10**20, -(10**20), True)
    assert decode_tick(tick_info(5, 5, False), "t") == (5, 5, False)
    with pytest.raises(PoolReadError, match="expected a 32-byte word"):
        decode_tick(b"\x01", "t")


# ------------------------------------------------------------------ in-memory pool


@dataclass
class FakePool:
    tokens: tuple[str, str] = (T0, T1)
    fee: int = 3000
    spacing: int = 60
    factory: str = FACTORY
    tick: int = 0
    liquidity: int = 10**18
    ticks: dict[int, int] = field(default_factory=dict)
    registered: str = POOL
    broken_bit: int | None = None  # a bitmap bit whose tick is not initialised

    def bitmap(self, word: int) -> int:
        out = 0
        for t in [*self.ticks, *([self.broken_bit] if self.broken_bit is not None else [])]:
            w, b = position(t, self.spacing)
            if w == word:
                out |= 1 << b
        return out

    def answer(self, data: bytes) -> bytes | None:
        sel, args = data[:4], data[4:]
        simple = {
            SEL_TOKEN0: encode(["address"], [self.tokens[0]]),
            SEL_TOKEN1: encode(["address"], [self.tokens[1]]),
            SEL_FEE: encode(["uint24"], [self.fee]),
            SEL_TICK_SPACING: encode(["int24"], [self.spacing]),
            SEL_FACTORY: encode(["address"], [self.factory]),
            SEL_SLOT0: slot0(sqrt_price_at(self.tick), self.tick),
            SEL_LIQUIDITY: encode(["uint128"], [self.liquidity]),
        }
        if sel in simple:
            return simple[sel]
        if sel == SEL_TICK_BITMAP:
            return encode(["uint256"], [self.bitmap(decode(["int16"], args)[0])])
        if sel == SEL_TICKS:
            (t,) = decode(["int24"], args)
            if t in self.ticks:
                return tick_info(abs(self.ticks[t]), self.ticks[t])
            return tick_info(0, 0, False)
        return None


@dataclass
class FakeChain:
    pool: FakePool
    chain: str = "alpha"
    calls: list[int] = field(default_factory=list)
    multicall: str = "0x" + "ca" * 20

    async def call_batch(
        self, calls: list[tuple[str, bytes]], block: Any = "latest", *, block_hash: Any = None
    ) -> list[bytes | None]:
        assert block == AT.number and block_hash == AT.hash, "every read is pinned by hash"
        self.calls.append(len(calls))
        out: list[bytes | None] = []
        for to, data in calls:
            if to.lower() == POOL:
                out.append(self.pool.answer(data))
            elif data[:4] == SEL_DECIMALS and to.lower() in (T0, T1):
                out.append(encode(["uint8"], [18 if to.lower() == T0 else 6]))
            elif data[:4] == SEL_GET_POOL and to.lower() == FACTORY:
                out.append(encode(["address"], [self.pool.registered]))
            else:
                out.append(None)
        return out

    async def block_number(self) -> int:
        return AT.number

    async def get_block(self, number: int) -> BlockRef:
        assert number == AT.number
        return AT


def reader(pool: FakePool, band: float = 0.2) -> tuple[PoolReader, FakeChain]:
    chain = FakeChain(pool)
    return PoolReader(chain, band=band), chain  # type: ignore[arg-type]


async def test_validate_reads_immutables_and_decimals() -> None:
    r, _ = reader(FakePool())
    metas = await r.validate([PoolSpec("alpha", POOL, (T1, T0), 3000, FACTORY, "X/Y")])
    m = metas[POOL]
    assert (m.token0, m.token1, m.decimals0, m.decimals1, m.fee, m.tick_spacing) == (
        T0,
        T1,
        18,
        6,
        3000,
        60,
    )


@pytest.mark.parametrize(
    ("pool", "spec", "message"),
    [
        (FakePool(), PoolSpec("alpha", POOL, (T0, FACTORY)), "trades .* expected"),
        (FakePool(), PoolSpec("alpha", POOL, fee=500), "has fee 3000, expected 500"),
        (FakePool(spacing=10), PoolSpec("alpha", POOL), "not a standard fee tier"),
        (FakePool(), PoolSpec("alpha", POOL, factory=T0), "was created by"),
        (FakePool(registered=T1), PoolSpec("alpha", POOL), "is not the pool its factory"),
        (FakePool(tokens=(T0, "0x" + "33" * 20)), PoolSpec("alpha", POOL), "decimals"),
        (FakePool(), PoolSpec("alpha", POOL, token=FACTORY), "lacks"),
        (
            FakePool(),
            PoolSpec("alpha", POOL, token=T1, counter_tokens=frozenset({FACTORY})),
            f"{T0} is none of the allowed counter tokens",
        ),
    ],
)
async def test_validation_errors_name_the_pool(
    pool: FakePool, spec: PoolSpec, message: str
) -> None:
    r, _ = reader(pool)
    with pytest.raises(PoolConfigError, match=message) as exc:
        await r.validate([spec])
    assert POOL in str(exc.value) and "'alpha'" in str(exc.value)


async def test_one_token_and_its_allowed_counterparts_pass() -> None:
    r, _ = reader(FakePool())
    spec = PoolSpec(
        "alpha", POOL, token=T1.upper().replace("0X", "0x"), counter_tokens=frozenset({T0})
    )
    assert POOL in await r.validate([spec])
    with pytest.raises(PoolConfigError, match="counter_tokens needs `token`"):
        PoolSpec("alpha", POOL, counter_tokens=frozenset({T0}))


async def test_not_a_pool_is_a_config_error() -> None:
    r, _ = reader(FakePool())
    other = "0x" + "77" * 20
    with pytest.raises(PoolConfigError, match=f"{other}.*does not answer like a Uniswap v3 pool"):
        await r.validate([PoolSpec("alpha", other)])


def test_spec_rejects_malformed_fields() -> None:
    with pytest.raises(PoolConfigError, match="not an address"):
        PoolSpec("alpha", "0x12")
    with pytest.raises(PoolConfigError, match="fee 123 is not a fee tier"):
        PoolSpec("alpha", POOL, fee=123)


async def test_read_returns_the_initialised_ticks_of_the_band_only() -> None:
    rng = random.Random(5)
    tick = -201_003
    spacing = 60
    # Ticks inside the ±20% band and well outside it, on both sides.
    ticks = {
        t * spacing: rng.choice([-1, 1]) * rng.randrange(1, 10**24)
        for t in rng.sample(range((tick - 9000) // spacing, (tick + 9000) // spacing), 80)
    }
    pool = FakePool(tick=tick, ticks=ticks)
    r, chain = reader(pool)
    metas = await r.validate([PoolSpec("alpha", POOL)])
    snap = (await r.read(metas.values(), AT))[POOL]
    below, above = band_ticks(0.2)
    assert (snap.band_lower, snap.band_upper) == (tick - below, tick + above)
    expected = sorted((t, n) for t, n in ticks.items() if snap.band_lower <= t <= snap.band_upper)
    assert [(x.index, x.liquidity_net) for x in snap.ticks] == expected
    assert 0 < len(expected) < len(ticks)
    assert (snap.tick, snap.liquidity, snap.block_number, snap.block_hash) == (
        tick,
        pool.liquidity,
        AT.number,
        AT.hash,
    )
    # Three pinned batches after validation: slot0+liquidity, words, ticks.
    assert len(chain.calls) == 2 + 3


async def test_a_bitmap_bit_without_an_initialised_tick_is_an_error() -> None:
    pool = FakePool(ticks={60: 5, -60: -5}, broken_bit=120)
    r, _ = reader(pool)
    metas = await r.validate([PoolSpec("alpha", POOL, label="W/U")])
    with pytest.raises(PoolReadError, match=r"ticks\(120\): marked in tickBitmap but not"):
        await r.read(metas.values(), AT)


@settings(max_examples=30)
@given(st.integers(-800_000, 800_000), st.sampled_from([(500, 10), (3000, 60), (100, 1)]))
async def test_band_is_clamped_to_tick_range_and_read_completely(
    tick: int, tier: tuple[int, int]
) -> None:
    fee, spacing = tier
    near = (tick // spacing) * spacing
    ticks = {near - spacing: 7, near + spacing: -7}
    ticks = {t: n for t, n in ticks.items() if MIN_TICK <= t <= MAX_TICK}
    r, _ = reader(FakePool(fee=fee, spacing=spacing, tick=tick, ticks=ticks), band=0.05)
    metas = await r.validate([PoolSpec("alpha", POOL)])
    snap = (await r.read(metas.values(), AT))[POOL]
    assert MIN_TICK <= snap.band_lower <= tick <= snap.band_upper <= MAX_TICK
    assert {x.index for x in snap.ticks} == set(ticks)


async def test_previous_snapshot_makes_an_unchanged_band_one_round_trip() -> None:
    pool = FakePool(tick=-1000, ticks={-1200: 50, -900: -20, 600: -30})
    r, chain = reader(pool)
    metas = await r.validate([PoolSpec("alpha", POOL)])
    first = await r.read(metas.values(), AT)
    chain.calls.clear()
    # A swap within the words: one batch, same result as a fresh read.
    pool.tick = -950
    again = await r.read(metas.values(), AT, first)
    assert len(chain.calls) == 1
    assert again == await r.read(metas.values(), AT)
    # A new tick and a removed one: the guess misses one tick (one more batch) and the
    # removed tick's stale guess is dropped because its bit is gone.
    pool.ticks = {-1200: 50, -600: 7, 600: -30}
    chain.calls.clear()
    moved = await r.read(metas.values(), AT, again)
    assert len(chain.calls) == 2
    assert [(t.index, t.liquidity_net) for t in moved[POOL].ticks] == [
        (-1200, 50),
        (-600, 7),
        (600, -30),
    ]
    # A jump far away: words and ticks missed, three batches, still exact.
    pool.tick, pool.ticks = 60_000, {59_940: 3, 60_120: -3}
    chain.calls.clear()
    far = await r.read(metas.values(), AT, moved)
    assert len(chain.calls) == 3
    assert far == await r.read(metas.values(), AT)


# ------------------------------------------------------------------ watcher


def block_hash(n: int, branch: str) -> str:
    return "0x" + f"{branch}{n:04x}".rjust(64, "0")


@dataclass
class FakeBlocks(FakeChain):
    """A chain of headers (a branch letter in each hash), logs, and pinned reads that a
    node refuses for a hash not on its chain (requireCanonical)."""

    branch: dict[int, str] = field(default_factory=dict)
    logs: list[dict[str, Any]] = field(default_factory=list)
    head: int = 0

    def mine(self, n: int = 1, branch: str = "a") -> None:
        for _ in range(n):
            self.head += 1
            self.branch[self.head] = branch

    def ref(self, n: int) -> BlockRef:
        parent = block_hash(n - 1, self.branch[n - 1]) if n - 1 in self.branch else "0x0"
        return BlockRef(n, block_hash(n, self.branch[n]), parent)

    async def block_number(self) -> int:
        return self.head

    async def get_block(self, number: int) -> BlockRef:
        return self.ref(number)

    async def get_blocks(self, numbers: list[int]) -> dict[int, BlockRef]:
        return {n: self.ref(n) for n in numbers}

    async def get_logs(
        self, address: Any, topics: Any, from_block: int, to_block: int
    ) -> list[dict[str, Any]]:
        return [e for e in self.logs if from_block <= int(e["blockNumber"], 16) <= to_block]

    async def call_batch(
        self, calls: list[tuple[str, bytes]], block: Any = "latest", *, block_hash: Any = None
    ) -> list[bytes | None]:
        if block_hash != self.ref(block).hash:
            raise RpcResponseError("alpha", "x", "eth_call", {"message": "block not canonical"})
        self.calls.append(len(calls))
        return [self.pool.answer(d) if t.lower() == POOL else None for t, d in calls]

    def swap_log(self, n: int, *, removed: bool = False, stale: bool = False) -> None:
        h = block_hash(n, "z" if stale else self.branch[n])
        self.logs.append(
            {"address": POOL, "blockNumber": hex(n), "blockHash": h, "removed": removed}
        )


async def watched(
    confirmations: int = 1, **kwargs: Any
) -> tuple[FakeBlocks, PoolWatcher, list[float]]:
    chain = FakeBlocks(FakePool(tick=100, ticks={60: 5, 180: -5}))
    chain.branch[0] = "a"
    chain.mine(10)
    clock = [0.0]
    reader = PoolReader(chain)  # type: ignore[arg-type]
    meta = PoolMeta("alpha", POOL, T0, T1, 18, 6, 3000, 60)
    w = PoolWatcher(reader, [meta], confirmations=confirmations, clock=lambda: clock[0], **kwargs)
    first = await w.step()
    assert first.full and first.changed == {POOL} and first.block == chain.ref(10 - confirmations)
    return chain, w, clock


async def test_watcher_reads_only_pools_with_logs_and_restamps_the_rest() -> None:
    chain, w, _ = await watched()
    assert (await w.step()).changed == frozenset()  # nothing newer confirmed
    chain.mine(3)
    chain.calls.clear()
    quiet = await w.step()
    assert quiet.changed == frozenset() and quiet.block == chain.ref(12)
    assert chain.calls == [1]  # the pinned no-op proving block 12 canonical
    assert w.snapshots[POOL].block_hash == chain.ref(12).hash
    chain.pool.tick = 150
    chain.mine()
    chain.swap_log(13)
    chain.mine()
    before = w.snapshots[POOL]
    moved = await w.step()
    assert moved.changed == {POOL} and not moved.full
    assert moved.previous == {POOL: before} and before.tick == 100
    assert w.snapshots[POOL].tick == 150 and w.snapshots[POOL].block_number == 14


async def test_watcher_drops_a_round_with_a_removed_or_stale_log() -> None:
    for kind in ("removed", "stale"):
        chain, w, _ = await watched()
        chain.mine()
        chain.swap_log(10, **{kind: True})
        chain.mine()
        update = await w.step()
        assert update.dropped is not None and "reorg in flight" in update.dropped
        assert w.cursor == chain.ref(9) and not update.changed


async def test_watcher_rereads_everything_after_a_reorg() -> None:
    chain, w, _ = await watched()
    # Blocks 8.. replaced by another branch: the cursor (9) is no longer canonical.
    chain.head = 7
    chain.pool.tick = -500
    chain.mine(5, branch="b")
    update = await w.step()
    assert update.reorg and update.full and update.changed == {POOL}
    assert w.cursor == chain.ref(11) and w.snapshots[POOL].tick == -500


async def test_watcher_full_refresh_on_schedule_and_after_a_long_gap() -> None:
    chain, w, clock = await watched(full_refresh_s=60, max_gap=5)
    chain.mine()
    assert not (await w.step()).full
    clock[0] = 61
    chain.mine()
    assert (await w.step()).full
    chain.mine(6)
    assert (await w.step()).full  # 6 blocks since the cursor > max_gap


async def test_watcher_drops_a_round_whose_pinned_read_is_refused() -> None:
    chain, w, _ = await watched(confirmations=0)
    chain.mine()
    chain.swap_log(11)
    original = chain.call_batch

    async def refuse(*args: Any, **kwargs: Any) -> list[bytes | None]:
        raise RpcResponseError("alpha", "x", "eth_call", {"message": "header not found"})

    chain.call_batch = refuse  # type: ignore[method-assign]
    update = await w.step()
    assert update.dropped is not None and "pinned read refused" in update.dropped
    assert w.cursor == chain.ref(10)
    chain.call_batch = original  # type: ignore[method-assign]
    assert (await w.step()).changed == {POOL}


async def test_watcher_reads_nothing_below_the_chain_start_block() -> None:
    """A fork answers for its pre-fork blocks with the parent chain's state and chain
    id (the multicall sentinel would demote an honest endpoint): the watcher waits
    until the confirmed block reaches the chain's configured start block."""
    chain = FakeBlocks(FakePool(tick=100, ticks={60: 5, 180: -5}))
    chain.branch[0] = "a"
    chain.mine(10)
    reader = PoolReader(chain)  # type: ignore[arg-type]
    meta = PoolMeta("alpha", POOL, T0, T1, 18, 6, 3000, 60)
    w = PoolWatcher(reader, [meta], confirmations=2, min_block=12)
    early = await w.step()
    assert early.block is None and "below start block 12" in (early.dropped or "")
    assert chain.calls == [] and w.snapshots == {}
    chain.mine(4)
    first = await w.step()
    assert first.full and first.block == chain.ref(12)
