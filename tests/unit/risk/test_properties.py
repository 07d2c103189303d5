"""Monotonicity invariants, where they hold, and counterexamples where DESIGN.md's
formulas break them (see docs/risk.md "Known limits")."""

from __future__ import annotations

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from aggregator.config import AssetConfig
from aggregator.risk import PositionRow, PriceInput, RiskEngine

from .helpers import ADDRS, CHAINS, DECIMALS, SYMBOLS, apply_market, engine, market, position_rows

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EPS = 1e-9


def _book(rows: list[PositionRow], m: dict, depth: bool) -> RiskEngine:
    eng = engine(depth=m["depth"] if depth else None)
    apply_market(eng, m)
    eng.load_positions(rows)
    eng.recompute()
    return eng


def _current(eng: RiskEngine, acct: str, chain: str, sym: str, side: str) -> tuple[int, int]:
    a = eng.book.find_account(acct)
    if a is None:
        return 0, 0
    c, t = eng.book.chain_index[chain], eng.book.asset_index[sym]
    r = eng.book.lookup(eng.book.key(a, c, t, 0 if side == "collateral" else 1))
    return eng.book.exact(r) if r >= 0 else (0, 0)


def _leq(after: float, before: float) -> bool:
    return after <= before + EPS * max(abs(before), abs(after), 1e-300)


@SETTINGS
@given(
    rows=position_rows(n_accounts=2),
    m=market(),
    chain=st.sampled_from(CHAINS),
    sym=st.sampled_from(SYMBOLS),
    units=st.integers(1, 10**6),
)
def test_adding_collateral_never_lowers_hf_or_bp_without_depth(
    rows: list, m: dict, chain: str, sym: str, units: int
) -> None:
    eng = _book(rows, m, depth=False)
    acct = ADDRS[0]
    eng._idx(acct, create=True)
    eng.recompute()
    before = eng.health(acct)
    head, conf = _current(eng, acct, chain, sym, "collateral")
    add = units * 10 ** DECIMALS[sym] // 1000
    eng.apply_position(PositionRow(acct, chain, sym, "collateral", head + add, conf + add))
    after = eng.health(acct)
    assert _leq(before.hf, after.hf)
    assert _leq(before.bp, after.bp)


@SETTINGS
@given(
    rows=position_rows(n_accounts=2),
    m=market(),
    chain=st.sampled_from(CHAINS),
    sym=st.sampled_from(SYMBOLS),
    units=st.integers(1, 10**6),
    depth=st.booleans(),
)
def test_adding_debt_never_raises_hf_or_bp_unless_it_enters_emode(  # noqa: PLR0917
    rows: list, m: dict, chain: str, sym: str, units: int, depth: bool
) -> None:
    eng = _book(rows, m, depth=depth)
    acct = ADDRS[0]
    a = eng._idx(acct, create=True)
    eng.recompute()
    before = eng.health(acct)
    grp_before = int(eng.r_grp[a])
    head, conf = _current(eng, acct, chain, sym, "debt")
    add = units * 10 ** DECIMALS[sym] // 1000
    eng.apply_position(PositionRow(acct, chain, sym, "debt", head + add, conf + add))
    after = eng.health(acct)
    # From no debt into e-mode raises BP by design (tested below); otherwise monotone.
    assume(int(eng.r_grp[a]) == grp_before or grp_before >= 0)
    assert _leq(after.hf, before.hf)
    assert _leq(after.bp, before.bp)


@SETTINGS
@given(
    rows=position_rows(n_accounts=3),
    m=market(),
    sym=st.sampled_from(SYMBOLS),
    up=st.floats(1.0, 10.0),
)
def test_higher_debt_price_never_raises_hf_unless_also_collateral(
    rows: list, m: dict, sym: str, up: float
) -> None:
    eng = _book(rows, m, depth=True)
    before = {acct: eng.health(acct).hf for acct in eng.book.account_index}
    t = eng.book.asset_index[sym]
    eng.set_prices({sym: PriceInput(float(eng.price[t]) * up)})
    eng.recompute()
    for acct, hf in before.items():
        a = eng.book.account_index[acct]
        if eng.book.coll[a, t] > 0 or eng.book.debt[a, t] == 0:
            continue
        assert _leq(eng.health(acct).hf, hf)


def _weth(depth: float | None) -> RiskEngine:
    eng = RiskEngine(
        ["ethereum"],
        [
            AssetConfig(symbol="USDC", decimals=6, ltv=0.8, lt=0.85),
            AssetConfig(symbol="WETH", decimals=18, ltv=0.80, lt=0.83, depth_usd=depth),
        ],
    )
    eng.set_prices({"USDC": PriceInput(1.0), "WETH": PriceInput(3000.0)})
    eng.set_volatility({"USDC": 0.0, "WETH": 0.03})
    return eng


def test_counterexample_more_collateral_lowers_hf_with_depth() -> None:
    """DESIGN's concentration term: V * (1 - h_vol - V/depth) peaks, then falls."""
    acct = ADDRS[5]
    eng = _weth(depth=1_000_000.0)
    eng.apply_position(
        PositionRow(acct, "ethereum", "USDC", "debt", 100_000 * 10**6, 100_000 * 10**6)
    )
    eng.apply_position(
        PositionRow(acct, "ethereum", "WETH", "collateral", 200 * 10**18, 200 * 10**18)
    )
    low = eng.explain(acct, now=0)
    more = 700_000 * 10**18 // 3000
    eng.apply_position(PositionRow(acct, "ethereum", "WETH", "collateral", more, more))
    high = eng.explain(acct, now=0)
    assert round(low["assets"]["WETH"]["collateral"]["lt_eff"], 6) == 0.3301
    assert round(low["c_liq_usd"], 6) == 198_060.0
    assert round(high["assets"]["WETH"]["collateral"]["lt_eff"], 6) == 0.2301
    assert round(high["c_liq_usd"], 3) == 161_070.0
    assert high["hf"] < low["hf"]
    assert high["borrowing_power_usd"] <= low["borrowing_power_usd"]
    # Without depth the same change raises C_liq, as the invariant wants.
    plain = _weth(depth=None)
    plain.apply_position(
        PositionRow(acct, "ethereum", "WETH", "collateral", 200 * 10**18, 200 * 10**18)
    )
    c1 = plain.health(acct).c_liq
    plain.apply_position(PositionRow(acct, "ethereum", "WETH", "collateral", more, more))
    assert plain.health(acct).c_liq > c1


def test_first_group_debt_enters_emode_and_raises_bp() -> None:
    eng = engine()
    eng.set_prices(
        {s: PriceInput(p) for s, p in zip(SYMBOLS, [1, 1, 60000, 3000, 3500, 3300], strict=True)}
    )
    eng.set_volatility({s: 0.03 for s in SYMBOLS}, {"eth": {"wstETH": 0.002, "rETH": 0.002}})
    acct = ADDRS[7]
    eng.apply_position(PositionRow(acct, "base", "wstETH", "collateral", 10**19, 10**19))
    before = eng.health(acct)
    eng.apply_position(PositionRow(acct, "ethereum", "WETH", "debt", 10**18, 10**18))
    after = eng.explain(acct, now=0)
    assert after["mode"] == "emode" and after["group"] == "eth"
    assert after["borrowing_power_usd"] > before.bp  # standard 0.70 cap -> group 0.90 cap
    # A non-group borrow leaves e-mode again and BP drops below both.
    eng.apply_position(PositionRow(acct, "ethereum", "USDC", "debt", 10**9, 10**9))
    assert eng.health(acct).bp < before.bp


def test_higher_price_of_debt_asset_held_as_collateral_can_raise_hf() -> None:
    eng = engine()
    eng.set_prices({s: PriceInput(1.0) for s in SYMBOLS})
    eng.set_prices({"WETH": PriceInput(3000.0)})
    eng.set_volatility({s: 0.01 for s in SYMBOLS})
    acct = ADDRS[8]
    eng.apply_position(PositionRow(acct, "base", "WETH", "collateral", 10 * 10**18, 10 * 10**18))
    eng.apply_position(PositionRow(acct, "base", "USDC", "debt", 20_000 * 10**6, 20_000 * 10**6))
    eng.apply_position(PositionRow(acct, "base", "WETH", "debt", 10**18, 10**18))
    hf0 = eng.health(acct).hf
    eng.set_prices({"WETH": PriceInput(3300.0)})
    eng.recompute()
    assert eng.health(acct).hf > hf0
