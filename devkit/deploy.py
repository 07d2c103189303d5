"""Deploy the contract system to one chain and seed demo positions.

Everything is sent from anvil's unlocked dev accounts (account 0 deploys and owns,
1 is the keeper, 2..5 are demo users, 6 is the liquidator / market maker, 9 deploys the
permissionless AttestationRegistry and is the derivatives venue's keeper on the Markets
contract), in a fixed order, so a given (chain, nonce offset) always yields the same
addresses.

    with web3_session(url) as w3:
        dep = deploy_chain(w3, "beta", nonce_offset=1000)
        seed_chain(w3, dep, SEED_PLAN["beta"])
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any, Literal

import requests
from eth_typing import ChecksumAddress
from web3 import Web3
from web3.exceptions import ContractCustomError

from chains.contracts import contract, decode_error, deploy, install_multicall
from chains.positions import text_bytes32
from chains.registry_codec import RegistryEntry, hf_to_fixed, pack_batch, usd_to_credit

FEED_DECIMALS = 8
VAULT_MAX_AGE_S = 900

AssetKind = Literal["erc20", "wsteth", "reth"]


@dataclass(frozen=True)
class AssetSpec:
    symbol: str
    name: str
    decimals: int
    kind: AssetKind
    # Starting USD price (for LSTs: of the underlying times `rate`, set on the feed).
    price_usd: float
    ltv_bps: int
    bonus_bps: int
    borrowable: bool = False
    rate: float | None = None


ASSETS: tuple[AssetSpec, ...] = (
    AssetSpec("USDC", "USD Coin", 6, "erc20", 1.0, 8500, 400, borrowable=True),
    AssetSpec("WBTC", "Wrapped BTC", 8, "erc20", 60_000.0, 7000, 650),
    AssetSpec("WETH", "Wrapped Ether", 18, "erc20", 3_000.0, 8000, 500, borrowable=True),
    AssetSpec(
        "wstETH", "Wrapped liquid staked Ether 2.0", 18, "wsteth", 3_540.0, 7500, 600, rate=1.18
    ),
    AssetSpec("rETH", "Rocket Pool ETH", 18, "reth", 3_300.0, 7400, 700, rate=1.10),
)
ASSET_BY_SYMBOL = {a.symbol: a for a in ASSETS}
LST_CONTRACT: dict[AssetKind, str] = {"wsteth": "MockWstETH", "reth": "MockRETH"}

DEPLOYER, KEEPER, LIQUIDATOR = 0, 1, 6
# Its own deployer, so the registry (owner-less) leaves the deployer's nonces, hence every
# other address of the devnet, as they were before it existed.
ATTESTATION_DEPLOYER = 9
# Records perp and option positions on the Markets contract (the venue's trade keeper:
# a separate role from the registry's keeper, which the daemon's pusher signs as).
VENUE_KEEPER = 9
# Perp markets listed on every chain's Markets contract (bytes32 name -> asset whose
# price marks it) and the option underlyings' on-chain names; config.toml's
# [portfolio] perps / options map the same names.
PERP_MARKETS = {"ETH-PERP": "WETH", "BTC-PERP": "WBTC"}
OPTION_UNDERLYINGS = {"ETH": "WETH"}
DEMO_USERS = (2, 3, 4, 5)

# Minted straight to the vault (borrowable liquidity) and to the liquidator, per chain.
VAULT_LIQUIDITY = {"USDC": 5_000_000, "WETH": 2_000}
LIQUIDATOR_FUNDS = {"USDC": 2_000_000, "WBTC": 20, "WETH": 1_000, "wstETH": 500, "rETH": 500}


class DeployStepError(RuntimeError):
    pass


@dataclass(frozen=True)
class Deposit:
    user: int
    symbol: str
    amount: float


@dataclass(frozen=True)
class Borrow:
    user: int
    symbol: str
    amount: float


Action = Deposit | Borrow

# Deposits spread over chains, so every demo user is a cross-chain account. Account 5 is
# the fragile one: ~17% ETH drop makes it liquidatable (the simulator's shock does that);
# account 4 borrows WETH on gamma against LST collateral held on origin/alpha and beta.
SEED_PLAN: dict[str, list[Action]] = {
    "origin": [
        Deposit(2, "WETH", 10),
        Deposit(3, "WBTC", 0.5),
        Deposit(4, "wstETH", 20),
        Deposit(5, "USDC", 2_000),
    ],
    "beta": [
        Deposit(2, "wstETH", 5),
        Deposit(3, "USDC", 20_000),
        Deposit(4, "rETH", 5),
        Borrow(2, "USDC", 15_000),
        Borrow(3, "WETH", 2),
    ],
    "gamma": [
        Deposit(2, "rETH", 2),
        Deposit(3, "WBTC", 0.2),
        Deposit(5, "WETH", 4),
        Borrow(5, "USDC", 10_000),
        Borrow(4, "WETH", 10),
        Borrow(2, "USDC", 10_000),
    ],
}


@dataclass
class ChainDeployment:
    chain: str
    chain_id: int
    registry: str
    vault: str
    multicall: str
    tokens: dict[str, str] = field(default_factory=dict)
    # symbol -> MockV3Aggregator quoting the asset in USD with FEED_DECIMALS.
    feeds: dict[str, str] = field(default_factory=dict)
    deployer: str = ""
    keeper: str = ""
    block: int = 0
    # devkit.pools.UniswapDeployment.to_json(): factory, periphery, pools, positions.
    uniswap: dict[str, Any] | None = None
    # AttestationRegistry (reputation attestations, docs/reputation.md).
    attestations: str = ""
    # contracts/Markets.sol (perp and option positions); "" in a state file from before.
    markets: str = ""
    venue_keeper: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChainDeployment:
        return cls(**data)


@contextmanager
def web3_session(url: str, timeout: float = 30) -> Iterator[Web3]:
    """A sync Web3 whose HTTP session is closed on exit (no leaked sockets)."""
    session = requests.Session()
    try:
        yield Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": timeout}, session=session))
    finally:
        session.close()


def to_raw(amount: float, decimals: int) -> int:
    """Human amount -> raw integer units; via the decimal string so 0.2 stays exactly 0.2."""
    raw = Decimal(str(amount)) * 10**decimals
    if raw != raw.to_integral_value():
        raise ValueError(f"{amount} has more than {decimals} decimals")
    return int(raw)


def feed_answer(price_usd: float) -> int:
    """USD price -> the feed's integer answer (FEED_DECIMALS), rounded to nearest."""
    return int((Decimal(str(price_usd)) * 10**FEED_DECIMALS).to_integral_value())


def send(w3: Web3, fn: Any, sender: str, what: str) -> Any:
    """Transact from an unlocked account and insist on success; `what` names the step."""
    try:
        tx = fn.transact({"from": sender})
    except ContractCustomError as exc:
        raise DeployStepError(f"{what}: reverted {decode_error(str(exc.data))}") from exc
    except Exception as exc:
        raise DeployStepError(f"{what}: {exc}") from exc
    receipt = w3.eth.wait_for_transaction_receipt(tx, timeout=30)
    if receipt["status"] != 1:
        raise DeployStepError(f"{what}: transaction {tx.hex()} reverted")
    return receipt


def deploy_chain(
    w3: Web3, chain: str, *, nonce_offset: int = 0, max_age_s: int = VAULT_MAX_AGE_S
) -> ChainDeployment:
    """Registry, vault, tokens, feeds and roles on one chain, in a fixed order.

    `nonce_offset` moves the deployer's nonce first (anvil_setNonce) so that chains get
    different addresses: identical addresses everywhere would hide a daemon bug that
    looks a token up on the wrong chain.
    """
    accounts = w3.eth.accounts
    deployer, keeper = accounts[DEPLOYER], accounts[KEEPER]
    if nonce_offset:
        _set_nonce(w3, chain, deployer, nonce_offset)
    registry = deploy(w3, "HealthRegistry", sender=deployer)
    vault = deploy(w3, "CollateralVault", registry, max_age_s, sender=deployer)
    tokens, feeds = _deploy_assets(w3, chain, deployer)
    _configure(
        w3,
        chain,
        deployer,
        keeper=keeper,
        registry=registry,
        vault=vault,
        tokens=tokens,
        feeds=feeds,
    )
    for symbol, amount in VAULT_LIQUIDITY.items():
        _mint(w3, tokens, symbol, vault, amount, chain=chain)
    for symbol, amount in LIQUIDATOR_FUNDS.items():
        _mint(w3, tokens, symbol, accounts[LIQUIDATOR], amount, chain=chain)
    # Last, so the addresses deployed before it are the same as without it.
    markets = deploy_markets(w3, chain, deployer, accounts[VENUE_KEEPER])
    multicall = install_multicall(_provider_url(w3))
    attester_deployer = accounts[ATTESTATION_DEPLOYER]
    if nonce_offset:
        _set_nonce(w3, chain, attester_deployer, nonce_offset)
    attestations = deploy(w3, "AttestationRegistry", sender=attester_deployer)
    return ChainDeployment(
        chain=chain,
        chain_id=w3.eth.chain_id,
        registry=registry,
        vault=vault,
        multicall=multicall,
        tokens=tokens,
        feeds=feeds,
        deployer=deployer,
        keeper=keeper,
        block=w3.eth.block_number,
        attestations=attestations,
        markets=markets,
        venue_keeper=accounts[VENUE_KEEPER],
    )


def deploy_markets(w3: Web3, chain: str, owner: str, venue_keeper: str) -> str:
    """The Markets contract (docs/portfolio-margin.md), `venue_keeper` allowed to record
    positions, every PERP_MARKETS market listed."""
    address = deploy(w3, "Markets", owner, sender=owner)
    m = contract(w3, "Markets", address)
    send(w3, m.functions.setKeeper(venue_keeper, True), owner, f"{chain}: Markets setKeeper")
    for name in PERP_MARKETS:
        send(w3, m.functions.listPerp(text_bytes32(name)), owner, f"{chain}: listPerp {name}")
    return address


def _set_nonce(w3: Web3, chain: str, deployer: ChecksumAddress, nonce_offset: int) -> None:
    current = w3.eth.get_transaction_count(deployer)
    if current > nonce_offset:
        raise DeployStepError(
            f"{chain}: deployer nonce {current} is already past offset {nonce_offset}"
        )
    w3.provider.make_request("anvil_setNonce", [deployer, hex(nonce_offset)])  # type: ignore[arg-type]


def _deploy_assets(w3: Web3, chain: str, deployer: str) -> tuple[dict[str, str], dict[str, str]]:
    """Every asset's token (LSTs at their configured rate) and its price feed."""
    tokens: dict[str, str] = {}
    feeds: dict[str, str] = {}
    for spec in ASSETS:
        if spec.kind == "erc20":
            tokens[spec.symbol] = deploy(
                w3, "MockERC20", spec.name, spec.symbol, spec.decimals, sender=deployer
            )
        else:
            tokens[spec.symbol] = deploy(w3, LST_CONTRACT[spec.kind], sender=deployer)
            lst = contract(w3, LST_CONTRACT[spec.kind], tokens[spec.symbol])
            assert spec.rate is not None
            send(
                w3,
                lst.functions.setRate(to_raw(spec.rate, 18)),
                deployer,
                f"{chain}: rate {spec.symbol}",
            )
        feeds[spec.symbol] = deploy(
            w3, "MockV3Aggregator", FEED_DECIMALS, feed_answer(spec.price_usd), sender=deployer
        )
    return tokens, feeds


def _configure(
    w3: Web3,
    chain: str,
    deployer: str,
    *,
    keeper: str,
    registry: str,
    vault: str,
    tokens: dict[str, str],
    feeds: dict[str, str],
) -> None:
    """Roles (keeper, vault as consumer) and every asset's collateral/debt settings."""
    reg = contract(w3, "HealthRegistry", registry)
    send(w3, reg.functions.setKeeper(keeper, True), deployer, f"{chain}: setKeeper")
    send(w3, reg.functions.setConsumer(vault, True), deployer, f"{chain}: setConsumer")
    v = contract(w3, "CollateralVault", vault)
    for spec in ASSETS:
        send(
            w3,
            v.functions.setCollateral(
                tokens[spec.symbol], feeds[spec.symbol], spec.ltv_bps, spec.bonus_bps
            ),
            deployer,
            f"{chain}: setCollateral {spec.symbol}",
        )
        if spec.borrowable:
            send(
                w3,
                v.functions.setDebtAsset(tokens[spec.symbol], feeds[spec.symbol]),
                deployer,
                f"{chain}: setDebtAsset {spec.symbol}",
            )


def _provider_url(w3: Web3) -> str:
    return str(w3.provider.endpoint_uri)  # type: ignore[attr-defined]


def _token(w3: Web3, tokens: dict[str, str], symbol: str) -> Any:
    spec = ASSET_BY_SYMBOL[symbol]
    name = "MockERC20" if spec.kind == "erc20" else LST_CONTRACT[spec.kind]
    return contract(w3, name, tokens[symbol])


def _mint(
    w3: Web3, tokens: dict[str, str], symbol: str, to: str, amount: float, *, chain: str
) -> None:
    raw = to_raw(amount, ASSET_BY_SYMBOL[symbol].decimals)
    send(
        w3,
        _token(w3, tokens, symbol).functions.mint(to, raw),
        w3.eth.accounts[DEPLOYER],
        f"{chain}: mint {amount} {symbol} to {to}",
    )


def push_credit(
    w3: Web3,
    dep: ChainDeployment,
    account: str,
    credit_usd: float,
    *,
    hf: float | None = None,
    tier: int = 0,
) -> RegistryEntry:
    """As the keeper, give `account` a fresh registry entry with `credit_usd` of credit.

    Bootstrap only (seeding, tests): the daemon's first push overwrites it with a newer
    as_of. hf None means no debt (infinite)."""
    now = int(w3.eth.get_block("latest")["timestamp"])
    reg = contract(w3, "HealthRegistry", dep.registry)
    stored_as_of = int(reg.functions.healthOf(account).call()[2])
    as_of = now
    if stored_as_of >= now:
        # Strictly newer than what is stored or the registry skips it, and not in the
        # future or isFresh() says no: mine the update at as_of exactly.
        as_of = stored_as_of + 1
        w3.provider.make_request("evm_setNextBlockTimestamp", [as_of])  # type: ignore[arg-type]
    entry = RegistryEntry(usd_to_credit(credit_usd), hf_to_fixed(hf), as_of, tier)
    send(
        w3,
        reg.functions.update(pack_batch([(account, entry)])),
        dep.keeper,
        f"{dep.chain}: push {account}",
    )
    return entry


def seed_chain(w3: Web3, dep: ChainDeployment, plan: list[Action]) -> None:
    """Mint, approve and deposit for each Deposit; for Borrows first push enough credit
    (keeper) for all of that user's borrows on this chain, then borrow."""
    accounts = w3.eth.accounts
    vault = contract(w3, "CollateralVault", dep.vault)
    for action in plan:
        if isinstance(action, Deposit):
            user = accounts[action.user]
            raw = to_raw(action.amount, ASSET_BY_SYMBOL[action.symbol].decimals)
            _mint(w3, dep.tokens, action.symbol, user, action.amount, chain=dep.chain)
            token = _token(w3, dep.tokens, action.symbol)
            send(
                w3,
                token.functions.approve(dep.vault, raw),
                user,
                f"{dep.chain}: approve {action.symbol}",
            )
            send(
                w3,
                vault.functions.deposit(dep.tokens[action.symbol], raw),
                user,
                f"{dep.chain}: deposit {action.amount} {action.symbol} by account {action.user}",
            )

    borrows: dict[int, list[Borrow]] = {}
    for action in plan:
        if isinstance(action, Borrow):
            borrows.setdefault(action.user, []).append(action)
    for user_idx, items in borrows.items():
        user = accounts[user_idx]
        needed = sum(_value_usd(w3, vault, dep, b.symbol, b.amount) for b in items)
        # Headroom over the exact need, so rounding up in the vault never fails the seed.
        push_credit(w3, dep, user, math.ceil(needed * 1.05), hf=1.5)
        for b in items:
            raw = to_raw(b.amount, ASSET_BY_SYMBOL[b.symbol].decimals)
            send(
                w3,
                vault.functions.borrow(dep.tokens[b.symbol], raw),
                user,
                f"{dep.chain}: borrow {b.amount} {b.symbol} by account {user_idx}",
            )


def _value_usd(w3: Web3, vault: Any, dep: ChainDeployment, symbol: str, amount: float) -> float:
    raw = to_raw(amount, ASSET_BY_SYMBOL[symbol].decimals)
    return int(vault.functions.valueOf(dep.tokens[symbol], raw).call()) / 1e6
