"""Behaviour and failure modes of the ledger: finality, degraded prices, bad input,
exact amounts, event isolation, explanations, credit details."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from aggregator.config import AppConfig, AssetConfig, ChainConfig, CreditConfig
from aggregator.risk import BookError, MissingInput, PositionRow, PriceInput, RiskEngine
from aggregator.risk import book as book_mod

from .helpers import ADDRS, CHAINS, SYMBOLS, engine

A, B = ADDRS[0], ADDRS[1]
PRICES = dict(zip(SYMBOLS, [1.0, 1.0, 60_000.0, 3_000.0, 3_500.0, 3_300.0], strict=True))


def ready(eng: RiskEngine | None = None) -> RiskEngine:
    eng = eng or engine()
    eng.set_prices({s: PriceInput(p) for s, p in PRICES.items()})
    eng.set_volatility({s: 0.02 for s in SYMBOLS})
    return eng


def row(  # noqa: PLR0917
    acct: str, chain: str, sym: str, side: str, head: int, conf: int | None = None
) -> PositionRow:
    return PositionRow(acct, chain, sym, side, head, head if conf is None else conf)  # type: ignore[arg-type]


E18 = 10**18


# -- asymmetric finality ----------------------------------------------------------
def test_unconfirmed_deposit_does_not_count_but_withdrawal_does_at_once() -> None:
    eng = ready()
    eng.apply_position(row(A, "base", "WETH", "collateral", 10 * E18, 0))
    assert eng.health(A).collateral_usd == 0.0
    eng.apply_position(row(A, "base", "WETH", "collateral", 10 * E18, 10 * E18))
    assert eng.health(A).collateral_usd == 30_000.0
    # Withdrawal of 4 seen at head, not yet confirmed: counts immediately.
    eng.apply_position(row(A, "base", "WETH", "collateral", 6 * E18, 10 * E18))
    assert eng.health(A).collateral_usd == 18_000.0


def test_borrow_counts_at_head_and_repayment_only_when_confirmed() -> None:
    eng = ready()
    eng.apply_position(row(A, "base", "USDC", "debt", 5_000 * 10**6, 0))
    assert eng.health(A).debt_usd == 5_000.0
    eng.apply_position(row(A, "base", "USDC", "debt", 1_000 * 10**6, 5_000 * 10**6))
    assert eng.health(A).debt_usd == 5_000.0
    eng.apply_position(row(A, "base", "USDC", "debt", 1_000 * 10**6, 1_000 * 10**6))
    assert eng.health(A).debt_usd == 1_000.0


# -- prices that are not ok -------------------------------------------------------
def test_non_ok_price_keeps_last_good_value_and_credit_cannot_rise() -> None:
    eng = ready(engine(credit=CreditConfig(policy="static")))
    eng.apply_position(row(A, "ethereum", "WETH", "collateral", 10 * E18))
    eng.apply_position(row(A, "ethereum", "USDC", "debt", 10_000 * 10**6))
    eng.recompute()
    eng.allocate_credit(now=0)
    first = eng.credit_of(A)
    eng.set_prices({"WETH": PriceInput(9_999.0, "disputed", sources={"feed": 9_999.0})})
    eng.recompute()
    h = eng.health(A)
    assert h.degraded and h.collateral_usd == 30_000.0  # last ok price, not the disputed one
    # More collateral while degraded: BP goes up, credit may not.
    eng.apply_position(row(A, "ethereum", "WETH", "collateral", 20 * E18))
    eng.allocate_credit(now=0)
    assert eng.health(A).bp > h.bp
    assert eng.credit_of(A) == first
    ex = eng.explain(A, now=0)
    assert ex["degraded_assets"] == ["WETH"]
    assert ex["assets"]["WETH"]["price"]["sources"] == {"feed": 9_999.0}
    assert ex["assets"]["WETH"]["price"]["valued_at"] == "last ok price"
    assert all(c["capped_by_previous"] for c in ex["credit"]["chains"].values())
    # Less BP while degraded: credit goes down at once.
    eng.apply_position(row(A, "ethereum", "USDC", "debt", 45_000 * 10**6))
    eng.allocate_credit(now=0)
    lower = eng.credit_of(A)
    assert all(lower[c] < first[c] for c in CHAINS)
    # Prices recover (higher): credit may rise again.
    eng.set_prices({"WETH": PriceInput(3_300.0)})
    eng.recompute()
    eng.allocate_credit(now=0)
    assert not eng.health(A).degraded
    assert sum(eng.credit_of(A).values()) > sum(lower.values())


def test_capped_price_values_positions_but_credit_cannot_rise() -> None:
    """An LST whose growth cap failed its guard is `capped`: its new value prices the
    account (a broken cap must not leave it at a stale, lower value) while credit may
    go down but never up."""
    eng = ready(engine(credit=CreditConfig(policy="static")))
    eng.apply_position(row(A, "ethereum", "wstETH", "collateral", 10 * E18))
    eng.apply_position(row(A, "ethereum", "USDC", "debt", 10_000 * 10**6))
    eng.recompute()
    eng.allocate_credit(now=0)
    first = eng.credit_of(A)
    reason = "cap guard: cap_below_rate: ..."
    eng.set_prices({"wstETH": PriceInput(3_600.0, "capped", reason=reason)})
    eng.recompute()
    h = eng.health(A)
    assert h.degraded and h.collateral_usd == 36_000.0  # the capped round's value counts
    eng.allocate_credit(now=0)
    assert eng.credit_of(A) == first  # more BP, but credit may not rise
    price = eng.explain(A, now=0)["assets"]["wstETH"]["price"]
    assert price["status"] == "capped" and price["reason"] == reason
    assert price["valued_at"].startswith("current: lower of market median and live")
    eng.apply_position(row(A, "ethereum", "USDC", "debt", 30_000 * 10**6))
    eng.allocate_credit(now=0)
    assert all(eng.credit_of(A)[c] < first[c] for c in CHAINS)


def test_asset_never_priced_is_worth_zero_and_degrades() -> None:
    eng = engine()
    eng.set_prices({s: PriceInput(p) for s, p in PRICES.items() if s != "rETH"})
    eng.set_volatility({s: 0.02 for s in SYMBOLS})
    eng.apply_position(row(A, "base", "rETH", "collateral", 10 * E18))
    eng.apply_position(row(A, "base", "WETH", "collateral", E18))
    eng.recompute()
    eng.allocate_credit(now=0)
    h = eng.health(A)
    assert h.degraded and h.collateral_usd == 3_000.0
    assert sum(eng.credit_of(A).values()) == 0  # no previous credit: none now
    assert eng.explain(A, now=0)["assets"]["rETH"]["price"]["used_usd"] is None


def test_unavailable_price_without_value_is_accepted() -> None:
    eng = ready()
    eng.set_prices({"DAI": PriceInput(None, "unavailable")})
    eng.apply_position(row(A, "base", "DAI", "collateral", 10 * E18))
    assert eng.health(A).degraded and eng.health(A).collateral_usd == 10.0


# -- missing and bad input --------------------------------------------------------
def test_missing_volatility_is_an_error_naming_the_assets() -> None:
    eng = engine()
    eng.set_prices({s: PriceInput(p) for s, p in PRICES.items()})
    eng.set_volatility({s: 0.02 for s in SYMBOLS if s not in ("WBTC", "rETH")})
    eng.apply_position(row(A, "base", "WETH", "collateral", E18))  # book still updates
    with pytest.raises(MissingInput, match="WBTC, rETH"):
        eng.recompute()
    with pytest.raises(MissingInput):
        eng.explain(A)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (PositionRow("0x1234", "base", "WETH", "collateral", 1, 1), "not a 0x-prefixed"),
        (PositionRow(A, "solana", "WETH", "collateral", 1, 1), "unknown chain 'solana'"),
        (PositionRow(A, "base", "DOGE", "collateral", 1, 1), "unknown asset 'DOGE'"),
        (PositionRow(A, "base", "WETH", "supply", 1, 1), "side must be"),  # type: ignore[arg-type]
        (PositionRow(A, "base", "WETH", "collateral", -1, 1), "head -1 is outside"),
        (PositionRow(A, "base", "WETH", "debt", 1, 2**256), "confirmed .* is outside"),
        (PositionRow(A, "base", "WETH", "collateral", 1.5, 1), "head must be an int"),  # type: ignore[arg-type]
        (PositionRow(A, "base", "WETH", "collateral", True, 1), "head must be an int"),
    ],
)
def test_bad_position_rows_are_rejected_with_names(bad: PositionRow, match: str) -> None:
    eng = ready()
    with pytest.raises(BookError, match=match):
        eng.apply_position(bad)
    with pytest.raises(BookError, match=match):
        eng.load_positions([row(B, "base", "WETH", "collateral", 1), bad])
    assert eng.book.n == 0 or bad.account == "0x1234"


def test_duplicate_position_in_one_load_is_rejected() -> None:
    eng = ready()
    with pytest.raises(BookError, match=f"account {A} chain 'base' asset 'WETH'.*twice"):
        eng.load_positions(
            [row(A, "base", "WETH", "collateral", 1), row(A, "base", "WETH", "collateral", 2)]
        )


def test_bad_prices_and_volatilities_are_rejected() -> None:
    eng = engine()
    with pytest.raises(KeyError, match="unknown asset 'XYZ'"):
        eng.set_prices({"XYZ": PriceInput(1.0)})
    with pytest.raises(ValueError, match=r"prices.WETH.status"):
        eng.set_prices({"WETH": PriceInput(1.0, "stale")})  # type: ignore[arg-type]
    for v in (0.0, -1.0, math.nan, math.inf, None):
        with pytest.raises(ValueError, match="ok price must be > 0"):
            eng.set_prices({"WETH": PriceInput(v)})
    with pytest.raises(ValueError, match=r"volatility.WETH"):
        eng.set_volatility({"WETH": -0.1})
    with pytest.raises(KeyError, match="unknown correlation group 'btc'"):
        eng.set_volatility({}, {"btc": {"WBTC": 0.01}})
    with pytest.raises(ValueError, match="not in the group"):
        eng.set_volatility({}, {"eth": {"USDC": 0.01}})
    with pytest.raises(KeyError, match="unknown account"):
        eng.health(A)
    with pytest.raises(ValueError, match="tier"):
        eng.accounts_by_tier("doomed")
    with pytest.raises(ValueError, match=r"credit.weights.solana"):
        engine(credit=CreditConfig(weights={"solana": 1.0}))
    with pytest.raises(ValueError, match=r"credit.weights.base: must be finite and >= 0"):
        engine(credit=CreditConfig(weights={"base": -1.0}))
    with pytest.raises(KeyError, match="unknown chain"):
        eng.record_consumption(A, "solana", 1.0, 0.0)
    with pytest.raises(ValueError, match="usd must be >= 0"):
        eng.record_consumption(A, "base", -1.0, 0.0)


# -- exact amounts and the index ----------------------------------------------------
def test_exact_amounts_round_trip_up_to_uint256_max() -> None:
    eng = ready()
    big, mid = 2**256 - 1, 2**130 + 12345
    eng.load_positions([row(A, "base", "DAI", "collateral", big, mid)])
    eng.apply_position(row(A, "arbitrum", "DAI", "debt", mid, 7))
    eng.recompute()
    pos = eng.explain(A, now=0)["positions"]
    assert pos["base"][0]["head"] == str(big) and pos["base"][0]["counted"] == str(mid)
    assert pos["arbitrum"][0]["counted"] == str(mid)
    # Overwrite with small values clears the side store.
    eng.apply_position(row(A, "base", "DAI", "collateral", 5, 3))
    eng.load_positions([row(A, "arbitrum", "DAI", "debt", 9, 9)])
    assert eng.book._big == {}
    pos = eng.explain(A, now=0)["positions"]
    assert (pos["base"][0]["head"], pos["base"][0]["amount"]) == ("5", "0.000000000000000003")
    assert pos["arbitrum"][0]["counted"] == "9"


def test_many_appends_merge_the_index_and_lookups_stay_right(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(book_mod, "_PENDING_LIMIT", 16)
    eng = ready()
    rows = [
        row(ADDRS[i % 50], CHAINS[i % 3], SYMBOLS[i % 6], "collateral", i + 1) for i in range(150)
    ]
    seen: dict[tuple[str, str, str], int] = {}
    for r in rows:
        eng.apply_position(r)
        seen[(r.account, r.chain, r.asset)] = r.head
    # A bulk load into the non-empty book overwrites some rows and adds others.
    extra = [
        row(ADDRS[0], "base", "USDC", "collateral", 777),
        row(ADDRS[60], "base", "DAI", "debt", 5),
    ]
    eng.load_positions(extra)
    seen[(ADDRS[0], "base", "USDC")] = 777
    b = eng.book
    assert b.n == len(seen) + 1
    for (acct, chain, sym), head in seen.items():
        a = b.account_index[acct]
        r = b.lookup(b.key(a, b.chain_index[chain], b.asset_index[sym], 0))
        assert b.exact(r) == (head, head)
    for acct in {k[0] for k in seen}:
        a = b.account_index[acct]
        assert sorted(b.rows_of(a).tolist()) == sorted(b.rows_of_many(np.array([a])).tolist())
    # Many accounts at once goes through the merged, vectorised path.
    everyone = np.arange(b.n_accounts)
    assert sorted(b.rows_of_many(everyone).tolist()) == list(range(b.n))


def test_one_event_touches_only_its_account() -> None:
    eng = ready()
    eng.load_positions(
        row(ADDRS[i], CHAINS[i % 3], SYMBOLS[i % 6], side, 10 ** (6 + i % 13))
        for i in range(40)
        for side in ("collateral", "debt")
    )
    eng.recompute()
    n = eng.book.n_accounts
    before = {f: getattr(eng, f)[:n].copy() for f in ("r_hf", "r_bp", "r_tier", "X")}
    target = eng.book.account_index[ADDRS[3]]
    eng.apply_position(row(ADDRS[3], "base", "WETH", "collateral", 50 * E18))
    others = np.arange(n) != target
    for f, old in before.items():
        new = getattr(eng, f)[:n]
        assert np.array_equal(new[others], old[others]), f
        assert not np.array_equal(new[target], old[target]) or f == "r_tier"


@pytest.mark.parametrize("compact_min", [0, 1 << 30])
def test_events_that_outgrow_their_segment_match_a_bulk_load(compact_min: int) -> None:
    """Events that move accounts' pool segments (and, with compact_min 0, trigger
    compactions) leave exactly the numbers a fresh bulk load of the final rows gives."""
    rng = np.random.default_rng(5)
    eng = ready(engine(depth={"rETH": 3_000_000.0, "WBTC": 50_000_000.0}))
    eng._COMPACT_MIN = compact_min
    final: dict[tuple[str, str, str, str], PositionRow] = {}
    first = [row(ADDRS[i], CHAINS[0], "USDC", "collateral", 10**9) for i in range(30)]
    eng.load_positions(first)
    final.update({(r.account, r.chain, r.asset, r.side): r for r in first})
    eng.recompute()
    for _ in range(400):
        sym = SYMBOLS[int(rng.integers(len(SYMBOLS)))]
        side = "debt" if sym in ("USDC", "DAI", "WETH") and rng.random() < 0.3 else "collateral"
        amount = 0 if rng.random() < 0.15 else int(rng.integers(1, 10**6)) * 10**13
        r = row(ADDRS[int(rng.integers(30))], CHAINS[int(rng.integers(3))], sym, side, amount)
        eng.apply_position(r)
        final[(r.account, r.chain, r.asset, r.side)] = r
    assert eng._holes > 0 or compact_min == 0
    fresh = ready(engine(depth={"rETH": 3_000_000.0, "WBTC": 50_000_000.0}))
    fresh.load_positions(final.values())
    fresh.recompute()
    eng.recompute()
    order = [fresh.book.account_index[a] for a in eng.book.account_address]
    n = eng.book.n_accounts
    # Sums over chains may differ in the last bit (events re-sum in chain order, a load
    # in row order); the pool itself must not add any difference.
    assert np.allclose(eng.X[:n], fresh.X[order], rtol=1e-14, atol=0)
    assert np.array_equal(eng.X[:n] > 0, fresh.X[order] > 0)
    for f in ("r_hf", "r_bp"):
        assert np.allclose(getattr(eng, f)[:n], getattr(fresh, f)[order], rtol=1e-12), f
    assert np.array_equal(eng.r_tier[:n], fresh.r_tier[order])
    before = (eng.X[:n].copy(), eng.r_hf[:n].copy(), eng.r_bp[:n].copy())
    eng._compact()
    assert eng._holes == 0 and eng._pool_end == int(eng.a_cnt[:n].sum())
    eng.recompute()
    assert np.array_equal(eng.X[:n], before[0])
    assert np.array_equal(eng.r_hf[:n], before[1])
    assert np.array_equal(eng.r_bp[:n], before[2])


# -- explanations, tiers, credit ---------------------------------------------------
def test_explain_is_json_and_adds_up() -> None:
    eng = ready(engine(depth={"WETH": 2_000_000.0}))
    eng.set_volatility({}, {"eth": {"wstETH": 0.003}})
    eng.apply_position(row(A, "ethereum", "WETH", "collateral", 100 * E18))
    eng.apply_position(row(A, "arbitrum", "wstETH", "collateral", 30 * E18))
    eng.apply_position(row(A, "base", "WETH", "debt", 60 * E18))
    eng.recompute()
    eng.allocate_credit(now=0)
    ex = eng.explain(A, now=0)
    json.dumps(ex, allow_nan=False)
    coll = [v["collateral"] for v in ex["assets"].values() if "collateral" in v]
    assert math.isclose(sum(c["c_liq_usd"] for c in coll), ex["c_liq_usd"], rel_tol=1e-12)
    assert math.isclose(sum(c["c_borrow_usd"] for c in coll), ex["c_borrow_usd"], rel_tol=1e-12)
    weth = ex["assets"]["WETH"]["collateral"]
    assert math.isclose(weth["haircut"]["concentration_term"], 300_000 / 2_000_000)
    assert weth["caps"]["source"] == "group:eth" and ex["mode"] == "emode"
    assert ex["assets"]["wstETH"]["collateral"]["sigma_kind"] == "relative to WETH"
    assert ex["assets"]["WETH"]["collateral"]["sigma"] == 0.0  # reference vs itself
    assert (
        sum(c["credit_usd6"] for c in ex["credit"]["chains"].values())
        <= ex["credit"]["budget_usd6"]
    )
    empty = eng.explain(eng.book.account_address[0], now=0)
    assert empty["hf"] == "inf" or isinstance(empty["hf"], float)


def test_accounts_by_tier_pages_with_a_cursor() -> None:
    eng = ready()
    for i in range(25):
        eng.apply_position(row(ADDRS[i], "base", "WETH", "collateral", E18))
        eng.apply_position(row(ADDRS[i], "base", "USDC", "debt", (2_000 + (i % 2) * 1_000) * 10**6))
    eng.recompute()
    counts = eng.tier_counts()
    assert counts["liquidatable"] + counts["insolvent"] == 12 and counts["healthy"] == 13
    got: list[str] = []
    cursor: int | None = 0
    while cursor is not None:
        page, cursor = eng.accounts_by_tier("healthy", limit=5, cursor=cursor)
        assert len(page) <= 5
        got.extend(page)
    assert got == [ADDRS[i] for i in range(0, 25, 2)]


def test_demand_window_and_zero_weight_chain() -> None:
    cfg = CreditConfig(
        policy="demand", demand_share=0.5, demand_window_s=100, weights={"base": 0.0}
    )
    eng = ready(engine(credit=cfg))
    eng.apply_position(row(A, "ethereum", "USDC", "collateral", 10_000 * 10**6))
    eng.recompute()
    eng.record_consumption(A, "arbitrum", 50.0, ts=10.0)  # old by now=200
    eng.record_consumption(A, "base", 50.0, ts=150.0)  # weight 0: never gets credit
    eng.allocate_credit(now=200.0)
    c = eng.credit_of(A)
    assert c["base"] == 0 and c["ethereum"] == c["arbitrum"]
    eng.record_consumption(A, "arbitrum", 10.0, ts=190.0)
    eng.allocate_credit(now=200.0)
    c = eng.credit_of(A)
    bp6 = math.floor(eng.health(A).bp * 10**6)
    assert c["base"] == 0 and c["arbitrum"] == bp6 * 3 // 4 and c["ethereum"] == bp6 // 4
    zero = ready(engine(credit=CreditConfig(weights={c: 0.0 for c in CHAINS})))
    zero.apply_position(row(A, "ethereum", "USDC", "collateral", 10_000 * 10**6))
    zero.recompute()
    zero.allocate_credit(now=0)
    assert zero.credit_of(A) == {c: 0 for c in CHAINS}


def test_set_previous_credit_caps_a_degraded_account() -> None:
    eng = ready()
    eng.apply_position(row(A, "ethereum", "USDC", "collateral", 10_000 * 10**6))
    eng.set_prices({"USDC": PriceInput(1.0, "disputed")})
    eng.recompute()
    eng.set_previous_credit(A, {"ethereum": 5, "arbitrum": 10**15})
    eng.allocate_credit(now=0)
    assert eng.credit_of(A) == {"ethereum": 5, "arbitrum": 2_666_666_666, "base": 0}
    with pytest.raises(ValueError, match="int >= 0"):
        eng.set_previous_credit(A, {"base": -1})


def test_from_app_config() -> None:
    cfg = AppConfig(
        chains=[ChainConfig(name="alpha", chain_id=1, rpc_urls=["http://127.0.0.1:1"])],
        assets=[AssetConfig(symbol="USDC", decimals=6, ltv=0.8, lt=0.85)],
    )
    eng = RiskEngine.from_config(cfg)
    assert eng.chains == ["alpha"] and eng.symbols == ["USDC"]
    assert eng.risk_cfg == cfg.risk and eng.credit_cfg == cfg.credit
