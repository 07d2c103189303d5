"""Feeds account reputations (aggregator/risk/reputation.py, docs/reputation.md) to the
risk engine off the hot path: the `reputation` scheduled job.

Each run reads, per chain, the vault events newly confirmed since the last run (block
in (last confirmed read, confirmed block]) and folds them into per-account facts: the
first time the account was seen on any chain, and its liquidations (time, chain, the
repaid debt in USD at the price of the run). A cross-chain seizure is valued by its
claim on the debt chain; one folded before that claim is indexed (the debt chain's
indexer behind) shows 0 USD until a later run finds the claim and prices it then.
When the risk history is recorded ([history]), the coarsest level's points of the
accounts that were ever in warning or worse give their episodes, HF samples and
credit use (debt against borrowing power). Then every account is scored in a worker
thread and the multipliers are handed to the engine (`prepare_reputation` in the
thread, `install_reputation` on the loop: a few ms at 1M accounts); the figures
follow at the next recompute.

With an attestation input (aggregator/attestation_feed.py, [reputation.attestation]),
each run first steps every chain's AttestationRegistry reader, then scores with each
account's attestations (aggregator/risk/attestation.py says which count); a chain that
could not be read is named by the run's error after the multipliers are handed over.

Block times: the store keeps block numbers, not timestamps. With the chains' RPC
(`timestamps`, the daemon passes `rpc_timestamps(clients)`), each run reads the real
timestamp of the chain's confirmed block, and once the earliest event block's, and an
event's time is interpolated between those anchors (`BlockTimes`: exact at an anchor;
a run's new events lie between two runs' anchors, minutes apart). Without them it is
`seen_at - (head_block - block) * block_time` with `seen_at` the checkpoint's last
update and `block_time` the chain's configured one (docs/reputation.md says what that
approximation costs). An RPC failure fails the run before it folds anything.

Invariants: only confirmed events are read, so a reorg never changes a fact already
folded; each event is folded once (a failed run resumes after the last folded one); a
chain whose confirmed block went backwards (the store was reset) makes the next run
rebuild every fact from the start; disabled ([reputation] enabled = false), the job
does nothing and the engine is never touched; `reputation(address)` scores the same
facts at the same time as the run, so it explains the multiplier in force.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from aggregator.config import AppConfig, ReputationConfig
from aggregator.risk.attestation import Attestation, AttestationParams, statuses
from aggregator.risk.reputation import (
    History,
    Liquidation,
    Params,
    Reputation,
    episodes_from_points,
    score,
)
from aggregator.store.db import Store
from aggregator.store.reputation_reads import Anchor, Key, ReputationReads, after_block

log = logging.getLogger(__name__)


class ReputationSink(Protocol):
    """Where multipliers go (RiskEngine implements it), in two halves: `prepare`
    (checks and book look-ups; read-only, run in the worker thread with the scoring)
    and `install` (quick, on the event loop)."""

    def prepare_reputation(
        self,
        params: Params,
        multipliers: Mapping[str, float],
        explain: Callable[[str], Reputation],
        maintenance: Mapping[str, float] | None = None,
    ) -> Any: ...

    def install_reputation(self, prepared: Any) -> None: ...


# A chain's real block timestamp (unix s) of a confirmed block; `rpc_timestamps` builds
# them from the daemon's RPC clients.
Timestamp = Callable[[int], Awaitable[float]]


class BlockTimes:
    """One chain's block -> time from real timestamps at a few anchor blocks (the
    earliest event block, and each run's confirmed block): exact at an anchor, linear
    between two, and past the last one the configured block time. Anchors are confirmed
    blocks, so a reorg never moves one. Pure: the feed fetches the anchors."""

    def __init__(self, block_time: float) -> None:
        self.block_time = block_time
        self.blocks: list[int] = []
        self.times: list[float] = []

    def add(self, block: int, t: float) -> None:
        i = bisect.bisect_left(self.blocks, block)
        if i < len(self.blocks) and self.blocks[i] == block:
            return
        self.blocks.insert(i, block)
        self.times.insert(i, t)

    def time_of(self, block: int) -> float:
        if not self.blocks:
            raise ValueError("no anchor block")
        b, t = self.blocks, self.times
        i = bisect.bisect_left(b, block)
        if i < len(b) and b[i] == block:
            return t[i]
        if 0 < i < len(b):
            return t[i - 1] + (t[i] - t[i - 1]) * (block - b[i - 1]) / (b[i] - b[i - 1])
        j = 0 if i == 0 else len(b) - 1
        return t[j] + (block - b[j]) * self.block_time


def rpc_timestamps(clients: Mapping[str, Any]) -> dict[str, Timestamp]:
    """Per chain, a block's timestamp from its RPC client (eth_getBlockByNumber); a
    missing header is an error naming the chain and block."""

    def one(chain: str, client: Any) -> Timestamp:
        async def ts(block: int) -> float:
            b = await client.request("eth_getBlockByNumber", [hex(block), False])
            if not isinstance(b, dict) or "timestamp" not in b:
                raise ValueError(f"reputation: chain {chain!r}: no header for block {block}")
            return float(int(str(b["timestamp"]), 16))

        return ts

    return {c: one(c, cl) for c, cl in clients.items()}


class AttestationSource(Protocol):
    """On-chain attestations (aggregator/attestation_feed.py implements it)."""

    async def refresh(self) -> None: ...

    def by_subject(self) -> dict[str, tuple[Attestation, ...]]: ...

    def check(self) -> None: ...

    def view(self) -> dict[str, Any]: ...


class Prices(Protocol):
    """Valuation prices (LedgerView implements it)."""

    def price_usd(self, symbol: str) -> float | None: ...


# [reputation.maintenance] kind -> its (hold_days, ramp_days) in Params: "at_once" is
# the phase-in with no hold and no ramp (risk/reputation.py `phase`).
MAINTENANCE_KINDS: dict[str, Callable[[Any], tuple[float, float]]] = {
    "at_once": lambda c: (0.0, 0.0),
    "phased": lambda c: (c.hold_days, c.ramp_days),
}


def params_of(cfg: ReputationConfig) -> Params:
    hold, ramp = MAINTENANCE_KINDS[cfg.maintenance.kind](cfg.maintenance)
    return Params(
        lower=cfg.lower, upper=cfg.upper, min_age_days=cfg.min_age_days,
        reward_per_30d=cfg.reward_per_30d, liquidation_penalty=cfg.liquidation_penalty,
        liquidatable_penalty=cfg.liquidatable_penalty, half_life_days=cfg.half_life_days,
        day_s=cfg.day_s,
        maintenance_hold_days=hold, maintenance_ramp_days=ramp,
        attestation=AttestationParams(
            frozenset(a.lower() for a in cfg.attestation.attesters),
            bonus=cfg.attestation.bonus, penalty=cfg.attestation.penalty,
        ),
    )  # fmt: skip


class ReputationFeed:
    def __init__(
        self,
        cfg: AppConfig,
        store: Store,
        sink: ReputationSink,
        prices: Prices,
        *,
        clock: Callable[[], float] = time.time,
        attestations: AttestationSource | None = None,
        timestamps: Mapping[str, Timestamp] | None = None,
    ) -> None:
        self.enabled = cfg.reputation.enabled
        self.attestations = attestations
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
        # Claim id -> (account, index in its liquidations) of a cross-chain seizure
        # whose claim was not indexed yet: priced by a later run (module docstring).
        self._unpriced: dict[str, tuple[str, int]] = {}
        self._snap = _Snapshot({}, {}, None, clock())
        # Real block times where the chain's RPC gives them (module docstring).
        self.timestamps = dict(timestamps or {})
        self._times = {c: BlockTimes(bt) for c, bt in self.block_time.items()}

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
            self._read, self._first, self._liqs, self._unpriced = {}, {}, {}, {}
            self._times = {c: BlockTimes(bt) for c, bt in self.block_time.items()}
        await self._price_late_claims()
        for chain, anchor in anchors.items():
            if anchor is not None:
                await self._read_chain(chain, anchor)
        risk = None
        if self.history_level is not None:
            step, keep = self.history_level
            risk = await self.reads.risky_points(step, int(now - keep))
        att: dict[str, tuple[Attestation, ...]] = {}
        if self.attestations is not None:
            await self.attestations.refresh()
            att = self.attestations.by_subject()
        snap = _Snapshot(dict(self._first), {a: tuple(v) for a, v in self._liqs.items()}, risk,
                         now, att)  # fmt: skip

        # Scoring and the engine's preparation are the heavy, pure part (seconds at 1M
        # accounts): a worker thread, so the loop only pays for the install (ms).
        def prepare() -> Any:
            mult, maint = self._multipliers(snap)
            return self.sink.prepare_reputation(self.params, mult, self._explainer(snap), maint)

        prepared = await asyncio.to_thread(prepare)
        self._snap = snap
        self.sink.install_reputation(prepared)
        if self.attestations is not None:
            # After scoring (with the failing chains' records untrusted): the job's
            # status names the chain.
            self.attestations.check()

    async def _read_chain(self, chain: str, anchor: Anchor) -> None:
        after = self._read.get(chain, after_block(-1))
        if anchor.confirmed_block < after[0]:
            return
        bt = self.block_time[chain]
        ts, times = self.timestamps.get(chain), self._times[chain]
        if ts is not None:
            # Before anything is folded: an RPC failure fails the run, folding nothing
            # with a guessed time (a folded time is kept).
            times.add(anchor.confirmed_block, await ts(anchor.confirmed_block))
        async for facts in self.reads.events(chain, after, anchor.confirmed_block):
            if ts is not None and facts[0].block_number < times.blocks[0]:
                times.add(facts[0].block_number, await ts(facts[0].block_number))
            # A cross-chain seizure's row carries no debt leg: its claim (on the debt
            # chain, final before its voucher was signed) says what was repaid.
            remote = {
                f.ref for f in facts if f.kind == "liquidation" and f.ref and not f.debt_amount
            }
            claims = await self.reads.claim_repays(remote) if remote else {}
            for f in facts:
                if ts is not None:
                    t = times.time_of(f.block_number)
                else:
                    t = anchor.seen_at - (anchor.head_block - f.block_number) * bt
                if t < self._first.get(f.account, float("inf")):
                    self._first[f.account] = t
                if f.kind == "liquidation":
                    claim = claims.get(f.ref or "")
                    usd = (self._usd(chain, f.debt_token, f.debt_amount) if claim is None
                           else self._usd(claim.chain, claim.token, claim.amount))  # fmt: skip
                    folded = self._liqs.setdefault(f.account, [])
                    if claim is None and f.ref in remote:
                        self._unpriced[f.ref] = (f.account, len(folded))
                    folded.append(Liquidation(t, chain, usd))
            self._read[chain] = (facts[-1].block_number, facts[-1].log_index)
        self._read[chain] = after_block(anchor.confirmed_block)

    async def _price_late_claims(self) -> None:
        """Value the cross-chain seizures folded at 0 USD whose claim is indexed now."""
        if not self._unpriced:
            return
        for ref, claim in (await self.reads.claim_repays(self._unpriced.keys())).items():
            account, i = self._unpriced.pop(ref)
            liqs = self._liqs[account]
            liqs[i] = replace(liqs[i], usd=self._usd(claim.chain, claim.token, claim.amount))

    def _usd(self, chain: str, token: str | None, amount: int) -> float:
        """Repaid debt at this run's valuation price (0 for an unconfigured or unpriced
        token, or a settlement whose claim is not indexed yet: the penalty does not
        depend on it, only the shown figure)."""
        known = self.tokens.get((chain, token or ""))
        if known is None:
            return 0.0
        price = self.prices.price_usd(known[0])
        return 0.0 if price is None else amount / 10 ** known[1] * price

    # -- scores ----------------------------------------------------------------------
    def _multipliers(self, snap: _Snapshot) -> tuple[dict[str, float], dict[str, float]]:
        """The borrowing and the maintenance multipliers not exactly 1, by account."""
        out, maint = {}, {}
        for a in snap.first.keys() | snap.att.keys():
            r = score(a, snap.history(a), self.params, snap.at)
            if r.multiplier != 1.0:
                out[a] = r.multiplier
            if r.maintenance_multiplier != 1.0:
                maint[a] = r.maintenance_multiplier
        return out, maint

    def _explainer(self, snap: _Snapshot) -> Callable[[str], Reputation]:
        """The factors behind a multiplier of run `snap`: the same facts and time."""
        return lambda a: score(a.lower(), snap.history(a.lower()), self.params, snap.at)

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
                **self._attestation_view(h.attestations),
            },
        }  # fmt: skip

    def _attestation_view(self, atts: tuple[Attestation, ...]) -> dict[str, Any]:
        if self.attestations is None:
            return {}
        return {
            "attestations": [
                {"chain": x.chain, "uid": x.uid, "attester": x.attester, "score_bps": x.score_bps,
                 "expiry": x.expiry, "revoked": x.revoked, "block_time": x.as_of,
                 "status": st}
                for x, st in zip(atts, statuses(atts, self.params.attestation), strict=True)
            ],
            "attestation_inputs": self.attestations.view(),
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
    risk: Mapping[str, list[tuple[float, int, int, float, float, float]]] | None
    at: float
    att: Mapping[str, tuple[Attestation, ...]] = field(default_factory=dict)

    def history(self, a: str) -> History:
        episodes = hf = credit = None
        if self.risk is not None:
            pts = self.risk.get(a, [])
            episodes = episodes_from_points([(p[0], p[1], p[2]) for p in pts], self.at)
            hf = tuple((p[0], p[3]) for p in pts)
            credit = tuple((p[0], p[5], p[4]) for p in pts)
        return History(self.first.get(a), self.liqs.get(a, ()), episodes, hf, credit,
                       self.att.get(a, ()))  # fmt: skip


__all__ = [
    "BlockTimes",
    "Prices",
    "ReputationFeed",
    "ReputationSink",
    "Timestamp",
    "params_of",
    "rpc_timestamps",
]
