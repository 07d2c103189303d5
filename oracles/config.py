"""Config models for price sources. Each kind has its own model; `SourceConfig`
is the tagged union that aggregator/config.py embeds per asset."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


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
    min_answer: float | None = None
    max_answer: float | None = None
    sequencer_feed: str | None = None
    sequencer_grace_s: float = Field(default=3600, ge=0)


class HttpSourceConfig(_Source):
    kind: Literal["http"] = "http"
    url: str = Field(pattern=r"^https?://")
    path: str
    timestamp_path: str | None = None
    scale: float = Field(default=1.0, gt=0)
    invert: bool = False
    # Header name -> name of the environment variable that holds its value.
    headers_from_env: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=5.0, gt=0)
    max_age_s: float = Field(default=300, gt=0)
    min_interval_s: float = Field(default=0.0, ge=0)
    max_bytes: int = Field(default=1_000_000, gt=0)


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
