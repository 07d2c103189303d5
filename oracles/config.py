"""Config models for price sources. Each kind has its own model; `SourceConfig`
is the tagged union that aggregator/config.py embeds per asset."""

from __future__ import annotations

from typing import Annotated, Literal

from eth_utils import is_hex_address, to_checksum_address
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from oracles.jsonpath import parse_path


def _address(value: str) -> str:
    if not is_hex_address(value):
        raise ValueError(f"not a valid 20-byte hex address: {value!r}")
    return to_checksum_address(value)


class _Source(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # Unique per asset; used in price breakdowns, metrics and for config merging.
    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")


class ChainlinkSourceConfig(_Source):
    kind: Literal["chainlink"] = "chainlink"
    chain: str
    address: str
    # Per feed, from its heartbeat: an answer older than this is stale.
    max_age_s: float = Field(default=3600, gt=0)
    # Bounds in price units (after decimals); outside them the answer is rejected
    # (Chainlink's own min/maxAnswer clamp silently, so we check before trusting it).
    min_answer: float | None = None
    max_answer: float | None = None
    # L2 sequencer-uptime feed on the same chain (answer 0 = up, 1 = down).
    sequencer_feed: str | None = None
    sequencer_grace_s: float = Field(default=3600, ge=0)

    @field_validator("address")
    @classmethod
    def _addr(cls, value: str) -> str:
        return _address(value)

    @field_validator("sequencer_feed")
    @classmethod
    def _seq(cls, value: str | None) -> str | None:
        return None if value is None else _address(value)

    @model_validator(mode="after")
    def _bounds(self) -> ChainlinkSourceConfig:
        if (
            self.min_answer is not None
            and self.max_answer is not None
            and self.min_answer >= self.max_answer
        ):
            raise ValueError(
                f"min_answer ({self.min_answer}) must be below max_answer ({self.max_answer})"
            )
        return self


class HttpSourceConfig(_Source):
    kind: Literal["http"] = "http"
    url: str = Field(pattern=r"^https?://")
    # JSON path to the price: dot-separated keys, `[n]` list indexes, `*` = the
    # single (or first) key of an object, e.g. `data.amount`, `result.*.c[0]`.
    path: str
    timestamp_path: str | None = None
    # How to read the timestamp; `auto` takes numbers above 1e11 as milliseconds
    # and strings that are not numbers as ISO 8601.
    timestamp_unit: Literal["auto", "s", "ms", "iso"] = "auto"
    # value = (1 / raw if invert else raw) * scale
    scale: float = Field(default=1.0, gt=0)
    invert: bool = False
    # Non-secret headers written in the config (e.g. Accept).
    headers: dict[str, str] = Field(default_factory=dict)
    # Header name -> name of the environment variable that holds its value.
    headers_from_env: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=5.0, gt=0)
    max_age_s: float = Field(default=300, gt=0)
    min_interval_s: float = Field(default=0.0, ge=0)
    max_bytes: int = Field(default=1_000_000, gt=0)

    @field_validator("path", "timestamp_path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None:
            parse_path(value)
        return value


SourceConfig = Annotated[
    ChainlinkSourceConfig | HttpSourceConfig,
    Field(discriminator="kind"),
]


class OracleDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    min_sources: int = Field(default=1, ge=1)
    max_deviation: float = Field(default=0.02, gt=0, le=1)
    jump_threshold: float = Field(default=0.20, gt=0)
    refresh_s: float = Field(default=10.0, gt=0)
    # An LST exchange-rate sample older than this (by its block timestamp) is stale.
    rate_max_age_s: float = Field(default=3600, gt=0)
    # Volatility: daily sigma assumed before any history exists (conservative on
    # purpose: a fresh install must not start with zero haircuts).
    vol_prior_daily: float = Field(default=0.05, ge=0)
    # Returns over shorter spans are mostly quote noise; sample at most this often.
    vol_min_interval_s: float = Field(default=300, ge=0)
    # How much price history is replayed into the estimators at start.
    history_days: float = Field(default=90, gt=0)
