"""Chainlink AggregatorV3 feeds, every feed of a chain read in one batched call."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from eth_utils import function_signature_to_4byte_selector

from oracles.config import ChainlinkSourceConfig
from oracles.protocols import BatchCaller
from oracles.sources.base import PriceSource, SourceConfigError, SourceContext
from oracles.types import (
    BadPayload,
    ChainError,
    NonPositive,
    Observation,
    OutOfBounds,
    Reverted,
    SequencerDown,
    SourceFailure,
    SourceOutcome,
    Stale,
)

LATEST_ROUND_DATA = function_signature_to_4byte_selector("latestRoundData()")
DECIMALS = function_signature_to_4byte_selector("decimals()")

# A node's clock and ours may differ a little; beyond this a timestamp "from the
# future" is a bad answer, not skew.
FUTURE_TOLERANCE_S = 60.0
MAX_DECIMALS = 36


@dataclass(frozen=True)
class RoundData:
    round_id: int
    answer: int
    started_at: int
    updated_at: int
    answered_in_round: int


def decode_round(raw: bytes) -> RoundData:
    if len(raw) != 160:
        raise ValueError(f"latestRoundData returned {len(raw)} bytes, expected 160")
    # Hand-decoded (eth_abi costs ~10x more per call and this runs for every feed
    # every round); the range checks are what eth_abi's strict mode would enforce.
    words = [raw[i : i + 32] for i in range(0, 160, 32)]
    r, s, u, ar = (int.from_bytes(words[i], "big") for i in (0, 2, 3, 4))
    a = int.from_bytes(words[1], "big", signed=True)
    if r >= 2**80 or ar >= 2**80:
        raise ValueError("roundId does not fit uint80")
    return RoundData(r, a, s, u, ar)


def decode_decimals(raw: bytes) -> int:
    if len(raw) != 32:
        raise ValueError(f"decimals returned {len(raw)} bytes, expected 32")
    d = int.from_bytes(raw, "big")
    if d >= 256:
        raise ValueError(f"decimals word {raw.hex()} does not fit uint8")
    return d


class ChainlinkSource(PriceSource):
    kind: ClassVar[str] = "chainlink"

    def __init__(self, cfg: ChainlinkSourceConfig, caller: BatchCaller) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.caller = caller

    @property
    def group_key(self) -> str:
        return f"chainlink:{self.cfg.chain}"

    def _label(self) -> str:
        return f"chainlink {self.name} ({self.cfg.address} on {self.cfg.chain})"

    async def fetch(self, now: float) -> SourceOutcome:
        return (await self.fetch_group([self], now))[0]

    @classmethod
    async def fetch_group(cls, sources: Sequence[Any], now: float) -> list[SourceOutcome]:
        """All feeds (and sequencer feeds) of one chain in a single call_batch."""
        feeds: list[ChainlinkSource] = list(sources)
        if not feeds:
            return []
        chain = feeds[0].cfg.chain
        caller = feeds[0].caller
        calls: list[tuple[str, bytes]] = []
        index: dict[tuple[str, bytes], int] = {}

        def want(addr: str, data: bytes) -> int:
            key = (addr, data)
            if key not in index:
                index[key] = len(calls)
                calls.append(key)
            return index[key]

        for f in feeds:
            want(f.cfg.address, LATEST_ROUND_DATA)
            want(f.cfg.address, DECIMALS)
            if f.cfg.sequencer_feed:
                want(f.cfg.sequencer_feed, LATEST_ROUND_DATA)
        try:
            results = await caller.call_batch(calls)
        except Exception as exc:  # any transport error fails every feed of the chain
            return [
                ChainError(f.name, f"{f._label()}: batch call on chain {chain} failed: {exc!r}")
                for f in feeds
            ]
        if len(results) != len(calls):
            return [
                ChainError(
                    f.name,
                    f"{f._label()}: batch returned {len(results)} results for {len(calls)} calls",
                )
                for f in feeds
            ]
        return [f._evaluate(results, index, now) for f in feeds]

    def _evaluate(
        self,
        results: list[bytes | None],
        index: dict[tuple[str, bytes], int],
        now: float,
    ) -> SourceOutcome:
        cfg, label = self.cfg, self._label()
        raw_round = results[index[(cfg.address, LATEST_ROUND_DATA)]]
        raw_dec = results[index[(cfg.address, DECIMALS)]]
        if raw_round is None or raw_dec is None:
            which = "latestRoundData()" if raw_round is None else "decimals()"
            return Reverted(self.name, f"{label}: {which} reverted")
        try:
            rd = decode_round(raw_round)
            decimals = decode_decimals(raw_dec)
        except Exception as exc:
            return BadPayload(self.name, f"{label}: undecodable answer: {exc}")
        if decimals > MAX_DECIMALS:
            return BadPayload(self.name, f"{label}: decimals() = {decimals} is implausible")
        failure = self._check_round(rd, now)
        if failure is not None:
            return failure
        value = rd.answer / 10**decimals
        failure = self._check_value(rd.answer, value)
        if failure is not None:
            return failure
        if cfg.sequencer_feed:
            seq = self._sequencer(results[index[(cfg.sequencer_feed, LATEST_ROUND_DATA)]], now)
            if seq is not None:
                return seq
        return Observation(
            self.name, value, float(rd.updated_at), f"round {rd.round_id}, {decimals} decimals"
        )

    def _check_round(self, rd: RoundData, now: float) -> SourceFailure | None:
        """The round itself: a positive answer, complete, not older than max_age_s and
        not from the future."""
        cfg, label = self.cfg, self._label()
        if rd.answer <= 0:
            return NonPositive(self.name, f"{label}: answer {rd.answer} is not positive")
        if rd.updated_at == 0:
            return Stale(self.name, f"{label}: round {rd.round_id} is incomplete (updatedAt 0)")
        age = now - rd.updated_at
        if age > cfg.max_age_s:
            return Stale(
                self.name,
                f"{label}: updatedAt {rd.updated_at} is {age:.0f}s old "
                f"(max_age_s {cfg.max_age_s:g})",
            )
        if -age > FUTURE_TOLERANCE_S:
            return BadPayload(
                self.name, f"{label}: updatedAt {rd.updated_at} is {-age:.0f}s in the future"
            )
        return None

    def _check_value(self, answer: int, value: float) -> SourceFailure | None:
        """The scaled answer: finite, positive, within min_answer/max_answer."""
        cfg, label = self.cfg, self._label()
        if not math.isfinite(value) or value <= 0:
            return NonPositive(self.name, f"{label}: answer {answer} scales to {value}")
        if cfg.min_answer is not None and value < cfg.min_answer:
            return OutOfBounds(
                self.name, f"{label}: answer {value:g} below min_answer {cfg.min_answer:g}"
            )
        if cfg.max_answer is not None and value > cfg.max_answer:
            return OutOfBounds(
                self.name, f"{label}: answer {value:g} above max_answer {cfg.max_answer:g}"
            )
        return None

    def _sequencer(self, raw: bytes | None, now: float) -> SequencerDown | None:
        cfg = self.cfg
        label = f"{self._label()}: sequencer feed {cfg.sequencer_feed}"
        # Fail closed: when we cannot tell whether the sequencer is up, L2 prices
        # may be frozen, so they are not trusted.
        if raw is None:
            return SequencerDown(self.name, f"{label} reverted; sequencer status unknown")
        try:
            rd = decode_round(raw)
        except Exception as exc:
            return SequencerDown(self.name, f"{label} undecodable ({exc}); status unknown")
        if rd.answer == 1:
            return SequencerDown(
                self.name, f"{label} reports down (answer 1) since {rd.started_at}"
            )
        if rd.answer != 0:
            return SequencerDown(self.name, f"{label} answer {rd.answer} is neither 0 nor 1")
        if rd.started_at == 0:
            return SequencerDown(self.name, f"{label} has no status round yet (startedAt 0)")
        up_for = now - rd.started_at
        if up_for < cfg.sequencer_grace_s:
            return SequencerDown(
                self.name,
                f"{label} up since {rd.started_at}, only {max(up_for, 0):.0f}s ago; grace period "
                f"{cfg.sequencer_grace_s:g}s not over",
            )
        return None


def build_chainlink(cfg: ChainlinkSourceConfig, ctx: SourceContext) -> ChainlinkSource:
    caller = ctx.batch_callers.get(cfg.chain)
    if caller is None:
        raise SourceConfigError(
            f"source {cfg.name!r}: no RPC batch caller for chain {cfg.chain!r} "
            f"(known: {sorted(ctx.batch_callers) or 'none'})"
        )
    return ChainlinkSource(cfg, caller)
