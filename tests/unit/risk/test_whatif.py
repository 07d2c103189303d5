"""The what-if (risk/whatif.py) against the scalar reference (tests/unit/risk/reference.py,
plain loops from the formulas) on shocked inputs, its properties on random books, the
stale feeds of a down chain, liquidation sizing and volume, other models, and the live
ledger left untouched."""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.risk import LedgerView, PositionRow, PriceInput, RiskEngine
from aggregator.risk.book import PositionBook
from aggregator.risk.liquidation import PLAN_FULL, PLAN_PARTIAL
from aggregator.risk.market import MarketData
from aggregator.risk.model import MarginResult, health
from aggregator.risk.whatif import (
    AssetFeeds,
    DepthLiquidity,
    FeedSource,
    ShockSet,
    Universe,
    WhatIf,
    WhatIfError,
    feed_status,
    volume,
    whatif,
)
from chains.units import TIERS
from oracles.types import PriceStatus

from .helpers import (
    ADDRS,
    CHAINS,
    SYMBOLS,
    UNIVERSE,
    apply_market,
    engine,
    market,
    position_rows,
    ref_inputs,
    rows_by_account,
)
from .reference import RefInputs, account_risk
from .test_properties import SETTINGS

UNDERLYING = {"wstETH": "WETH", "rETH": "WETH"}
E18 = 10**18
BONUS = {s: b for s, _, _, _, b in UNIVERSE}


def run(
    eng: RiskEngine,
    shocks: ShockSet,
    feeds: dict[str, AssetFeeds] | None = None,
    models: dict[str, Any] | None = None,
) -> WhatIf:
    return whatif(
        LedgerView(eng).snapshot(), shocks, Universe(CHAINS, UNDERLYING, feeds or {}), models
    )


@st.composite
def shock_sets(draw: st.DrawFn, chains: bool = True) -> ShockSet:
    syms = draw(st.lists(st.sampled_from(SYMBOLS), unique=True, max_size=3))
    lsts = draw(st.lists(st.sampled_from(["wstETH", "rETH"]), unique=True))
    down = draw(st.lists(st.sampled_from(CHAINS), unique=True, max_size=2)) if chains else []
    return ShockSet(
        price={s: draw(st.floats(-1.0, 1.0)) for s in syms},
        depeg={s: draw(st.floats(-0.5, 0.1)) for s in lsts},
        vol=draw(st.floats(-0.9, 2.0)),
        chains_down=tuple(down),
    )


def shocked_inputs(eng: RiskEngine, m: dict, shocks: ShockSet) -> RefInputs:
    """The reference's inputs with the shock applied by hand: each price times (1 + its
    shock, else its underlying's) x (1 + de-peg), every sigma times (1 + vol)."""
    inp = ref_inputs(eng, m)
    price = {}
    for s, p in inp.price.items():
        r = shocks.price.get(s)
        if r is None and s in UNDERLYING:
            r = shocks.price.get(UNDERLYING[s])
        price[s] = p * (1 + (r or 0.0)) * (1 + shocks.depeg.get(s, 0.0))
    k = 1 + shocks.vol
    inp.price = price
    inp.sigma = {s: v * k for s, v in inp.sigma.items()}
    inp.rel_sigma = {g: {s: v * k for s, v in d.items()} for g, d in inp.rel_sigma.items()}
    return inp


def close(a: float, b: float, scale: float) -> bool:
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= 1e-9 * max(abs(scale), 1e-300)


def up_rows(arows: list, down: tuple[str, ...]) -> list:
    return [r for r in arows if not (r[2] == "collateral" and r[0] in down)]


def expected_seize(
    inp: RefInputs, rows: list, ref: Any, eng: RiskEngine
) -> tuple[float, dict[str, float]]:
    """(repay, seize per chain) from the formulas: a partial plan seizes repay x (1 +
    bonus) of its holding; a full one seizes f of every holding, f = min(1, D / sum(v /
    (1 + b))), and repays min(D, sum(v / (1 + b)))."""
    kind, repay, chain, asset = ref.plan
    if kind == "partial":
        return repay, {chain: repay * (1 + BONUS[asset])}
    dec = {a.symbol: a.decimals for a in eng.asset_cfgs}
    held: dict[tuple[str, str], float] = {}
    for c, t, side, head, conf in rows:
        if side == "collateral":
            q = min(head, conf) / 10 ** dec[t]
            held[(c, t)] = held.get((c, t), 0.0) + q * inp.price[t]
    held = {k: v for k, v in held.items() if v > 0}
    cover = sum(v / (1 + BONUS[t]) for (_c, t), v in held.items())
    f = min(1.0, ref.debt / cover) if cover > 0 else 0.0
    by_chain: dict[str, float] = {}
    for (c, _t), v in held.items():
        by_chain[c] = by_chain.get(c, 0.0) + f * v
    return min(ref.debt, cover), {c: v for c, v in by_chain.items() if v > 0}


@SETTINGS
@given(rows=position_rows(), m=market(), shocks=shock_sets())
def test_shocked_figures_match_the_scalar_reference(rows: list, m: dict, shocks: ShockSet) -> None:
    eng = engine(depth=m["depth"])
    apply_market(eng, m)
    eng.load_positions(rows)
    eng.recompute()
    res = run(eng, shocks)
    o = res.outcomes["standard"]
    inp = shocked_inputs(eng, m, shocks)
    liq = o.liquidations
    seized = liq.seize_usd()
    for acct, arows in rows_by_account(rows).items():
        a = eng.book.find_account(acct)
        assert a is not None
        kept = up_rows(arows, shocks.chains_down)
        ref = account_risk(inp, kept)
        assert close(res.standard.vtot[a], ref.vtot, ref.vtot), (acct, ref)
        assert close(res.standard.debt[a], ref.debt, ref.debt)
        assert close(o.hf_after[a], ref.hf, ref.hf), (acct, o.hf_after[a], ref)
        assert close(o.bad_debt[a], max(0.0, ref.debt - ref.vtot), max(ref.debt, ref.vtot))
        assert bool(res.standard.degraded[a]) == ref.degraded
        near = (
            abs(ref.hf - 1) < 1e-9
            or abs(ref.hf - eng.risk_cfg.warn_hf) < 1e-9
            or abs(ref.vtot - ref.debt) <= 1e-9 * max(ref.vtot, ref.debt)
        )
        if near:
            continue
        assert TIERS[int(o.tier_after[a])] == ref.tier, (acct, ref)
        pos = np.flatnonzero(liq.accounts == a)
        if ref.hf >= 1:
            assert pos.size == 0
            continue
        assert pos.size == 1
        if ref.plan_margin <= 1e-7 or abs(ref.hf - eng.risk_cfg.full_close_hf) < 1e-9:
            continue
        p = int(pos[0])
        assert {1: "partial", 2: "full"}[int(liq.kind[p])] == ref.plan[0], (liq, ref.plan)
        repay, by_chain = expected_seize(inp, kept, ref, eng)
        assert close(liq.repay[p], repay, repay)
        assert close(seized[p], sum(by_chain.values()), repay)
        mine = liq.s_pos == p
        got: dict[str, float] = {}
        for c, u in zip(liq.s_chain[mine].tolist(), liq.s_usd[mine].tolist(), strict=True):
            got[CHAINS[c]] = got.get(CHAINS[c], 0.0) + u
        assert set(got) <= set(by_chain) | {c for c, v in got.items() if v == 0}
        for c, v in by_chain.items():
            assert close(got.get(c, 0.0), v, repay), (got, by_chain)
        assert not set(got) & set(shocks.chains_down)


@st.composite
def near_books(draw: st.DrawFn) -> list[PositionRow]:
    """Accounts a little above HF 1 with collateral on two chains: a down-shock makes
    most of them liquidatable with a feasible partial plan (random books rarely do)."""
    rows = []
    for i in range(draw(st.integers(1, 6))):
        acct = ADDRS[i]
        c1, c2 = draw(st.lists(st.sampled_from(CHAINS), min_size=2, max_size=2, unique=True))
        w = draw(st.integers(1, 50))
        u = draw(st.integers(0, 100_000))
        rows.append(PositionRow(acct, c1, "WETH", "collateral", w * E18, w * E18))
        if u:
            rows.append(PositionRow(acct, c2, "WBTC", "collateral", u * 10**4, u * 10**4))
        value = w * 3000 + u * 60_000 / 10**4
        debt = int(value * 0.8 / draw(st.floats(1.0, 1.4)) * 10**6)
        rows.append(PositionRow(acct, draw(st.sampled_from(CHAINS)), "USDC", "debt", debt, debt))
    return rows


NEAR_MARKET = {
    "prices": {
        s: PriceInput(float(p), "ok")
        for s, p in {"USDC": 1, "DAI": 1, "WBTC": 60_000, "WETH": 3000, "wstETH": 3400,
                     "rETH": 3300}.items()
    },
    "later": {},
    "sigma": {s: 0.02 for s in SYMBOLS},
    "rel": {"eth": {"wstETH": 0.005, "rETH": 0.006}, "usd": {"DAI": 0.001}},
    "depth": {"WETH": 1e8},
}  # fmt: skip


@SETTINGS
@given(
    rows=near_books(),
    shocks=st.builds(
        ShockSet,
        price=st.fixed_dictionaries({"WETH": st.floats(-0.4, 0.0), "WBTC": st.floats(-0.4, 0.0)}),
        vol=st.floats(0.0, 1.0),
        chains_down=st.lists(st.sampled_from(CHAINS), max_size=1).map(tuple),
    ),
)
def test_partial_plans_match_the_scalar_reference(rows: list, shocks: ShockSet) -> None:
    test_shocked_figures_match_the_scalar_reference.hypothesis.inner_test(  # type: ignore[attr-defined]
        rows, NEAR_MARKET, shocks
    )


# -- properties ------------------------------------------------------------------------
def book(rows: list, m: dict, depth: bool = True) -> RiskEngine:
    eng = engine(depth=m["depth"] if depth else None)
    apply_market(eng, m)
    eng.load_positions(rows)
    eng.recompute()
    return eng


@SETTINGS
@given(rows=position_rows(), m=market())
def test_zero_shock_changes_nothing(rows: list, m: dict) -> None:
    eng = book(rows, m)
    res = run(eng, ShockSet())
    o = res.outcomes["standard"]
    n = eng.book.n_accounts
    # Bit for bit the stored figures of the last tick (standard mode).
    assert np.array_equal(o.hf_after, eng.r_hf[:n])
    assert np.array_equal(o.hf_before, eng.r_hf[:n])
    assert np.array_equal(o.tier_after, eng.r_tier[:n])
    assert np.array_equal(o.tier_before, o.tier_after)
    assert np.array_equal(res.standard.bp, eng.r_bp[:n])
    assert np.array_equal(res.standard.degraded, eng.r_degraded[:n])
    assert o.newly_liquidatable().size == 0
    assert np.array_equal(res.prices.after, eng.market.price)


@SETTINGS
@given(
    rows=position_rows(),
    m=market(),
    sym=st.sampled_from(SYMBOLS),
    small=st.floats(-1.0, 0.0),
    extra=st.floats(0.0, 1.0),
)
def test_a_larger_down_shock_never_improves_hf(
    rows: list, m: dict, sym: str, small: float, extra: float
) -> None:
    """Without depth (docs/risk.md "Known limits": past its peak a concentrated
    holding's contribution rises as its value falls), for accounts that owe neither the
    shocked asset nor an LST that follows it."""
    big = max(-1.0, small - extra)
    eng = book(rows, m, depth=False)
    a = run(eng, ShockSet(price={sym: small})).outcomes["standard"]
    b = run(eng, ShockSet(price={sym: big})).outcomes["standard"]
    follows = {sym} | {s for s, u in UNDERLYING.items() if u == sym}
    owes = np.zeros(eng.book.n_accounts, bool)
    for s in follows:
        owes |= eng.book.debt[: eng.book.n_accounts, eng.book.asset_index[s]] > 0
    ok = ~owes
    assert (b.hf_after[ok] <= a.hf_after[ok]).all()
    assert (b.hf_after[ok] <= a.hf_before[ok]).all()
    assert (b.tier_after[ok] >= a.tier_after[ok]).all()


@SETTINGS
@given(
    rows=position_rows(),
    m=market(),
    chains=st.lists(st.sampled_from(CHAINS), min_size=1, unique=True),
)
def test_a_frozen_chain_never_raises_borrowing_power(rows: list, m: dict, chains: list) -> None:
    """Without depth (removing collateral can raise BP past a concentration peak)."""
    eng = book(rows, m, depth=False)
    up = run(eng, ShockSet()).standard
    down = run(eng, ShockSet(chains_down=tuple(chains))).standard
    assert (down.bp <= up.bp).all()
    assert (down.vtot <= up.vtot).all()
    assert np.array_equal(down.debt, up.debt)


def snapshot_of(eng: RiskEngine) -> dict[str, Any]:
    n = eng.book.n_accounts
    p, b, mk = eng.pool, eng.book, eng.market
    return {
        "hf": eng.r_hf.copy(), "bp": eng.r_bp.copy(), "tier": eng.r_tier.copy(),
        "degraded": eng.r_degraded.copy(), "credit": eng.credit.copy(),
        "pc": p.pc.copy(), "pv": p.pv.copy(), "start": p.a_start.copy(), "cnt": p.a_cnt.copy(),
        "held": p.held.copy(), "grp": p.grp.copy(), "coll": b.coll[:n].copy(),
        "debt": b.debt[:n].copy(), "amount": b.r_amount[: b.n].copy(),
        "price": mk.price.copy(), "sigma_tab": mk.sigma_tab.copy(), "bad": mk.bad.copy(),
        "status": list(mk.status), "health": [eng.health(x) for x in b.account_address],
    }  # fmt: skip


def assert_unchanged(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Every snapshot_of field equal bit for bit (NaN equal to NaN), naming the first not."""
    for k, v in before.items():
        if isinstance(v, np.ndarray):
            assert np.array_equal(v, after[k], equal_nan=True), k
        else:
            assert v == after[k], k


@SETTINGS
@given(rows=position_rows(), m=market(), shocks=shock_sets())
def test_the_live_ledger_is_unchanged(rows: list, m: dict, shocks: ShockSet) -> None:
    eng = book(rows, m)
    eng.allocate_credit(now=0.0)
    before = snapshot_of(eng)
    feeds = {s: AssetFeeds((FeedSource("f", "chainlink", "base", 1.0),), 1, 0.02) for s in SYMBOLS}
    run(eng, shocks, feeds)
    assert_unchanged(before, snapshot_of(eng))
    assert eng.market.vol_scale == 1.0


@SETTINGS
@given(rows=position_rows(), m=market(), shocks=shock_sets())
def test_a_frozen_snapshot_answers_as_the_live_one_and_ignores_later_writes(
    rows: list, m: dict, shocks: ShockSet
) -> None:
    """`LedgerSnapshot.frozen` (the API's what-if off the event loop): the same figures
    as the live snapshot bit for bit, and a ledger write after it does not reach them."""
    eng = book(rows, m)
    universe = Universe(CHAINS, UNDERLYING, {})
    live = LedgerView(eng).snapshot()
    frozen = live.frozen()
    assert frozen.book.coll is not live.book.coll and frozen.pool.pv is not live.pool.pv
    assert frozen.market.price is not live.market.price
    expect = whatif(live, shocks, universe).standard
    # The ledger writes: every price halves, one account's collateral goes.
    eng.set_prices({s: PriceInput(p.value / 2, "ok") for s, p in m["prices"].items()})
    if eng.book.n_accounts:
        first = eng.book.account_address[0]
        eng.load_positions([PositionRow(first, "ethereum", "WETH", "collateral", 0, 0)])
    eng.recompute()
    got = whatif(frozen, shocks, universe).standard
    for k in ("vtot", "debt", "cliq", "hf", "bp", "tier", "degraded"):
        assert np.array_equal(getattr(expect, k), getattr(got, k), equal_nan=True), k


class _RowsModel:
    """A margin model through the seam that reads a book's rows (what the portfolio and
    VaR models read: `rows_with_lengths`, counted amounts, sides, assets): equity is
    collateral minus debt at the market's prices, the requirement half the debt. Its
    shocked evaluation (the second call) waits on the test when `hold` is given (it
    runs in a worker thread) while the ledger writes."""

    name = "rows"

    def __init__(self, hold: tuple[threading.Event, threading.Event] | None = None) -> None:
        self.hold = hold
        self.calls = 0

    def evaluate(self, book: Any, market: MarketData, accounts: Any, now: Any = None) -> Any:
        self.calls += 1
        if self.hold is not None and self.calls == 2:
            entered, release = self.hold
            entered.set()
            assert release.wait(60.0)
        rows, lengths = book.rows_with_lengths(accounts)
        pos = np.repeat(np.arange(accounts.size), lengths)
        usd = book.r_amount[rows] * market.price[book.r_asset[rows]]
        debt = np.bincount(pos, weights=np.where(book.r_side[rows] == 1, usd, 0.0),
                           minlength=accounts.size)  # fmt: skip
        coll = np.bincount(pos, weights=np.where(book.r_side[rows] == 0, usd, 0.0),
                           minlength=accounts.size)  # fmt: skip
        hf, bp, tier = health(coll - debt, 0.5 * debt, 1.0, 1.05)
        return MarginResult.of(accounts, equity_usd=coll - debt, requirement_usd=0.5 * debt,
                               hf=hf, bp=bp, tier=tier)  # fmt: skip


def _outcomes_equal(a: WhatIf, b: WhatIf) -> None:
    for k in ("vtot", "debt", "cliq", "hf", "bp", "tier", "degraded", "grp"):
        assert np.array_equal(getattr(a.standard, k), getattr(b.standard, k), equal_nan=True), k
    assert a.outcomes.keys() == b.outcomes.keys()
    for name, x in a.outcomes.items():
        y = b.outcomes[name]
        for k in ("hf_before", "tier_before", "hf_after", "tier_after", "bad_debt"):
            assert np.array_equal(getattr(x, k), getattr(y, k), equal_nan=True), (name, k)
        for k in ("accounts", "kind", "repay", "s_pos", "s_chain", "s_asset", "s_usd"):
            got, want = getattr(x.liquidations, k), getattr(y.liquidations, k)
            assert np.array_equal(got, want, equal_nan=True), (name, k)


@SETTINGS
@given(rows=position_rows(), m=market(), shocks=shock_sets(), extra=position_rows(40))
def test_ledger_writes_while_the_frozen_whatif_runs_do_not_reach_it(
    rows: list, m: dict, shocks: ShockSet, extra: list
) -> None:
    """The API's what-if on `LedgerSnapshot.frozen`, computing in a worker thread (held
    in a model's evaluation) while the ledger writes: amounts of existing rows, new rows
    and new accounts (the arrays grow), every price halved, a recompute. Its answer is
    bit for bit the one computed before any write; the snapshot shares the row ids with
    the live book (not copied) and refuses writes of its own."""
    eng = book(rows, m)
    universe = Universe(CHAINS, UNDERLYING, {})
    live = LedgerView(eng).snapshot()
    entered, release = threading.Event(), threading.Event()
    expect = whatif(live.frozen(), shocks, universe, {"rows": _RowsModel()})
    frozen = live.frozen()
    n, n_rows = eng.book.n_accounts, eng.book.n
    assert frozen.book.n_accounts == n and frozen.book.n == n_rows
    if n_rows:
        assert np.shares_memory(frozen.book.r_account, eng.book.r_account)
        assert not np.shares_memory(frozen.book.r_amount, eng.book.r_amount)
    # Its sums, summed again from its own rows, are the live book's bit for bit.
    every = np.arange(n, dtype=np.int64)
    live_coll, live_debt = eng.book.coll[:n], eng.book.debt[:n]
    assert np.array_equal(frozen.book.coll, live_coll)
    assert np.array_equal(frozen.book.debt, live_debt)
    assert np.array_equal(frozen.book.collateral_of(every), live_coll)
    assert np.array_equal(frozen.book.debt_held(every), live_debt > 0)
    some = every[::2]
    assert np.array_equal(frozen.book.collateral_of(some), eng.book.collateral_of(some))
    with pytest.raises(TypeError, match="read-only"):
        frozen.book.set(PositionRow(ADDRS[0], "ethereum", "WETH", "collateral", 1, 1))
    held = _RowsModel((entered, release))
    out: dict[str, WhatIf] = {}
    worker = threading.Thread(
        target=lambda: out.update(got=whatif(frozen, shocks, universe, {"rows": held}))
    )
    worker.start()
    try:
        assert entered.wait(60.0)
        eng.set_prices({s: PriceInput(p.value / 2, "ok") for s, p in m["prices"].items()})
        if n:
            first = eng.book.account_address[0]
            eng.load_positions([PositionRow(first, "ethereum", "WETH", "collateral", 0, 0)])
        eng.load_positions([r._replace(head=r.head * 3 + 1) for r in extra])
        eng.recompute()
    finally:
        release.set()
        worker.join(60.0)
    assert frozen.book.n_accounts == n and frozen.book.n == n_rows
    assert not expect.unavailable and set(expect.outcomes) == {"standard", "rows"}
    _outcomes_equal(out["got"], expect)


@SETTINGS
@given(rows=position_rows(), m=market(), shocks=shock_sets())
def test_the_frozen_whatif_leaves_the_live_ledger_bit_identical(
    rows: list, m: dict, shocks: ShockSet
) -> None:
    """Frozen (partly shared with the live book), a what-if with a model through the
    seam leaves every live array, figure and health as it was, bit for bit."""
    eng = book(rows, m)
    eng.allocate_credit(now=0.0)
    before = snapshot_of(eng)
    ids = [eng.book.r_account[: eng.book.n].copy(), eng.book.r_side[: eng.book.n].copy()]
    live = LedgerView(eng).snapshot()
    res = whatif(live.frozen(), shocks, Universe(CHAINS, UNDERLYING, {}), {"m": _RowsModel()})
    assert not res.unavailable
    assert_unchanged(before, snapshot_of(eng))
    assert np.array_equal(ids[0], eng.book.r_account[: eng.book.n])
    assert np.array_equal(ids[1], eng.book.r_side[: eng.book.n])


# -- fixed examples -------------------------------------------------------------------
def two_accounts() -> RiskEngine:
    eng = engine(depth={"WETH": 1e6})
    a, b = ADDRS[0], ADDRS[1]
    eng.load_positions(
        [
            PositionRow(a, "ethereum", "WETH", "collateral", 10 * E18, 10 * E18),
            PositionRow(a, "arbitrum", "WETH", "collateral", 5 * E18, 5 * E18),
            PositionRow(a, "base", "USDC", "debt", 30_000 * 10**6, 30_000 * 10**6),
            PositionRow(b, "ethereum", "wstETH", "collateral", 10 * E18, 10 * E18),
            PositionRow(b, "base", "rETH", "collateral", 1 * E18, 1 * E18),
            PositionRow(b, "ethereum", "WETH", "debt", 7 * E18, 7 * E18),
        ]
    )
    prices = {"USDC": 1, "DAI": 1, "WBTC": 60_000, "WETH": 3000, "wstETH": 3400, "rETH": 3300}
    eng.set_prices({s: PriceInput(float(p), "ok") for s, p in prices.items()})
    eng.set_volatility({s: 0.02 for s in SYMBOLS}, {"eth": {"wstETH": 0.005, "rETH": 0.006}})
    eng.recompute()
    return eng


def test_worked_example_chain_down_and_shock() -> None:
    """Account A: 15 WETH (10 on ethereum, 5 on arbitrum), 30,000 USDC debt. WETH -30%
    and ethereum down: 5 WETH at 2,100 = 10,500 of collateral against 30,000 of debt:
    insolvent, bad debt 19,500; the full liquidation seizes all 10,500 on arbitrum and
    repays 10,500 / 1.05 = 10,000."""
    eng = two_accounts()
    res = run(eng, ShockSet(price={"WETH": -0.3}, chains_down=("ethereum",)))
    o = res.outcomes["standard"]
    a = eng.book.find_account(ADDRS[0])
    assert res.standard.vtot[a] == pytest.approx(10_500)
    assert TIERS[int(o.tier_after[a])] == "insolvent"
    assert o.bad_debt[a] == pytest.approx(19_500)
    liq = o.liquidations
    p = int(np.flatnonzero(liq.accounts == a)[0])
    assert liq.kind[p] == 2 and liq.repay[p] == pytest.approx(10_000)
    mine = liq.s_pos == p
    assert [CHAINS[c] for c in liq.s_chain[mine]] == ["arbitrum"]
    assert liq.s_usd[mine].sum() == pytest.approx(10_500)
    rows = volume(liq, SYMBOLS, CHAINS, DepthLiquidity({"WETH": 1e6}, 1.0, 0.05))
    weth = next(r for r in rows if (r.asset, r.chain) == ("WETH", "arbitrum"))
    assert weth.impact == pytest.approx(10_500 / 1e6)
    assert weth.sellable_usd == pytest.approx(50_000)
    assert sum(r.seize_usd for r in rows) == pytest.approx(liq.s_usd.sum())


def test_depeg_moves_with_the_underlying_and_on_top() -> None:
    eng = two_accounts()
    res = run(eng, ShockSet(price={"WETH": -0.1}, depeg={"wstETH": -0.05}))
    t = eng.book.asset_index
    assert res.prices.after[t["WETH"]] == pytest.approx(2700)
    assert res.prices.after[t["wstETH"]] == pytest.approx(3400 * 0.9 * 0.95)
    assert res.prices.after[t["rETH"]] == pytest.approx(3300 * 0.9)
    own = run(eng, ShockSet(price={"WETH": -0.1, "rETH": 0.0}))
    assert own.prices.after[t["rETH"]] == pytest.approx(3300)


def test_vol_shift_scales_every_sigma() -> None:
    eng = two_accounts()
    res = run(eng, ShockSet(vol=0.5))
    assert np.allclose(res.market.sigma_tab, eng.market.sigma_tab * 1.5)
    assert res.market.vol_scale == 1.5
    a = eng.book.find_account(ADDRS[0])
    assert res.outcomes["standard"].hf_after[a] <= res.outcomes["standard"].hf_before[a]


# -- stale feeds of a down chain ------------------------------------------------------------
def feeds(*sources: tuple[str, str | None], quorum: int = 2, rate: str | None = None) -> AssetFeeds:
    return AssetFeeds(
        tuple(FeedSource(n, "chainlink" if c else "http", c, 100.0) for n, c in sources),
        quorum, 0.02, rate,
    )  # fmt: skip


def test_feed_status_follows_the_oracle_quorum() -> None:
    f = feeds(("cl-eth", "ethereum"), ("cl-base", "base"), ("cb", None))
    assert feed_status("X", f, frozenset({"arbitrum"})) is None
    assert feed_status("X", f, frozenset({"ethereum"}))[0] is PriceStatus.OK  # type: ignore[index]
    status, reason = feed_status("X", f, frozenset({"ethereum", "base"}))  # type: ignore[misc]
    assert status is PriceStatus.UNAVAILABLE
    assert "stale: chain base, ethereum down" in reason
    lst = feeds(("cl-eth", "ethereum"), ("cl-base", "base"), rate="arbitrum")
    status, reason = feed_status("L", lst, frozenset({"arbitrum"}))  # type: ignore[misc]
    assert status is PriceStatus.DISPUTED and "rate leg" in reason


def test_an_asset_losing_its_quorum_keeps_its_price_and_degrades_holders() -> None:
    eng = two_accounts()
    f = {"rETH": feeds(("cl-base", "base"), ("cl-arb", "arbitrum"))}
    res = run(eng, ShockSet(price={"WETH": -0.2}, chains_down=("base",)), f)
    t = eng.book.asset_index["rETH"]
    assert res.prices.status_after[t] is PriceStatus.UNAVAILABLE
    assert res.prices.after[t] == 3300.0  # the last ok price: the move is invisible
    assert res.prices.after[eng.book.asset_index["wstETH"]] == pytest.approx(3400 * 0.8)
    b = eng.book.find_account(ADDRS[1])
    # B's rETH is on base (frozen), but B still owes WETH... held assets: wstETH, WETH.
    assert not res.standard.degraded[b]
    f2 = {"WETH": feeds(("cl-base", "base"), ("cl-arb", "arbitrum"))}
    res2 = run(eng, ShockSet(chains_down=("base",)), f2)
    assert res2.standard.degraded[b] and res2.standard.degraded[eng.book.find_account(ADDRS[0])]


# -- bad shock sets ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("shocks", "field", "status"),
    [
        (ShockSet(price={"DOGE": -0.1}), "shocks.DOGE", 404),
        (ShockSet(price={"WETH": -1.5}), "shocks.WETH", 400),
        (ShockSet(price={"WETH": math.nan}), "shocks.WETH", 400),
        (ShockSet(depeg={"WETH": -0.1}), "depegs.WETH", 404),
        (ShockSet(depeg={"rETH": -2}), "depegs.rETH", 400),
        (ShockSet(vol=-1.0), "vol", 400),
        (ShockSet(chains_down=("base", "zeta")), "chains_down[1]", 404),
    ],
)
def test_bad_shock_sets_name_the_field(shocks: ShockSet, field: str, status: int) -> None:
    eng = two_accounts()
    with pytest.raises(WhatIfError) as err:
        run(eng, shocks)
    assert err.value.field == field and err.value.status == status


def test_a_fall_of_exactly_100_percent_is_allowed() -> None:
    eng = two_accounts()
    res = run(eng, ShockSet(price={"WETH": -1.0}))
    assert res.prices.after[eng.book.asset_index["WETH"]] == 0.0


# -- another model ------------------------------------------------------------------------------
class HalfRows:
    """A model reading the book's rows (as the portfolio model does): half the
    collateral value must cover the debt."""

    name = "half"

    def __init__(self, warn_hf: float) -> None:
        self.warn_hf = warn_hf

    def evaluate(
        self, book: PositionBook, market: MarketData, accounts: np.ndarray, now: float | None = None
    ) -> MarginResult:
        rows, lengths = book.rows_with_lengths(accounts)
        acc = np.repeat(np.arange(accounts.size), lengths)
        usd = book.r_amount[rows] * market.price[book.r_asset[rows]]
        coll = np.bincount(acc, usd * (book.r_side[rows] == 0), minlength=accounts.size)
        debt = np.bincount(acc, usd * (book.r_side[rows] == 1), minlength=accounts.size)
        with np.errstate(divide="ignore", invalid="ignore"):
            hf = np.where(debt > 0, 0.5 * coll / np.where(debt > 0, debt, 1.0), np.inf)
        tier = (hf < self.warn_hf).astype(np.int8) + (hf < 1.0) + (coll < debt)
        return MarginResult.of(
            accounts, equity_usd=coll - debt, requirement_usd=debt, hf=hf,
            bp=np.maximum(0.5 * coll - debt, 0.0), tier=tier,
        )  # fmt: skip


class Broken:
    name = "broken"

    def evaluate(self, *_: Any, **__: Any) -> MarginResult:
        raise RuntimeError("no calibration loaded yet")


def test_other_models_see_frozen_collateral_and_plan_on_their_own_figures() -> None:
    eng = two_accounts()
    models = {"half": HalfRows(eng.risk_cfg.warn_hf), "broken": Broken()}
    res = run(eng, ShockSet(chains_down=("ethereum",)), models=models)
    assert res.unavailable == {"broken": "no calibration loaded yet"}
    o = res.outcomes["half"]
    a = eng.book.find_account(ADDRS[0])
    # A: 45,000 of collateral before; 15,000 (5 WETH on arbitrum) with ethereum down.
    assert o.hf_before[a] == pytest.approx(0.5 * 45_000 / 30_000)
    assert o.hf_after[a] == pytest.approx(0.5 * 15_000 / 30_000)
    liq = o.liquidations
    p = int(np.flatnonzero(liq.accounts == a)[0])
    # No chain holds both A's debt (base) and collateral: no candidate, a full
    # liquidation seizing pro rata: repay min(30,000, 15,000 / 1.05).
    assert liq.kind[p] == PLAN_FULL
    assert liq.repay[p] == pytest.approx(15_000 / 1.05)
    assert liq.s_usd[liq.s_pos == p].sum() == pytest.approx(15_000)
    assert o.bad_debt[a] == pytest.approx(15_000)


def test_another_models_partial_plan_matches_its_closed_form() -> None:
    """HalfRows: HF = 0.5 C / D. 10 WETH and 14,000 USDC of debt on ethereum, WETH -10%:
    C = 27,000, HF 0.964 (close factor 0.5). The plan repays R from the USDC row and
    seizes 1.05 R of WETH: 0.5 (C - 1.05 R) / (D - R) = 1.05 at
    R = (1.05 D - 0.5 C) / (1.05 - 0.525) = 2,285.71..., under the cap 7,000."""
    eng = engine(depth={"WETH": 1e6})
    eng.load_positions([
        PositionRow(ADDRS[0], "ethereum", "WETH", "collateral", 10 * E18, 10 * E18),
        PositionRow(ADDRS[0], "ethereum", "USDC", "debt", 14_000 * 10**6, 14_000 * 10**6),
    ])  # fmt: skip
    apply_market_min(eng)
    prices = {"USDC": 1, "DAI": 1, "WBTC": 60_000, "WETH": 3000, "wstETH": 3400, "rETH": 3300}
    eng.set_prices({s: PriceInput(float(p), "ok") for s, p in prices.items()})
    eng.recompute()
    res = run(eng, ShockSet(price={"WETH": -0.1}), models={"half": HalfRows(1.2)})
    liq = res.outcomes["half"].liquidations
    assert liq.accounts.tolist() == [eng.book.find_account(ADDRS[0])]
    r = (1.05 * 14_000 - 0.5 * 27_000) / (1.05 - 0.525)
    assert liq.kind[0] == PLAN_PARTIAL
    assert liq.repay[0] == pytest.approx(r, rel=1e-7)
    assert liq.s_usd.tolist() == pytest.approx([r * 1.05], rel=1e-7)
    assert (liq.s_chain.tolist(), liq.s_asset.tolist()) == ([0], [SYMBOLS.index("WETH")])


def test_empty_book() -> None:
    eng = engine()
    apply_market_min(eng)
    res = run(eng, ShockSet(price={"WETH": -0.5}, chains_down=("base",)))
    assert res.outcomes["standard"].hf_after.size == 0


def apply_market_min(eng: RiskEngine) -> None:
    eng.set_prices({s: PriceInput(1.0, "ok") for s in SYMBOLS})
    eng.set_volatility({s: 0.01 for s in SYMBOLS})
    eng.recompute()


def test_portfolio_and_var_models_through_the_seam() -> None:
    """The real portfolio model over the book with alpha's collateral frozen, and the VaR
    model without a calibration reported as unavailable."""
    from aggregator.risk.portfolio_model import PortfolioModel
    from aggregator.risk.var_model import VarModel

    from .test_model_seam import USER, config, ready

    cfg = config()
    eng = ready(cfg)
    models = {"portfolio": PortfolioModel(cfg), "var": VarModel(cfg)}
    snap = LedgerView(eng).snapshot()
    res = whatif(
        snap, ShockSet(chains_down=("alpha",)), Universe(["alpha", "beta"], {}, {}), models
    )
    assert "no calibration" in res.unavailable["var"]
    o = res.outcomes["portfolio"]
    a = eng.book.find_account(USER)
    assert TIERS[int(o.tier_before[a])] != "insolvent"
    # USER's only collateral (10 WETH) is on alpha: 20,000 USDC of debt against nothing.
    assert TIERS[int(o.tier_after[a])] == "insolvent"
    assert o.bad_debt[a] == pytest.approx(20_000)
    liq = o.liquidations
    p = int(np.flatnonzero(liq.accounts == a)[0])
    assert liq.repay[p] == 0.0 and liq.s_usd[liq.s_pos == p].sum() == 0.0
