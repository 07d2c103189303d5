"""Uniswap v3 on a devnet chain: the published contracts, five pools, real-shaped liquidity.

    with web3_session(url) as w3:
        dep.uniswap = deploy_uniswap(w3, dep).to_json()     # after deploy_chain/seed_chain

Contracts come from the pinned npm packages' shipped artifacts (@uniswap/v3-core 1.0.1,
@uniswap/v3-periphery 1.4.4 under node_modules/@uniswap/*/artifacts), never recompiled:
UniswapV3Factory (fee tier 100 / spacing 1 enabled as on mainnet), NFTDescriptor (a
library, linked into) NonfungibleTokenPositionDescriptor, NonfungiblePositionManager,
SwapRouter and QuoterV2. The periphery computes pool addresses from the pool's init code
hash, which `load_uniswap_artifact` checks against the core artifact.

WETH9: the devnet's WETH (a MockERC20) stands in. The periphery touches WETH9 only to
wrap or unwrap native ETH (PeripheryPayments.pay wraps when the token is WETH9 *and*
the contract holds ETH; unwrapWETH9/refundETH on request); the devnet never sends ETH to
them, so every payment is a plain transferFrom.

Pools (fee tiers as on mainnet): WETH/USDC 0.05%, WBTC/USDC 0.3%, wstETH/WETH 0.01%,
rETH/WETH 0.05%, cbETH/WETH 0.05%. cbETH is no asset of the devnet (the daemon has no
feed for it): a MockCbETH is deployed here for its pool only and stays out of the
daemon's config. Each pool starts at the devnet's starting prices, and the LP account
mints positions shaped like real books (`POSITION_SHAPE`): most value in narrow ranges
around the price, thinner wider ones, a full-range tail; the value per pool scales with
the chain (`CHAIN_DEPTH`: origin/alpha deep, beta medium, gamma thin).

Invariants:
- Deployment order is fixed, so a (chain, nonce offset) always yields the same addresses.
- Position `i` of pool `p` is NFT id `1 + (index of p) * len(POSITION_SHAPE) + i`: the
  base book is exactly the first `base_positions` ids; later ids are the simulator's.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import function_signature_to_4byte_selector, keccak, to_checksum_address
from web3 import Web3
from web3.types import RPCEndpoint

from chains.contracts import contract, deploy
from chains.pool_reader import FEE_TICK_SPACING
from chains.pool_state import MAX_TICK, MIN_TICK, Q96
from devkit.anvil import rpc_call
from devkit.deploy import ASSET_BY_SYMBOL, ChainDeployment, DeployStepError, send

if TYPE_CHECKING:
    from devkit.manager import DevnetState

ROOT = Path(__file__).resolve().parents[1]
UNISWAP = ROOT / "node_modules" / "@uniswap"
PINNED = {"v3-core": "1.0.1", "v3-periphery": "1.4.4"}
ARTIFACT_PATHS = {
    "UniswapV3Factory": "v3-core/artifacts/contracts/UniswapV3Factory.sol/UniswapV3Factory.json",
    "UniswapV3Pool": "v3-core/artifacts/contracts/UniswapV3Pool.sol/UniswapV3Pool.json",
    "NFTDescriptor": "v3-periphery/artifacts/contracts/libraries/NFTDescriptor.sol/"
    "NFTDescriptor.json",
    "NonfungibleTokenPositionDescriptor": "v3-periphery/artifacts/contracts/"
    "NonfungibleTokenPositionDescriptor.sol/NonfungibleTokenPositionDescriptor.json",
    "NonfungiblePositionManager": "v3-periphery/artifacts/contracts/"
    "NonfungiblePositionManager.sol/NonfungiblePositionManager.json",
    "SwapRouter": "v3-periphery/artifacts/contracts/SwapRouter.sol/SwapRouter.json",
    "QuoterV2": "v3-periphery/artifacts/contracts/lens/QuoterV2.sol/QuoterV2.json",
}
# PoolAddress.POOL_INIT_CODE_HASH compiled into every periphery contract.
POOL_INIT_CODE_HASH = "e34f199b19b2b4f47f68442619d555527d244f78a3297ea89325f843f87b8b54"

LP, TRADER = 7, 8  # anvil dev accounts: liquidity provider, arbitrage trader
CBETH_RATE = 1.08  # pool-only cbETH: WETH per cbETH, fixed
DEADLINE = 2**63
UINT256_MAX = 2**256 - 1

# Per chain: multiple of each pool's `depth_usd` (alpha is origin's fork: the same pools).
CHAIN_DEPTH = {"origin": 1.0, "alpha": 1.0, "beta": 0.3, "gamma": 0.08}

# (half-width of the range as a fraction of the price, share of the pool's value). Narrow
# ranges near the price hold most of it, as on mainnet; None is the full range.
POSITION_SHAPE: tuple[tuple[float | None, float], ...] = (
    (0.002, 0.16),
    (0.005, 0.16),
    (0.01, 0.15),
    (0.02, 0.14),
    (0.05, 0.12),
    (0.10, 0.10),
    (0.25, 0.08),
    (0.60, 0.05),
    (None, 0.04),
)


@dataclass(frozen=True)
class PoolPlan:
    """One pool: `base` is sold into `quote`; `width` scales POSITION_SHAPE's ranges
    (LST/ETH pairs trade in a much tighter band than ETH/USD)."""

    label: str
    base: str
    quote: str
    fee: int
    depth_usd: float
    width: float = 1.0


POOL_PLANS: tuple[PoolPlan, ...] = (
    PoolPlan("WETH/USDC", "WETH", "USDC", 500, 40_000_000),
    PoolPlan("WBTC/USDC", "WBTC", "USDC", 3000, 15_000_000),
    PoolPlan("wstETH/WETH", "wstETH", "WETH", 100, 20_000_000, width=0.2),
    PoolPlan("rETH/WETH", "rETH", "WETH", 500, 8_000_000, width=0.3),
    PoolPlan("cbETH/WETH", "cbETH", "WETH", 500, 5_000_000, width=0.3),
)
POOL_ONLY_TOKENS = {"cbETH": "MockCbETH"}


# ------------------------------------------------------------------ artifacts


@dataclass(frozen=True)
class UniswapArtifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    link_references: dict[str, Any]


class UniswapArtifactError(RuntimeError):
    pass


def _package_version(package: str) -> str:
    try:
        return str(json.loads((UNISWAP / package / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError) as exc:
        raise UniswapArtifactError(
            f"@uniswap/{package} not installed under {UNISWAP} ({exc}); run `npm ci`"
        ) from None


@cache
def load_uniswap_artifact(name: str) -> UniswapArtifact:
    """A contract's ABI and creation code from the pinned npm package's artifacts."""
    rel = ARTIFACT_PATHS[name]
    package = rel.split("/", 1)[0]
    got = _package_version(package)
    if got != PINNED[package]:
        raise UniswapArtifactError(
            f"@uniswap/{package} is {got}, expected the pinned {PINNED[package]}"
        )
    data = json.loads((UNISWAP / rel).read_text())
    art = UniswapArtifact(name, data["abi"], data["bytecode"], data.get("linkReferences", {}))
    if name == "UniswapV3Pool" and keccak(hexstr=art.bytecode).hex() != POOL_INIT_CODE_HASH:
        raise UniswapArtifactError(
            "UniswapV3Pool creation code does not hash to the periphery's POOL_INIT_CODE_HASH"
        )
    return art


def _linked(art: UniswapArtifact, libraries: dict[str, str]) -> str:
    """Creation code with every library placeholder replaced by its address."""
    code = art.bytecode.removeprefix("0x")
    for refs in art.link_references.values():
        for lib, spots in refs.items():
            addr = libraries[lib].lower().removeprefix("0x")
            for spot in spots:
                at = 2 * spot["start"]
                code = code[:at] + addr + code[at + 2 * spot["length"] :]
    return "0x" + code


def uniswap_contract(w3: Web3, name: str, address: str) -> Any:
    return w3.eth.contract(
        address=to_checksum_address(address), abi=load_uniswap_artifact(name).abi
    )


def _deploy(
    w3: Web3, name: str, *args: Any, sender: str, libraries: dict[str, str] | None = None
) -> str:
    art = load_uniswap_artifact(name)
    factory = w3.eth.contract(abi=art.abi, bytecode=_linked(art, libraries or {}))
    receipt = send(w3, factory.constructor(*args), sender, f"deploy {name}")
    if not receipt.get("contractAddress"):
        raise DeployStepError(f"deploy {name}: no contract address in the receipt")
    return to_checksum_address(receipt["contractAddress"])


# ------------------------------------------------------------------ calldata

SEL_MINT = function_signature_to_4byte_selector(
    "mint((address,address,uint24,int24,int24,uint256,uint256,uint256,uint256,address,uint256))"
)
SEL_APPROVE = function_signature_to_4byte_selector("approve(address,uint256)")
SEL_TOKEN_MINT = function_signature_to_4byte_selector("mint(address,uint256)")


def encode_mint(params: tuple[Any, ...]) -> bytes:
    """NonfungiblePositionManager.mint calldata (params as `mint_params` builds them)."""
    return SEL_MINT + abi_encode(
        ["(address,address,uint24,int24,int24,uint256,uint256,uint256,uint256,address,uint256)"],
        [params],
    )


class TxBatch:
    """Transactions sent straight to the node (no per-transaction gas estimate or
    receipt wait: anvil's automine has mined each one when the send returns); `check()`
    then insists every one succeeded, naming the step that did not."""

    def __init__(self, w3: Web3) -> None:
        self.w3 = w3
        self.sent: list[tuple[str, str]] = []

    def send(self, sender: str, to: str, data: bytes, gas: int, what: str) -> None:
        tx = {"from": sender, "to": to, "data": "0x" + data.hex(), "gas": hex(gas)}
        answer = self.w3.provider.make_request(RPCEndpoint("eth_sendTransaction"), [tx])
        if "error" in answer:
            raise DeployStepError(f"{what}: {answer['error']}")
        self.sent.append((str(answer["result"]), what))

    def check(self) -> None:
        for tx_hash, what in self.sent:
            method = RPCEndpoint("eth_getTransactionReceipt")
            receipt = self.w3.provider.make_request(method, [tx_hash]).get("result")
            if not receipt or int(receipt["status"], 16) != 1:
                raise DeployStepError(f"{what}: transaction {tx_hash} failed ({receipt})")
        self.sent.clear()


# ------------------------------------------------------------------ price math


def start_price_usd(symbol: str) -> float:
    if symbol == "cbETH":
        return ASSET_BY_SYMBOL["WETH"].price_usd * CBETH_RATE
    return ASSET_BY_SYMBOL[symbol].price_usd


def token_decimals(symbol: str) -> int:
    return 18 if symbol in POOL_ONLY_TOKENS else ASSET_BY_SYMBOL[symbol].decimals


def raw_price(usd0: float, usd1: float, dec0: int, dec1: int) -> float:
    """token1 raw units per token0 raw unit, from both tokens' USD prices."""
    return usd0 / usd1 * 10 ** (dec1 - dec0)


def sqrt_price_x96(price_raw: float) -> int:
    return int(math.sqrt(price_raw) * Q96)


def price_tick(price_raw: float) -> int:
    return math.floor(math.log(price_raw) / math.log(1.0001))


def position_ticks(tick: int, half_width: float | None, spacing: int) -> tuple[int, int]:
    """The spaced range [lower, upper] for +/- `half_width` around `tick` (None: full)."""
    if half_width is None:
        return -(-MIN_TICK // spacing) * spacing, (MAX_TICK // spacing) * spacing
    below = math.ceil(-math.log(1 - half_width) / math.log(1.0001))
    above = math.ceil(math.log(1 + half_width) / math.log(1.0001))
    lower = ((tick - below) // spacing) * spacing
    upper = -(-(tick + above) // spacing) * spacing
    return max(lower, -(-MIN_TICK // spacing) * spacing), min(
        upper, (MAX_TICK // spacing) * spacing
    )


def amounts_for_value(value1: float, price_raw: float, lower: int, upper: int) -> tuple[int, int]:
    """Raw token amounts of a position worth `value1` (token1 raw units) at the current
    price, for ticks [lower, upper] that contain it (Uniswap's liquidity formulas)."""
    sp = math.sqrt(price_raw)
    sa, sb = 1.0001 ** (lower / 2), 1.0001 ** (upper / 2)
    liquidity = value1 / (2 * sp - price_raw / sb - sa)
    return int(liquidity * (1 / sp - 1 / sb)), int(liquidity * (sp - sa))


# ------------------------------------------------------------------ deployment


@dataclass
class PoolRecord:
    label: str
    address: str
    token0: str
    token1: str
    base: str  # symbol sold into the pool
    quote: str
    fee: int
    tick_spacing: int
    symbol0: str  # token0's symbol (base or quote, whichever address is lower)
    symbol1: str
    depth_usd: float  # the plan's value at depth 1.0, and its range width scale
    width: float
    position_ids: list[int] = field(default_factory=list)


@dataclass
class UniswapDeployment:
    factory: str
    position_manager: str
    router: str
    quoter: str
    descriptor: str
    weth9: str
    lp: str
    trader: str
    tokens: dict[str, str]  # every pool token, assets and pool-only (cbETH)
    pools: dict[str, PoolRecord]
    base_positions: int
    depth: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UniswapDeployment:
        pools = {k: PoolRecord(**v) for k, v in data["pools"].items()}
        return cls(**{**data, "pools": pools})

    def pool_for(self, address: str) -> PoolRecord:
        for p in self.pools.values():
            if p.address.lower() == address.lower():
                return p
        raise KeyError(f"no devnet pool at {address}")


def deploy_uniswap(
    w3: Web3, dep: ChainDeployment, *, plans: tuple[PoolPlan, ...] = POOL_PLANS, seed: int = 21
) -> UniswapDeployment:
    """The periphery and factory, the pool-only tokens, the pools of `plans` (the devnet's
    five by default) at the starting prices and the LP's base book; funds the trader.
    Sent from dep.deployer (owner of every mock token) and the LP / trader dev accounts."""
    accounts = w3.eth.accounts
    deployer, lp, trader = dep.deployer, accounts[LP], accounts[TRADER]
    chain = dep.chain
    factory = _deploy(w3, "UniswapV3Factory", sender=deployer)
    # Fee tier 100 was enabled on mainnet by governance after launch; same here.
    send(
        w3,
        uniswap_contract(w3, "UniswapV3Factory", factory).functions.enableFeeAmount(100, 1),
        deployer,
        f"{chain}: enable fee tier 100",
    )
    weth9 = dep.tokens["WETH"]
    library = _deploy(w3, "NFTDescriptor", sender=deployer)
    descriptor = _deploy(
        w3,
        "NonfungibleTokenPositionDescriptor",
        weth9,
        b"ETH".ljust(32, b"\0"),
        sender=deployer,
        libraries={"NFTDescriptor": library},
    )
    npm = _deploy(w3, "NonfungiblePositionManager", factory, weth9, descriptor, sender=deployer)
    router = _deploy(w3, "SwapRouter", factory, weth9, sender=deployer)
    quoter = _deploy(w3, "QuoterV2", factory, weth9, sender=deployer)
    tokens = dict(dep.tokens)
    for symbol, artifact in POOL_ONLY_TOKENS.items():
        tokens[symbol] = _deploy_pool_only_token(w3, chain, artifact, deployer)
    depth = CHAIN_DEPTH[chain]
    uni = UniswapDeployment(
        factory, npm, router, quoter, descriptor, weth9, lp, trader, tokens, {}, 0, depth
    )
    batch = TxBatch(w3)
    _fund(batch, uni, plans, deployer, chain)
    rng = random.Random(f"{seed}:{chain}")
    next_id = 1
    for plan in plans:
        rec = _create_pool(w3, uni, plan, deployer, chain)
        for half_width, share in POSITION_SHAPE:
            _mint_position(
                batch, uni, rec, plan, half_width=half_width, share=share * depth, rng=rng
            )
            rec.position_ids.append(next_id)
            next_id += 1
        uni.pools[plan.label] = rec
    batch.check()
    uni.base_positions = next_id - 1
    return uni


def _deploy_pool_only_token(w3: Web3, chain: str, artifact: str, deployer: str) -> str:
    addr = deploy(w3, artifact, sender=deployer)
    send(
        w3,
        contract(w3, artifact, addr).functions.setRate(int(CBETH_RATE * 10**18)),
        deployer,
        f"{chain}: rate of pool-only {artifact}",
    )
    return addr


def _fund(
    batch: TxBatch,
    uni: UniswapDeployment,
    plans: tuple[PoolPlan, ...],
    deployer: str,
    chain: str,
) -> None:
    """Mint the LP and the trader what they need, and approve the periphery once.
    The LP's share covers the base book three times over (the simulator re-mints);
    the trader holds far more than any pool, so arbitrage never runs dry."""
    symbols = sorted({s for p in plans for s in (p.base, p.quote)})
    pool_usd = sum(p.depth_usd for p in plans) * uni.depth
    for symbol in symbols:
        token = uni.tokens[symbol]  # mint/approve: the same signatures on every mock token
        per_usd = 10 ** token_decimals(symbol) / start_price_usd(symbol)
        for who, usd, spender in (
            (uni.lp, 3 * pool_usd, uni.position_manager),
            (uni.trader, 20 * pool_usd, uni.router),
        ):
            mint = SEL_TOKEN_MINT + abi_encode(["address", "uint256"], [who, int(usd * per_usd)])
            batch.send(deployer, token, mint, 200_000, f"{chain}: mint {symbol} to {who}")
            approve = SEL_APPROVE + abi_encode(["address", "uint256"], [spender, UINT256_MAX])
            batch.send(who, token, approve, 100_000, f"{chain}: approve {symbol} by {who}")


def _ordered(uni: UniswapDeployment, plan: PoolPlan) -> tuple[str, str, float]:
    """(token0 symbol, token1 symbol, raw price token1 per token0) at the start prices."""
    a, b = plan.base, plan.quote
    if int(uni.tokens[a], 16) > int(uni.tokens[b], 16):
        a, b = b, a
    price = raw_price(start_price_usd(a), start_price_usd(b), token_decimals(a), token_decimals(b))
    return a, b, price


def _create_pool(
    w3: Web3, uni: UniswapDeployment, plan: PoolPlan, deployer: str, chain: str
) -> PoolRecord:
    s0, s1, price = _ordered(uni, plan)
    t0, t1 = uni.tokens[s0], uni.tokens[s1]
    npm = uniswap_contract(w3, "NonfungiblePositionManager", uni.position_manager)
    send(
        w3,
        npm.functions.createAndInitializePoolIfNecessary(t0, t1, plan.fee, sqrt_price_x96(price)),
        deployer,
        f"{chain}: create pool {plan.label}",
    )
    factory = uniswap_contract(w3, "UniswapV3Factory", uni.factory)
    address = factory.functions.getPool(t0, t1, plan.fee).call()
    return PoolRecord(
        plan.label,
        to_checksum_address(address),
        t0,
        t1,
        plan.base,
        plan.quote,
        plan.fee,
        FEE_TICK_SPACING[plan.fee],
        s0,
        s1,
        plan.depth_usd,
        plan.width,
    )


def mint_params(
    rec: PoolRecord,
    *,
    tick: int,
    price_raw: float,
    half_width: float | None,
    value1: float,
    recipient: str,
    skew: float = 0.0,
) -> tuple[Any, ...]:
    """NonfungiblePositionManager.mint's params for a position worth `value1` (token1
    raw units) around `tick` (shifted by `skew` of its width), amounts with a hair of
    headroom: the manager takes only what the liquidity needs."""
    centre = tick
    if half_width is not None and skew:
        centre += int(skew * half_width / 1e-4)
    lower, upper = position_ticks(centre, half_width, rec.tick_spacing)
    if not lower < tick < upper:
        lower, upper = position_ticks(tick, half_width, rec.tick_spacing)
    a0, a1 = amounts_for_value(value1, price_raw, lower, upper)
    return (
        rec.token0,
        rec.token1,
        rec.fee,
        lower,
        upper,
        a0 + a0 // 10_000 + 1,
        a1 + a1 // 10_000 + 1,
        0,
        0,
        recipient,
        DEADLINE,
    )


def _mint_position(
    batch: TxBatch,
    uni: UniswapDeployment,
    rec: PoolRecord,
    plan: PoolPlan,
    *,
    half_width: float | None,
    share: float,
    rng: random.Random,
) -> None:
    _s0, s1, price = _ordered(uni, plan)
    value1 = plan.depth_usd * share / start_price_usd(s1) * 10 ** token_decimals(s1)
    width = None if half_width is None else half_width * plan.width
    params = mint_params(
        rec,
        tick=price_tick(price),
        price_raw=price,
        half_width=width,
        value1=value1,
        recipient=uni.lp,
        skew=rng.uniform(-0.2, 0.2),
    )
    what = f"position {half_width} in {plan.label}"
    batch.send(uni.lp, uni.position_manager, encode_mint(params), 1_000_000, what)


# ------------------------------------------------------------------ config include


def summary(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    """What `aggregator devnet up` prints of a chain's Uniswap deployment."""
    if raw is None:
        return None
    uni = UniswapDeployment.from_json(raw)
    return {
        "factory": uni.factory,
        "quoter": uni.quoter,
        "router": uni.router,
        "pools": {label: rec.address for label, rec in uni.pools.items()},
    }


# Which asset's liquidity each pool measures: the base token sold into its quote.
def liquidity_by_asset(
    state: DevnetState, chains: tuple[str, ...]
) -> dict[str, list[tuple[str, str]]]:
    """asset symbol -> [(chain, pool address)] for every devnet pool whose base is a
    configured asset (cbETH/WETH has none)."""
    out: dict[str, list[tuple[str, str]]] = {}
    for chain in chains:
        uni = state.deployments[chain].uniswap
        if uni is None:
            continue
        for rec in UniswapDeployment.from_json(uni).pools.values():
            if rec.base in ASSET_BY_SYMBOL:
                out.setdefault(rec.base, []).append((chain, rec.address))
    return out


def render_pools_include(state: DevnetState, chains: tuple[str, ...]) -> str:
    """data/devnet/pools.toml: per asset, `liquidity = [{ chain, pool }]` for the
    config's `include` (merged into `[[assets]]` by symbol like devnet.toml)."""
    lines = [
        f"# Generated by `aggregator devnet up` at {state.started_at}; rewritten on every up.",
        "# Uniswap v3 pools per asset (docs/devnet.md, Pools); merged by asset symbol.",
        "",
    ]
    for symbol, pools in liquidity_by_asset(state, chains).items():
        lines += ["[[assets]]", f"symbol = {json.dumps(symbol)}", "liquidity = ["]
        lines += [f"  {{ chain = {json.dumps(c)}, pool = {json.dumps(p)} }}," for c, p in pools]
        lines += ["]", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ QuoterV2


SEL_QUOTE_EXACT_INPUT_SINGLE = function_signature_to_4byte_selector(
    "quoteExactInputSingle((address,address,uint256,uint24,uint160))"
)


@dataclass(frozen=True)
class Quote:
    amount_out: int
    sqrt_price_x96_after: int
    initialized_ticks_crossed: int
    gas_estimate: int


class QuoteError(RuntimeError):
    pass


def quote_exact_input_single(
    rpc_url: str,
    quoter: str,
    *,
    token_in: str,
    token_out: str,
    fee: int,
    amount_in: int,
    block: int | str = "latest",
    sqrt_price_limit_x96: int = 0,
) -> Quote:
    """QuoterV2.quoteExactInputSingle through eth_call at `block`: what selling
    `amount_in` raw units of `token_in` into the (token_in, token_out, fee) pool returns."""
    data = SEL_QUOTE_EXACT_INPUT_SINGLE + abi_encode(
        ["(address,address,uint256,uint24,uint160)"],
        [(token_in, token_out, amount_in, fee, sqrt_price_limit_x96)],
    )
    at = hex(block) if isinstance(block, int) else block
    try:
        raw = rpc_call(rpc_url, "eth_call", [{"to": quoter, "data": "0x" + data.hex()}, at])
    except Exception as exc:
        raise QuoteError(f"QuoterV2 {quoter} quote of {amount_in} {token_in}: {exc}") from exc
    out, sqrt_after, crossed, gas = abi_decode(
        ["uint256", "uint160", "uint32", "uint256"], bytes.fromhex(str(raw)[2:])
    )
    return Quote(int(out), int(sqrt_after), int(crossed), int(gas))


def quote_pool(
    state: DevnetState,
    chain: str,
    pool: str,
    token_in: str,
    amount_in: int,
    *,
    block: int | str = "latest",
) -> Quote:
    """The devnet's QuoterV2 on `chain` for selling `amount_in` of `token_in` (either of
    the pool's tokens, by address) into the devnet pool at address `pool`."""
    uni_json = state.deployments[chain].uniswap
    if uni_json is None:
        raise QuoteError(f"chain {chain!r} has no Uniswap deployment")
    uni = UniswapDeployment.from_json(uni_json)
    rec = uni.pool_for(pool)
    tokens = {rec.token0.lower(): rec.token1, rec.token1.lower(): rec.token0}
    if token_in.lower() not in tokens:
        raise QuoteError(f"{token_in} is not a token of pool {rec.label} ({rec.address})")
    return quote_exact_input_single(
        state.url(chain),
        uni.quoter,
        token_in=to_checksum_address(token_in),
        token_out=tokens[token_in.lower()],
        fee=rec.fee,
        amount_in=amount_in,
        block=block,
    )
