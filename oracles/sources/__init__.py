"""Source kinds registry: config `kind` -> builder(config, context) -> PriceSource."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from oracles.sources.base import HttpClient, PriceSource, SourceConfigError, SourceContext
from oracles.sources.chainlink import ChainlinkSource, build_chainlink
from oracles.sources.http import HttpSource, build_http
from oracles.sources.rate import ExchangeRateSource, RateCap

SourceBuilder = Callable[[Any, SourceContext], PriceSource]

SOURCE_KINDS: dict[str, SourceBuilder] = {
    "chainlink": build_chainlink,
    "http": build_http,
}


def build_source(cfg: Any, ctx: SourceContext) -> PriceSource:
    builder = SOURCE_KINDS.get(getattr(cfg, "kind", ""))
    if builder is None:
        raise SourceConfigError(
            f"source {getattr(cfg, 'name', '?')!r}: unknown kind {getattr(cfg, 'kind', None)!r} "
            f"(known: {sorted(SOURCE_KINDS)})"
        )
    return builder(cfg, ctx)


__all__ = [
    "SOURCE_KINDS",
    "ChainlinkSource",
    "ExchangeRateSource",
    "HttpClient",
    "HttpSource",
    "PriceSource",
    "RateCap",
    "SourceConfigError",
    "SourceContext",
    "build_source",
]
