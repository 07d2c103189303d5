"""The pending-claim hold: what a cross-chain seize claim still owes until it settles.

A claim (docs/contracts.md "Cross-chain seize") repays `R` of debt on its own chain at
once; the collateral that pays for it stays in the account's vault on the other chain
until the settlement is indexed there. In between, the account owes that collateral.
The ledger counts it as debt of the claim's asset on the claim's chain, `H = R x (1 +
b)` with b the largest liquidation bonus of any configured asset, added to the head
view of that debt row. With the row's pre-claim debt X, the counted debt
(max(head, confirmed), risk/book.py) is then X + bR from the claim's first indexing to
its settlement:

- the claim pends (a repayment counts in the confirmed view only once final):
  max(X - R + H, X) = X + bR;
- the claim is final: X - R + H = X + bR;
- the settlement is indexed: the hold is gone (X - R) and the seizure lowers the
  collateral at once (a liquidation's effect).

So the account is never rated on debt repaid for collateral it still shows, and a
liquidator's claim cannot be spent by the account (credit, withdrawals) before it
settles.

Invariants:
- Pure: the rows and the unsettled claims in, the rows with holds out; rows of other
  (account, chain, asset, side) are returned unchanged, in order.
- Conservative: b is the largest configured bonus; the vault pays the seized
  collateral's own bonus, which is at most that.
- A claim in a token no [[assets]] entry names holds nothing: it is returned apart, for
  the caller to name (a vault only lists debt tokens the protocol configured).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from aggregator.risk.book import MAX_AMOUNT, PositionRow
from chains.types import SeizeClaim

BPS = 10_000


def bonus_bps(bonuses: Iterable[float]) -> int:
    """The largest liquidation bonus as whole basis points, rounded up."""
    return max((math.ceil(b * BPS - 1e-9) for b in bonuses), default=0)


def hold_amount(repaid: int, bonus: int) -> int:
    """H = repaid x (1 + bonus bps), rounded up (raw units of the debt token)."""
    return min(MAX_AMOUNT, -(-repaid * (BPS + bonus) // BPS))


def with_holds(
    rows: Sequence[PositionRow],
    claims: Iterable[SeizeClaim],
    symbol_of: Mapping[tuple[str, str], str],
    bonus: int,
) -> tuple[list[PositionRow], list[SeizeClaim]]:
    """`rows` with every claim's hold added to the head of its (account, chain, asset)
    debt row (a row is added when the store has none, e.g. the claim repaid it all),
    and the claims whose token no asset names (held nowhere)."""
    held: dict[tuple[str, str, str], int] = {}
    spelled: dict[tuple[str, str, str], str] = {}
    unknown: list[SeizeClaim] = []
    for c in claims:
        symbol = symbol_of.get((c.chain, c.token.lower()))
        if symbol is None:
            unknown.append(c)
            continue
        key = (c.account.lower(), c.chain, symbol)
        held[key] = min(MAX_AMOUNT, held.get(key, 0) + hold_amount(c.amount, bonus))
        spelled.setdefault(key, c.account)
    if not held:
        return list(rows), unknown
    out: list[PositionRow] = []
    for r in rows:
        h = held.pop((r.account.lower(), r.chain, r.asset), 0) if r.side == "debt" else 0
        out.append(r._replace(head=min(MAX_AMOUNT, r.head + h)) if h else r)
    for key, h in held.items():
        out.append(PositionRow(spelled[key], key[1], key[2], "debt", h, 0))
    return out, unknown


__all__ = ["bonus_bps", "hold_amount", "with_holds"]
