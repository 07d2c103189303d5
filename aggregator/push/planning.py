"""Which accounts of the book need a push on one chain: pure, no I/O.

The ledger's figures (read through `LedgerView`) against what is on chain
(`OnchainArrays`) and what is in flight (the sender's open records):

- one vectorised pass finds the candidates; the per-account rules (`plan_chain` in
  controller.py) run only for those and for every account with an entry in flight
  (whose baseline is that entry, not what is on chain);
- the credit pushed is the share less the credit buffer (controller.py); the share
  itself is the ceiling above which on-chain credit is cut at once;
- a degraded account (a price not `ok`) never gets more credit than what is on chain
  now (after the vault's consumption);
- an account holding an asset without any price gets no push at all.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from aggregator.push.controller import (
    Desired,
    OnchainArrays,
    Planned,
    TriggerRules,
    buffered_credit,
    candidates,
    hf_fixed_array,
    plan_chain,
)
from aggregator.risk.view import LedgerView
from chains.registry_codec import RegistryEntry


def plan_accounts(
    ledger: LedgerView,
    chain: str,
    *,
    base: OnchainArrays,
    onchain: Mapping[str, RegistryEntry | None],
    chain_ts: int,
    inflight: dict[str, RegistryEntry],
    rules: TriggerRules,
) -> list[Planned]:
    """The trigger rules for every account of the book: one vectorised pass over the
    engine's arrays finds the accounts that may need a push (against what is on
    chain), the per-account rules (plan_chain) run for those and for every account
    with an entry in flight (whose baseline is that entry)."""
    n = ledger.n_accounts
    raw_hf = ledger.hf_array(n)
    # Portfolio and VaR health is equity / requirement: below 0 for an account with
    # negative equity (tier insolvent). The registry's HF is unsigned and 0 already
    # means "liquidate": push 0, not a failed cycle (NaN still fails: a real bug).
    hf = hf_fixed_array(np.maximum(raw_hf, 0.0))
    tier = ledger.tier_array(n).astype(np.int64)
    share = ledger.credit_array(chain, n).astype(np.int64)
    credit = buffered_credit(share, rules.credit_buffer)
    # Degraded prices: credit may go down, never up. What is on chain (after the
    # vault consumed some) is the ceiling, not the ledger's last value.
    cap = ledger.degraded_array(n) & base.present[:n]
    credit = np.where(cap, np.minimum(credit, base.credit[:n]), credit)
    has_debt = np.isfinite(raw_hf)
    idx = candidates(
        base, credit=credit, hf=hf, tier=tier, has_debt=has_debt, chain_ts=chain_ts, rules=rules
    )
    # An asset without any price counts as zero in these figures (a debt of it
    # would inflate HF and credit): push nothing for its holders; their entries
    # age and the vault fails closed.
    unpriced = ledger.unpriced_array(n)
    if unpriced.any():
        idx = idx[~unpriced[idx]]
    addresses = ledger.addresses
    picked = {addresses[i]: int(i) for i in idx.tolist()}
    index = ledger.account_index
    for a in inflight:
        i = index.get(a)
        if i is not None and i < n and not unpriced[i]:
            picked[a] = i
    desired = [
        Desired(a, int(credit[i]), int(hf[i]), int(tier[i]), bool(has_debt[i]), int(share[i]))
        for a, i in picked.items()
    ]
    baseline = {a: inflight.get(a, onchain.get(a)) for a in picked}
    empty = {a: onchain.get(a) is None for a in picked}
    return plan_chain(desired, baseline, chain_ts, rules, empty)
