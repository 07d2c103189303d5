"""A generated book of accounts for the replay: seeded, reproducible, realistic shapes.

    book = generate(3000, seed=7, prices=path.at(0))
    stats = seed_population(state, book)          # on the running devnet's vaults

Shapes (SHAPES, weights): ETH loops (WETH against WETH debt, e-mode) and LST loops
(wstETH / rETH against WETH debt) at high LTV, BTC-collateral stablecoin borrowers,
ETH-collateral stablecoin borrowers, plain depositors, and two with derivative legs
on the Markets contracts: hedged perp pairs (WETH or WBTC collateral, a USDC borrow,
a short perp of about the collateral's notional) and covered calls (WETH collateral,
a smaller USDC borrow, a written call struck above spot on at most the collateral's
ETH). Each account's notional is log-normal; its utilisation is a share of the
collateral's configured LTV (the e-mode group's for the loops). Collateral sits on
one chain; one borrower in ten borrows on another chain (cross-chain credit, as the
demo's account 4); a derivative leg sits on any chain (the portfolio model nets
across chains).

Invariants:
- `generate` is a pure function of (n, seed, prices, chains): same inputs, same book,
  addresses included (keccak of the seed and the index, no key behind them).
- Amounts are exact raw token units, so what the vault holds equals the book;
  derivative sizes, prices and strikes have at most 6 decimals, so their 18-decimal
  on-chain form is exact too.
- The derivative shapes take their weight from the others proportionally: the
  spot-only shapes keep their relative weights (BASE_SHAPES).
- An option's expiry is its tenor from the seeding's wall clock (the daemon measures
  time to expiry in wall time; a compressed replay lasts minutes, so the tenor holds).
- Seeding impersonates the generated addresses (anvil_autoImpersonateAccount); every
  phase (mint/approve, deposit, credit push, borrow, derivative positions from the
  venue keeper) is sent in JSON-RPC batches with explicit nonces, mined with evm_mine,
  and every receipt must succeed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import requests
from eth_abi import encode
from eth_utils import function_signature_to_4byte_selector, keccak, to_checksum_address

from chains.positions import text_bytes32
from chains.registry_codec import RegistryEntry, hf_to_fixed, pack_batch, usd_to_credit
from devkit.deploy import ASSET_BY_SYMBOL, OPTION_UNDERLYINGS, PERP_MARKETS, ChainDeployment
from devkit.manager import INDEXED_CHAINS, DevnetState

Side = Literal["collateral", "debt"]
# The spot-only shapes' relative weights.
BASE_SHAPES: dict[str, float] = {
    "eth_loop": 0.10,
    "lst_loop": 0.20,
    "btc_stable": 0.20,
    "eth_stable": 0.25,
    "depositor": 0.25,
}
DERIVATIVE_SHAPES: dict[str, float] = {"hedged_perp": 0.10, "covered_call": 0.10}
SHAPES: dict[str, float] = {
    **{s: w * (1.0 - sum(DERIVATIVE_SHAPES.values())) for s, w in BASE_SHAPES.items()},
    **DERIVATIVE_SHAPES,
}
# LTV a borrower borrows against (config.toml: e-mode group "eth" 0.90, WBTC 0.70,
# WETH 0.80); the hedged pair's is its collateral's (COLLATERAL_LTV).
SHAPE_LTV = {
    "eth_loop": 0.90,
    "lst_loop": 0.90,
    "btc_stable": 0.70,
    "eth_stable": 0.80,
    "covered_call": 0.80,
}
COLLATERAL_LTV = {"WETH": 0.80, "WBTC": 0.70}
UTIL_RANGE = {
    "eth_loop": (0.80, 0.97),
    "lst_loop": (0.80, 0.97),
    "btc_stable": (0.40, 0.95),
    "eth_stable": (0.40, 0.95),
    "hedged_perp": (0.40, 0.95),
    # The call caps the upside, not the downside: writers borrow less.
    "covered_call": (0.30, 0.70),
}
# Hedged pair: WETH or WBTC collateral; the short perp is this share of its units.
HEDGE_ETH_SHARE = 0.6
HEDGE_RATIO = (0.95, 1.05)
# Covered call: calls on this share of the collateral's ETH, struck this far above spot.
CALL_COVER = (0.5, 1.0)
CALL_MONEYNESS = (1.10, 1.30)
CALL_TENOR_DAYS = 30.0
PERP_OF = {asset: name for name, asset in PERP_MARKETS.items()}
OPTION_OF = {asset: name for name, asset in OPTION_UNDERLYINGS.items()}
CROSS_CHAIN_SHARE = 0.1
NOTIONAL_MEDIAN_USD = 20_000.0
NOTIONAL_SIGMA = 1.0
NOTIONAL_BOUNDS = (500.0, 2_000_000.0)

SEL_MINT = function_signature_to_4byte_selector("mint(address,uint256)")
SEL_APPROVE = function_signature_to_4byte_selector("approve(address,uint256)")
SEL_DEPOSIT = function_signature_to_4byte_selector("deposit(address,uint256)")
SEL_BORROW = function_signature_to_4byte_selector("borrow(address,uint256)")
SEL_UPDATE = function_signature_to_4byte_selector("update(bytes)")
SEL_SET_PERP = function_signature_to_4byte_selector(
    "setPerpPosition(address,bytes32,int256,uint256)"
)
SEL_SET_OPTION = function_signature_to_4byte_selector(
    "setOptionPosition(address,bytes32,uint256,uint64,bool,int256)"
)
GAS = {"mint": 120_000, "approve": 80_000, "deposit": 150_000, "borrow": 250_000,
       "position": 150_000}  # fmt: skip
FIXED = 10**18
RPC_CHUNK = 500
SEED_GAS_PRICE_WEI = 200 * 10**9
MAX_UINT = 2**256 - 1


class SeedError(RuntimeError):
    pass


@dataclass(frozen=True)
class Position:
    chain: str
    symbol: str
    side: Side
    raw: int  # token units

    @property
    def amount(self) -> float:
        return self.raw / 10 ** ASSET_BY_SYMBOL[self.symbol].decimals


@dataclass(frozen=True)
class Perp:
    """A perp position on a chain's Markets contract (size in underlying units,
    negative = short)."""

    chain: str
    market: str  # on-chain name, PERP_MARKETS
    size: float
    entry_price: float

    @property
    def asset(self) -> str:
        return PERP_MARKETS[self.market]


@dataclass(frozen=True)
class Option:
    """A European cash-settled option position (contracts of one underlying unit;
    negative = written)."""

    chain: str
    underlying: str  # on-chain name, OPTION_UNDERLYINGS
    strike: float
    tenor_days: float
    is_call: bool
    size: float

    @property
    def asset(self) -> str:
        return OPTION_UNDERLYINGS[self.underlying]


@dataclass(frozen=True)
class Account:
    address: str
    shape: str
    positions: tuple[Position, ...]
    perps: tuple[Perp, ...] = ()
    options: tuple[Option, ...] = ()

    @property
    def has_derivatives(self) -> bool:
        return bool(self.perps or self.options)


def _address(seed: int, i: int) -> str:
    return to_checksum_address(keccak(f"replay-population:{seed}:{i}".encode())[-20:])


def _raw(usd: float, symbol: str, prices: Mapping[str, float]) -> int:
    d = ASSET_BY_SYMBOL[symbol].decimals
    return max(1, int(usd / prices[symbol] * 10**d))


def _legs(shape: str, rng: np.random.Generator) -> tuple[str, str | None]:
    """(collateral asset, debt asset or None) of one account of `shape`."""
    if shape == "hedged_perp":
        return ("WETH" if rng.random() < HEDGE_ETH_SHARE else "WBTC"), "USDC"
    if shape == "covered_call":
        return "WETH", "USDC"
    if shape == "eth_loop":
        return "WETH", "WETH"
    if shape == "lst_loop":
        return ("wstETH" if rng.random() < 0.7 else "rETH"), "WETH"
    if shape == "btc_stable":
        return "WBTC", "USDC"
    if shape == "eth_stable":
        return "WETH", "USDC"
    return str(rng.choice(["USDC", "WETH", "WBTC", "wstETH"])), None


def generate(
    n: int,
    seed: int,
    prices: Mapping[str, float],
    chains: tuple[str, ...] = INDEXED_CHAINS,
) -> list[Account]:
    """`n` accounts with the shapes' weights, sized at `prices` (USD per asset)."""
    if n < 0:
        raise ValueError(f"population size must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    names = list(SHAPES)
    weights = np.array([SHAPES[s] for s in names])
    out: list[Account] = []
    for i in range(n):
        shape = str(rng.choice(names, p=weights / weights.sum()))
        notional = float(
            np.clip(
                NOTIONAL_MEDIAN_USD * math.exp(NOTIONAL_SIGMA * rng.standard_normal()),
                *NOTIONAL_BOUNDS,
            )
        )
        coll, debt = _legs(shape, rng)
        c_chain = str(rng.choice(chains))
        positions = [Position(c_chain, coll, "collateral", _raw(notional, coll, prices))]
        if debt is not None:
            util = float(rng.uniform(*UTIL_RANGE[shape]))
            d_chain = c_chain
            if len(chains) > 1 and rng.random() < CROSS_CHAIN_SHARE:
                d_chain = str(rng.choice([c for c in chains if c != c_chain]))
            ltv = COLLATERAL_LTV[coll] if shape == "hedged_perp" else SHAPE_LTV[shape]
            debt_usd = notional * ltv * util
            positions.append(Position(d_chain, debt, "debt", _raw(debt_usd, debt, prices)))
        units = positions[0].amount
        perps: tuple[Perp, ...] = ()
        options: tuple[Option, ...] = ()
        if shape == "hedged_perp":
            size = -_six(units * float(rng.uniform(*HEDGE_RATIO)))
            perps = (Perp(str(rng.choice(chains)), PERP_OF[coll], size, _six(prices[coll])),)
        elif shape == "covered_call":
            size = -_six(units * float(rng.uniform(*CALL_COVER)))
            strike = round(prices[coll] * float(rng.uniform(*CALL_MONEYNESS)), 2)
            chain = str(rng.choice(chains))
            options = (Option(chain, OPTION_OF[coll], strike, CALL_TENOR_DAYS, True, size),)
        out.append(Account(_address(seed, i), shape, tuple(positions), perps, options))
    return out


def _six(x: float) -> float:
    """Rounded to 6 decimals (exact in 18-decimal fixed point on chain)."""
    return round(x, 6)


def _fixed(x: float) -> int:
    return round(x * 10**6) * 10**12


# -- seeding on the devnet ---------------------------------------------------------


@dataclass
class SeedStats:
    accounts: int = 0
    transactions: int = 0
    blocks: int = 0
    seconds: float = 0.0
    per_chain_s: dict[str, float] = field(default_factory=dict)


class _Chain:
    """One chain's batched sender: explicit nonces, evm_mine, receipts checked."""

    def __init__(self, url: str, dep: ChainDeployment) -> None:
        self.url, self.dep = url, dep
        self.session = requests.Session()
        self.nonces: dict[str, int] = {}
        self.pending: list[tuple[str, str]] = []  # (hash, what)
        self.sent = 0
        self.blocks = 0

    def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        out: list[Any] = []
        for k in range(0, len(calls), RPC_CHUNK):
            chunk = calls[k : k + RPC_CHUNK]
            body: Any = [
                {"jsonrpc": "2.0", "id": j, "method": m, "params": p}
                for j, (m, p) in enumerate(chunk)
            ]
            answers = self.session.post(self.url, json=body, timeout=120).json()
            answers.sort(key=lambda a: a["id"])
            for (m, _), a in zip(chunk, answers, strict=True):
                if "error" in a:
                    raise SeedError(f"{self.dep.chain}: {m}: {a['error']}")
                out.append(a.get("result"))
        return out

    def nonce(self, sender: str) -> int:
        if sender not in self.nonces:
            got = self.batch([("eth_getTransactionCount", [sender, "pending"])])[0]
            self.nonces[sender] = int(got, 16)
        n = self.nonces[sender]
        self.nonces[sender] = n + 1
        return n

    def send(self, txs: list[tuple[str, str, bytes, int, str]]) -> None:
        """(sender, to, data, gas, what) each; nonces assigned here, in list order."""
        calls = []
        for sender, to, data, gas, _ in txs:
            tx = {
                "from": sender,
                "to": to,
                "data": "0x" + data.hex(),
                "gas": hex(gas),
                # Fixed and high: full seeding blocks raise the base fee, and a tx priced
                # at the base fee of its send time would then wait in the pool forever.
                "gasPrice": hex(SEED_GAS_PRICE_WEI),
                "nonce": hex(self.nonce(sender)),
            }
            calls.append(("eth_sendTransaction", [tx]))
        hashes = self.batch(calls)
        self.pending += [(h, t[4]) for h, t in zip(hashes, txs, strict=True)]
        self.sent += len(txs)

    def settle(self, timeout: float = 120.0) -> None:
        """Mine until every pending transaction has a receipt; each must succeed."""
        deadline = time.monotonic() + timeout
        while self.pending:
            self.batch([("evm_mine", [])])
            self.blocks += 1
            receipts = self.batch([("eth_getTransactionReceipt", [h]) for h, _ in self.pending])
            still = []
            for (h, what), r in zip(self.pending, receipts, strict=True):
                if r is None:
                    still.append((h, what))
                elif int(r["status"], 16) != 1:
                    raise SeedError(f"{self.dep.chain}: {what} reverted ({h})")
            self.pending = still
            if still and time.monotonic() > deadline:
                raise SeedError(
                    f"{self.dep.chain}: {len(still)} txs unmined after {timeout}s "
                    f"({self._why_stuck()})"
                )

    def _why_stuck(self) -> str:
        """What usually keeps a transaction out of blocks: the base fee above our fixed
        price, or a nonce gap (the pool's queued count)."""
        try:
            block, pool = self.batch(
                [("eth_getBlockByNumber", ["latest", False]), ("txpool_status", [])]
            )
        except (SeedError, requests.RequestException) as exc:
            return f"no diagnosis: {exc}"
        base = int(block.get("baseFeePerGas") or "0x0", 16)
        return (
            f"base fee {base / 1e9:.1f} gwei vs our {SEED_GAS_PRICE_WEI / 1e9:.0f}; "
            f"pool pending {int(pool['pending'], 16)}, "
            f"queued (nonce gaps) {int(pool['queued'], 16)}"
        )


def _u(*args: Any) -> tuple[list[str], list[Any]]:
    return [("address" if isinstance(a, str) else "uint256") for a in args], list(args)


def _call(selector: bytes, *args: Any) -> bytes:
    types, values = _u(*args)
    return selector + encode(types, values)


def _seed_chain(
    state: DevnetState, chain: str, book: list[Account], prices: Mapping[str, float]
) -> tuple[int, int]:
    dep = state.deployments[chain]
    c = _Chain(state.url(chain), dep)
    deployer = dep.deployer or state.accounts["deployer"]
    mine = [(a, p) for a in book for p in a.positions if p.chain == chain]
    users = sorted({a.address for a, _ in mine})
    c.batch([("anvil_autoImpersonateAccount", [True])])
    c.batch([("anvil_setBalance", [u, hex(10**18)]) for u in users])
    colls = [(a, p) for a, p in mine if p.side == "collateral"]
    debts = [(a, p) for a, p in mine if p.side == "debt"]
    c.send(
        [(deployer, dep.tokens[p.symbol], _call(SEL_MINT, a.address, p.raw), GAS["mint"], "mint")
         for a, p in colls]
        + [(a.address, dep.tokens[p.symbol], _call(SEL_APPROVE, dep.vault, MAX_UINT),
            GAS["approve"], f"approve {a.address}") for a, p in colls]
    )  # fmt: skip
    # Borrowable liquidity: what the book borrows here, twice over.
    need: dict[str, int] = {}
    for _, p in debts:
        need[p.symbol] = need.get(p.symbol, 0) + 2 * p.raw
    c.send([(deployer, dep.tokens[s], _call(SEL_MINT, dep.vault, r), GAS["mint"], "liquidity")
            for s, r in need.items()])  # fmt: skip
    c.settle()
    c.send([(a.address, dep.vault, _call(SEL_DEPOSIT, dep.tokens[p.symbol], p.raw),
             GAS["deposit"], f"deposit {a.address}") for a, p in colls])  # fmt: skip
    c.settle()
    if debts:
        _push_credit(c, dep, debts, prices)
        c.settle()
        c.send([(a.address, dep.vault, _call(SEL_BORROW, dep.tokens[p.symbol], p.raw),
                 GAS["borrow"], f"borrow {a.address}") for a, p in debts])  # fmt: skip
        c.settle()
    derivatives = derivative_calls(dep, book, chain, int(time.time()))
    if derivatives:
        keeper = dep.venue_keeper or state.accounts.get("venue_keeper", "")
        c.send([(keeper, dep.markets, data, GAS["position"], what) for data, what in derivatives])
        c.settle()
    c.batch([("anvil_autoImpersonateAccount", [False])])
    c.session.close()
    return c.sent, c.blocks


def derivative_calls(
    dep: ChainDeployment, book: list[Account], chain: str, now: int
) -> list[tuple[bytes, str]]:
    """(calldata, what) of the Markets calls that record `book`'s perp and option legs
    on `chain`: setPerpPosition / setOptionPosition from the venue keeper; an option
    expires its tenor after `now` (wall seconds)."""
    out: list[tuple[bytes, str]] = []
    for a in book:
        for p in a.perps:
            if p.chain == chain:
                args = [a.address, text_bytes32(p.market), _fixed(p.size), _fixed(p.entry_price)]
                data = SEL_SET_PERP + encode(["address", "bytes32", "int256", "uint256"], args)
                out.append((data, f"perp {p.market} {a.address}"))
        for o in a.options:
            if o.chain == chain:
                expiry = now + int(o.tenor_days * 86400)
                args = [a.address, text_bytes32(o.underlying), _fixed(o.strike), expiry,
                        o.is_call, _fixed(o.size)]  # fmt: skip
                types = ["address", "bytes32", "uint256", "uint64", "bool", "int256"]
                out.append((SEL_SET_OPTION + encode(types, args), f"option {a.address}"))
    if out and not dep.markets:
        raise SeedError(
            f"{chain}: the book has derivative legs but the devnet has no Markets contract "
            "(a devnet started before Markets was deployed: `aggregator devnet down`, then up)"
        )
    return out


def _push_credit(
    c: _Chain,
    dep: ChainDeployment,
    debts: list[tuple[Account, Position]],
    prices: Mapping[str, float],
) -> None:
    """Bootstrap credit for the borrows (the daemon's first push supersedes it)."""
    block = c.batch([("eth_getBlockByNumber", ["latest", False])])[0]
    # Older than anything the daemon will push: evm_mine runs chain time ahead of the
    # wall clock the daemon stamps its entries with, and the registry skips an entry not
    # newer than the stored one, so a chain-time as_of would shadow the daemon's pushes.
    as_of = min(int(block["timestamp"], 16), int(time.time())) - 30
    credit: dict[str, float] = {}
    for a, p in debts:
        credit[a.address] = credit.get(a.address, 0.0) + p.amount * prices[p.symbol] * 1.05 + 1
    entries = [(addr, RegistryEntry(usd_to_credit(v), hf_to_fixed(1.5), as_of, 0))
               for addr, v in credit.items()]  # fmt: skip
    txs = []
    for k in range(0, len(entries), 400):
        data = SEL_UPDATE + encode(["bytes"], [pack_batch(entries[k : k + 400])])
        txs.append((dep.keeper, dep.registry, data, 15_000_000, "credit push"))
    c.send(txs)


def seed_population(
    state: DevnetState, book: list[Account], prices: Mapping[str, float]
) -> SeedStats:
    """Deposit and borrow the whole book on the running devnet (chains one after another:
    each is already batched, and the machine has few cores)."""
    stats = SeedStats(accounts=len(book))
    t0 = time.monotonic()
    for chain in INDEXED_CHAINS:
        t = time.monotonic()
        sent, blocks = _seed_chain(state, chain, book, prices)
        stats.transactions += sent
        stats.blocks += blocks
        stats.per_chain_s[chain] = round(time.monotonic() - t, 2)
    stats.seconds = round(time.monotonic() - t0, 2)
    return stats
