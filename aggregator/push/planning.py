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
- an account holding an asset without any price gets no push at all;
- the common cases of a price move (with an entry on chain or in flight: a worse tier,
  on-chain credit above the share, an HF moved by clearly more than `hf_deviation`)
  are classified over arrays (`_by_arrays`); every other account goes through
  `plan_entry`, and the result is the
  same list, entry for entry, as `plan_chain` over every account
  (tests/unit/push/test_push_vectorised.py). For 10,000 changed accounts this is
  ~0.1 s less of the event loop per chain and price move (docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from aggregator.push.controller import (
    TRIGGER,
    URGENT,
    Desired,
    OnchainArrays,
    Planned,
    TriggerRules,
    buffered_credit,
    candidates,
    cut_weight,
    default_limit,
    hf_fixed_array,
    margin_lost,
    plan_chain,
    plan_order,
)
from aggregator.risk.view import LedgerView
from chains.registry_codec import HF_INFINITE, RegistryEntry

_INT64_MAX = 2**63 - 1
# A relative HF move within this of hf_deviation is left to plan_entry's exact integer
# arithmetic (float64 of a 64-bit HF and the division are off by < 4e-16 relative).
_CLEARLY = 1e-12


def plan_accounts(
    ledger: LedgerView,
    chain: str,
    *,
    base: OnchainArrays,
    onchain: Mapping[str, RegistryEntry | None],
    chain_ts: int,
    inflight: dict[str, RegistryEntry],
    rules: TriggerRules,
    limit: int | None = None,
) -> list[Planned]:
    """The trigger rules for every account of the book: one vectorised pass over the
    engine's arrays finds the accounts that may need a push (against what is on
    chain), the per-account rules (plan_chain) run for those and for every account
    with an entry in flight (whose baseline is that entry). `limit`: the latest asOf
    a block mined now takes as fresh (controller.as_of_limit; None: default_limit)."""
    limit = default_limit(chain_ts, limit)
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
    sel = np.fromiter(picked.values(), np.int64, len(picked))
    names = list(picked)
    fast, planned = _by_arrays(
        names,
        sel,
        base=base,
        inflight=inflight,
        desired=(credit, hf, tier, share),
        chain_ts=chain_ts,
        rules=rules,
        limit=limit,
    )
    slow = np.flatnonzero(~fast)
    desired = [
        Desired(
            names[k],
            int(credit[sel[k]]),
            int(hf[sel[k]]),
            int(tier[sel[k]]),
            bool(has_debt[sel[k]]),
            int(share[sel[k]]),
        )
        for k in slow.tolist()
    ]
    baseline = {d.account: inflight.get(d.account, onchain.get(d.account)) for d in desired}
    empty = {d.account: onchain.get(d.account) is None for d in desired}
    planned += plan_chain(desired, baseline, chain_ts, rules, empty, limit=limit)
    planned.sort(key=plan_order)
    return planned


def _by_arrays(
    names: list[str],
    sel: NDArray[np.int64],
    *,
    base: OnchainArrays,
    inflight: Mapping[str, RegistryEntry],
    desired: tuple[NDArray[np.int64], NDArray[np.uint64], NDArray[np.int64], NDArray[np.int64]],
    chain_ts: int,
    rules: TriggerRules,
    limit: int,
) -> tuple[NDArray[np.bool_], list[Planned]]:
    """The accounts of `sel` whose plan_entry result is decided over arrays, and those
    entries: with a baseline (in flight, else on chain), a worse tier (`tier_down`),
    else on-chain credit above the share (`credit_cut`), else an HF that moved by
    clearly more than hf_deviation, or between finite and infinite, or from 0 (`hf`,
    checked before a tier upgrade in plan_entry too). Integer comparisons, except the
    HF move, which is left to plan_entry within _CLEARLY of the threshold. An account
    whose next asOf would be ahead of the chain's clock is left to plan_entry (which
    holds it back: controller.next_as_of)."""
    present = base.present[sel].copy()
    b_credit = base.credit[sel].copy()
    b_hf = base.hf[sel].copy()
    b_tier = base.tier[sel].copy()
    b_as_of = base.as_of[sel].copy()
    exact = b_credit < _INT64_MAX  # saturated: the true on-chain credit is not known here
    for k, a in enumerate(names):
        e = inflight.get(a)
        if e is None:
            continue
        present[k] = True
        exact[k] = e.credit_usd6 < _INT64_MAX
        b_credit[k] = min(e.credit_usd6, _INT64_MAX)
        b_hf[k], b_tier[k], b_as_of[k] = e.hf_1e9, e.tier, e.as_of
    credit, hf, tier, share = desired  # (credit pushed, HF, tier, share) per book account
    c, h, t, ceiling = credit[sel], hf[sel], tier[sel], share[sel]
    inf = np.uint64(HF_INFINITE)
    diff = np.where(h > b_hf, h - b_hf, b_hf - h).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = diff / b_hf.astype(np.float64)
    moved = (h != b_hf) & (
        (h == inf) | (b_hf == inf) | (b_hf == 0) | (rel >= rules.hf_deviation * (1 + _CLEARLY))
    )
    ahead = b_as_of + 1 > limit
    known = present & exact & ~ahead
    down = known & (t > b_tier)
    cut = known & ~down & (b_credit > ceiling)
    fell = known & ~down & ~cut & moved
    fast = down | cut | fell
    ks = np.flatnonzero(fast)
    if ks.size == 0:
        return fast, []
    reason = np.where(down, 0, np.where(cut, 1, 2))[ks].tolist()
    new_slot = ~base.present[sel]
    as_of = np.where(chain_ts > b_as_of, max(1, chain_ts), b_as_of + 1)
    out: list[Planned] = []
    for k, r, ck, hk, ak, tk, ns, bc, bh, bt in zip(
        ks.tolist(),
        reason,
        c[ks].tolist(),
        h[ks].tolist(),
        as_of[ks].tolist(),
        t[ks].tolist(),
        new_slot[ks].tolist(),
        b_credit[ks].tolist(),
        b_hf[ks].tolist(),
        b_tier[ks].tolist(),
        strict=True,
    ):
        entry = RegistryEntry(ck, hk, ak, tk)
        # The weights as plan_entry computes them (Python floats of exact integers).
        lost = margin_lost(bh, hk)
        if r == 0:
            p = Planned(names[k], entry, URGENT, "tier_down", ns, float(tk - bt), lost)
        elif r == 1:
            p = Planned(names[k], entry, URGENT, "credit_cut", ns, cut_weight(bc, ck), lost)
        else:
            p = Planned(names[k], entry, TRIGGER, "hf", ns, lost)
        out.append(p)
    return fast, out
