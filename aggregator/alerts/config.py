"""`[alerts]` configuration: rules (a discriminated union by `kind`; each kind's
condition is in `rules.RULE_KINDS`) and webhooks. Pure pydantic: no I/O.

Webhook URLs may carry a secret (Slack's do): `url_env` names an environment variable
that holds the URL instead of writing it into the TOML file.
"""

from __future__ import annotations

import os
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Severity = Literal["info", "warning", "critical"]
NAME = r"^[A-Za-z0-9_.:-]{1,64}$"
# `capped`: an LST growth cap failed its guard (oracles/cap_guard.py).
PriceProblem = Literal["disputed", "unavailable", "capped"]
PRICE_PROBLEMS: tuple[PriceProblem, ...] = ("disputed", "unavailable", "capped")


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=NAME)
    severity: Severity = "warning"


class AccountTierDownRule(_Rule):
    kind: Literal["account_tier_down"] = "account_tier_down"
    # Only accounts whose collateral value (USD) is at least this.
    min_usd: float = Field(default=0.0, ge=0)


class PriceStatusRule(_Rule):
    kind: Literal["price_status"] = "price_status"
    statuses: list[PriceProblem] = Field(default_factory=lambda: list(PRICE_PROBLEMS), min_length=1)
    # Empty: every asset.
    assets: list[str] = Field(default_factory=list)


class ChainLagRule(_Rule):
    kind: Literal["chain_lag"] = "chain_lag"
    max_blocks: int = Field(ge=0)
    chains: list[str] = Field(default_factory=list)


class PusherStaleRule(_Rule):
    kind: Literal["pusher_stale"] = "pusher_stale"
    max_age_s: float = Field(gt=0)
    chains: list[str] = Field(default_factory=list)


class KeeperBalanceRule(_Rule):
    kind: Literal["keeper_balance"] = "keeper_balance"
    # None: [pusher] min_keeper_balance_eth.
    min_eth: float | None = Field(default=None, ge=0)
    chains: list[str] = Field(default_factory=list)


class LeaseLostRule(_Rule):
    kind: Literal["lease_lost"] = "lease_lost"


RuleConfig = Annotated[
    AccountTierDownRule
    | PriceStatusRule
    | ChainLagRule
    | PusherStaleRule
    | KeeperBalanceRule
    | LeaseLostRule,
    Field(discriminator="kind"),
]
RULE_TAGS = frozenset(
    {
        "account_tier_down",
        "price_status",
        "chain_lag",
        "pusher_stale",
        "keeper_balance",
        "lease_lost",
    }
)


class WebhookConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=NAME)
    url: str | None = Field(default=None, pattern=r"^https?://")
    # Environment variable holding the URL (for URLs that embed a secret).
    url_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    format: Literal["json", "slack"] = "json"
    # Rule names sent here; empty: every rule.
    rules: list[str] = Field(default_factory=list)
    max_per_minute: int = Field(default=30, ge=1, le=6000)
    timeout_s: float = Field(default=5.0, gt=0, le=120)
    max_attempts: int = Field(default=5, ge=1, le=100)
    backoff_s: float = Field(default=1.0, gt=0)
    max_backoff_s: float = Field(default=60.0, gt=0)
    max_queue: int = Field(default=1000, ge=1)
    # Messages given up in a row that mark the webhook failing (metric, /readyz).
    failing_after: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _target(self) -> WebhookConfig:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("set exactly one of 'url' and 'url_env'")
        if self.max_backoff_s < self.backoff_s:
            raise ValueError(
                f"max_backoff_s ({self.max_backoff_s}) must be >= backoff_s ({self.backoff_s})"
            )
        return self

    def resolve_url(self) -> str:
        """The URL to POST to (from the environment for `url_env`)."""
        if self.url is not None:
            return self.url
        assert self.url_env is not None
        value = os.environ.get(self.url_env, "")
        if not value.startswith(("http://", "https://")):
            raise ValueError(
                f"alerts.webhooks {self.name}: environment variable {self.url_env} "
                "is unset or not an http(s) URL"
            )
        return value


class AlertsConfig(BaseModel):
    """[alerts]: evaluation period, rules and webhooks."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    interval_s: float = Field(default=10.0, gt=0)
    # Firing/resolved events kept in memory for GET /v1/alerts.
    recent_limit: int = Field(default=500, ge=1, le=100_000)
    rules: list[RuleConfig] = Field(default_factory=list)
    webhooks: list[WebhookConfig] = Field(default_factory=list)
