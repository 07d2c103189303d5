"""Feeds account reputations (aggregator/risk/reputation.py, docs/reputation.md) to the
risk engine off the hot path: the `reputation` scheduled job.

Each run reads, per chain, the vault events newly confirmed since the last run (block
in (last confirmed read, confirmed block]) and folds them into per-account facts: the
first time the account was seen on any chain, and its liquidations (time, chain, the
repaid debt in USD at the price of the run). When the risk history is recorded
([history]), the coarsest level's points of the accounts that were ever in warning or
worse give their episodes and HF samples. Then every account is scored in a worker
thread and the multipliers are handed to the engine (`set_reputation`); the figures
follow at the next recompute.

Block times: the store keeps block numbers, not timestamps, so an event's time is
`seen_at - (head_block - block) * block_time` with `seen_at` the checkpoint's last
update and `block_time` the chain's configured one (docs/reputation.md says what that
approximation costs).

Invariants: only confirmed events are read, so a reorg never changes a fact already
folded; each event is folded once (a failed run resumes after the last folded one); a
chain whose confirmed block went backwards (the store was reset) makes the next run
rebuild every fact from the start; disabled ([reputation] enabled = false), the job
does nothing and the engine is never touched; `reputation(address)` scores the same
facts at the same time as the run, so it explains the multiplier in force.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aggregator.config import AppConfig, ReputationConfig
from aggregator.risk.reputation import (
    History,
    Liquidation,
    Params,
    Reputation,
    episodes_from_points,
    score,
)
from aggregator.store.db import Store
from aggregator.store.reputation_reads import Anchor, EventFact, Key, ReputationReads, after_block

log = logging.getLogger(__name__)


class ReputationSink(Protocol):
    """Where multipliers go (RiskEngine implements it)."""

    def set_reputation(
        self,
        params: Params,
        multipliers: Mapping[str, float],
        explain: Callable[[str], Reputation],
    ) -> None: ...


class Prices(Protocol):
    """Valuation prices (LedgerView implements it)."""

    def price_usd(self, symbol: str) -> float | None: ...


def params_of(cfg: ReputationConfig) -> Params:
    return Params(
        lower=cfg.lower, upper=cfg.upper, min_age_days=cfg.min_age_days,
        reward_per_30d=cfg.reward_per_30d, liquidation_penalty=cfg.liquidation_penalty,
        liquidatable_penalty=cfg.liquidatable_penalty, half_life_days=cfg.half_life_days,
        day_s=cfg.day_s,
    )  # fmt: skip


class ReputationFeed:
    def __init__(
        self,
        cfg: AppConfig,
        store: Store,
        sink: ReputationSink,
        prices: Prices,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.enabled = cfg.reputation.enabled
        self.params = params_of(cfg.reputation)
        self.reads = ReputationReads(store)
        self.sink = sink
        self.prices = prices
        self.clock = clock
        self.block_time = {c.name: c.block_time for c in cfg.chains}
        self.tokens = {
            (chain, token.lower()): (a.symbol, a.decimals)
            for a in cfg.assets
            for chain, token in a.tokens.items()
        }
        levels = cfg.history.levels
        self.history_level = (levels[-1].step_s, levels[-1].keep_s) if cfg.history.enabled else None
        # Per chain, the last event folded (block, log index): a run that fails part way
        # resumes after it, so no event is folded twice.
        self._read: dict[str, Key] = {}
        self._first: dict[str, float] = {}
        self._liqs: dict[str, list[Liquidation]] = {}
        self._snap = _Snapshot({}, {}, None, clock())

    # -- the job ---------------------------------------------------------------------
    async def run(self) -> None:
        """Read what is newly confirmed, rescore every account, hand the multipliers to
        the engine (module docstring)."""
        if not self.enabled:
            return
        now = self.clock()
        anchors = {c: await self.reads.anchor(c) for c in self.block_time}
        if any(a is not None and c in self._read and a.confirmed_block < self._read[c][0]
               for c, a in anchors.items()):  # fmt: skip
            log.warning("reputation: a chain's confirmed block went backwards; rebuilding")
            self._read, self._first, self._liqs = {}, {}, {}
        for chain, anchor in anchors.items():
            if anchor is not None:
                await self._read_chain(chain, anchor)
        risk = None
        if self.history_level is not None:
            step, keep = self.history_level
            risk = await self.reads.risky_points(step, int(now - keep))
        snap = _Snapshot(dict(self._first), {a: tuple(v) for a, v in self._liqs.items()}, risk, now)
        mults = await asyncio.to_thread(self._multipliers, snap)
        self._snap = snap
        self.sink.set_reputation(self.params, mults, self.reputation)

    async def _read_chain(self, chain: str, anchor: Anchor) -> None:
        after = self._read.get(chain, after_block(-1))
        if anchor.confirmed_block < after[0]:
            return
        bt = self.block_time[chain]
        async for facts in self.reads.events(chain, after, anchor.confirmed_block):
            for f in facts:
                t = anchor.seen_at - (anchor.head_block - f.block_number) * bt
                if t < self._first.get(f.account, float("inf")):
                    self._first[f.account] = t
                if f.kind == "liquidation":
                    self._liqs.setdefault(f.account, []).append(
                        Liquidation(t, chain, self._usd(chain, f))
                    )
            self._read[chain] = (facts[-1].block_number, facts[-1].log_index)
        self._read[chain] = after_block(anchor.confirmed_block)

    def _usd(self, chain: str, f: EventFact) -> float:
        """The repaid debt at this run's valuation price (0 for an unconfigured or
        unpriced token: the penalty does not depend on it, only the shown figure)."""
        known = self.tokens.get((chain, f.debt_token or ""))
        if known is None:
            return 0.0
        price = self.prices.price_usd(known[0])
        return 0.0 if price is None else f.debt_amount / 10 ** known[1] * price

    # -- scores ----------------------------------------------------------------------
    def _multipliers(self, snap: _Snapshot) -> dict[str, float]:
        out = {}
        for a in snap.first:
            m = score(a, snap.history(a), self.params, snap.at).multiplier
            if m != 1.0:
                out[a] = m
        return out

    def history_of(self, account: str) -> History:
        return self._snap.history(account.lower())

    def view(self, address: str) -> dict[str, Any] | None:
        """GET /v1/accounts/{address}/reputation (aggregator/api_reputation.py); None
        when disabled."""
        if not self.enabled:
            return None
        snap, a = self._snap, address.lower()
        h = snap.history(a)
        return {
            "account": address,
            "scored_at": snap.at,
            **self.reputation(address).as_dict(self.params),
            "history": {
                "first_seen": h.first_seen,
                "liquidations": [{"t": x.t, "chain": x.chain, "usd": x.usd}
                                 for x in h.liquidations],
                "risk_history": h.episodes is not None,
            },
        }  # fmt: skip

    def reputation(self, address: str) -> Reputation:
        """The account's score at the last run: the facts and time the engine's
        multiplier came from."""
        snap = self._snap
        return score(address.lower(), snap.history(address.lower()), self.params, snap.at)


@dataclass(frozen=True)
class _Snapshot:
    """The facts of one run, swapped in whole (readers see one run or the next)."""

    first: Mapping[str, float]
    liqs: Mapping[str, tuple[Liquidation, ...]]
    risk: Mapping[str, list[tuple[float, int, int, float]]] | None
    at: float

    def history(self, a: str) -> History:
        episodes = hf = None
        if self.risk is not None:
            pts = self.risk.get(a, [])
            episodes = episodes_from_points([(t, tier, w) for t, tier, w, _ in pts], self.at)
            hf = tuple((t, h) for t, _, _, h in pts)
        return History(self.first.get(a), self.liqs.get(a, ()), episodes, hf)


__all__ = ["Prices", "ReputationFeed", "ReputationSink", "params_of"]
