"""Read-only queries of the reputation feed (aggregator/reputation_feed.py): confirmed
vault events of a block range, each chain's block-time anchor, and the risk-history
points of the accounts that were ever in warning or worse.

Invariants: nothing here writes; events are read only in (after, upto] where the
caller passes the chain's confirmed block as `upto`, so a reorg (which only rewrites
unconfirmed blocks) never changes what was read; the same SQL on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import and_, select, tuple_

from aggregator.store.chain_rows import ACCOUNT_CHUNK, CP, EV
from aggregator.store.db import Store
from aggregator.store.models.history import HistoryAccountRecord

_ACC = HistoryAccountRecord.__table__  # type: ignore[attr-defined]
# Behaviour events: a reconciliation correction is the index's repair, not the account's act.
BEHAVIOUR_KINDS = ("deposit", "withdraw", "borrow", "repay", "liquidation")


@dataclass(frozen=True)
class Anchor:
    """A chain's confirmed block and the wall-clock time its head was last seen."""

    confirmed_block: int
    head_block: int
    seen_at: float


# A position in a chain's event order: (block, log index). AFTER_BLOCK(b) is after
# every log of block b.
Key = tuple[int, int]


def after_block(block: int) -> Key:
    return (block, 1 << 62)


@dataclass(frozen=True)
class EventFact:
    block_number: int
    log_index: int
    kind: str
    account: str
    token: str
    amount: int
    debt_token: str | None
    debt_amount: int
    # The cross-chain seize claim id of a claim or settlement row (chain_event.ref).
    ref: str | None = None


@dataclass(frozen=True)
class ClaimRepay:
    """What a cross-chain seize claim repaid, on its debt chain."""

    chain: str
    token: str
    amount: int


def _ts(d: datetime) -> float:
    return (d if d.tzinfo else d.replace(tzinfo=UTC)).timestamp()


class ReputationReads:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def anchor(self, chain: str) -> Anchor | None:
        q = select(CP.c.confirmed_block, CP.c.head_block, CP.c.updated_at).where(
            CP.c.chain == chain
        )
        async with self.store.session() as s:
            row = (await s.execute(q)).first()
        if row is None:
            return None
        return Anchor(int(row[0]), int(row[1]), _ts(row[2]))

    async def events(
        self, chain: str, after: Key, upto: int, page: int = 50_000
    ) -> AsyncIterator[list[EventFact]]:
        """Behaviour events of `chain` after `after` (in chain order) up to block
        `upto`, a page at a time (keyset on (block, log index): a first run over a long
        history never holds the whole table)."""
        key = after
        while True:
            q = (
                select(
                    EV.c.block_number, EV.c.log_index, EV.c.kind, EV.c.account, EV.c.token,
                    EV.c.amount, EV.c.debt_token, EV.c.debt_amount, EV.c.ref,
                )
                .where(
                    EV.c.chain == chain, EV.c.block_number <= upto,
                    EV.c.kind.in_(BEHAVIOUR_KINDS),
                    tuple_(EV.c.block_number, EV.c.log_index) > tuple_(*key),
                )
                .order_by(EV.c.block_number, EV.c.log_index)
                .limit(page)
            )  # fmt: skip
            async with self.store.session() as s:
                rows = (await s.execute(q)).all()
            if not rows:
                return
            yield [
                EventFact(int(b), int(li), str(k), str(a).lower(), str(t).lower(), int(am),
                          None if dt is None else str(dt).lower(), int(da),
                          None if ref is None else str(ref))
                for b, li, k, a, t, am, dt, da, ref in rows
            ]  # fmt: skip
            if len(rows) < page:
                return
            key = (int(rows[-1][0]), int(rows[-1][1]))

    async def claim_repays(self, refs: Collection[str]) -> dict[str, ClaimRepay]:
        """Claim id -> what its claim repaid (the `repay` row carrying the id, on the
        debt chain), for the ids whose claim is indexed."""
        out: dict[str, ClaimRepay] = {}
        ids = sorted(refs)
        async with self.store.session() as s:
            for i in range(0, len(ids), ACCOUNT_CHUNK):
                q = select(EV.c.ref, EV.c.chain, EV.c.token, EV.c.amount).where(
                    EV.c.ref.in_(ids[i : i + ACCOUNT_CHUNK]), EV.c.kind == "repay"
                )
                for ref, chain, token, amount in await s.execute(q):
                    out[str(ref)] = ClaimRepay(str(chain), str(token).lower(), int(amount))
        return out

    async def risky_points(
        self, step: int, since: int
    ) -> dict[str, list[tuple[float, int, int, float, float, float]]]:
        """Per account that has a point at level `step` since `since` whose worst tier
        is warning or worse: all its points since `since` as (t, tier, worst tier, hf,
        bp, debt USD), in time order."""
        risky = (
            select(_ACC.c.account)
            .where(_ACC.c.step_s == step, _ACC.c.t >= since, _ACC.c.tier_worst >= 1)
            .distinct()
        )
        q = (
            select(
                _ACC.c.account,
                _ACC.c.t,
                _ACC.c.tier,
                _ACC.c.tier_worst,
                _ACC.c.hf,
                _ACC.c.bp,
                _ACC.c.debt_usd,
            )
            .where(and_(_ACC.c.step_s == step, _ACC.c.t >= since, _ACC.c.account.in_(risky)))
            .order_by(_ACC.c.account, _ACC.c.t)
        )
        async with self.store.session() as s:
            rows = (await s.execute(q)).all()
        out: dict[str, list[tuple[float, int, int, float, float, float]]] = {}
        for a, t, tier, worst, hf, bp, debt in rows:
            out.setdefault(str(a), []).append(
                (float(t), int(tier), int(worst), float(hf), float(bp), float(debt))
            )
        return out


__all__ = ["BEHAVIOUR_KINDS", "Anchor", "EventFact", "Key", "ReputationReads", "after_block"]
