"""The API's responses, built from a read-only view of the ledger.

Invariants:
- Nothing here writes to the ledger. Every read of the risk engine's internals (its
  result arrays, the position book, its symbol and chain lists) goes through
  `LedgerReader`, the one adapter; the views and the live stream see only its methods.
- Amounts reach a client as exact decimal strings (chains.units), never a float's
  rounding; an infinite HF is `null` with `hf_text` "inf".
- Risk views answer 503 until the first price refresh completed: before it an existing
  account would look unknown, and a 404 would tell the client something false.
- The /health view is defined once (`HEALTH_FIELDS`): `account_health` builds the dict
  from it and `account_health_body` formats the same values straight into the bytes
  the API's encoder would produce (the hottest route, bench/api_load.py);
  tests/unit/api/test_health_body.py holds them byte-equal over every kind of account.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from aggregator.api import ApiError, checksum_address
from aggregator.risk import capital
from aggregator.risk.engine import AccountHealth, RiskEngine
from aggregator.risk.portfolio import MissingMarketData
from aggregator.risk.view import LedgerView
from chains.indexer import ChainIndexer
from chains.rpc import EndpointStatus
from chains.types import ChainSettings
from chains.units import decimal_text, usd6_text
from oracles.types import Price

# (key, JSON form) of the /health view in order: "str" a string needing no escapes
# (checksummed address, tier, status, fixed-point text), "num" a finite float or null,
# "obj" an object formatted by _credit_template.
HEALTH_FIELDS = (
    ("account", "str"),
    ("hf", "num"),
    ("hf_text", "str"),
    ("borrowing_power_usd", "num"),
    ("tier", "str"),
    ("credit_usd", "obj"),
    ("status", "str"),
)
_JSON_FORM = {"str": '"%s"', "num": "%s", "obj": "%s"}
_HEALTH_BODY = "{" + ", ".join(f"{json.dumps(k)}: {_JSON_FORM[f]}" for k, f in HEALTH_FIELDS) + "}"
_HEALTH_KEYS = tuple(k for k, _ in HEALTH_FIELDS)
_NUM_AT = tuple(i for i, (_, f) in enumerate(HEALTH_FIELDS) if f == "num")
_CREDIT_AT = _HEALTH_KEYS.index("credit_usd")


class LedgerReader:
    """What the API asks of the ledger, answered through the risk rooms' read-only
    `LedgerView` (aggregator/risk/view.py): nothing here reads engine arrays."""

    def __init__(self, engine: RiskEngine) -> None:
        self._view = LedgerView(engine)
        # Fixed at construction (the configured chains and assets).
        self.chains: tuple[str, ...] = self._view.chains
        self.symbols: frozenset[str] = frozenset(self._view.symbols)

        # Per-request lookups of the health route, bound once (no extra call layer):
        # `find(address)`: the account's index (any case) or None; `health_row(a)`: its
        # stored HF, BP, tier, usd6 credit per chain (self.chains' order) and degraded flag.
        self.find: Callable[[str], int | None] = self._view.find_account
        self.health_row: Callable[[int], tuple[float, float, str, list[int], bool]] = (
            self._view.stored
        )

    def health(self, address: str) -> AccountHealth:
        return self._view.health(address)

    def explain(self, address: str) -> dict[str, Any]:
        return self._view.explain(address)

    def liquidity_report(self) -> dict[str, Any]:
        """GET /v1/liquidity: risk/liquidity_view.py through LedgerView."""
        return self._view.liquidity_report()

    def accounts(self) -> list[str]:
        """Every account in the book, lower-case."""
        return [a.lower() for a in self._view.addresses]

    def page(self, tier: str | None, limit: int, start: int) -> tuple[list[str], int | None]:
        """Up to `limit` accounts from position `start` (of the tier, if given) and the
        position of the next page (None: no more)."""
        if tier is not None:
            return self._view.accounts_by_tier(tier, limit, start)
        nxt = start + limit if start + limit < self._view.n_accounts else None
        return list(self._view.addresses[start : start + limit]), nxt

    def tier_counts(self) -> dict[str, int]:
        return self._view.tier_counts()


@functools.lru_cache(maxsize=8)
def _credit_template(chains: tuple[str, ...]) -> str:
    """`credit_usd` of the health view as a %-template: chain names JSON-encoded once,
    exactly as the API's encoder writes them (a % in a name is escaped)."""
    keys = [json.dumps(c).replace("%", "%%") for c in chains]
    return "{" + ", ".join(f'{k}: "%s"' for k in keys) + "}"


def _standard_plan_stands(_address: str) -> tuple[bool, dict[str, Any] | None]:
    """No pushed model beside the standard one: the explanation's plan stands."""
    return False, None


class AccountViews:
    """Per-account views: health (and its pre-encoded body), the full breakdown, the
    side-by-side margin view and the paged list."""

    def __init__(
        self,
        reader: LedgerReader,
        *,
        prices_ready: Callable[[], bool],
        decimals: Mapping[str, int],
        indexers: Mapping[str, ChainIndexer],
        onchain: Callable[[str], dict[str, Any] | None],
        margin: Callable[[str], dict[str, Any] | None],
        volatility: Callable[[str], dict[str, Any] | None] = lambda _asset: None,
        pushed_plan: Callable[[str], tuple[bool, dict[str, Any] | None]] | None = None,
        claims: Callable[[str], list[dict[str, Any]]] = lambda _address: [],
    ) -> None:
        self.reader = reader
        # Unsettled cross-chain seize claims of an account (BookSync.claim_view).
        self._claims = claims
        # The pushed model's liquidation plan (portfolio / var mode; PortfolioFeed
        # .pushed_plan): (False, _) keeps the explanation's standard plan.
        self._pushed_plan = pushed_plan or _standard_plan_stands
        self._volatility = volatility
        self._prices_ready = prices_ready
        self._decimals = decimals
        self._indexers = indexers  # live: chains start and stop under their leases
        self._onchain = onchain
        self._margin = margin
        self._credit_tpl = _credit_template(reader.chains)

    def require_prices(self) -> None:
        if not self._prices_ready():
            raise ApiError(
                503, "prices", "risk not computed yet (no price refresh completed); see /readyz"
            )

    def _health_values(self, address: str) -> tuple[Any, ...] | None:
        """The /health values in HEALTH_FIELDS order (credit as its texts), or None."""
        self.require_prices()
        a = self.reader.find(address)
        if a is None:
            return None
        # Read the stored results of the last recompute rather than engine.health(),
        # which also re-derives the collateral sums this view does not show.
        hf, bp, tier, credit, degraded = self.reader.health_row(a)
        finite = math.isfinite(hf)
        return (
            checksum_address(address),
            hf if finite else None,
            f"{hf:.6f}" if finite else "inf",
            bp if math.isfinite(bp) else None,
            tier,
            [usd6_text(v) for v in credit],
            "degraded" if degraded else "ok",
        )

    def account_health(self, address: str) -> dict[str, Any] | None:
        values = self._health_values(address)
        if values is None:
            return None
        view = dict(zip(_HEALTH_KEYS, values, strict=True))
        view["credit_usd"] = dict(zip(self.reader.chains, values[_CREDIT_AT], strict=True))
        return view

    def account_health_body(self, address: str) -> bytes | None:
        """api.dumps(account_health(address)) byte for byte, formatted directly:
        building the dict and running the encoder over it was most of the route's own
        CPU. `address` may be in any case; None: no such account."""
        values = self._health_values(address)
        if values is None:
            return None
        out = list(values)
        for i in _NUM_AT:
            out[i] = "null" if out[i] is None else repr(out[i])
        out[_CREDIT_AT] = self._credit_tpl % tuple(out[_CREDIT_AT])
        return (_HEALTH_BODY % tuple(out)).encode()

    def account_detail(self, address: str) -> dict[str, Any] | None:
        self.require_prices()
        if self.reader.find(address.lower()) is None:
            return None
        view = self.reader.explain(address)
        applies, pushed = self._pushed_plan(address)
        if applies:
            # The plan a keeper acts on is the pushed model's: the vault checks the tier
            # that model set; the standard one stays beside it for comparison.
            view["standard_liquidation"] = view.get("liquidation")
            view["liquidation"] = pushed
        view["account"] = checksum_address(view["account"])
        _api_conventions(view, self._decimals)
        view["as_of"] = {
            name: {
                "indexed_block": ix.status.indexed_block,
                "confirmed_block": ix.status.confirmed_block,
                "head_block": ix.status.head_block,
            }
            for name, ix in self._indexers.items()
        }
        # What each chain's HealthRegistry holds now (last read by the pusher).
        view["onchain"] = self._onchain(address)
        view["pending_claims"] = self._claims(address)
        # Per asset: EWMA or forecast, and each [apc] tool that moved the USD sigma.
        for symbol, entry in view.get("assets", {}).items():
            entry["volatility"] = self._volatility(symbol)
        return view

    def account_margin(self, address: str) -> dict[str, Any] | None:
        """Standard and portfolio margin side by side, with greeks (portfolio mode).
        Prices the scenario models need but do not have yet (an LST whose feeds have
        not answered since start) are a 503 naming them, as /health's are."""
        self.require_prices()
        try:
            return self._margin(address)
        except MissingMarketData as exc:
            raise ApiError(503, "prices", f"portfolio model not computable yet: {exc}") from exc

    def list_accounts(
        self, tier: str | None, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        self.require_prices()
        addrs, nxt = self.reader.page(tier, limit, int(cursor) if cursor else 0)
        items = [h for h in (self.account_health(a) for a in addrs) if h is not None]
        return items, None if nxt is None else str(nxt)


def _api_conventions(view: dict[str, Any], decimals: Mapping[str, int]) -> None:
    """The API's rules for the full breakdown: HF a number or null when infinite (with
    `hf_text`), token amounts as exact decimal strings (summed from the exact raw
    `counted` amounts, not the float units the vectorised kernel works in)."""
    hf = view.get("hf")
    if isinstance(hf, str) or (isinstance(hf, float) and math.isinf(hf)):
        view["hf"] = None
        view["hf_text"] = "inf"
    else:
        view["hf_text"] = f"{hf:.6f}"
    raw: dict[tuple[str, str], int] = {}
    for rows in view.get("positions", {}).values():
        for row in rows:
            key = (row["asset"], row["side"])
            raw[key] = raw.get(key, 0) + int(row["counted"])
    for symbol, entry in view.get("assets", {}).items():
        d = decimals.get(symbol, 0)
        for side, field in (("collateral", "collateral_amount"), ("debt", "debt_amount")):
            if field in entry:
                entry[field] = decimal_text(raw.get((symbol, side), 0), d)


def price_view(p: Price, volatility: dict[str, Any] | None = None) -> dict[str, Any]:
    """`volatility`: the asset's block from aggregator/vol_forecast.py (EWMA, forecast,
    used, model, fallback_reason, fitted_at, [apc] steps); null before the first refresh."""
    return {
        "asset": p.asset,
        "value": p.value,
        "status": str(p.status),
        "timestamp": p.timestamp,
        "computed_at": p.computed_at,
        "spread": p.spread,
        "reason": p.reason,
        "last_good_value": p.last_good_value,
        "last_good_timestamp": p.last_good_timestamp,
        "pending_value": p.pending_value,
        "sources": [dataclasses.asdict(s) for s in p.sources],
        "volatility": volatility,
    }


class PriceSource(Protocol):
    def prices(self) -> dict[str, Price]: ...
    def price(self, asset: str) -> Price | None: ...


@functools.cache
def _reference_report() -> dict[str, Any]:
    return capital.capital_report().to_json()


async def margin_report() -> dict[str, Any]:
    """The capital report of the shipped reference book: the same for every request,
    computed once per process, off the event loop."""
    return await asyncio.to_thread(_reference_report)


@dataclasses.dataclass(frozen=True)
class ChainSources:
    """Where /v1/chains reads each chain's parts: settings, the indexers (live: chains
    start and stop under their leases), RPC endpoints, pusher and cluster views."""

    settings: Mapping[str, ChainSettings]
    indexers: Mapping[str, ChainIndexer]
    endpoints: Callable[[str], Iterable[EndpointStatus]]
    pusher: Callable[[str], dict[str, Any]]
    cluster: Callable[[str], dict[str, Any] | None]

    def view(self) -> list[dict[str, Any]]:
        out = []
        for name, settings in self.settings.items():
            ix = self.indexers.get(name)
            st: dict[str, Any] = dataclasses.asdict(ix.snapshot()) if ix else {"indexed": False}
            st["endpoints"] = [dataclasses.asdict(e) for e in self.endpoints(name)]
            st["chain"] = name  # also for a chain without a vault (not indexed)
            st["chain_id"] = settings.chain_id
            st["confirmations"] = settings.confirmations
            st["pusher"] = self.pusher(name)
            st["cluster"] = self.cluster(name)
            out.append(st)
        return out


class ApiViews:
    """The daemon's ApiBackend (aggregator/api.py): each answer from the part that
    knows it, passed in explicitly."""

    def __init__(
        self,
        accounts: AccountViews,
        *,
        prices: PriceSource,
        chains: ChainSources,
        readiness: Callable[[], tuple[bool, list[str]]],
        subscribe: Callable[[], AsyncIterator[dict[str, Any]]],
        metrics_text: Callable[[], bytes],
        set_push_paused: Callable[[bool], dict[str, Any]],
        volatility: Callable[[str], dict[str, Any] | None] = lambda _asset: None,
        whatif: Callable[[Any], Awaitable[dict[str, Any]]] | None = None,
        liquidity: Callable[[], dict[str, Any] | None] = lambda: None,
        reputation: Callable[[str], dict[str, Any] | None] = lambda _address: None,
    ) -> None:
        self.accounts = accounts
        self.reputation = reputation
        self._whatif = whatif
        self.liquidity = liquidity
        self._volatility = volatility
        self._prices = prices
        self._chains = chains
        self.readiness = readiness
        self.subscribe = subscribe
        self.metrics_text = metrics_text
        self.set_push_paused = set_push_paused
        self.account_health = accounts.account_health
        self.account_health_body = accounts.account_health_body
        self.account_detail = accounts.account_detail
        self.account_margin = accounts.account_margin
        self.list_accounts = accounts.list_accounts

    async def margin_report(self) -> dict[str, Any]:
        return await margin_report()

    def prices(self) -> dict[str, Any]:
        return {
            "prices": {
                sym: price_view(p, self._volatility(sym))
                for sym, p in self._prices.prices().items()
            }
        }

    def price(self, asset: str) -> dict[str, Any] | None:
        if asset not in self.accounts.reader.symbols:
            return None
        p = self._prices.price(asset)
        if p is None:
            return {"asset": asset, "status": "unavailable", "reason": "not refreshed yet"}
        return price_view(p, self._volatility(asset))

    def chains(self) -> list[dict[str, Any]]:
        return self._chains.view()

    async def whatif(self, body: Any) -> dict[str, Any]:
        """POST /v1/whatif: aggregator/whatif.py's WhatIfService.serve."""
        if self._whatif is None:
            raise ApiError(503, None, "what-if is not wired in this process")
        return await self._whatif(body)


__all__ = [
    "HEALTH_FIELDS",
    "AccountViews",
    "ApiViews",
    "ChainSources",
    "LedgerReader",
    "margin_report",
    "price_view",
]
