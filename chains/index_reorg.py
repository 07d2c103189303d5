"""The reorg check at the start of every step, and the rollback to the common ancestor.

Invariants:
- Only positive evidence proves a reorg: a stored height whose hash differs now. A head
  below our tip with no differing hash may be a lagging or restarted node; nothing is
  rolled back on its word (that would be churn at best), the indexer waits and says so
  in `last_error`.
- The first stored height (walking down from the head) whose hash still matches is the
  common ancestor: `IndexerStore.rollback` reverses every event above it in both views
  (reconciliation corrections included), deletes those events and hashes and moves the
  checkpoint there, in one transaction. Derivative positions are rolled back first.
- No stored hash matches: the reorg is deeper than the window. The chain enters its
  fatal state (persisted); its stored balances stay as of the last indexed block and are
  never mixed with another branch.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from chains.index_context import IndexContext
from chains.types import BlockRef, Checkpoint

log = logging.getLogger(__name__)


class ReorgGuard:
    def __init__(self, ctx: IndexContext) -> None:
        self.ctx = ctx

    async def check(self, head: int) -> bool:
        """Roll back to the common ancestor if our tip left the canonical chain.

        Returns True when a rollback was committed.
        """
        ctx = self.ctx
        cp = ctx.checkpoint
        if cp.indexed_hash is None:
            return False
        if cp.indexed_block <= head:
            tip = await ctx.client.get_block(cp.indexed_block)
            if tip is not None and tip.hash == cp.indexed_hash:
                return False
        # Our tip is above the head, unknown, or has another hash. Only positive
        # evidence (a different hash at a stored height) proves a reorg: a head
        # below our tip may just be a lagging node, and rolling back valid
        # events on its word would be churn at best.
        stored = await ctx.store.block_hashes(ctx.chain)
        ancestor, evidence = await self._common_ancestor(stored, head)
        if evidence is None:
            if cp.indexed_block > head:
                ctx.status.last_error = (
                    f"head {head} is below our indexed block {cp.indexed_block} and no stored "
                    "block hash differs yet; waiting for the chain or a better endpoint"
                )
                log.warning("chain %s: %s", ctx.chain, ctx.status.last_error)
            return False
        if ancestor is None:
            await self._too_deep(cp, stored, evidence, head)
            return False
        await self._roll_back(cp, ancestor)
        return True

    async def _too_deep(
        self, cp: Checkpoint, stored: dict[int, str], evidence: tuple[int, str], head: int
    ) -> None:
        lowest = min(stored) if stored else cp.indexed_block
        reason = (
            f"chain {self.ctx.chain!r}: reorg deeper than the "
            f"{self.ctx.settings.reorg_window}-block "
            f"window: block {evidence[0]} is now {evidence[1]} and none of the stored block "
            f"hashes {lowest}..{cp.indexed_block} is canonical any more (head {head}); "
            f"indexing stopped, stored balances kept as of block {cp.indexed_block}; "
            "check the node, then reset the chain to re-index"
        )
        await self.ctx.fatal(reason)

    async def _common_ancestor(
        self, stored: dict[int, str], head: int
    ) -> tuple[BlockRef | None, tuple[int, str] | None]:
        """The highest stored block still canonical, and the highest stored height whose
        hash differs now (the evidence of a reorg), walking down from the head."""
        evidence: tuple[int, str] | None = None
        for n in sorted(stored, reverse=True):
            if n > head:
                continue
            ref = await self.ctx.client.get_block(n)
            if ref is None:
                continue
            if ref.hash == stored[n]:
                return ref, evidence
            evidence = evidence or (n, ref.hash)
        return None, evidence

    async def _roll_back(self, cp: Checkpoint, ancestor: BlockRef) -> None:
        ctx = self.ctx
        depth = cp.indexed_block - ancestor.number
        log.warning(
            "chain %s: reorg detected at block %d; rolling back %d blocks to %d (%s)",
            ctx.chain,
            cp.indexed_block,
            depth,
            ancestor.number,
            ancestor.hash,
        )
        pos_accounts: set[str] = set()
        if ctx.markets is not None:
            pos_accounts = await ctx.markets.sink.rollback_positions(ctx.chain, ancestor.number)
        accounts = await ctx.store.rollback(ctx.chain, ancestor) | pos_accounts
        ctx.cp = replace(
            cp,
            indexed_block=ancestor.number,
            indexed_hash=ancestor.hash,
            last_reconcile_block=min(cp.last_reconcile_block, ancestor.number),
        )
        st = ctx.status
        st.indexed_block = ancestor.number
        st.reorgs += 1
        st.deepest_reorg = max(st.deepest_reorg, depth)
        st.caught_up = False
        await ctx.accounts_changed(accounts)
