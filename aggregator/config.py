"""Configuration: TOML file(s) + AGG_ environment overrides, validated by pydantic.

Every model forbids unknown keys, so a typo is an error that names its TOML path
instead of a silently ignored setting. Secrets (keeper key, admin token, API keys)
come from the environment only; a secret written into a TOML file is rejected.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from eth_utils import is_hex_address, to_checksum_address
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from aggregator.alerts.config import RULE_TAGS, AlertsConfig
from aggregator.history.config import HistoryConfig
from chains.lst import RATE_KINDS
from chains.types import MULTICALL3, ChainTuning
from oracles.config import OracleDefaults, SourceConfig


def _checksum(value: str) -> str:
    if not isinstance(value, str) or not is_hex_address(value):
        raise ValueError(f"not a valid 20-byte hex address: {value!r}")
    return to_checksum_address(value)


Address = Annotated[str, AfterValidator(_checksum)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChainContracts(Strict):
    vault: Address | None = None
    registry: Address | None = None
    multicall: Address = MULTICALL3
    # Markets contract beside the vault (perp/option position events, portfolio mode).
    markets: Address | None = None
    # AttestationRegistry: reputation attestations ([reputation.attestation]).
    attestations: Address | None = None


class ChainConfig(Strict, ChainTuning):
    """One `[[chains]]` section: identity, endpoints and contracts here; the indexing
    and RPC knobs (confirmations, block_time, ...) with their defaults and bounds are
    inherited from chains.types.ChainTuning, which ChainSettings shares."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    chain_id: int = Field(gt=0)
    rpc_urls: list[str]
    fork_url: str | None = None
    contracts: ChainContracts = ChainContracts()

    @field_validator("rpc_urls")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        if not urls:
            raise ValueError("must not be empty")
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"not an http(s) URL: {url!r}")
        return urls


def _rate_kind(kind: str) -> str:
    if kind not in RATE_KINDS:
        raise ValueError(f"unknown rate kind {kind!r}; expected one of {sorted(RATE_KINDS)}")
    return kind


# The kinds are the keys of chains/'s reader registry: a new kind is one registry line.
LstRateKind = Annotated[str, AfterValidator(_rate_kind)]


class RateSourceConfig(Strict):
    """Where an LST's exchange rate is read, and the CAPO-style growth cap."""

    kind: LstRateKind
    chain: str
    address: Address
    max_yearly_growth: float = Field(default=0.10, ge=0, le=10)
    # The cap is anchored at (snapshot_rate, snapshot_time); when unset the first
    # observed rate becomes the snapshot.
    snapshot_rate: float | None = Field(default=None, gt=0)
    snapshot_time: int | None = Field(default=None, ge=0)
    # The cap's guard (oracles/cap_guard.py): a cap this far below the live rate, a
    # snapshot older than max_snapshot_age_s, or a snapshot ratio this far from the
    # chain's rate at the snapshot time marks the asset `capped`.
    cap_tolerance: float = Field(default=0.001, ge=0, lt=1)
    max_snapshot_age_s: float | None = Field(default=None, gt=0)
    snapshot_tolerance: float = Field(default=0.001, ge=0, lt=1)


class LiquidityPoolRef(Strict):
    """A Uniswap v3 pool that sells the asset (`assets[i].liquidity`); the pool reader
    checks on chain that it trades this asset and is its factory's pool."""

    chain: str
    pool: Address


class LiquidityConfig(Strict):
    """`[liquidity]`: how pools are read and when one is ignored (docs/risk.md
    "Liquidity weighting from pools")."""

    # Relative price band read around each pool's price: ticks within -band / +band.
    band: float = Field(default=0.2, gt=0, le=0.9)
    # Every pool is read again this often, even without Swap/Mint/Burn logs.
    refresh_interval_s: float = Field(default=300.0, gt=0)
    # How often the confirmed head is polled for Swap/Mint/Burn logs.
    poll_interval_s: float = Field(default=2.0, gt=0)
    # A pool whose price is further than this from the oracle median is ignored.
    max_deviation: float = Field(default=0.02, gt=0, le=1)
    # A pool whose in-range liquidity moved by more than this (relative) between two
    # consecutive snapshots is ignored for that round.
    max_liquidity_move: float = Field(default=0.5, gt=0)
    # A snapshot older than this (blocks behind the head, or seconds since read) is
    # stale: the asset falls back to depth_usd if no fresh pool remains.
    max_age_blocks: int = Field(default=30, ge=1)
    max_age_s: float = Field(default=120.0, gt=0)
    # Per chain, the Uniswap v3 factory every pool must come from (unset: the pool's
    # own factory() is asked, and the pool must be the one it registers).
    factories: dict[str, Address] = Field(default_factory=dict)


class AttestationConfig(Strict):
    """`[reputation.attestation]`: on-chain attestations (contracts.attestations of each
    chain) as one factor of the score (docs/reputation.md "Attestations"). Only the
    listed attesters count; none listed: the factor is off."""

    attesters: list[Address] = Field(default_factory=list)
    # Score contribution of the best attestation (+10000 bps): lowers the multiplier.
    bonus: float = Field(default=0.05, ge=0, le=1)
    # Score contribution of the worst one (-10000 bps): raises it, at once.
    penalty: float = Field(default=0.30, ge=0, le=10)


class MaintenanceAtOnce(Strict):
    """`[reputation.maintenance] kind = "at_once"`: a penalty raises the maintenance
    (liquidation) requirement the moment it is scored, as the first step did. Procyclical
    in a market-wide crash (docs/reputation.md "Not procyclical"); kept for comparison."""

    kind: Literal["at_once"] = "at_once"


class MaintenancePhased(Strict):
    """`[reputation.maintenance] kind = "phased"` (the default): a penalty raises the
    borrowing requirement at once; on the maintenance side it counts nothing until the
    account has spent `hold_days` of clean time (out of warning or worse) since the
    penalty's cause, then rises linearly to its full weight over `ramp_days` more clean
    days; while the account is in warning or worse the phase holds."""

    kind: Literal["phased"] = "phased"
    hold_days: float = Field(default=7.0, ge=0, allow_inf_nan=False)
    ramp_days: float = Field(default=30.0, ge=0, allow_inf_nan=False)


MaintenanceConfig = Annotated[MaintenanceAtOnce | MaintenancePhased, Field(discriminator="kind")]


class ReputationConfig(Strict):
    """`[reputation]`: the personal multiplier on each account's requirement from its
    own indexed history (docs/reputation.md). Off by default: disabled, no figure
    changes and the explanation has no `reputation` section."""

    enabled: bool = False
    # How often the `reputation` job reads the new confirmed events and rescores.
    interval_s: float = Field(default=300.0, gt=0)
    # Bounds of the multiplier: lower <= 1 <= upper.
    lower: float = Field(default=0.90, gt=0, le=1)
    upper: float = Field(default=1.30, ge=1, le=10)
    # Probation: no reward before this many days of age (and of clean time).
    min_age_days: float = Field(default=90.0, ge=0)
    # Reward per 30 clean days beyond the probation (lowers the multiplier).
    reward_per_30d: float = Field(default=0.01, ge=0, le=1)
    # Added at once per liquidation on any chain, then halves every half_life_days.
    liquidation_penalty: float = Field(default=0.30, ge=0, le=10)
    # Added per risk-history episode that reached liquidatable (a near miss).
    liquidatable_penalty: float = Field(default=0.10, ge=0, le=10)
    half_life_days: float = Field(default=180.0, gt=0)
    # Seconds in one of the days above: one day unless the clock runs compressed (the
    # crash replay sets 86400 / compression, docs/replay.md "Time").
    day_s: float = Field(default=86400.0, gt=0, allow_inf_nan=False)
    attestation: AttestationConfig = AttestationConfig()
    # How a penalty reaches the maintenance (liquidation) requirement: phased in
    # (default) or at once. The borrowing side always takes it at once.
    maintenance: MaintenanceConfig = MaintenancePhased()


class AssetConfig(Strict):
    symbol: str = Field(pattern=r"^[A-Za-z0-9.]{1,16}$")
    kind: Literal["erc20", "lst"] = "erc20"
    decimals: int = Field(ge=0, le=36)
    tokens: dict[str, Address] = Field(default_factory=dict)
    ltv: float = Field(ge=0, le=1)
    lt: float = Field(ge=0, le=1)
    liquidation_bonus: float = Field(default=0.05, ge=0, le=1)
    depth_usd: float | None = Field(default=None, gt=0)
    liquidity: list[LiquidityPoolRef] = Field(default_factory=list)
    borrowable: bool = False
    underlying: str | None = None
    rate: RateSourceConfig | None = None
    sources: list[SourceConfig] = Field(default_factory=list)
    min_sources: int | None = Field(default=None, ge=1)
    max_deviation: float | None = Field(default=None, gt=0, le=1)
    jump_threshold: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _caps(self) -> AssetConfig:
        if self.lt < self.ltv:
            raise ValueError(f"lt ({self.lt}) must be >= ltv ({self.ltv})")
        if self.kind == "lst" and (self.underlying is None or self.rate is None):
            raise ValueError("an lst asset needs both 'underlying' and 'rate'")
        if self.kind == "erc20" and self.rate is not None:
            raise ValueError("'rate' is only allowed on kind = 'lst'")
        return self


class CorrelationGroup(Strict):
    name: str
    assets: list[str] = Field(min_length=1)
    reference: str
    ltv: float = Field(ge=0, le=1)
    lt: float = Field(ge=0, le=1)

    @model_validator(mode="after")
    def _caps(self) -> CorrelationGroup:
        if self.lt < self.ltv:
            raise ValueError(f"lt ({self.lt}) must be >= ltv ({self.ltv})")
        return self


class RiskConfig(Strict):
    z: float = Field(default=2.33, ge=0)
    horizon_days: float = Field(default=1.0, gt=0)
    impact: float = Field(default=1.0, ge=0)
    warn_hf: float = Field(default=1.10, gt=1)
    target_hf: float = Field(default=1.05, gt=1)
    close_factor: float = Field(default=0.5, gt=0, le=1)
    full_close_hf: float = Field(default=0.95, gt=0, le=1)
    ewma_lambda: float = Field(default=0.94, gt=0, lt=1)
    # The time ewma_lambda decays over: one day, as RiskMetrics' daily 0.94. A replay's
    # compressed clock sets it to one market day in wall seconds (devkit/replay/
    # timescale.py): lambda ** C per wall day would underflow beyond C ~ 11,000.
    ewma_period_s: float = Field(default=86400.0, gt=0)


class ForecastConfig(Strict):
    """[forecast]: predictive volatility (GARCH family, oracles/forecast.py), fitted off
    the price path by the `vol_forecast` job on the daemon's own price history."""

    enabled: bool = True
    model: Literal["garch", "gjr"] = "garch"
    refit_interval_s: float = Field(default=3600.0, gt=0)
    # Fewer daily returns than this in the stored history: EWMA only (short_history).
    min_returns: int = Field(default=250, ge=30)
    max_persistence: float = Field(default=0.999, gt=0, le=1)
    # A forecast more than this many times above or below the sample sigma: implausible.
    max_ratio: float = Field(default=10.0, gt=1)


class ApcConfig(Strict):
    """[apc]: anti-procyclicality tools on the standard model's volatility input
    (aggregator/risk/apc.py, docs/configuration.md, docs/procyclicality.md)."""

    # (a) margin buffer applied in calm, released (eaten) in stress; EMIR: >= 0.25.
    buffer: float = Field(default=0.0, ge=0, le=1)
    # Stress: predictive sigma above this multiple of the lookback's long-run sigma.
    stress_multiple: float = Field(default=1.5, gt=1)
    # (b) weight of the stressed-period sigma in the variance; EMIR: >= 0.25.
    stressed_weight: float = Field(default=0.0, ge=0, le=1)
    # (c) volatility never below the long-run sigma of the whole stored lookback.
    lookback_floor: bool = True
    # (d) largest fraction the volatility (hence the vol term) may fall per day; rises
    # are never capped. None = no cap.
    max_daily_decrease: float | None = Field(default=None, gt=0, lt=1)
    # The period (seconds) that fraction applies to: one day unless time runs faster
    # than the wall clock (the crash replay sets 86400 / compression, docs/replay.md).
    decrease_period_s: float = Field(default=86400.0, gt=0, allow_inf_nan=False)
    # Stressed-window length (days) for (b).
    stressed_window_days: int = Field(default=30, ge=5)


class CreditConfig(Strict):
    policy: Literal["static", "demand"] = "demand"
    # Chain name -> weight; chains not listed get weight 1.
    weights: dict[str, float] = Field(default_factory=dict)
    # Fraction of BP that the demand policy may move toward chains with recent use.
    demand_share: float = Field(default=0.5, ge=0, le=1)
    demand_window_s: float = Field(default=3600, gt=0)


class PusherConfig(Strict):
    enabled: bool = True
    hf_deviation: float = Field(default=0.02, gt=0)
    credit_deviation: float = Field(default=0.05, gt=0)
    # Credit is pushed this fraction below the account's share, so a smaller fall of the
    # share needs no push; a fall past it goes at once (docs/pusher.md, "Credit buffer").
    credit_buffer: float = Field(default=0.01, ge=0, lt=0.5)
    # A difference rides along in a batch that goes anyway only when it is at least
    # this fraction of a trigger (HF, credit, heartbeat age); 0: any difference.
    ride_along_fraction: float = Field(default=0.5, ge=0, le=1)
    heartbeat_s: float = Field(default=600, gt=0)
    vault_max_age_s: float = Field(default=900, gt=0)
    batch_gas_budget: int = Field(default=3_000_000, gt=21_000)
    fee_bump: float = Field(default=0.125, ge=0.125)
    max_fee_gwei: float = Field(default=500, gt=0)
    stuck_after_s: float = Field(default=30, gt=0)
    # A sent update no node knows any more (its block reorged away, or the broadcast
    # never arrived) is sent again, byte for byte, after this long; no fee bump.
    rebroadcast_after_s: float = Field(default=6, gt=0)
    interval_s: float = Field(default=5, gt=0)
    # -- pusher (docs/pusher.md) ------------------------------------------------
    # Compute and log batches (and estimate their gas) without signing or sending.
    dry_run: bool = False
    # Floor of the EIP-1559 priority fee when recent blocks paid no tips.
    min_priority_fee_gwei: float = Field(default=0.01, ge=0)
    # Update transactions of one chain in the mempool at once (nonce pipeline depth).
    max_in_flight: int = Field(default=4, ge=1, le=64)
    # gas limit = eth_estimateGas * gas_headroom (capped at batch_gas_budget).
    gas_headroom: float = Field(default=1.2, ge=1.0, le=3.0)
    # A nonce gap below the lowest open update (another process took nonces of the
    # keeper key and abandoned them) is filled with zero-value self-transfers after
    # standing this long (chains/pusher/gaps.py).
    gap_fill_after_s: float = Field(default=60, gt=0)
    # Warn (log, /v1/chains, agg_pusher_keeper_low) below this keeper balance.
    min_keeper_balance_eth: float = Field(default=0.05, ge=0)
    # Encrypted JSON keystore instead of AGG_KEEPER_KEY; its password comes from the
    # env var named here, or from keystore_password_file.
    keystore_path: str | None = None
    keystore_password_env: str = Field(default="AGG_KEEPER_KEYSTORE_PASSWORD", min_length=1)
    keystore_password_file: str | None = None

    @model_validator(mode="after")
    def _heartbeat(self) -> PusherConfig:
        if self.heartbeat_s >= self.vault_max_age_s:
            raise ValueError(
                f"heartbeat_s ({self.heartbeat_s}) must be below vault_max_age_s "
                f"({self.vault_max_age_s}) or entries go stale between pushes"
            )
        if self.rebroadcast_after_s >= self.stuck_after_s:
            raise ValueError(
                f"rebroadcast_after_s ({self.rebroadcast_after_s}) must be below "
                f"stuck_after_s ({self.stuck_after_s}): a lost transaction is sent again "
                "before it counts as stuck"
            )
        return self


class ApiConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8780, ge=0, le=65535)
    # Open /v1/stream connections beyond this are refused with a 503 (bounded memory).
    max_streams: int = Field(default=10_000, ge=1)
    # Larger request bodies are refused with a 413 naming "body".
    max_body_bytes: int = Field(default=1 << 20, ge=1024)


class StoreConfig(Strict):
    url: str = "sqlite+aiosqlite:///./data/aggregator.db"
    # Book snapshot (aggregator/book_snapshot.py): the position book's arrays, read at
    # start instead of every stored position. None: off.
    snapshot_path: Path | None = None
    # How often the `book_snapshot` job writes it (it is also written at a clean stop);
    # 0: only at a clean stop.
    snapshot_interval_s: float = Field(default=600.0, ge=0)

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str) -> str:
        if not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "must start with sqlite+aiosqlite:// or postgresql+asyncpg:// "
                f"(got {url.split(':', 1)[0]!r})"
            )
        return url


class SchedulerConfig(Strict):
    oracle_interval_s: float = Field(default=10.0, gt=0)
    reconcile_interval_s: float = Field(default=60.0, gt=0)
    lst_interval_s: float = Field(default=60.0, gt=0)
    recompute_debounce_s: float = Field(default=0.25, ge=0)
    # How long an indexed change may wait for the ledger before /readyz fails. Not zero:
    # on a busy chain some change is nearly always in its debounce window.
    ledger_lag_unready_s: float = Field(default=5.0, gt=0)


def _default_instance_id() -> str:
    import socket

    return f"{socket.gethostname()}-{os.getpid()}"


class ClusterConfig(Strict):
    """[cluster]: several instances on one PostgreSQL store (docs/deployment.md). Each
    chain's indexer and pusher run under a lease; ignored on SQLite (one instance)."""

    # Unique per running instance; shown in /v1/chains as the lease holder.
    instance_id: str = Field(default_factory=_default_instance_id, min_length=1, max_length=128)
    # A holder that has not renewed for this long (database clock) can be replaced.
    lease_ttl_s: float = Field(default=15.0, ge=1.0, le=600.0)
    # Renewal and acquisition attempts; default lease_ttl_s / 3.
    renew_interval_s: float | None = Field(default=None, gt=0)
    # How often an instance that does not index a chain reads that chain's changes
    # from the store into its own ledger.
    follow_interval_s: float = Field(default=1.0, gt=0, le=60.0)

    @model_validator(mode="after")
    def _renew(self) -> ClusterConfig:
        if self.renew_interval_s is not None and self.renew_interval_s >= self.lease_ttl_s / 2:
            raise ValueError(
                f"renew_interval_s ({self.renew_interval_s}) must be below lease_ttl_s / 2 "
                f"({self.lease_ttl_s / 2}): a single late renewal would lose the lease"
            )
        return self

    @property
    def renew_every_s(self) -> float:
        return self.renew_interval_s if self.renew_interval_s is not None else self.lease_ttl_s / 3


# -- portfolio margin mode (docs/portfolio-margin.md) ---------------------------------
class PerpMarketConfig(Strict):
    """A perpetual market: its on-chain id (the bytes32 text in the Markets contract)
    and the asset symbol whose price is its mark."""

    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,31}$")
    underlying: str


class OptionUnderlyingConfig(Strict):
    """An option underlying as named on chain (bytes32 text) -> asset symbol."""

    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,31}$")
    underlying: str


class ContingencyConfig(Strict):
    """Add-ons to the worst scenario loss (MM = max(0, -min dV) + contingency)."""

    # Fraction of |net perp notional| per underlying (funding, basis, oracle lag).
    perp_notional: float = Field(default=0.005, ge=0, le=1)
    # Fraction of spot per net short option contract (gap and vol-of-vol risk).
    short_option_notional: float = Field(default=0.01, ge=0, le=1)
    # Fixed USD per account holding any derivative position.
    fixed_usd: float = Field(default=0.0, ge=0)


class StandardRulesConfig(Strict):
    """Rule-based margin of derivatives for the standard and isolated comparison
    (aggregator/risk/capital.py): each position margined alone, summed."""

    perp_im: float = Field(default=0.10, gt=0, le=1)
    option_short_base: float = Field(default=0.15, ge=0, le=1)
    option_short_min: float = Field(default=0.10, ge=0, le=1)


def _default_spot_grid() -> list[float]:
    return [round(-0.20 + 0.05 * i, 2) for i in range(9)]


class PortfolioConfig(Strict):
    """[portfolio]: which margin model decides health, and the scenario grid."""

    # One of risk/registry.py MODELS (tests/unit/config check the two lists agree).
    mode: Literal["standard", "portfolio", "var"] = "standard"
    spot_shocks: list[float] = Field(default_factory=_default_spot_grid, min_length=1)
    extreme_moves: list[float] = Field(default_factory=lambda: [-0.40, 0.40])
    # All risk underlyings at once (correlations to one), with every LST de-pegged.
    crash_moves: list[float] = Field(default_factory=lambda: [-0.40])
    depeg_shock: float = Field(default=0.07, ge=0, lt=1)
    # Relative implied-volatility shocks (down, up) crossed with the spot grid.
    vol_shocks: list[float] = Field(default_factory=lambda: [-0.30, 0.50], min_length=1)
    contingency: ContingencyConfig = ContingencyConfig()
    im_factor: float = Field(default=1.25, ge=1)
    standard_rules: StandardRulesConfig = StandardRulesConfig()
    # Assets never shocked (USD stablecoins); every other non-LST asset is its own
    # underlying, an LST moves with its `underlying` times (1 - de-peg).
    stable_assets: list[str] = Field(default_factory=list)
    # Annualised implied volatility per underlying asset symbol; missing ones use the
    # oracle's EWMA daily volatility * sqrt(365).
    implied_vol: dict[str, float] = Field(default_factory=dict)
    perps: list[PerpMarketConfig] = Field(default_factory=list)
    options: list[OptionUnderlyingConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _shocks(self) -> PortfolioConfig:
        for name in ("spot_shocks", "extreme_moves", "crash_moves", "vol_shocks"):
            for i, v in enumerate(getattr(self, name)):
                if not -1.0 < v <= 10.0:
                    raise ValueError(f"{name}[{i}]: {v} must be in (-1, 10]")
        for sym, iv in self.implied_vol.items():
            if not 0.0 < iv <= 10.0:
                raise ValueError(f"implied_vol.{sym}: {iv} must be in (0, 10]")
        return self


# -- VaR / ES margin mode (docs/var.md) ----------------------------------------------------
def _default_history() -> dict[str, str]:
    # Project asset symbol -> the shipped daily series (history/, marketdata/history.py).
    return {"WETH": "ETH", "WBTC": "BTC", "stETH": "stETH", "wstETH": "wstETH", "USDC": "USDC"}


class VarConfig(Strict):
    """[var]: the VaR/ES margin model and its calibration (docs/var.md)."""

    confidence: float = Field(default=0.975, ge=0.9, lt=1)
    # Liquidation horizon in days: the default, and per asset symbol.
    horizon_days: float = Field(default=1.0, gt=0, le=30)
    horizons: dict[str, float] = Field(default_factory=dict)
    method: Literal["fhs", "parametric"] = "fhs"
    scenarios: int = Field(default=500, ge=100, le=1000)
    ewma_lambda: float = Field(default=0.94, gt=0, lt=1)
    stressed_floor: bool = True
    stressed_window_days: int = Field(default=250, ge=20, le=2000)
    # Daily returns the daemon's own price history needs before it replaces the
    # shipped history (at least scenarios + the 20-return EWMA seed).
    min_history_days: int = Field(default=520, ge=40)
    history: dict[str, str] = Field(default_factory=_default_history)
    # Asset symbol -> a shipped series whose returns stand in for the asset's own before
    # its series starts (an LST launched after a crash of the stressed history). The
    # asset's own closes always win where they exist (var_feed.backfilled).
    backfill: dict[str, str] = Field(default_factory=dict)
    # The shipped history ends here (UTC; a date is its midnight): closes observed
    # after it never enter the calibration, so a replay of a past crash does not
    # calibrate on the years after it. None: all of it.
    history_end: datetime | None = None
    recalibrate_interval_s: float = Field(default=86400.0, ge=60)

    @field_validator("history_end", mode="before")
    @classmethod
    def _end_utc(cls, v: Any) -> Any:
        if isinstance(v, date) and not isinstance(v, datetime):
            v = datetime(v.year, v.month, v.day)
        if isinstance(v, str):
            v = datetime.fromisoformat(v)
        if isinstance(v, datetime) and v.tzinfo is None:
            v = v.replace(tzinfo=UTC)
        return v

    @model_validator(mode="after")
    def _bounds(self) -> VarConfig:
        for sym, h in self.horizons.items():
            if not 0.0 < h <= 30.0:
                raise ValueError(f"horizons.{sym}: {h} must be in (0, 30] days")
        if self.min_history_days < self.scenarios + 20:
            raise ValueError(
                f"min_history_days: {self.min_history_days} must be >= scenarios + 20 "
                f"({self.scenarios + 20})"
            )
        return self

    def horizon(self, symbol: str) -> float:
        return self.horizons.get(symbol, self.horizon_days)


class Secrets(BaseSettings):
    """Only from the environment (AGG_KEEPER_KEY, AGG_ADMIN_TOKEN), never from TOML."""

    model_config = SettingsConfigDict(env_prefix="AGG_", extra="ignore")
    keeper_key: SecretStr | None = None
    admin_token: SecretStr | None = None


class AppConfig(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AGG_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    include: list[str] = Field(default_factory=list)
    chains: list[ChainConfig] = Field(min_length=1)
    assets: list[AssetConfig] = Field(min_length=1)
    correlation_groups: list[CorrelationGroup] = Field(default_factory=list)
    oracle: OracleDefaults = OracleDefaults()
    risk: RiskConfig = RiskConfig()
    forecast: ForecastConfig = ForecastConfig()
    apc: ApcConfig = ApcConfig()
    credit: CreditConfig = CreditConfig()
    pusher: PusherConfig = PusherConfig()
    api: ApiConfig = ApiConfig()
    store: StoreConfig = StoreConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    accounts: list[Address] = Field(default_factory=list)
    portfolio: PortfolioConfig = PortfolioConfig()
    var: VarConfig = VarConfig()
    cluster: ClusterConfig = ClusterConfig()
    history: HistoryConfig = HistoryConfig()
    alerts: AlertsConfig = AlertsConfig()
    liquidity: LiquidityConfig = LiquidityConfig()
    reputation: ReputationConfig = ReputationConfig()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first: AGG_API__PORT=9000 beats the TOML file.
        return (env_settings, init_settings)

    # -- lookups used across the daemon --------------------------------------
    def chain(self, name: str) -> ChainConfig:
        for chain in self.chains:
            if chain.name == name:
                return chain
        raise KeyError(f"unknown chain {name!r}")

    def asset(self, symbol: str) -> AssetConfig:
        for asset in self.assets:
            if asset.symbol == symbol:
                return asset
        raise KeyError(f"unknown asset {symbol!r}")

    @property
    def chain_names(self) -> list[str]:
        return [c.name for c in self.chains]

    @property
    def asset_symbols(self) -> list[str]:
        return [a.symbol for a in self.assets]


SECRET_KEYS = frozenset({"keeper_key", "admin_token", "api_key", "password", "private_key"})


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """Raised with every problem found; str() prints one `path: message` per line."""

    def __init__(self, problems: Iterable[Problem], source: str = "") -> None:
        self.problems = list(problems)
        self.source = source
        head = f"invalid config {source}".rstrip() + ":"
        super().__init__("\n".join([head, *(f"  {p}" for p in self.problems)]))


def format_loc(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_TAGGED_UNION_FIELDS = {"sources", "rules"}
_SOURCE_TAGS = {"chainlink", "http"} | RULE_TAGS


def _clean_loc(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    # Discriminated unions put the tag value (e.g. 'http') into the location;
    # the user wrote no such key, so drop it.
    parts = list(loc)
    out: list[int | str] = []
    i = 0
    while i < len(parts):
        out.append(parts[i])
        tag = parts[i + 2] if i + 2 < len(parts) else None
        if (
            parts[i] in _TAGGED_UNION_FIELDS
            and isinstance(parts[i + 1], int)
            and isinstance(tag, str)
            and tag in _SOURCE_TAGS
        ):
            out.append(parts[i + 1])
            i += 3
            continue
        i += 1
    return tuple(out)


def _message(err: Mapping[str, Any]) -> str:
    msg = str(err["msg"])
    if err["type"] == "too_short" and "at least 1 item" in msg:
        return "must not be empty"
    if err["type"] == "extra_forbidden":
        return "unknown key (not allowed here)"
    if err["type"] == "missing":
        return "required key is missing"
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    return msg


def problems_from_validation(exc: ValidationError) -> list[Problem]:
    return [Problem(format_loc(_clean_loc(tuple(e["loc"]))), _message(e)) for e in exc.errors()]


def _merge_keyed(base: list[Any], extra: list[Any]) -> list[Any]:
    """Merge two arrays of tables by their identity key (name / symbol)."""

    def key(item: Any) -> Any:
        if isinstance(item, dict):
            for k in ("name", "symbol"):
                if k in item:
                    return (k, item[k])
        return None

    if not any(key(i) is not None for i in [*base, *extra]):
        # Plain lists (rpc_urls, include) are replaced, not concatenated.
        return list(extra)
    out = [dict(i) if isinstance(i, dict) else i for i in base]
    index = {key(i): n for n, i in enumerate(out) if key(i) is not None}
    for item in extra:
        k = key(item)
        if k is not None and k in index:
            out[index[k]] = deep_merge(out[index[k]], item)
        else:
            out.append(item)
    return out


def deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        elif isinstance(v, list) and isinstance(out.get(k), list):
            out[k] = _merge_keyed(out[k], v)
        else:
            out[k] = v
    return out


def _find_secrets(data: Any, path: str = "") -> list[Problem]:
    found: list[Problem] = []
    if isinstance(data, dict):
        for k, v in data.items():
            sub = f"{path}.{k}" if path else k
            if k in SECRET_KEYS:
                found.append(
                    Problem(sub, f"secrets are read from the environment only (AGG_{k.upper()})")
                )
            found.extend(_find_secrets(v, sub))
    elif isinstance(data, list):
        for n, v in enumerate(data):
            found.extend(_find_secrets(v, f"{path}[{n}]"))
    return found


def load_raw(path: Path) -> dict[str, Any]:
    """Read a TOML file and its includes (relative to the file), merged in order."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError([Problem("", f"config file not found: {path}")], str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem("", f"not valid TOML: {exc}")], str(path)) from None
    problems = _find_secrets(data)
    includes = data.get("include", [])
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        problems.append(Problem("include", "must be a list of file paths"))
        includes = []
    for n, inc in enumerate(includes):
        inc_path = (path.parent / inc).resolve()
        if not inc_path.exists():
            hint = " (run `aggregator devnet up` to create it)" if "devnet" in inc else ""
            problems.append(Problem(f"include[{n}]", f"file not found: {inc_path}{hint}"))
            continue
        try:
            sub = load_raw(inc_path)
        except ConfigError as exc:
            problems.extend(
                Problem(f"include[{n}] {p.path}".strip(), p.message) for p in exc.problems
            )
            continue
        sub.pop("include", None)
        data = deep_merge(data, sub)
    if problems:
        raise ConfigError(problems, str(path))
    return data


def semantic_problems(cfg: AppConfig) -> list[Problem]:
    """Cross-references that a single field validator cannot see."""
    chains = cfg.chain_names
    problems = [
        *_dupes(chains, "chains", "chain name"),
        *_dupes([c.chain_id for c in cfg.chains], "chains", "chain_id"),
        *_dupes(cfg.asset_symbols, "assets", "asset symbol"),
    ]
    for i, asset in enumerate(cfg.assets):
        problems.extend(_asset_problems(cfg, f"assets[{i}]", asset))
    problems.extend(_correlation_problems(cfg))
    problems.extend(_portfolio_problems(cfg))
    problems.extend(_var_problems(cfg))
    problems.extend(_alert_problems(cfg))
    problems.extend(_attestation_problems(cfg))
    for chain in cfg.liquidity.factories:
        if chain not in chains:
            problems.append(Problem(f"liquidity.factories.{chain}", f"unknown chain {chain!r}"))
    for chain in cfg.credit.weights:
        if chain not in chains:
            problems.append(Problem(f"credit.weights.{chain}", f"unknown chain {chain!r}"))
    for w_chain, weight in cfg.credit.weights.items():
        if weight < 0:
            problems.append(Problem(f"credit.weights.{w_chain}", "must be >= 0"))
    return problems


def _dupes(values: list[Any], path: str, what: str) -> list[Problem]:
    seen: set[Any] = set()
    out: list[Problem] = []
    for n, v in enumerate(values):
        if v in seen:
            out.append(Problem(f"{path}[{n}]", f"duplicate {what} {v!r}"))
        seen.add(v)
    return out


def _asset_problems(cfg: AppConfig, base: str, asset: AssetConfig) -> list[Problem]:
    """One asset's references to chains and assets, its sources and its quorum."""
    chains = cfg.chain_names
    out: list[Problem] = []
    for chain in asset.tokens:
        if chain not in chains:
            out.append(Problem(f"{base}.tokens.{chain}", f"unknown chain {chain!r}"))
    if asset.underlying is not None and asset.underlying not in cfg.asset_symbols:
        out.append(Problem(f"{base}.underlying", f"unknown asset {asset.underlying!r}"))
    if asset.underlying == asset.symbol:
        out.append(Problem(f"{base}.underlying", "an asset cannot be its own underlying"))
    if asset.rate is not None and asset.rate.chain not in chains:
        out.append(Problem(f"{base}.rate.chain", f"unknown chain {asset.rate.chain!r}"))
    for j, src in enumerate(asset.sources):
        src_chain = getattr(src, "chain", None)
        if src_chain is not None and src_chain not in chains:
            out.append(Problem(f"{base}.sources[{j}].chain", f"unknown chain {src_chain!r}"))
    out.extend(_dupes([s.name for s in asset.sources], f"{base}.sources", "source name"))
    out.extend(_liquidity_problems(cfg, base, asset))
    if asset.kind == "erc20":
        out.extend(_quorum_problems(cfg, base, asset))
    return out


def _liquidity_problems(cfg: AppConfig, base: str, asset: AssetConfig) -> list[Problem]:
    """Each pool on a known chain where the asset has a token (so the reader can check
    that the pool trades it), listed once."""
    out: list[Problem] = []
    for j, ref in enumerate(asset.liquidity):
        where = f"{base}.liquidity[{j}]"
        if ref.chain not in cfg.chain_names:
            out.append(Problem(f"{where}.chain", f"unknown chain {ref.chain!r}"))
        elif ref.chain not in asset.tokens:
            out.append(
                Problem(f"{where}.chain", f"{asset.symbol} has no token on {ref.chain!r} "
                        f"(assets.tokens.{ref.chain}), so the pool cannot be checked")
            )  # fmt: skip
    pairs = [(r.chain, r.pool.lower()) for r in asset.liquidity]
    out.extend(_dupes(pairs, f"{base}.liquidity", "pool"))
    return out


def _quorum_problems(cfg: AppConfig, base: str, asset: AssetConfig) -> list[Problem]:
    """An erc20 asset is priced by its own sources: at least one, and enough for the quorum."""
    if not asset.sources:
        return [Problem(f"{base}.sources", "must not be empty")]
    min_sources = asset.min_sources or cfg.oracle.min_sources
    if min_sources > len(asset.sources):
        return [
            Problem(
                f"{base}.min_sources",
                f"quorum {min_sources} exceeds the {len(asset.sources)} configured sources",
            )
        ]
    return []


def _correlation_problems(cfg: AppConfig) -> list[Problem]:
    symbols = cfg.asset_symbols
    out: list[Problem] = []
    for i, group in enumerate(cfg.correlation_groups):
        for j, sym in enumerate(group.assets):
            if sym not in symbols:
                out.append(
                    Problem(f"correlation_groups[{i}].assets[{j}]", f"unknown asset {sym!r}")
                )
        if group.reference not in symbols:
            out.append(
                Problem(f"correlation_groups[{i}].reference", f"unknown asset {group.reference!r}")
            )
    return out


def _portfolio_problems(cfg: AppConfig) -> list[Problem]:
    """[portfolio] cross-references: every symbol it names is a configured asset."""
    symbols = set(cfg.asset_symbols)
    pf = cfg.portfolio
    out: list[Problem] = []
    for i, sym in enumerate(pf.stable_assets):
        if sym not in symbols:
            out.append(Problem(f"portfolio.stable_assets[{i}]", f"unknown asset {sym!r}"))
    for sym in pf.implied_vol:
        if sym not in symbols:
            out.append(Problem(f"portfolio.implied_vol.{sym}", f"unknown asset {sym!r}"))
    for key in ("perps", "options"):
        seen: set[str] = set()
        for i, m in enumerate(getattr(pf, key)):
            if m.underlying not in symbols:
                out.append(
                    Problem(f"portfolio.{key}[{i}].underlying", f"unknown asset {m.underlying!r}")
                )
            elif m.underlying in pf.stable_assets:
                out.append(Problem(f"portfolio.{key}[{i}].underlying", "is a stable asset"))
            if m.name in seen:
                out.append(Problem(f"portfolio.{key}[{i}].name", f"duplicate name {m.name!r}"))
            seen.add(m.name)
    return out


def _var_problems(cfg: AppConfig) -> list[Problem]:
    """[var] names only configured assets (the default `history` table lists more
    symbols than a config may have; a `history` the config sets is checked)."""
    symbols = set(cfg.asset_symbols)
    keys: tuple[str, ...] = ("horizons", "backfill")
    keys += ("history",) if "history" in cfg.var.model_fields_set else ()
    return [
        Problem(f"var.{key}.{sym}", f"unknown asset {sym!r}")
        for key in keys
        for sym in getattr(cfg.var, key)
        if sym not in symbols
    ]


def _attestation_problems(cfg: AppConfig) -> list[Problem]:
    """[reputation.attestation]: attesters unique; listed attesters need a registry on
    some chain (else they would silently count for nothing)."""
    att = cfg.reputation.attestation
    out = _dupes([a.lower() for a in att.attesters], "reputation.attestation.attesters",
                 "attester")  # fmt: skip
    if att.attesters and not any(c.contracts.attestations for c in cfg.chains):
        out.append(Problem("reputation.attestation.attesters",
                           "attesters listed but no chain has contracts.attestations"))  # fmt: skip
    return out


def _alert_problems(cfg: AppConfig) -> list[Problem]:
    """[alerts]: unique names; every chain, asset and rule a rule or webhook names exists."""
    al = cfg.alerts
    names = [r.name for r in al.rules]
    out = _dupes(names, "alerts.rules", "rule name")
    out += _dupes([w.name for w in al.webhooks], "alerts.webhooks", "webhook name")
    known = {"chains": set(cfg.chain_names), "assets": set(cfg.asset_symbols)}
    for i, rule in enumerate(al.rules):
        for key, valid in known.items():
            for j, ref in enumerate(getattr(rule, key, ())):
                if ref not in valid:
                    what = key[:-1]
                    out.append(Problem(f"alerts.rules[{i}].{key}[{j}]", f"unknown {what} {ref!r}"))
    for i, hook in enumerate(al.webhooks):
        for j, ref in enumerate(hook.rules):
            if ref not in names:
                out.append(Problem(f"alerts.webhooks[{i}].rules[{j}]", f"unknown rule {ref!r}"))
    return out


def parse_config(data: Mapping[str, Any], source: str = "") -> AppConfig:
    try:
        cfg = AppConfig(**dict(data))
    except ValidationError as exc:
        raise ConfigError(problems_from_validation(exc), source) from None
    problems = semantic_problems(cfg)
    if problems:
        raise ConfigError(problems, source)
    return cfg


DEFAULT_CONFIG_PATH = Path(os.environ.get("AGG_CONFIG", "config.toml"))


def load_config(path: str | Path | None = None) -> AppConfig:
    """Load and validate; raises ConfigError listing every problem with its TOML path."""
    p = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    return parse_config(load_raw(p), str(p))


def load_secrets() -> Secrets:
    return Secrets()
