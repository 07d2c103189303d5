"""Reorg-safe vault event indexer for one chain.

One step = read the head, verify the stored tip is still canonical (else roll
back to the common ancestor), fetch logs for the next range, verify them against
the headers of the unfinalized window, and commit events + derived balances +
checkpoint in one store transaction. A crash at any point loses at most the
uncommitted step, which the next run redoes (inserts are keyed by
(chain, block, log index), so re-running a range never double-counts).

See docs/chains.md for the finality views, reorg window and failure modes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode

from chains.events import TOPIC_FILTER, decode_log
from chains.logrange import LogRange, range_ceiling, range_hint
from chains.positions import TOPIC_FILTER as POSITION_TOPIC_FILTER
from chains.positions import (
    DerivativeEvent,
    MarketsWatch,
    decode_position_log,
    is_position_log,
)
from chains.rpc import (
    ChainIdMismatch,
    RpcClient,
    RpcError,
    RpcResponseError,
    RpcUnavailable,
    selector,
)
from chains.store import IndexerStore
from chains.types import (
    BatchResult,
    BlockRef,
    ChainSettings,
    Checkpoint,
    Position,
    PositionKind,
    VaultEvent,
)

log = logging.getLogger(__name__)

SEL_COLLATERAL_OF = selector("collateralOf(address,address)")
SEL_DEBT_OF = selector("debtOf(address,address)")

AccountsCallback = Callable[[str, set[str]], Awaitable[None]]


@dataclass
class Progress:
    """Backfill/follow progress; plain numbers a metrics layer can export."""

    chain: str
    head_block: int
    indexed_block: int
    blocks_per_s: float
    events_per_s: float
    eta_s: float | None
    events_total: int


@dataclass
class ChainStatus:
    """What the daemon exposes per chain (/v1/chains, metrics, /readyz)."""

    chain: str
    head_block: int = 0
    indexed_block: int = -1
    confirmed_block: int = -1
    lag: int = 0
    fatal: bool = False
    fatal_reason: str | None = None
    log_range: int = 0
    caught_up: bool = False
    blocks_per_s: float = 0.0
    events_per_s: float = 0.0
    eta_s: float | None = None
    events_total: int = 0
    reorgs: int = 0
    deepest_reorg: int = 0
    reconcile_runs: int = 0
    reconcile_mismatches: int = 0
    last_error: str | None = None
    endpoints: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Mismatch:
    account: str
    token: str
    kind: PositionKind
    stored: int
    onchain: int


class ChainIndexer:
    def __init__(
        self,
        settings: ChainSettings,
        client: RpcClient,
        store: IndexerStore,
        *,
        on_accounts_changed: AccountsCallback | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        markets: MarketsWatch | None = None,
    ) -> None:
        if settings.vault is None:
            raise ValueError(f"chain {settings.name!r}: no vault address configured")
        self.settings = settings
        self.chain = settings.name
        self.client = client
        self.store = store
        self.on_accounts_changed = on_accounts_changed
        self.on_progress = on_progress
        self.clock = clock
        # Derivative position events (chains/positions.py): same ranges, same header
        # checks, written before the vault batch and rolled back before it.
        self.markets = markets
        self.status = ChainStatus(chain=self.chain)
        self.range = LogRange(settings.max_log_range, settings.max_log_range)
        self._cp: Checkpoint | None = None
        # Backfill pipeline: (start, head, task) of the next range's fetch.
        self._ahead: tuple[int, int, asyncio.Task[Any]] | None = None
        self._reconcile_cursor = ""
        self._rate_t0: float | None = None
        self._rate_blocks = 0
        self._rate_events = 0
        self._lock = asyncio.Lock()
        self._last_progress_log = -1e18

    # ----------------------------------------------------------- lifecycle

    async def load(self) -> Checkpoint:
        cp = await self.store.load_checkpoint(self.chain)
        if cp is None:
            cp = Checkpoint(
                chain=self.chain,
                indexed_block=self.settings.start_block - 1,
                indexed_hash=None,
                log_range=self.settings.max_log_range,
            )
        self._cp = cp
        self.range = LogRange(self.settings.max_log_range, cp.log_range)
        self.status.indexed_block = cp.indexed_block
        self.status.confirmed_block = cp.confirmed_block
        self.status.head_block = cp.head_block
        self.status.log_range = self.range.current
        if cp.fatal_reason:
            self.status.fatal, self.status.fatal_reason = True, cp.fatal_reason
        return cp

    @property
    def checkpoint(self) -> Checkpoint:
        if self._cp is None:
            raise RuntimeError(f"chain {self.chain!r}: call load() first")
        return self._cp

    def snapshot(self) -> ChainStatus:
        self.status.endpoints = [vars(s) for s in self.client.status()]
        return replace(self.status)

    async def run(self, stop: asyncio.Event) -> None:
        """Index until `stop` is set; transient RPC trouble is retried with backoff."""
        if self._cp is None:
            await self.load()
        try:
            await self._run(stop)
        finally:
            await self._drop_ahead()

    async def _run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set() and not self.status.fatal:
            try:
                progressed = await self.step()
                failures = 0
                self.status.last_error = None
            except ChainIdMismatch as exc:
                await self._fatal(str(exc))
                break
            except RpcError as exc:
                failures += 1
                self.status.last_error = str(exc)
                log.warning("chain %s: indexing step failed: %s", self.chain, exc)
                progressed = False
            delay = 0.0 if progressed else self.settings.block_time
            if failures:
                delay = min(60.0, self.settings.block_time * 2 ** min(failures, 6))
            if delay:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)

    async def sync_to_head(self, max_steps: int = 100_000, max_idle_steps: int = 20) -> ChainStatus:
        """Index until caught up with the head seen at the last step (tests, CLI)."""
        if self._cp is None:
            await self.load()
        idle = 0
        try:
            for _ in range(max_steps):
                if self.status.fatal:
                    break
                progressed = await self.step()
                if not progressed and self.status.caught_up:
                    break
                idle = 0 if progressed else idle + 1
                if idle >= max_idle_steps:
                    break  # e.g. only a lagging node is reachable: last_error says so
                if idle:
                    await asyncio.sleep(self.settings.block_time)
        finally:
            await self._drop_ahead()
        return self.snapshot()

    # ----------------------------------------------------------- one step

    async def step(self) -> bool:
        """Do one unit of work. Returns True if something was committed."""
        # Serialised with reconcile(): a correction computed against balances that
        # a concurrent batch has moved on from would overwrite that batch's effect.
        async with self._lock:
            return await self._step()

    async def _step(self) -> bool:
        if self.status.fatal:
            return False
        head = await self.client.block_number()
        self.status.head_block = head
        if await self._check_reorg(head):
            await self._drop_ahead()
            return True
        if self.status.fatal:
            return False
        cp = self.checkpoint
        start = cp.indexed_block + 1
        if start > head:
            self._caught_up(head)
            return await self._maybe_reconcile(head)
        if self._rate_t0 is None:
            self._rate_t0 = self.clock()
            self._rate_blocks = self._rate_events = 0
        fetched = await self._fetch_from(start, head)
        end = fetched[0]
        try:
            result = await self._commit(start, head, *fetched)
        except BaseException:
            await self._drop_ahead()
            raise
        if result is None:
            await self._drop_ahead()
            return False
        self.status.caught_up = end >= head
        if self.status.caught_up:
            await self._maybe_reconcile(head)
        return True

    async def _fetch_from(
        self, start: int, head: int
    ) -> tuple[int, list[dict[str, Any]], dict[int, BlockRef]]:
        """The next range from `start` (the prefetched one when it fits), and, while
        backfilling, the prefetch of the range after it."""
        ahead, self._ahead = self._ahead, None
        # Fetched with an older head, it holds every header this head needs (the kept
        # window only moves up).
        if ahead is not None and ahead[0] == start and ahead[1] <= head:
            fetched = await ahead[2]
        else:
            await _discard(ahead)
            fetched = await self._fetch(start, min(head, start + self.range.current - 1), head)
        end = fetched[0]
        if end < head:
            # Backfill: fetch the next range while this one is written (the store's
            # commit runs in its driver's thread or server), so the node and the store
            # work at the same time. The next commit checks these logs against its own
            # tip like any other; a reorg in between only wastes the fetch.
            nxt = end + 1
            task = asyncio.create_task(
                self._fetch(nxt, min(head, nxt + self.range.current - 1), head),
                name=f"prefetch {self.chain} {nxt}",
            )
            self._ahead = (nxt, head, task)
        return fetched

    def _caught_up(self, head: int) -> None:
        self.status.caught_up = True
        self.status.lag = max(0, head - self.checkpoint.indexed_block)
        self.status.eta_s = 0.0

    async def _get_logs(self, start: int, end: int) -> tuple[int, list[dict[str, Any]]]:
        """getLogs over [start, end], adapting the span; returns (end actually covered, logs)."""
        while True:
            span = end - start + 1
            try:
                logs = await self.client.get_logs(
                    self.settings.vault or "", TOPIC_FILTER, start, end
                )
                if self.markets is not None:
                    logs += await self.client.get_logs(
                        self.markets.address, POSITION_TOPIC_FILTER, start, end
                    )
            except RpcResponseError as exc:
                hint = range_hint(exc.message, span)
                if hint is None or span == 1:
                    raise
                log.info(
                    "chain %s: getLogs span %d rejected (%s); trying %d",
                    self.chain,
                    span,
                    exc.message,
                    hint,
                )
                self.range.shrink_to(hint)
                ceiling = range_ceiling(exc.message, span)
                if ceiling is not None:
                    self.range.limit_to(ceiling)
            except RpcUnavailable as exc:
                if not exc.timed_out or span == 1:
                    raise
                log.info("chain %s: getLogs span %d timed out; halving", self.chain, span)
                self.range.shrink_to(span // 2)
            else:
                self.range.succeeded()
                self.status.log_range = self.range.current
                return end, logs
            self.status.log_range = self.range.current
            end = start + self.range.current - 1

    def _header_numbers(self, start: int, end: int, head: int) -> list[int]:
        # window + 1 hashes: the anchor below the window is what a reorg of
        # exactly `window` blocks rolls back to.
        keep_from = max(0, head - self.settings.reorg_window)
        return sorted({*range(max(start, keep_from), end + 1), end})

    async def _fetch(
        self, start: int, end: int, head: int
    ) -> tuple[int, list[dict[str, Any]], dict[int, BlockRef]]:
        """Logs of [start, end] (the span may shrink: returns the end covered) and the
        headers the commit of that range checks them against."""
        end, logs = await self._get_logs(start, end)
        headers = await self.client.get_blocks(self._header_numbers(start, end, head))
        return end, logs, headers

    async def _drop_ahead(self) -> None:
        ahead, self._ahead = self._ahead, None
        await _discard(ahead)

    async def _commit(
        self,
        start: int,
        head: int,
        end: int,
        logs: list[dict[str, Any]],
        headers: dict[int, BlockRef],
    ) -> BatchResult | None:
        cp = self.checkpoint
        keep_from = max(0, head - self.settings.reorg_window)
        numbers = self._header_numbers(start, end, head)
        if not self._extends_tip(cp, numbers, headers):
            return None
        decoded = self._decode(logs, headers)
        if decoded is None:
            return None
        events, pos_events = decoded
        confirmed = head - self.settings.confirmations
        pos_accounts: set[str] = set()
        if self.markets is not None and pos_events:
            pos_accounts = await self.markets.sink.apply_position_events(self.chain, pos_events)
        accounts = await self.store.apply_batch(
            self.chain,
            to_block=end,
            blocks=[headers[n] for n in numbers],
            events=events,
            log_range=self.range.current,
            head_block=head,
            confirmed_block=confirmed,
            keep_hashes_from=keep_from,
        )
        self._cp = replace(
            cp,
            indexed_block=end,
            indexed_hash=headers[end].hash,
            log_range=self.range.current,
            head_block=head,
            confirmed_block=confirmed,
        )
        self.status.indexed_block = end
        self.status.confirmed_block = min(confirmed, end)
        self.status.lag = max(0, head - end)
        self.status.events_total += len(events) + len(pos_events)
        self._progress(head, end, end - start + 1, len(events) + len(pos_events))
        accounts = set(accounts) | pos_accounts
        if accounts and self.on_accounts_changed is not None:
            await self.on_accounts_changed(self.chain, set(accounts))
        return BatchResult(self.chain, start, end, len(events), set(accounts))

    def _extends_tip(
        self, cp: Checkpoint, numbers: Sequence[int], headers: dict[int, BlockRef]
    ) -> bool:
        """The fetched headers must chain to each other and to our tip; a mismatch
        means a reorg happened between our calls: drop this step, the next step's
        reorg check finds the ancestor."""
        prev_hash = cp.indexed_hash
        prev_num = cp.indexed_block
        for n in numbers:
            ref = headers[n]
            if n == prev_num + 1 and prev_hash is not None and ref.parent_hash != prev_hash:
                log.warning(
                    "chain %s: block %d does not extend our tip; reorg in flight", self.chain, n
                )
                return False
            prev_hash, prev_num = ref.hash, n
        return True

    def _decode(
        self, logs: list[dict[str, Any]], headers: dict[int, BlockRef]
    ) -> tuple[list[VaultEvent], list[DerivativeEvent]] | None:
        """Vault and position events of the logs; None when a log was removed or names
        a block hash other than the fetched header's (a reorg in flight)."""
        events: list[VaultEvent] = []
        pos_events: list[DerivativeEvent] = []
        for entry in logs:
            if entry.get("removed"):
                return None
            ev: VaultEvent | DerivativeEvent
            if self.markets is not None and is_position_log(entry):
                ev = decode_position_log(self.chain, entry)
            else:
                ev = decode_log(self.chain, entry)
            seen = headers.get(ev.block_number)
            if seen is not None and seen.hash != ev.block_hash:
                log.warning(
                    "chain %s: log in block %d has a stale hash; reorg in flight",
                    self.chain,
                    ev.block_number,
                )
                return None
            if isinstance(ev, DerivativeEvent):
                pos_events.append(ev)
            else:
                events.append(ev)
        return events, pos_events

    def _progress(self, head: int, end: int, blocks: int, events: int) -> None:
        now = self.clock()
        if self._rate_t0 is None:
            self._rate_t0 = now
        self._rate_blocks += blocks
        self._rate_events += events
        elapsed = max(now - self._rate_t0, 1e-6)
        self.status.blocks_per_s = self._rate_blocks / elapsed
        self.status.events_per_s = self._rate_events / elapsed
        remaining = max(0, head - end)
        self.status.eta_s = (
            remaining / self.status.blocks_per_s if self.status.blocks_per_s else None
        )
        if remaining == 0:
            # Following the head: the next backfill burst measures its own rate.
            self._rate_t0 = None
        if remaining > 0 and now - self._last_progress_log >= 10.0:
            self._last_progress_log = now
            log.info(
                "chain %s: backfill at block %d of %d: %.0f blocks/s, %.0f events/s, ETA %s",
                self.chain,
                end,
                head,
                self.status.blocks_per_s,
                self.status.events_per_s,
                f"{self.status.eta_s:.0f}s" if self.status.eta_s is not None else "unknown",
            )
        if self.on_progress is not None:
            self.on_progress(
                Progress(
                    chain=self.chain,
                    head_block=head,
                    indexed_block=end,
                    blocks_per_s=self.status.blocks_per_s,
                    events_per_s=self.status.events_per_s,
                    eta_s=self.status.eta_s,
                    events_total=self.status.events_total,
                )
            )

    # ----------------------------------------------------------- reorgs

    async def _check_reorg(self, head: int) -> bool:
        """Roll back to the common ancestor if our tip left the canonical chain.

        Returns True when a rollback was committed.
        """
        cp = self.checkpoint
        if cp.indexed_hash is None:
            return False
        if cp.indexed_block <= head:
            tip = await self.client.get_block(cp.indexed_block)
            if tip is not None and tip.hash == cp.indexed_hash:
                return False
        # Our tip is above the head, unknown, or has another hash. Only positive
        # evidence (a different hash at a stored height) proves a reorg: a head
        # below our tip may just be a lagging node, and rolling back valid
        # events on its word would be churn at best.
        stored = await self.store.block_hashes(self.chain)
        ancestor, evidence = await self._common_ancestor(stored, head)
        if evidence is None:
            if cp.indexed_block > head:
                self.status.last_error = (
                    f"head {head} is below our indexed block {cp.indexed_block} and no stored "
                    "block hash differs yet; waiting for the chain or a better endpoint"
                )
                log.warning("chain %s: %s", self.chain, self.status.last_error)
            return False
        lowest = min(stored) if stored else cp.indexed_block
        if ancestor is None:
            reason = (
                f"chain {self.chain!r}: reorg deeper than the {self.settings.reorg_window}-block "
                f"window: block {evidence[0]} is now {evidence[1]} and none of the stored block "
                f"hashes {lowest}..{cp.indexed_block} is canonical any more (head {head}); "
                f"indexing stopped, stored balances kept as of block {cp.indexed_block}; "
                "check the node, then reset the chain to re-index"
            )
            await self._fatal(reason)
            return False
        await self._roll_back(cp, ancestor)
        return True

    async def _common_ancestor(
        self, stored: dict[int, str], head: int
    ) -> tuple[BlockRef | None, tuple[int, str] | None]:
        """The highest stored block still canonical, and the highest stored height whose
        hash differs now (the evidence of a reorg), walking down from the head."""
        evidence: tuple[int, str] | None = None
        for n in sorted(stored, reverse=True):
            if n > head:
                continue
            ref = await self.client.get_block(n)
            if ref is None:
                continue
            if ref.hash == stored[n]:
                return ref, evidence
            evidence = evidence or (n, ref.hash)
        return None, evidence

    async def _roll_back(self, cp: Checkpoint, ancestor: BlockRef) -> None:
        depth = cp.indexed_block - ancestor.number
        log.warning(
            "chain %s: reorg detected at block %d; rolling back %d blocks to %d (%s)",
            self.chain,
            cp.indexed_block,
            depth,
            ancestor.number,
            ancestor.hash,
        )
        pos_accounts: set[str] = set()
        if self.markets is not None:
            pos_accounts = await self.markets.sink.rollback_positions(self.chain, ancestor.number)
        accounts = await self.store.rollback(self.chain, ancestor) | pos_accounts
        self._cp = replace(
            cp,
            indexed_block=ancestor.number,
            indexed_hash=ancestor.hash,
            last_reconcile_block=min(cp.last_reconcile_block, ancestor.number),
        )
        self.status.indexed_block = ancestor.number
        self.status.reorgs += 1
        self.status.deepest_reorg = max(self.status.deepest_reorg, depth)
        self.status.caught_up = False
        if accounts and self.on_accounts_changed is not None:
            await self.on_accounts_changed(self.chain, set(accounts))

    async def _fatal(self, reason: str) -> None:
        log.critical("%s", reason)
        self.status.fatal, self.status.fatal_reason = True, reason
        await self.store.set_fatal(self.chain, reason)
        self._cp = replace(self.checkpoint, fatal_reason=reason)

    # ----------------------------------------------------------- reconciliation

    async def _maybe_reconcile(self, head: int) -> bool:
        cp = self.checkpoint
        if cp.indexed_block - cp.last_reconcile_block < self.settings.reconcile_every_blocks:
            return False
        await self._reconcile()
        return False

    async def reconcile(self, accounts: Sequence[str] | None = None) -> list[Mismatch]:
        async with self._lock:
            return await self._reconcile(accounts)

    def _balance(self, p: Position, raw: bytes | None, vault: str) -> int:
        if raw is None:
            raise RpcError(
                f"chain {self.chain!r}: {p.kind}Of({p.account}, {p.token}) "
                f"reverted on vault {vault}"
            )
        (onchain,) = abi_decode(["uint256"], raw)
        return int(onchain)

    async def _next_sample(self) -> list[str]:
        """The next `reconcile_sample` accounts after the cursor, wrapping around, so
        the sample rolls over every account in turn."""
        want = self.settings.reconcile_sample
        sample = await self.store.sample_accounts(self.chain, self._reconcile_cursor, want)
        if len(sample) < want:
            sample += [
                a
                for a in await self.store.sample_accounts(self.chain, "", want - len(sample))
                if a not in sample
            ]
        self._reconcile_cursor = sample[-1] if sample else ""
        return sample

    async def _confirmed_by_hash(
        self,
        calls: list[tuple[str, bytes]],
        answers: list[bytes | None],
        positions: list[Position],
        block: int,
        block_hash: str,
    ) -> bool:
        """Before overwriting what the events say, ask again for exactly the block the
        store is at (by hash): a node answering mid-reorg, or for the tip while it mines
        the next block, gave the soak a balance one block ahead. True when every answer
        is the same again."""
        try:
            again = await self.client.call_batch(calls, block=block, block_hash=block_hash)
        except RpcResponseError as exc:
            # The node no longer has that block on its chain: a reorg the next step
            # rolls back. The first read was of another block; correct nothing.
            log.warning(
                "chain %s: reconciliation at block %d not confirmed by hash (%s); "
                "not correcting this round",
                self.chain,
                block,
                exc,
            )
            return False
        for p, first, raw in zip(positions, answers, again, strict=True):
            if raw != first:
                log.warning(
                    "chain %s: reconciliation of %s %s %s at block %d read two "
                    "different balances; not correcting this round",
                    self.chain,
                    p.account,
                    p.token,
                    p.kind,
                    block,
                )
                return False
        return True

    def _mismatch(self, p: Position, raw: bytes | None, vault: str, block: int) -> Mismatch:
        onchain = self._balance(p, raw, vault)
        log.error(
            "chain %s: reconciliation mismatch %s %s %s at block %d: "
            "stored %d, on chain %d; taking the chain's value",
            self.chain,
            p.account,
            p.token,
            p.kind,
            block,
            p.head_amount,
            onchain,
        )
        return Mismatch(p.account, p.token, p.kind, p.head_amount, int(onchain))

    async def _reconcile(self, accounts: Sequence[str] | None = None) -> list[Mismatch]:
        """Compare stored head balances with collateralOf/debtOf at the indexed block.

        Without `accounts`, a rolling sample of `reconcile_sample` accounts. The
        chain's value wins: a mismatch is logged with both values, counted, and
        stored as a correction at the indexed block (so a reorg undoes it too).
        """
        cp = self.checkpoint
        block = cp.indexed_block
        if block < 0:
            return []
        if accounts is None:
            accounts = await self._next_sample()
        positions = await self.store.positions(self.chain, accounts)
        vault = self.settings.vault or ""
        calls = [
            (
                vault,
                (SEL_COLLATERAL_OF if p.kind == "collateral" else SEL_DEBT_OF)
                + abi_encode(["address", "address"], [p.account, p.token]),
            )
            for p in positions
        ]
        answers = await self.client.call_batch(calls, block=block)
        suspects = [
            i for i, (p, raw) in enumerate(zip(positions, answers, strict=True))
            if self._balance(p, raw, vault) != p.head_amount
        ]  # fmt: skip
        if (
            suspects
            and cp.indexed_hash is not None
            and not await self._confirmed_by_hash(
                [calls[i] for i in suspects],
                [answers[i] for i in suspects],
                [positions[i] for i in suspects],
                block,
                cp.indexed_hash,
            )
        ):
            return []
        mismatches = [self._mismatch(positions[i], answers[i], vault, block) for i in suspects]
        await self.store.apply_corrections(
            self.chain,
            block,
            [(m.account, m.token, m.kind, m.onchain) for m in mismatches],
            reconcile_block=block,
        )
        self._cp = replace(cp, last_reconcile_block=block)
        self.status.reconcile_runs += 1
        self.status.reconcile_mismatches += len(mismatches)
        if mismatches and self.on_accounts_changed is not None:
            await self.on_accounts_changed(self.chain, {m.account for m in mismatches})
        return mismatches


__all__ = ["ChainIndexer", "ChainStatus", "Mismatch", "Progress"]


async def _discard(ahead: tuple[int, int, asyncio.Task[Any]] | None) -> None:
    """Cancel a prefetch nobody will use; its outcome (even an error) is moot."""
    if ahead is None:
        return
    task = ahead[2]
    task.cancel()
    # wait() never raises the task's error, and our own cancellation still propagates.
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()
