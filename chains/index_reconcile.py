"""Reconciliation: stored head balances against the vault's collateralOf/debtOf.

Invariants:
- Read at the indexed block, so the stored balances and the chain's answer describe the
  same state. Without explicit accounts, a rolling window of `reconcile_sample` accounts
  (wrapping around), so every account is checked in turn.
- Before anything is corrected, the mismatched balances are read again pinned to the
  indexed block's hash (EIP-1898, requireCanonical): a node answering a block number
  with a later block's state (the tip while it mines the next block, or mid-reorg; the
  soak saw a deposit counted twice that way) gives two different answers, and nothing
  is corrected that round; nor when the node no longer has that block (a reorg the next
  step rolls back).
- A mismatch both reads agree on is logged at ERROR with both values and counted, and
  the chain's value wins: it is stored as a `reconcile` correction event at that block
  (so a later reorg rolls it back like any other fact), in one transaction with the
  reconciliation cursor.
- The caller serialises reconciliation with indexing steps: a correction computed
  against balances a concurrent batch has moved on from would overwrite its effect.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode

from chains.index_context import IndexContext
from chains.rpc import RpcError, RpcResponseError, selector
from chains.types import Position, PositionKind

log = logging.getLogger(__name__)

SEL_COLLATERAL_OF = selector("collateralOf(address,address)")
SEL_DEBT_OF = selector("debtOf(address,address)")

Call = tuple[str, bytes]


@dataclass
class Mismatch:
    account: str
    token: str
    kind: PositionKind
    stored: int
    onchain: int


class Reconciler:
    def __init__(self, ctx: IndexContext) -> None:
        self.ctx = ctx
        self._cursor = ""

    def due(self) -> bool:
        """`reconcile_every_blocks` indexed blocks since the last run."""
        cp = self.ctx.checkpoint
        every = self.ctx.settings.reconcile_every_blocks
        return cp.indexed_block - cp.last_reconcile_block >= every

    async def reconcile(self, accounts: Sequence[str] | None = None) -> list[Mismatch]:
        """Compare stored head balances with collateralOf/debtOf at the indexed block.

        Without `accounts`, a rolling sample of `reconcile_sample` accounts. The
        chain's value wins: a mismatch is logged with both values, counted, and
        stored as a correction at the indexed block (so a reorg undoes it too).
        """
        ctx = self.ctx
        cp = ctx.checkpoint
        block = cp.indexed_block
        if block < 0:
            return []
        if accounts is None:
            accounts = await self._next_sample()
        positions = await ctx.store.positions(ctx.chain, accounts)
        calls = [self._balance_call(p) for p in positions]
        answers = await ctx.client.call_batch(calls, block=block)
        suspects = [
            i for i, (p, raw) in enumerate(zip(positions, answers, strict=True))
            if self._balance(p, raw) != p.head_amount
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
        mismatches = [self._mismatch(positions[i], answers[i], block) for i in suspects]
        await self._correct(block, mismatches)
        return mismatches

    async def _correct(self, block: int, mismatches: list[Mismatch]) -> None:
        """Store the chain's values and the cursor in one transaction, then show them."""
        ctx = self.ctx
        await ctx.store.apply_corrections(
            ctx.chain,
            block,
            [(m.account, m.token, m.kind, m.onchain) for m in mismatches],
            reconcile_block=block,
        )
        ctx.cp = replace(ctx.checkpoint, last_reconcile_block=block)
        ctx.status.reconcile_runs += 1
        ctx.status.reconcile_mismatches += len(mismatches)
        await ctx.accounts_changed({m.account for m in mismatches})

    def _balance_call(self, p: Position) -> Call:
        sel = SEL_COLLATERAL_OF if p.kind == "collateral" else SEL_DEBT_OF
        return self.ctx.vault, sel + abi_encode(["address", "address"], [p.account, p.token])

    def _balance(self, p: Position, raw: bytes | None) -> int:
        if raw is None:
            raise RpcError(
                f"chain {self.ctx.chain!r}: {p.kind}Of({p.account}, {p.token}) "
                f"reverted on vault {self.ctx.vault}"
            )
        (onchain,) = abi_decode(["uint256"], raw)
        return int(onchain)

    async def _next_sample(self) -> list[str]:
        """The next `reconcile_sample` accounts after the cursor, wrapping around, so
        the sample rolls over every account in turn."""
        ctx = self.ctx
        want = ctx.settings.reconcile_sample
        sample = await ctx.store.sample_accounts(ctx.chain, self._cursor, want)
        if len(sample) < want:
            sample += [
                a
                for a in await ctx.store.sample_accounts(ctx.chain, "", want - len(sample))
                if a not in sample
            ]
        self._cursor = sample[-1] if sample else ""
        return sample

    async def _confirmed_by_hash(
        self,
        calls: list[Call],
        answers: list[bytes | None],
        positions: list[Position],
        block: int,
        block_hash: str,
    ) -> bool:
        """Before overwriting what the events say, ask again for exactly the block the
        store is at (by hash): a node answering mid-reorg, or for the tip while it mines
        the next block, gave the soak a balance one block ahead. True when every answer
        is the same again."""
        chain = self.ctx.chain
        try:
            again = await self.ctx.client.call_batch(calls, block=block, block_hash=block_hash)
        except RpcResponseError as exc:
            # The node no longer has that block on its chain: a reorg the next step
            # rolls back. The first read was of another block; correct nothing.
            log.warning(
                "chain %s: reconciliation at block %d not confirmed by hash (%s); "
                "not correcting this round",
                chain,
                block,
                exc,
            )
            return False
        for p, first, raw in zip(positions, answers, again, strict=True):
            if raw != first:
                log.warning(
                    "chain %s: reconciliation of %s %s %s at block %d read two "
                    "different balances; not correcting this round",
                    chain,
                    p.account,
                    p.token,
                    p.kind,
                    block,
                )
                return False
        return True

    def _mismatch(self, p: Position, raw: bytes | None, block: int) -> Mismatch:
        onchain = self._balance(p, raw)
        log.error(
            "chain %s: reconciliation mismatch %s %s %s at block %d: "
            "stored %d, on chain %d; taking the chain's value",
            self.ctx.chain,
            p.account,
            p.token,
            p.kind,
            block,
            p.head_amount,
            onchain,
        )
        return Mismatch(p.account, p.token, p.kind, p.head_amount, int(onchain))
