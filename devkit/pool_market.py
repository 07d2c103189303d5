"""The devnet's Uniswap v3 pools under the market simulator: arbitrage and LP moves.

    market = PoolMarket.for_state(state, chains, seed=7)   # None without pools
    txs = await market.transactions(session, chain, model)  # this tick's, for one chain

Each tick, per chain and pool, the arbitrage trader (dev account 8) swaps through the
SwapRouter with a price limit, so the pool price moves to the edge of the no-arbitrage
band around the market price: |ln(pool / market)| <= fee. The market price is the
simulator's `MarketModel` (USD prices for WETH/USDC and WBTC/USDC; LST rates for the
LST/WETH pools, the fixed `CBETH_RATE` for cbETH). The router pulls only what the pool
took before the limit stopped it, so the amount in is a cap, not a size.

With probability `move_probability` per tick and chain, the LP (dev account 7) moves
liquidity in one random pool: mints a narrow position around the current price (2-8%
of the pool's base value on that chain) or, once `max_positions` such positions are
open there (or by chance), burns its oldest (decreaseLiquidity + collect). The base book
(devkit/pools.py) is never touched, so depth fluctuates around its shape.

Invariants:
- Everything is computed from the pool's slot0 read at the start of the tick; the
  transactions are sent with the tick's feed updates and mined in the same block.
- Only ids this object minted are burned: it learns each new id as the manager's
  `totalSupply() + 1` right before its own mint (nothing else mints on the devnet).
- Pure decisions (`arbitrage_limit`, `MoveChoice`) are separate from the RPC code.

`recentre_txs` serves a replay whose first prices are far from the devnet's start
prices (ETH 217 in March 2020 against a book minted at 3,000): after the pools are
arbitraged to the first prices, the LP mints a fresh base book (POSITION_SHAPE, the
chain's depth, valued at those prices) around each pool's new price, as LPs re-centre
after a move; the old base book stays where it is (out of range, as real stale
positions are). Without it, the pools' in-range depth would be a few thousand USD and
the daemon's pool-based liquidity haircut would liquidate the book for the devnet's
starting prices, not the episode's. The replay re-centres again whenever a USD price
has moved RECENTRE_MOVE from the last centre (`recentre_due`): an LP book that never
follows a 50% crash leaves a few per cent of its depth in range, and the daemon's
liquidity term would then measure the devnet, not the episode.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import function_signature_to_4byte_selector

from devkit.pools import (
    CBETH_RATE,
    DEADLINE,
    POSITION_SHAPE,
    SEL_TOKEN_MINT,
    PoolRecord,
    UniswapDeployment,
    encode_mint,
    mint_params,
    token_decimals,
)

if TYPE_CHECKING:
    from devkit.manager import DevnetState
    from devkit.simulator import MarketModel

SEL_SLOT0 = function_signature_to_4byte_selector("slot0()")
SEL_TOTAL_SUPPLY = function_signature_to_4byte_selector("totalSupply()")
SEL_POSITIONS = function_signature_to_4byte_selector("positions(uint256)")
SEL_EXACT_INPUT_SINGLE = function_signature_to_4byte_selector(
    "exactInputSingle((address,address,uint24,address,uint256,uint256,uint256,uint160))"
)
SEL_DECREASE = function_signature_to_4byte_selector(
    "decreaseLiquidity((uint256,uint128,uint256,uint256,uint256))"
)
SEL_COLLECT = function_signature_to_4byte_selector("collect((uint256,address,uint128,uint128))")
UINT128_MAX = 2**128 - 1
# The router pulls only what the pool took before the price limit: this is a cap.
SWAP_CAP = 2**127
GAS = {"swap": 2_000_000, "mint": 900_000, "decrease": 400_000, "collect": 300_000,
       "fund": 200_000}  # fmt: skip
MINT_WIDTHS = (0.002, 0.005, 0.01, 0.03)

Rpc = Callable[[str, list[Any]], Awaitable[Any]]
# A move (either way, in log terms) of a pool's USD-priced asset that makes the replay
# mint a fresh base book around the new price: inside the book's +/-10% range.
RECENTRE_MOVE = 0.10
RECENTRE_ASSETS = ("WETH", "WBTC")


def recentre_due(
    centre: dict[str, float], prices: dict[str, float], move: float = RECENTRE_MOVE
) -> bool:
    """Whether any RECENTRE_ASSETS price is `move` or more (log) away from `centre`."""
    return any(
        abs(math.log(prices[a] / centre[a])) >= math.log1p(move)
        for a in RECENTRE_ASSETS
        if a in centre and a in prices
    )


def market_price_usd(symbol: str, model: MarketModel) -> float:
    if symbol == "cbETH":
        return model.prices["WETH"] * CBETH_RATE
    if symbol in model.rates:
        return model.lst_price(symbol)
    return model.prices[symbol]


def target_sqrt_price(rec: PoolRecord, model: MarketModel) -> float:
    """sqrt of the market's raw price, token1 per token0 (Q96-scaled float)."""
    s0, s1 = rec.symbol0, rec.symbol1
    raw = (
        market_price_usd(s0, model)
        / market_price_usd(s1, model)
        * 10 ** (token_decimals(s1) - token_decimals(s0))
    )
    return math.sqrt(raw) * 2**96


def arbitrage_limit(sqrt_price: int, target: float, fee: int) -> tuple[bool, int] | None:
    """(zeroForOne, sqrtPriceLimitX96) that moves the pool to the nearer edge of the
    no-arbitrage band around `target` (prices within a fee of it), None when inside."""
    band = fee / 1e6
    gap = 2 * math.log(target / sqrt_price)  # ln(price ratio)
    if abs(gap) <= band:
        return None
    edge = target * math.exp(-band / 2 if gap > 0 else band / 2)
    # Price must rise (buy token0 with token1): zeroForOne False, limit above.
    return gap < 0, int(edge)


@dataclass
class MoveChoice:
    """One LP move: mint in `pool` (a half-width and a share of its base value), or burn
    the position `burn_id` there."""

    pool: str
    burn_id: int | None = None
    half_width: float = 0.0
    share: float = 0.0


@dataclass
class _ChainBook:
    uni: UniswapDeployment
    depth: float
    open: dict[str, list[int]] = field(default_factory=dict)


class PoolMarket:
    def __init__(
        self,
        books: dict[str, _ChainBook],
        rng: random.Random,
        *,
        move_probability: float = 0.3,
        max_positions: int = 4,
    ) -> None:
        self.books = books
        self.rng = rng
        self.move_probability = move_probability
        self.max_positions = max_positions

    @classmethod
    def for_state(
        cls, state: DevnetState, chains: tuple[str, ...], seed: int | None = None, **kwargs: Any
    ) -> PoolMarket | None:
        books = {}
        for chain in chains:
            raw = state.deployments[chain].uniswap
            if raw is not None:
                uni = UniswapDeployment.from_json(raw)
                books[chain] = _ChainBook(uni, uni.depth)
        if not books:
            return None
        return cls(books, random.Random(f"pools:{seed}"), **kwargs)

    def choose_move(self, chain: str) -> MoveChoice | None:
        """This tick's LP move on `chain`, if any (pure: only the rng and the open book)."""
        book = self.books[chain]
        if self.rng.random() >= self.move_probability:
            return None
        label = self.rng.choice(sorted(book.uni.pools))
        held = book.open.setdefault(label, [])
        if held and (len(held) >= self.max_positions or self.rng.random() < 0.4):
            return MoveChoice(label, burn_id=held[0])
        return MoveChoice(
            label, half_width=self.rng.choice(MINT_WIDTHS), share=self.rng.uniform(0.02, 0.08)
        )

    async def transactions(self, rpc: Rpc, chain: str, model: MarketModel) -> list[dict[str, Any]]:
        """This tick's transactions on `chain`: the LP move (if any), then one arbitrage
        swap per pool outside its band."""
        book = self.books.get(chain)
        if book is None:
            return []
        slot0 = {label: await self._slot0(rpc, rec) for label, rec in book.uni.pools.items()}
        txs: list[dict[str, Any]] = []
        move = self.choose_move(chain)
        if move is not None:
            txs += await self._move_txs(rpc, book, move, slot0[move.pool], model)
        for label, rec in book.uni.pools.items():
            limit = arbitrage_limit(slot0[label][0], target_sqrt_price(rec, model), rec.fee)
            if limit is not None:
                txs.append(swap_tx(book.uni, rec, *limit))
        return txs

    async def arbitrage_txs(self, rpc: Rpc, chain: str, model: MarketModel) -> list[dict[str, Any]]:
        """Only the arbitrage swaps of `transactions` (no LP move)."""
        book = self.books.get(chain)
        if book is None:
            return []
        txs = []
        for rec in book.uni.pools.values():
            sqrt_price, _ = await self._slot0(rpc, rec)
            limit = arbitrage_limit(sqrt_price, target_sqrt_price(rec, model), rec.fee)
            if limit is not None:
                txs.append(swap_tx(book.uni, rec, *limit))
        return txs

    async def recentre_txs(
        self, rpc: Rpc, chain: str, model: MarketModel, minter: str
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(token mints to the LP from `minter`, the LP's position mints): a base book
        around every pool's current price on `chain`, each position's value its
        POSITION_SHAPE share of the pool's depth there (USD at `model`'s prices).
        Send and mine the first list before the second."""
        book = self.books.get(chain)
        if book is None:
            return [], []
        uni = book.uni
        funds: list[dict[str, Any]] = []
        mints: list[dict[str, Any]] = []
        for rec in uni.pools.values():
            sqrt_price, tick = await self._slot0(rpc, rec)
            price_raw = (sqrt_price / 2**96) ** 2
            per_usd1 = 10 ** token_decimals(rec.symbol1) / market_price_usd(rec.symbol1, model)
            for half_width, share in POSITION_SHAPE:
                value1 = rec.depth_usd * book.depth * share * per_usd1
                params = mint_params(
                    rec, tick=tick, price_raw=price_raw,
                    half_width=None if half_width is None else half_width * rec.width,
                    value1=value1, recipient=uni.lp, skew=self.rng.uniform(-0.2, 0.2),
                )  # fmt: skip
                for token, amount in ((rec.token0, params[5]), (rec.token1, params[6])):
                    data = SEL_TOKEN_MINT + abi_encode(["address", "uint256"], [uni.lp, amount])
                    funds.append(_tx(minter, token, data, GAS["fund"]))
                mints.append(_tx(uni.lp, uni.position_manager, encode_mint(params), GAS["mint"]))
        return funds, mints

    @staticmethod
    async def _slot0(rpc: Rpc, rec: PoolRecord) -> tuple[int, int]:
        raw = await rpc("eth_call", [{"to": rec.address, "data": "0x" + SEL_SLOT0.hex()}, "latest"])
        values = abi_decode(
            ["uint160", "int24", "uint16", "uint16", "uint16", "uint8", "bool"],
            bytes.fromhex(str(raw)[2:]),
        )
        return int(values[0]), int(values[1])

    async def _move_txs(
        self,
        rpc: Rpc,
        book: _ChainBook,
        move: MoveChoice,
        slot0: tuple[int, int],
        model: MarketModel,
    ) -> list[dict[str, Any]]:
        uni, rec = book.uni, book.uni.pools[move.pool]
        npm = uni.position_manager
        held = book.open.setdefault(move.pool, [])
        if move.burn_id is not None:
            liquidity = await self._position_liquidity(rpc, npm, move.burn_id)
            held.remove(move.burn_id)
            if liquidity == 0:
                return []
            dec = SEL_DECREASE + abi_encode(
                ["(uint256,uint128,uint256,uint256,uint256)"],
                [(move.burn_id, liquidity, 0, 0, DEADLINE)],
            )
            col = SEL_COLLECT + abi_encode(
                ["(uint256,address,uint128,uint128)"],
                [(move.burn_id, uni.lp, UINT128_MAX, UINT128_MAX)],
            )
            return [
                _tx(uni.lp, npm, dec, GAS["decrease"]),
                _tx(uni.lp, npm, col, GAS["collect"]),
            ]
        s1 = rec.symbol1
        value1 = (
            rec.depth_usd
            * book.depth
            * move.share
            / market_price_usd(s1, model)
            * 10 ** token_decimals(s1)
        )
        sqrt_price, tick = slot0
        params = mint_params(
            rec,
            tick=tick,
            price_raw=(sqrt_price / 2**96) ** 2,
            half_width=move.half_width * rec.width,
            value1=value1,
            recipient=uni.lp,
            skew=self.rng.uniform(-0.3, 0.3),
        )
        raw = await rpc("eth_call", [{"to": npm, "data": "0x" + SEL_TOTAL_SUPPLY.hex()}, "latest"])
        held.append(int(str(raw), 16) + 1)
        return [_tx(uni.lp, npm, encode_mint(params), GAS["mint"])]

    @staticmethod
    async def _position_liquidity(rpc: Rpc, npm: str, token_id: int) -> int:
        data = SEL_POSITIONS + abi_encode(["uint256"], [token_id])
        raw = await rpc("eth_call", [{"to": npm, "data": "0x" + data.hex()}, "latest"])
        words = bytes.fromhex(str(raw)[2:])
        return int.from_bytes(words[7 * 32 : 8 * 32], "big")


def swap_tx(
    uni: UniswapDeployment, rec: PoolRecord, zero_for_one: bool, limit: int
) -> dict[str, Any]:
    """The trader's SwapRouter.exactInputSingle that moves `rec` to sqrtPriceX96 `limit`
    (selling token0 when `zero_for_one`), for eth_sendTransaction."""
    token_in, token_out = (rec.token0, rec.token1) if zero_for_one else (rec.token1, rec.token0)
    params = (token_in, token_out, rec.fee, uni.trader, DEADLINE, SWAP_CAP, 0, limit)
    data = SEL_EXACT_INPUT_SINGLE + abi_encode(
        ["(address,address,uint24,address,uint256,uint256,uint256,uint160)"], [params]
    )
    return _tx(uni.trader, uni.router, data, GAS["swap"])


def _tx(sender: str, to: str, data: bytes, gas: int) -> dict[str, Any]:
    return {"from": sender, "to": to, "data": "0x" + data.hex(), "gas": hex(gas)}
