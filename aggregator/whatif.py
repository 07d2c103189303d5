"""The what-if's I/O (docs/whatif.md): the request body, the snapshot of the live ledger,
the JSON answer of POST /v1/whatif and the `aggregator whatif` table.

The computation is risk/whatif.py's pure `whatif`; this module only feeds it and shapes
its result.

Invariants:
- Bad input is a WhatIfError naming the request field, which the API answers as a 400
  in its error format; nothing is computed for a bad request.
- The snapshot is taken synchronously on the caller's thread: in the daemon that is the
  event loop, where every ledger write happens, so no write interleaves with taking it
  and the live figures are never touched (the what-if writes only arrays of its own).
- The API's what-if (`serve`) computes in a worker thread on a frozen copy of that
  snapshot (`LedgerSnapshot.frozen`), so the event loop (the API, the recompute loop)
  goes on while it runs and its writes do not reach the what-if's inputs. At most
  `max_running` run at once; one more is a 503 naming `whatif` (nothing is queued).
- The account list is paged on the server (`limit` <= 1000): a response stays small
  whatever the size of the book.
"""

from __future__ import annotations

import asyncio
import ctypes
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from aggregator.api import ApiError, checksum_address
from aggregator.config import AppConfig
from aggregator.risk.view import LedgerView
from aggregator.risk.whatif import (
    PLAN_NAMES,
    STANDARD,
    AssetFeeds,
    DepthLiquidity,
    FeedSource,
    LedgerSnapshot,
    Liquidity,
    ModelOutcome,
    PriceScenario,
    ShockSet,
    StandardFigures,
    Universe,
    WhatIf,
    WhatIfError,
    finite_number,
    transitions,
    volume,
    whatif,
)
from chains.units import TIERS

if TYPE_CHECKING:
    from aggregator.risk.market import MarketData
    from aggregator.risk.model import MarginModel

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
DEFAULT_SLIPPAGE = 0.05
# What-ifs computing at once in the API (each holds a frozen copy of the ledger: about
# the ledger's own arrays again, and a core while it runs).
MAX_RUNNING = 1
FIELDS = ("shocks", "depegs", "vol", "chains_down", "models", "limit", "cursor", "max_slippage")
_CURSOR = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True)
class WhatIfRequest:
    shocks: ShockSet
    models: tuple[str, ...]
    limit: int
    cursor: int
    max_slippage: float

    def scenario(self) -> dict[str, Any]:
        """The request as understood (echoed in the answer)."""
        return {
            "shocks": dict(self.shocks.price),
            "depegs": dict(self.shocks.depeg),
            "vol": self.shocks.vol,
            "chains_down": list(self.shocks.chains_down),
            "max_slippage": self.max_slippage,
            "models": list(self.models),
            "limit": self.limit,
            "cursor": str(self.cursor) if self.cursor else None,
        }


def _table(name: str, v: Any) -> dict[str, float]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise WhatIfError(name, "must be an object {asset: relative change}")
    return {str(k): finite_number(f"{name}.{str(k)[:32]}", x) for k, x in v.items()}


def _names(name: str, v: Any) -> tuple[str, ...]:
    if v is None:
        return ()
    if not isinstance(v, list):
        raise WhatIfError(name, "must be a list of names")
    for i, x in enumerate(v):
        if not isinstance(x, str):
            raise WhatIfError(f"{name}[{i}]", f"must be a string, got {str(x)[:64]!r}")
    return tuple(dict.fromkeys(v))  # in order, each once


def _limit(v: Any) -> int:
    if v is None:
        return DEFAULT_LIMIT
    if isinstance(v, float) and v.is_integer():
        v = int(v)  # JSON Schema's integer: 10.0 is one
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_LIMIT:
        raise WhatIfError("limit", f"must be an integer between 1 and {MAX_LIMIT}")
    return v


def _cursor(v: Any) -> int:
    if v is None:
        return 0
    if not isinstance(v, str) or _CURSOR.fullmatch(v) is None:
        raise WhatIfError("cursor", "must be a next_cursor value from a previous answer")
    return int(v)


def _slippage(v: Any) -> float:
    if v is None:
        return DEFAULT_SLIPPAGE
    s = finite_number("max_slippage", v)
    if not 0.0 < s <= 1.0:
        raise WhatIfError("max_slippage", f"must be in (0, 1], got {s}")
    return s


def parse_request(body: Any, available: Sequence[str]) -> WhatIfRequest:
    """The request body (a JSON object, every field optional) checked for shape;
    assets and chains are checked against the config by ShockSet.check."""
    if not isinstance(body, dict):
        raise WhatIfError("body", "must be a JSON object (docs/whatif.md)")
    for key in body:
        if key not in FIELDS:
            raise WhatIfError(str(key)[:64] or "body", f"unknown field; known: {', '.join(FIELDS)}")
    models = _names("models", body.get("models")) or tuple(available)
    for i, m in enumerate(models):
        if m not in available:
            known = ", ".join(available)
            raise WhatIfError(f"models[{i}]", f"model {m[:32]!r} is not evaluated; {known}", 404)
    vol = body.get("vol")
    shocks = ShockSet(
        price=_table("shocks", body.get("shocks")),
        depeg=_table("depegs", body.get("depegs")),
        vol=0.0 if vol is None else finite_number("vol", vol),
        chains_down=_names("chains_down", body.get("chains_down")),
    )
    return WhatIfRequest(
        shocks, models, _limit(body.get("limit")), _cursor(body.get("cursor")),
        _slippage(body.get("max_slippage")),
    )  # fmt: skip


# -- config -> the universe the shocks are checked and applied against -------------------
def universe(cfg: AppConfig, market: MarketData) -> Universe:
    """Chains, LST underlyings, and every asset's sources with their last answers (from
    the live price inputs; a source not reported there counts as answering)."""
    feeds: dict[str, AssetFeeds] = {}
    for t, a in enumerate(cfg.assets):
        given = market.price_input[t]
        reported = {
            str(s.get("source")): s
            for s in (given.sources if given is not None and given.sources else [])
            if isinstance(s, dict)
        }
        sources = []
        for src in a.sources:
            r = reported.get(src.name, {})
            value = r.get("value") if r else market.price[t]
            failure = r.get("failure") if r else None
            sources.append(
                FeedSource(
                    src.name,
                    src.kind,
                    getattr(src, "chain", None),
                    None if failure or value is None else float(value),
                    failure,
                )
            )
        feeds[a.symbol] = AssetFeeds(
            tuple(sources),
            a.min_sources or cfg.oracle.min_sources,
            a.max_deviation or cfg.oracle.max_deviation,
            a.rate.chain if a.rate is not None else None,
        )
    underlying = {a.symbol: a.underlying for a in cfg.assets if a.underlying}
    return Universe(cfg.chain_names, underlying, feeds)


# -- the answer --------------------------------------------------------------------------
def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def prices_json(p: PriceScenario, symbols: Sequence[str]) -> dict[str, Any]:
    return {
        s: {
            "before_usd": float(p.before[t]),
            "after_usd": float(p.after[t]),
            "factor": float(p.factor[t]),
            "status_before": str(p.status_before[t]),
            "status_after": str(p.status_after[t]),
            "reason": p.reason[t],
            "sigma_before": _num(p.sigma_before[t]),
            "sigma_after": _num(p.sigma_after[t]),
        }
        for t, s in enumerate(symbols)
    }


@dataclass(frozen=True)
class Shaper:
    """Shapes one what-if's figures into the answer's JSON."""

    res: WhatIf
    req: WhatIfRequest
    addresses: Sequence[str]
    chains: Sequence[str]
    liquidity: Liquidity
    depth: Mapping[str, float | None]
    pushed: str

    @property
    def std(self) -> StandardFigures:
        return self.res.standard

    def model(self, o: ModelOutcome) -> dict[str, Any]:
        k = len(TIERS)
        cnt, coll, debt = transitions(o.tier_before, o.tier_after, self.std.vtot, self.std.debt)
        liq = o.liquidations
        newly = o.newly_liquidatable()
        bad = o.bad_debt
        return {
            "pushed": o.name == self.pushed,
            "tiers_before": _counts(o.tier_before),
            "tiers_after": _counts(o.tier_after),
            "transitions": {
                TIERS[i]: {
                    TIERS[j]: {
                        "accounts": int(cnt[i, j]),
                        "collateral_usd": float(coll[i, j]),
                        "debt_usd": float(debt[i, j]),
                    }
                    for j in range(k)
                }
                for i in range(k)
            },
            "degraded_after": int(self.std.degraded.sum()),
            "bad_debt_usd": float(bad.sum()),
            "bad_debt_accounts": int((bad > 0).sum()),
            "liquidations": {
                "newly_liquidatable": int(newly.size),
                "liquidatable_after": int(liq.accounts.size),
                "repay_usd": float(liq.repay.sum()),
                "seize_usd": float(liq.s_usd.sum()),
                "volume": self.volume(o),
            },
            "accounts": self.page(o, newly),
        }

    def volume(self, o: ModelOutcome) -> list[dict[str, Any]]:
        symbols = self.res.market.symbols
        return [
            {
                "asset": v.asset,
                "chain": v.chain,
                "seize_usd": v.seize_usd,
                "accounts": v.accounts,
                "depth_usd": self.depth.get(v.asset),
                "impact": v.impact,
                "sellable_usd": _num(v.sellable_usd) if v.sellable_usd is not None else None,
                "liquidity_source": self.liquidity.source,
            }
            for v in volume(o.liquidations, symbols, self.chains, self.liquidity)
        ]

    def page(self, o: ModelOutcome, newly: np.ndarray) -> dict[str, Any]:
        lo, hi = self.req.cursor, self.req.cursor + self.req.limit
        liq = o.liquidations
        page = newly[lo:hi]
        # Only the page's seized holdings, grouped by account (a gather, not a sort of
        # every seized holding of the book).
        on_page = np.zeros(liq.accounts.size, bool)
        on_page[page] = True
        sel = np.flatnonzero(on_page[liq.s_pos])
        order = sel[np.argsort(liq.s_pos[sel], kind="stable")]
        starts = np.searchsorted(liq.s_pos[order], np.arange(liq.accounts.size + 1))
        symbols = self.res.market.symbols
        items = []
        for pos in page.tolist():
            a = int(liq.accounts[pos])
            seize: list[dict[str, Any]] = []
            by_chain: dict[str, float] = {}
            for i in order[starts[pos] : starts[pos + 1]].tolist():
                chain, usd = self.chains[int(liq.s_chain[i])], float(liq.s_usd[i])
                seize.append({"chain": chain, "asset": symbols[int(liq.s_asset[i])], "usd": usd})
                by_chain[chain] = by_chain.get(chain, 0.0) + usd
            items.append(
                {
                    "account": checksum_address(self.addresses[a]),
                    "hf_before": _num(o.hf_before[a]),
                    "hf_after": _num(o.hf_after[a]),
                    "tier_before": TIERS[int(o.tier_before[a])],
                    "tier_after": TIERS[int(o.tier_after[a])],
                    "collateral_usd": float(self.std.vtot[a]),
                    "debt_usd": float(self.std.debt[a]),
                    "plan": PLAN_NAMES.get(int(liq.kind[pos]), "none"),
                    "repay_usd": float(liq.repay[pos]),
                    "seize_usd": float(sum(by_chain.values())),
                    "seize": seize,
                    "seize_by_chain": by_chain,
                    "bad_debt_usd": float(o.bad_debt[a]),
                }
            )
        nxt = str(hi) if hi < newly.size else None
        return {"total": int(newly.size), "items": items, "next_cursor": nxt}

    def answer(self, n_accounts: int) -> dict[str, Any]:
        return {
            "computed_at": time.time(),
            "accounts": n_accounts,
            "scenario": self.req.scenario(),
            "prices": prices_json(self.res.prices, self.res.market.symbols),
            "models": {
                name: self.model(o)
                for name, o in self.res.outcomes.items()
                if name in self.req.models
            },
            "unavailable": dict(self.res.unavailable),
        }


def _counts(tier: np.ndarray) -> dict[str, int]:
    c = np.bincount(tier.astype(np.int64), minlength=len(TIERS))
    return {t: int(c[i]) for i, t in enumerate(TIERS)}


def trim_heap() -> None:
    """Hand the heap's free pages back to the OS (glibc `malloc_trim`; nothing elsewhere).
    A what-if's worker allocates and frees a few hundred MB of arrays (1M accounts),
    most below glibc's mmap threshold, in the worker thread's own malloc arena: freed,
    they stayed in the process's RSS (+327 MB after the what-if, docs/performance.md
    "Where the memory goes") until something reused them."""
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the process's own symbols: libc's
    except (OSError, AttributeError):  # no dlopen(NULL), or not glibc
        return
    trim(0)


class WhatIfService:
    """POST /v1/whatif for the daemon: the request checked, the live ledger's snapshot
    shocked, the answer shaped. `models()` names the non-standard models the daemon
    evaluates (the pushed one); the standard model is always there. `liquidity` builds
    the Liquidity of a request from its max_slippage, the scenario's market and the
    snapshot's (default: DepthLiquidity). `serve` is the API's (a worker thread, at
    most `max_running` at once), `run` the same answer on the caller's thread."""

    def __init__(
        self,
        cfg: AppConfig,
        view: LedgerView,
        *,
        prices_ready: Callable[[], bool],
        models: Callable[[], Mapping[str, MarginModel]] = dict,
        liquidity: Callable[[float, MarketData, MarketData], Liquidity] | None = None,
        max_running: int = MAX_RUNNING,
    ) -> None:
        self.cfg = cfg
        self.view = view
        self._prices_ready = prices_ready
        self._models = models
        self.depth = {a.symbol: a.depth_usd for a in cfg.assets}
        # The liquidity seam (risk/whatif.py `Liquidity`): (max_slippage, the scenario's
        # market, the snapshot's market) -> what sells. Default: each asset's depth_usd
        # with the haircut's linear impact; the daemon plugs in the pools
        # (risk/liquidity_view.py), read from the snapshot's market.
        self._liquidity = liquidity or (
            lambda slippage, _market, _live: DepthLiquidity(self.depth, cfg.risk.impact, slippage)
        )
        self.max_running = max_running
        self.running = 0

    def available(self) -> list[str]:
        return [STANDARD, *(m for m in self._models() if m != STANDARD)]

    def run(self, body: Any) -> dict[str, Any]:
        """The answer to a request body, computed on the caller's thread (the CLI, the
        benchmarks); ApiError on bad input or before prices."""
        req = self._request(body)
        return self._answer(req, self.view.snapshot(), self._chosen(req))

    async def serve(self, body: Any) -> dict[str, Any]:
        """`run` for the API: the request checked and the snapshot frozen here, on the
        event loop between two ledger writes; the what-if computed in a worker thread.
        A 503 naming `whatif` when `max_running` are already running."""
        req = self._request(body)
        if self.running >= self.max_running:
            raise ApiError(
                503, "whatif", f"busy: {self.running} what-if already running (at most "
                f"{self.max_running} at once); retry when it has answered",
            )  # fmt: skip
        self.running += 1
        try:
            # The frozen copy is referenced by the worker's call alone: freed as soon as
            # the worker is done, before the heap is trimmed.
            return await asyncio.to_thread(
                self._answer, req, self.view.snapshot().frozen(), self._chosen(req)
            )
        finally:
            self.running -= 1
            await asyncio.to_thread(trim_heap)

    def _request(self, body: Any) -> WhatIfRequest:
        try:
            req = parse_request(body, self.available())
        except WhatIfError as exc:
            raise ApiError(exc.status, exc.field, exc.message) from None
        if not self._prices_ready():
            raise ApiError(
                503, "prices", "risk not computed yet (no price refresh completed); see /readyz"
            )
        return req

    def _chosen(self, req: WhatIfRequest) -> dict[str, MarginModel]:
        return {k: v for k, v in self._models().items() if k in req.models}

    def _answer(
        self, req: WhatIfRequest, snap: LedgerSnapshot, models: Mapping[str, MarginModel]
    ) -> dict[str, Any]:
        try:
            res = whatif(
                snap, req.shocks, universe(self.cfg, snap.market), models,
                im_factor=self.cfg.portfolio.im_factor,
            )  # fmt: skip
        except WhatIfError as exc:
            raise ApiError(exc.status, exc.field, exc.message) from None
        liquidity = self._liquidity(req.max_slippage, res.market, snap.market)
        shaper = Shaper(
            res, req, self.view.addresses, self.view.chains, liquidity, self.depth,
            self.cfg.portfolio.mode,
        )  # fmt: skip
        return shaper.answer(snap.book.n_accounts)


# -- the CLI's table -------------------------------------------------------------------------
def _usd(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def render(data: Mapping[str, Any]) -> str:
    """`aggregator whatif`: the answer as text tables."""
    sc = data["scenario"]
    out = [
        f"what-if on {data['accounts']:,} accounts: shocks {sc['shocks'] or '-'}, "
        f"de-pegs {sc['depegs'] or '-'}, vol {sc['vol']:+.0%}, "
        f"chains down {', '.join(sc['chains_down']) or '-'}",
        "",
        f"{'asset':<8} {'before':>12} {'after':>12} {'status':>12}  reason",
    ]
    for sym, p in data["prices"].items():
        out.append(
            f"{sym:<8} {p['before_usd']:>12,.2f} {p['after_usd']:>12,.2f} "
            f"{p['status_after']:>12}  {p['reason'] or ''}"
        )
    for name, m in data["models"].items():
        out += _render_model(name, m)
    for name, why in data.get("unavailable", {}).items():
        out.append(f"\nmodel {name}: not evaluated ({why})")
    return "\n".join(out)


def _render_model(name: str, m: Mapping[str, Any]) -> list[str]:
    liq = m["liquidations"]
    out = [
        "",
        f"model {name}{' (pushed)' if m['pushed'] else ''}: bad debt "
        f"{_usd(m['bad_debt_usd'])} USD on {m['bad_debt_accounts']} accounts, "
        f"{m['degraded_after']} degraded",
        f"{'tier':<14} {'before':>10} {'after':>10}",
    ]
    out += [f"{t:<14} {m['tiers_before'][t]:>10,} {m['tiers_after'][t]:>10,}" for t in TIERS]
    moved = [
        f"  {a} -> {b}: {c['accounts']:,} accounts, debt {_usd(c['debt_usd'])} USD"
        for a, row in m["transitions"].items()
        for b, c in row.items()
        if a != b and c["accounts"]
    ]
    out += ["transitions:", *(moved or ["  none"])]
    out.append(
        f"liquidations: {liq['newly_liquidatable']:,} newly liquidatable, "
        f"{liq['liquidatable_after']:,} in all; repay {_usd(liq['repay_usd'])} USD, "
        f"seize {_usd(liq['seize_usd'])} USD"
    )
    for v in liq["volume"]:
        impact = "-" if v["impact"] is None else f"{v['impact']:.2%}"
        out.append(
            f"  {v['asset']:<8} on {v['chain']:<10} {_usd(v['seize_usd']):>14} USD "
            f"impact {impact} sellable {_usd(v['sellable_usd'])} USD"
        )
    acc = m["accounts"]
    if acc["items"]:
        out.append(f"newly liquidatable accounts ({acc['total']:,}, largest repay first):")
        for it in acc["items"]:
            out.append(
                f"  {it['account']} HF {_hf(it['hf_before'])} -> {_hf(it['hf_after'])} "
                f"{it['tier_after']:<12} repay {_usd(it['repay_usd'])} seize "
                + ", ".join(f"{c} {_usd(u)}" for c, u in it["seize_by_chain"].items())
            )
        if acc["next_cursor"]:
            out.append(f"  ... more with --cursor {acc['next_cursor']}")
    return out


def _hf(x: float | None) -> str:
    return "inf" if x is None else f"{x:.3f}"


__all__ = [
    "FIELDS",
    "MAX_LIMIT",
    "MAX_RUNNING",
    "WhatIfRequest",
    "WhatIfService",
    "parse_request",
    "render",
    "universe",
]
