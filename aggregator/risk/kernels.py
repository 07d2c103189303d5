"""The numba kernels of the standard cross-margin ledger (docs/risk.md).

They work on the sparse account x column pool (risk/pool.py): per account a segment
of (column, amount) pairs, per column the linear weights and non-linear parameters
that StandardModel.prepare derives from prices and volatilities.

Invariant: every kernel adds an account's positions through `position`, in segment
order, so the tick (every account at once), the per-account path (events,
explanations) and the model seam (StandardModel.evaluate) agree bit for bit.
"""

from __future__ import annotations

import os

# numba's OpenMP pool spins idle workers for a while after each parallel tick by
# default; on a box where another process wants the second core that stalled the next
# tick and every event behind it by a scheduler slice (~25 ms instead of ~2 ms at 100k
# accounts). Passive waiting costs microseconds per launch. Must be set before the
# OpenMP runtime starts, i.e. before the first parallel kernel runs.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
from numba import njit, prange

from aggregator.risk.impact import curve_impact


@njit(inline="always")
def concentration(c, q, v, nlp, crv, cix):  # noqa: PLR0917
    """The concentration term of amount q (value v) in column c: the price impact of
    selling q through the pools after the book's liquidations (sale curve rows
    crv[cix[c, 0]:][:cix[c, 1]], risk/impact.py), times `impact`; without a curve
    v * impact / depth_usd."""
    if cix[c, 1] > 0:
        pi = curve_impact(q, nlp[c, 6], crv, cix[c, 0], cix[c, 1], nlp[c, 0])
        return nlp[c, 1] * max(pi, 0.0)
    return v * nlp[c, 1]


@njit(inline="always")
def position(c, q, tab, nlp, crv, cix, c_liq, c_bor, d_val):  # noqa: PLR0917
    """Add one (column, amount) pair to an account's C_liq, C_borrow and debt.

    `tab` rows per column: linear weights (p*lt_eff, p*ltv_eff, debt price) and the
    amount up to which that column is linear. A depth-set or pool-priced column is
    linear until the concentration term pushes 1 - h below the lt cap: below that
    amount its lt_eff is the cap itself, above it the exact formula runs (`nlp`: price,
    impact/depth or impact, vol term, lt, ltv, lt - ltv, units the book liquidates
    first). The branch is almost never taken, so it costs a compare. Every kernel adds
    positions through this one function, in segment order, so all paths agree bit for
    bit.
    """
    if q <= tab[c, 3]:
        c_liq += tab[c, 0] * q
        c_bor += tab[c, 1] * q
        d_val += tab[c, 2] * q
    else:
        v = q * nlp[c, 0]
        h = concentration(c, q, v, nlp, crv, cix) + nlp[c, 2]
        lte = max(min(1.0 - h, nlp[c, 3]), 0.0)
        lve = max(min(lte - nlp[c, 5], nlp[c, 4]), 0.0)
        c_liq += v * lte
        c_bor += v * lve
    return c_liq, c_bor, d_val


@njit(inline="always")
def account_sums(s0, cnt, pc, pv, tab, nlp, crv, cix):  # noqa: PLR0917
    """C_liq, C_borrow, debt and collateral value of one account's pool segment."""
    c_liq = 0.0
    c_bor = 0.0
    d_val = 0.0
    for i in range(s0, s0 + cnt):
        c_liq, c_bor, d_val = position(pc[i], pv[i], tab, nlp, crv, cix, c_liq, c_bor, d_val)
    return c_liq, c_bor, d_val, account_value(s0, cnt, pc, pv, nlp)


@njit(inline="always")
def account_value(s0, cnt, pc, pv, nlp):
    """Collateral value of one account: the v_tot of account_sums, same order."""
    v_tot = 0.0
    for i in range(s0, s0 + cnt):
        v_tot += pv[i] * nlp[pc[i], 0]
    return v_tot


@njit(inline="always")
def tick_finish(  # noqa: PLR0917
    a, s0, k, c_liq, c_bor, d_val, pc, pv, nlp, held, bad_bits, warn_hf, hf, bp, tier,
    degraded,
):  # fmt: skip
    h = c_liq / d_val if d_val > 0.0 else np.inf
    hf[a] = h
    bp[a] = max(c_bor - d_val, 0.0)
    t = (h < warn_hf) + (h < 1.0)
    if h < 1.0:
        t += account_value(s0, k, pc, pv, nlp) < d_val
    tier[a] = t
    degraded[a] = bad_bits != 0 and (held[a] & bad_bits) != 0


@njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def tick_kernel(  # noqa: PLR0917
    start, cnt, pc, pv, held, n, tab, nlp, crv, cix, bad_bits, warn_hf, hf, bp, tier,
    degraded,
):  # fmt: skip
    """Every account at once: HF, BP, tier and degraded.

    Accounts go in pairs, their positions interleaved: each account's sums are a chain
    of dependent additions, and two independent chains keep the CPU busy while one
    waits (~1.3x on one core). Each account still adds its own positions in segment
    order, so the results equal the one-account path bit for bit.
    Only what every account needs is written (18 bytes an account) to keep the
    memory traffic of the tick down. An account with HF < 1 also gets its collateral
    value (second walk over its segment, still in cache: insolvency) and its C_liq
    and debt (for its liquidation plan); those are the only writes to liq_*.
    """
    for p in prange((n + 1) // 2):
        a = 2 * p
        b = a + 1
        sa, ka = start[a], cnt[a]
        sb, kb = (start[b], cnt[b]) if b < n else (sa, 0)
        m = min(ka, kb)
        la, ba, da = 0.0, 0.0, 0.0
        lb, bb, db = 0.0, 0.0, 0.0
        for j in range(m):
            la, ba, da = position(pc[sa + j], pv[sa + j], tab, nlp, crv, cix, la, ba, da)
            lb, bb, db = position(pc[sb + j], pv[sb + j], tab, nlp, crv, cix, lb, bb, db)
        for j in range(m, ka):
            la, ba, da = position(pc[sa + j], pv[sa + j], tab, nlp, crv, cix, la, ba, da)
        for j in range(m, kb):
            lb, bb, db = position(pc[sb + j], pv[sb + j], tab, nlp, crv, cix, lb, bb, db)
        tick_finish(
            a, sa, ka, la, ba, da, pc, pv, nlp, held, bad_bits, warn_hf, hf, bp, tier,
            degraded,
        )  # fmt: skip
        if b < n:
            tick_finish(
                b, sb, kb, lb, bb, db, pc, pv, nlp, held, bad_bits, warn_hf, hf, bp, tier,
                degraded,
            )  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy")
def accounts_kernel(  # noqa: PLR0917
    start, cnt, pc, pv, held, acc, tab, nlp, crv, cix, bad_bits, warn_hf,
    vtot, dval, cliq, cbor, hf, bp, tier, degraded,
):  # fmt: skip
    """The same per-account sums for the accounts `acc` (an event, an explanation, the
    HF < 1 accounts of a tick), with every total and the full tier. Same operations in
    the same order as tick_kernel, so both agree bit for bit."""
    for i in range(acc.size):
        a = acc[i]
        c_liq, c_bor, d_val, v_tot = account_sums(start[a], cnt[a], pc, pv, tab, nlp, crv, cix)
        h = c_liq / d_val if d_val > 0.0 else np.inf
        vtot[i] = v_tot
        dval[i] = d_val
        cliq[i] = c_liq
        cbor[i] = c_bor
        hf[i] = h
        bp[i] = max(c_bor - d_val, 0.0)
        # insolvent implies HF < 1 implies HF < warn (lt_eff <= 1): tier is a count.
        tier[i] = (h < warn_hf) + (h < 1.0) + (v_tot < d_val)
        degraded[i] = bad_bits != 0 and (held[a] & bad_bits) != 0


@njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def totals_kernel(  # noqa: PLR0917
    start, cnt, pc, pv, held, n, tab, nlp, crv, cix, bad_bits, warn_hf,
    vtot, dval, cliq, hf, bp, tier, degraded, mult, mmult,
):  # fmt: skip
    """accounts_kernel for every account 0..n-1, in parallel, into fresh arrays (a
    what-if: risk/whatif.py), with each account's reputation multipliers `mult[a]`
    (borrowing) and `mmult[a]` (maintenance) (`personal_sums`). Same per-account
    operations in the same order, so its figures equal the tick's and the one-account
    path's bit for bit."""
    for a in prange(n):
        c_liq, c_bor, d_val, v_tot = account_sums(start[a], cnt[a], pc, pv, tab, nlp, crv, cix)
        c_liq, c_bor = personal_sums(c_liq, c_bor, v_tot, mult[a], mmult[a])
        h = c_liq / d_val if d_val > 0.0 else np.inf
        vtot[a] = v_tot
        dval[a] = d_val
        cliq[a] = c_liq
        hf[a] = h
        bp[a] = max(c_bor - d_val, 0.0)
        tier[a] = (h < warn_hf) + (h < 1.0) + (v_tot < d_val)
        degraded[a] = bad_bits != 0 and (held[a] & bad_bits) != 0


@njit(cache=True, nogil=True)
def freeze_kernel(r_account, r_chain, r_side, r_asset, r_amount, nr, down, n_accounts, n_assets):  # noqa: PLR0917
    """A what-if's down chains (risk/whatif.py `freeze`): which rows are frozen collateral
    (on a down chain, amount > 0), the accounts holding any (sorted), and their
    collateral summed over the chains still up, row by row in row order (the order the
    book's own sums take)."""
    frozen = np.zeros(nr, np.bool_)
    hit = np.zeros(n_accounts, np.bool_)
    for r in range(nr):
        if r_side[r] == 0 and down[r_chain[r]] and r_amount[r] > 0.0:
            frozen[r] = True
            hit[r_account[r]] = True
    pos = np.full(n_accounts, -1, np.int64)
    k = 0
    for a in range(n_accounts):
        if hit[a]:
            pos[a] = k
            k += 1
    accounts = np.empty(k, np.int64)
    for a in range(n_accounts):
        if hit[a]:
            accounts[pos[a]] = a
    coll = np.zeros((k, n_assets))
    for r in range(nr):
        i = pos[r_account[r]]
        if i >= 0 and r_side[r] == 0 and not frozen[r]:
            coll[i, r_asset[r]] += r_amount[r]
    return frozen, accounts, coll


@njit(cache=True, nogil=True)
def refill_kernel(start, cnt, pc, pv, acc, coll, col_asset, ncoll):  # noqa: PLR0917
    """Write accounts `acc`'s collateral amounts `coll` (one row each, by asset) into
    their pool pairs `pv` (a copy): same pairs, same order, new amounts."""
    for i in range(acc.size):
        a = acc[i]
        for j in range(start[a], start[a] + cnt[a]):
            c = pc[j]
            if c < ncoll:
                pv[j] = coll[i, col_asset[c]]


@njit(cache=True, nogil=True)
def book_sums_kernel(r_account, r_chain, r_asset, r_side, r_amount, n, n_chains, coll, debt):  # noqa: PLR0917
    """The book's dense sums (book.py `rebuild_sums`) into zeroed `coll` and `debt`
    (accounts x assets): one pass over the rows per chain, so each cell adds its
    chains in chain order (0.0 + x0 + x1 + ..., as `set` and `_resum` add them)."""
    for c in range(n_chains):
        for i in range(n):
            if r_chain[i] == c:
                if r_side[i] == 0:
                    coll[r_account[i], r_asset[i]] += r_amount[i]
                elif r_side[i] == 1:
                    debt[r_account[i], r_asset[i]] += r_amount[i]


@njit(cache=True, nogil=True)
def chain_unit_sums_kernel(r_chain, r_side, r_asset, r_amount, n, n_chains, n_assets):  # noqa: PLR0917
    """Amounts of rows [0, n) summed per (chain, side, asset) slot
    ((chain * 2 + side) * n_assets + asset), in row order from 0.0: bit for bit
    np.bincount(slot, weights=r_amount[:n]) (which adds the same way), in one pass
    without the slot array and its temporaries (view.py `chain_values_usd`)."""
    out = np.zeros(n_chains * 2 * n_assets)
    for i in range(n):
        slot = (np.int64(r_chain[i]) * 2 + np.int64(r_side[i])) * n_assets + np.int64(r_asset[i])
        out[slot] += r_amount[i]
    return out


@njit(inline="always")
def account_mode(coll, debt, a, gbits):
    """(e-mode group, held-asset bits) of account `a` (`StandardModel.rows`): the first
    group holding every asset it owes, -1 without debt or without such a group."""
    dbits = 0
    hbits = 0
    for t in range(coll.shape[1]):
        if debt[a, t] > 0:
            dbits |= 1 << t
        if coll[a, t] > 0 or debt[a, t] > 0:
            hbits |= 1 << t
    if dbits != 0:
        for g in range(gbits.size):
            if (dbits & ~gbits[g]) == 0:
                return g, hbits
    return -1, hbits


@njit(cache=True, nogil=True)
def layout_kernel(  # noqa: PLR0917
    coll, debt, n, gbits, member, col_asset, col_group, ncoll, ncols,
    a_start, a_cnt, a_cap, grp, held, pc, pv, end, slack_from, slack,
):  # fmt: skip
    """A bulk load's pool layout (standard.py `StandardModel.layout`): for each of the
    first `n` accounts its e-mode group, held-asset bits and occupied (column, amount)
    pairs in column order, laid back to back from `end`, exactly as `StandardModel.rows`
    then `Pool.place` lay out a fresh pool (an account without pairs keeps start and
    capacity 0; accounts from `slack_from` on get `slack` spare slots, up to `ncols`,
    as `place` gives a small batch). Returns the new end of the pool."""
    pos = end
    for a in range(n):
        g, hbits = account_mode(coll, debt, a, gbits)
        cnt = 0
        for j in range(ncols):
            # A member's collateral in its e-mode column, any other in its standard
            # one, debt in the debt columns.
            if j >= ncoll:
                v = debt[a, j - ncoll]
            elif col_group[j] < 0:
                v = 0.0 if (g >= 0 and member[g, col_asset[j]]) else coll[a, col_asset[j]]
            else:
                v = coll[a, col_asset[j]] if col_group[j] == g else 0.0
            if v != 0.0:
                pc[pos + cnt] = j
                pv[pos + cnt] = v
                cnt += 1
        if cnt:
            cap = min(cnt + slack, ncols) if a >= slack_from else cnt
            a_start[a] = pos
            a_cap[a] = cap
            pos += cap
        a_cnt[a] = cnt
        grp[a] = g
        held[a] = hbits
    return pos


@njit(inline="always")
def better(rr, value, c, t, best_r, best_v, best_c, best_t):  # noqa: PLR0917
    """Whether candidate (repay rr, holding value, chain c, asset t) beats the best so
    far: smaller repay, then larger holding on that chain, then lower chain, asset."""
    if best_c < 0:
        return True
    if rr != best_r:
        return rr < best_r
    if value != best_v:
        return value > best_v
    if c != best_c:
        return c < best_c
    return t < best_t


@njit(inline="always")
def personal_sums(c_liq, c_bor, v_tot, m, mm):
    """An account's C_liq and C_borrow under reputation multipliers m (borrowing) and mm
    (maintenance, >= 1) (risk/reputation.py, the numba paths' one copy of
    `personalise`'s rule): mm > 1 scales the liquidation haircut, m scales the borrowing
    one, never past C_liq'. m == mm == 1 returns the sums themselves (bit for bit)."""
    if m == 1.0 and mm == 1.0:
        return c_liq, c_bor
    cl = v_tot - mm * (v_tot - c_liq) if mm > 1.0 else c_liq
    return cl, min(v_tot - m * (v_tot - c_bor), cl)


@njit(cache=True, nogil=True)
def personal_rows(v_tot, c_liq, c_bor, m, mm):
    """`personal_sums` row by row (risk/reputation.py `personalise`, the per-account
    path): the same operations in the same order as the tick and what-if kernels, so
    every path applies the one rule and agrees bit for bit."""
    n = v_tot.size
    cl = np.empty(n)
    cb = np.empty(n)
    for i in range(n):
        cl[i], cb[i] = personal_sums(c_liq[i], c_bor[i], v_tot[i], m[i], mm[i])
    return cl, cb


@njit(inline="always")
def personal_lt(lte, m):
    """The lt_eff of a holding under maintenance multiplier m (risk/reputation.py:
    C_liq' = V - mm (V - C_liq) summed per holding is v (1 - mm (1 - lt_eff)) for
    mm > 1; callers pass the maintenance multipliers, and m <= 1 never touches the
    liquidation side), so a plan restores the pushed HF."""
    if m <= 1.0:
        return lte
    return 1.0 - m * (1.0 - lte)


@njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def plan_kernel(  # noqa: PLR0917
    la, grp, debt, cliq, cf, rows, lengths, r_side, r_amount, r_asset, r_chain, conc,
    price, bonus, vol_tab, lt_tab, target, repay, chain, asset, mult,
):  # fmt: skip
    """Liquidation plan of each HF < 1 account i (`la` gives their count; its book rows
    grouped in `rows`, `lengths[i]` each; conc[i, t] its concentration terms; mult[i]
    its maintenance reputation multiplier, `cliq` already personalised with it): the feasible
    (chain, asset) with the smallest repay,
    ties to the larger holding on that chain, then the lower chain, then asset.
    Returns whether a partial plan was found per account (else: full)."""
    found = np.zeros(la.size, np.bool_)
    first = np.cumsum(lengths) - lengths
    # Each account's rows are random reads into the book: latency-bound, so it pays
    # to spread them over the threads.
    for i in prange(la.size):
        j0 = first[i]
        g = grp[i] + 1
        d = debt[i]
        num = target * d - cliq[i]
        best_r = np.inf
        best_v = 0.0
        best_c = -1
        best_t = -1
        for j in range(j0, j0 + lengths[i]):
            r = rows[j]
            if r_side[r] != 0 or r_amount[r] <= 0.0:
                continue
            t = r_asset[r]
            c = r_chain[r]
            lte = 1.0 - (vol_tab[g, t] + conc[i, t])
            lte = personal_lt(min(max(lte, 0.0), lt_tab[g, t]), mult[i])
            b = bonus[t]
            den = target - (1.0 + b) * lte
            if not den > 0.0:
                continue
            rr = num / den
            value = r_amount[r] * price[t]
            if not (rr <= cf[i] * d and rr <= value / (1.0 + b)):
                continue
            if not better(rr, value, c, t, best_r, best_v, best_c, best_t):
                continue
            best_r, best_v, best_c, best_t = rr, value, c, t
        if best_c >= 0:
            found[i] = True
            repay[i] = best_r
            chain[i] = best_c
            asset[i] = best_t
    return found
