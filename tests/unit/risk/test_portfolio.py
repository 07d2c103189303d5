"""Portfolio margin engine (aggregator/risk/portfolio.py) against a scalar reference
written independently here (math.erf Black-Scholes, one account, one scenario and one
leg at a time), plus the invariants of issue 8."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.config import ContingencyConfig, PortfolioConfig
from aggregator.risk.portfolio import (
    AssetSpec,
    MissingMarketData,
    OptionLeg,
    OptionSeries,
    PerpLeg,
    PortfolioEngine,
    SpotLeg,
    black76,
    black76_greeks,
    worst_of,
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DAY = 86400.0
ASSETS = [
    AssetSpec("USDC", None),
    AssetSpec("WETH", "WETH"),
    AssetSpec("WBTC", "WBTC"),
    AssetSpec("wstETH", "WETH", lst=True),
    AssetSpec("rETH", "WETH", lst=True),
]
PERPS = {"ETH-PERP": "WETH", "BTC-PERP": "WBTC"}
OPTS = {"ETH": "WETH", "BTC": "WBTC"}
IV = {"WETH": 0.65, "WBTC": 0.55}
PRICES = {"USDC": 1.0, "WETH": 3000.0, "WBTC": 60000.0, "wstETH": 3540.0, "rETH": 3330.0}
CHAINS = ["ethereum", "arbitrum", "base"]


def engine(**kw: object) -> PortfolioEngine:
    return PortfolioEngine(ASSETS, PortfolioConfig(**kw), perps=PERPS, options=OPTS)  # type: ignore[arg-type]


# -- scalar reference -------------------------------------------------------------------
def ncdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def bs_ref(f: float, k: float, t: float, sigma: float, call: bool) -> float:
    if t <= 0 or sigma <= 0:
        return max(f - k, 0.0) if call else max(k - f, 0.0)
    sd = sigma * math.sqrt(t)
    d1 = (math.log(f / k) + 0.5 * sd * sd) / sd
    d2 = d1 - sd
    if call:
        return f * ncdf(d1) - k * ncdf(d2)
    return k * ncdf(-d2) - f * ncdf(-d1)


@dataclass
class RefScenario:
    spot: dict[str, float]  # underlying -> return
    depeg: dict[str, float]  # asset -> return vs underlying
    vol: dict[str, float]  # underlying -> multiplier


def ref_scenarios(eng: PortfolioEngine) -> list[RefScenario]:
    sc = eng.scenarios
    return [
        RefScenario(
            {u: float(sc.spot[s, i]) for i, u in enumerate(eng.underlyings)},
            {a.symbol: float(sc.depeg[s, i]) for i, a in enumerate(ASSETS)},
            {u: float(sc.vol[s, i]) for i, u in enumerate(eng.underlyings)},
        )
        for s in range(sc.size)
    ]


def ref_value(legs: list, prices: dict, sc: RefScenario | None, now: float, funding: dict) -> float:
    spec = {a.symbol: a for a in ASSETS}
    total = 0.0

    def spot_of(u: str) -> float:
        return prices[u] * (1.0 + (sc.spot[u] if sc else 0.0))

    for leg in legs:
        if isinstance(leg, SpotLeg):
            a = spec[leg.asset]
            p = prices[leg.asset]
            if a.underlying is not None and sc is not None:
                p = p * (1.0 + sc.spot[a.underlying]) * (1.0 + sc.depeg[leg.asset])
            total += leg.units * p
        elif isinstance(leg, PerpLeg):
            u = PERPS[leg.market]
            total += leg.size * (spot_of(u) - leg.entry_price)
            total -= leg.size * (funding.get(leg.market, 0.0) - leg.entry_funding)
        else:
            s = leg.series
            vm = sc.vol[s.underlying] if sc else 1.0
            t = (s.expiry - now) / (365 * DAY)
            total += leg.size * bs_ref(
                spot_of(s.underlying), s.strike, t, IV[s.underlying] * vm, s.is_call
            )
    return total


def ref_margin(
    eng: PortfolioEngine, legs: list, prices: dict, now: float = 0.0, funding=None
) -> dict:
    funding = funding or {}
    base = ref_value(legs, prices, None, now, funding)
    dv = [ref_value(legs, prices, sc, now, funding) - base for sc in ref_scenarios(eng)]
    worst = max(0.0, -min(dv))
    c = eng.cfg.contingency
    perp_net: dict[str, float] = {}
    opt_net: dict[OptionSeries, float] = {}
    deriv = False
    for leg in legs:
        if isinstance(leg, PerpLeg):
            u = PERPS[leg.market]
            perp_net[u] = perp_net.get(u, 0.0) + leg.size
            deriv = deriv or leg.size != 0
        elif isinstance(leg, OptionLeg):
            opt_net[leg.series] = opt_net.get(leg.series, 0.0) + leg.size
            deriv = deriv or leg.size != 0
    cont = sum(c.perp_notional * abs(n) * prices[u] for u, n in perp_net.items())
    cont += sum(
        c.short_option_notional * max(0.0, -n) * prices[s.underlying] for s, n in opt_net.items()
    )
    cont += c.fixed_usd if deriv else 0.0
    mm = worst + cont
    return {"equity": base, "dv": dv, "worst": worst, "contingency": cont, "mm": mm}


# -- strategies -----------------------------------------------------------------------------
series_st = st.builds(
    OptionSeries,
    underlying=st.sampled_from(["WETH", "WBTC"]),
    strike=st.floats(0.5, 1.6),  # scaled by spot below
    expiry=st.sampled_from([-DAY, 3 * DAY, 30 * DAY, 180 * DAY]),
    is_call=st.booleans(),
)


@st.composite
def legs_st(draw: st.DrawFn, account: str = "0xa", max_legs: int = 6) -> list:
    legs: list = []
    for _ in range(draw(st.integers(1, max_legs))):
        kind = draw(st.sampled_from(["spot", "perp", "option"]))
        chain = draw(st.sampled_from(CHAINS))
        if kind == "spot":
            asset = draw(st.sampled_from([a.symbol for a in ASSETS]))
            units = draw(st.floats(-50, 50, allow_nan=False)) * 1000 / PRICES[asset]
            legs.append(SpotLeg(account, chain, asset, units))
        elif kind == "perp":
            m = draw(st.sampled_from(list(PERPS)))
            px = PRICES[PERPS[m]]
            legs.append(
                PerpLeg(account, chain, m, draw(st.floats(-20, 20)) * 3000 / px,
                        px * draw(st.floats(0.7, 1.3)), draw(st.floats(-50, 50)))
            )  # fmt: skip
        else:
            s = draw(series_st)
            s = OptionSeries(
                s.underlying, round(s.strike * PRICES[s.underlying], 2), s.expiry, s.is_call
            )
            legs.append(
                OptionLeg(account, chain, s, draw(st.floats(-20, 20)) * 3000 / PRICES[s.underlying])
            )
    return legs


def split(legs: list) -> dict[str, list]:
    return {
        "spot": [x for x in legs if isinstance(x, SpotLeg)],
        "perps": [x for x in legs if isinstance(x, PerpLeg)],
        "options": [x for x in legs if isinstance(x, OptionLeg)],
    }


def mm_of(eng: PortfolioEngine, legs: list, prices: dict = PRICES) -> float:
    mkt = eng.market(prices, IV, now=0.0)
    r = eng.compute(eng.book(**split(legs), accounts=["0xa"]), mkt)
    return float(r.mm[0])


# -- Black-76 -------------------------------------------------------------------------------
def test_black76_known_values_and_parity() -> None:
    # ATM with zero rates: C = F (2 N(sigma sqrt(T) / 2) - 1).
    c = black76(100.0, 100.0, 1.0, 0.2, True)
    assert float(c) == pytest.approx(100 * (2 * ncdf(0.1) - 1), rel=1e-12)
    assert float(c) == pytest.approx(7.965567455405804, rel=1e-12)
    f, k, t, s = np.array([80.0, 100, 130]), np.array([100.0, 90, 150]), 0.5, 0.7
    call = black76(f, k, t, s, True)
    put = black76(f, k, t, s, False)
    np.testing.assert_allclose(call - put, f - k, rtol=0, atol=1e-9)
    # Expired or zero vol: intrinsic.
    np.testing.assert_allclose(black76(f, k, 0.0, s, True), np.maximum(f - k, 0))
    np.testing.assert_allclose(black76(f, k, 1.0, 0.0, False), np.maximum(k - f, 0))


def test_black76_greeks_match_finite_differences() -> None:
    f, k, t, s = 3000.0, 3300.0, 30 / 365, 0.6
    for call in (True, False):
        d, g, v = black76_greeks(f, k, t, s, call)
        h = 0.01
        up, dn = black76(f + h, k, t, s, call), black76(f - h, k, t, s, call)
        mid = black76(f, k, t, s, call)
        assert float(d) == pytest.approx(float(up - dn) / (2 * h), rel=1e-6)
        assert float(g) == pytest.approx(float(up - 2 * mid + dn) / h**2, rel=1e-3)
        dv = (black76(f, k, t, s + 1e-5, call) - black76(f, k, t, s - 1e-5, call)) / 2e-5
        assert float(v) == pytest.approx(float(dv), rel=1e-6)


# -- scenario grid ----------------------------------------------------------------------------
def test_default_grid() -> None:
    eng = engine()
    sc = eng.scenarios
    # Per underlying: 9 spot points x 2 vol shocks + 2 extremes x 2 vol shocks; one crash;
    # one de-peg per LST and one for all LSTs together.
    assert sc.size == 2 * (9 * 2 + 2 * 2) + 1 + 2 + 1
    eth = [i for i, n in enumerate(sc.names) if n.startswith("WETH ") and "extreme" not in n]
    moves = sorted({round(float(sc.spot[i, 0]), 4) for i in eth})
    assert moves == [-0.2, -0.15, -0.1, -0.05, 0.0, 0.05, 0.1, 0.15, 0.2]
    assert np.all(sc.spot[eth, 1] == 0.0)  # BTC does not move in ETH's scenarios
    crash = sc.names.index("crash -40% all, LSTs -7%")
    assert list(sc.spot[crash]) == [-0.4, -0.4]
    assert list(sc.depeg[crash]) == [0.0, 0.0, 0.0, -0.07, -0.07]
    assert list(sc.vol[crash]) == [1.5, 1.5]
    dp = sc.names.index("wstETH de-peg -7%")
    assert list(sc.spot[dp]) == [0.0, 0.0] and sc.depeg[dp, 3] == -0.07 and sc.depeg[dp, 4] == 0


def test_missing_inputs_are_named() -> None:
    eng = engine()
    with pytest.raises(MissingMarketData, match="rETH"):
        eng.market({k: v for k, v in PRICES.items() if k != "rETH"})
    mkt = eng.market(PRICES, {"WETH": 0.6}, now=0)
    s = OptionSeries("WBTC", 60000, 10 * DAY, True)
    book = eng.book(options=[OptionLeg("0xa", "base", s, 1.0)])
    with pytest.raises(MissingMarketData, match="WBTC"):
        eng.compute(book, mkt)
    with pytest.raises(KeyError, match="DOGE-PERP"):
        eng.book(perps=[PerpLeg("0xa", "base", "DOGE-PERP", 1, 1)])
    with pytest.raises(ValueError, match=r"prices\.WETH"):
        eng.market({**PRICES, "WETH": -1.0})


# -- engine = scalar reference ------------------------------------------------------------------
@SETTINGS
@given(books=st.lists(legs_st(), min_size=1, max_size=4))
def test_vectorised_equals_scalar_reference(books: list[list]) -> None:
    eng = engine(
        contingency=ContingencyConfig(
            perp_notional=0.004, short_option_notional=0.02, fixed_usd=7.0
        )
    )
    funding = {"ETH-PERP": 12.5, "BTC-PERP": -30.0}
    legs = []
    accounts = [f"0x{i:x}" for i in range(len(books))]
    for acc, b in zip(accounts, books, strict=True):
        legs += [type(x)(acc, *list(vars(x).values())[1:]) for x in b]
    mkt = eng.market(PRICES, IV, funding, now=0.0)
    r = eng.compute(eng.book(**split(legs), accounts=accounts), mkt, keep_dv=True)
    assert r.dv is not None
    for i, acc in enumerate(accounts):
        mine = [x for x in legs if x.account == acc]
        ref = ref_margin(eng, mine, PRICES, funding=funding)
        scale = 1.0 + sum(abs(v) for v in ref["dv"]) + abs(ref["equity"])
        assert r.equity[i] == pytest.approx(ref["equity"], abs=1e-9 * scale)
        np.testing.assert_allclose(r.dv[i], ref["dv"], rtol=0, atol=1e-9 * scale)
        assert r.contingency[i] == pytest.approx(ref["contingency"], abs=1e-9 * scale)
        assert r.mm[i] == pytest.approx(ref["mm"], abs=1e-9 * scale)
        # MM is never below the worst single-scenario loss.
        assert r.mm[i] >= max(0.0, -min(ref["dv"])) - 1e-9 * scale
        assert r.im[i] == pytest.approx(1.25 * r.mm[i])
        assert r.bp[i] == pytest.approx(
            max(0.0, ref["equity"] - 1.25 * ref["mm"]), abs=1e-8 * scale
        )


@SETTINGS
@given(legs=legs_st(max_legs=5))
def test_greeks_match_bumped_reference(legs: list) -> None:
    eng = engine()
    mkt = eng.market(PRICES, IV, now=0.0)
    g = eng.greeks(eng.book(**split(legs), accounts=["0xa"]), mkt)
    for u, sym in enumerate(eng.underlyings):
        h = PRICES[sym] * 1e-4
        bump = {k: v for k, v in PRICES.items()}
        up = {k: v * (1 + h / PRICES[sym]) if ASSETS[i].underlying == sym else v
              for i, (k, v) in enumerate(bump.items())}  # fmt: skip
        dn = {k: v * (1 - h / PRICES[sym]) if ASSETS[i].underlying == sym else v
              for i, (k, v) in enumerate(bump.items())}  # fmt: skip
        # Perp/option P&L vs a moved spot; entry prices and strikes stay put.
        vu = ref_value(legs, up, None, 0.0, {})
        vd = ref_value(legs, dn, None, 0.0, {})
        v0 = ref_value(legs, PRICES, None, 0.0, {})
        scale = 1.0 + sum(abs(ref_value([x], PRICES, None, 0.0, {})) for x in legs)
        tol = 1e-5 * scale / PRICES[sym] + 1e-6
        # Between the one-sided slopes: at a kink (an expired option struck at the
        # spot) any value between them is a delta, and the central difference is only
        # their mean; where the value is smooth the two meet.
        left, right = (v0 - vd) / h, (vu - v0) / h
        # Near such a kink the legs of a mixed book need not be convex over one bump,
        # so the true slope can leave the secants' bracket by up to |gamma| h / 2 (a
        # short-dated option beside other legs did, by 3.4e-4).
        slack = tol + 0.5 * h * abs(float(g["gamma"][0, u]))
        assert min(left, right) - slack <= g["delta"][0, u] <= max(left, right) + slack


def test_greeks_are_summed_across_chains() -> None:
    eng = engine()
    mkt = eng.market(PRICES, IV, now=0.0)
    s = OptionSeries("WETH", 3000.0, 30 * DAY, True)
    legs = [
        OptionLeg("0xa", "ethereum", s, 2.0),
        OptionLeg("0xa", "arbitrum", s, 3.0),
        PerpLeg("0xa", "base", "ETH-PERP", -1.0, 3000.0),
        SpotLeg("0xa", "base", "wstETH", 1.0),
    ]
    g = eng.greeks(eng.book(**split(legs)), mkt)
    d1, g1, v1 = black76_greeks(3000.0, 3000.0, 30 / 365, IV["WETH"], True)
    assert g["delta"][0, 0] == pytest.approx(5 * float(d1) - 1.0 + 3540.0 / 3000.0)
    assert g["gamma"][0, 0] == pytest.approx(5 * float(g1))
    assert g["vega"][0, 0] == pytest.approx(5 * float(v1))
    assert g["delta"][0, 1] == 0.0


# -- invariants -----------------------------------------------------------------------------------
sizes = st.floats(0.1, 100.0)


@SETTINGS
@given(n=sizes, px=st.floats(500, 10_000), ch=st.permutations(CHAINS))
def test_fully_hedged_perp_pair_needs_less_than_either_leg(
    n: float, px: float, ch: list[str]
) -> None:
    eng = engine()
    prices = {**PRICES, "WETH": px}
    long = [PerpLeg("0xa", ch[0], "ETH-PERP", n, px)]
    short = [PerpLeg("0xa", ch[1], "ETH-PERP", -n, px)]
    both = mm_of(eng, long + short, prices)
    assert both < mm_of(eng, long, prices) and both < mm_of(eng, short, prices)
    assert both == 0.0  # same market across chains nets to nothing


@SETTINGS
@given(n=sizes, ratio=st.floats(1.0, 1.3), asset=st.sampled_from(["WETH", "wstETH", "rETH"]))
def test_spot_or_lst_hedged_with_short_perp_needs_less_than_either_leg(
    n: float, ratio: float, asset: str
) -> None:
    eng = engine()
    prices = {**PRICES, asset: 3000.0 * ratio} if asset != "WETH" else PRICES
    coll = [SpotLeg("0xa", "ethereum", asset, n)]
    # Delta-neutral: an LST token is worth `ratio` ETH.
    hedge = [PerpLeg("0xa", "arbitrum", "ETH-PERP", -n * prices[asset] / 3000.0, 3000.0)]
    both = mm_of(eng, coll + hedge, prices)
    assert both < mm_of(eng, coll, prices) and both < mm_of(eng, hedge, prices)


@SETTINGS
@given(legs=legs_st(), lam=st.floats(0.0, 1.0))
def test_partially_closing_the_book_never_raises_mm(legs: list, lam: float) -> None:
    eng = engine()
    off = []
    for x in legs:
        if isinstance(x, SpotLeg):
            off.append(SpotLeg(x.account, x.chain, x.asset, -lam * x.units))
        elif isinstance(x, PerpLeg):
            off.append(
                PerpLeg(x.account, x.chain, x.market, -lam * x.size, x.entry_price, x.entry_funding)
            )
        else:
            off.append(OptionLeg(x.account, "base", x.series, -lam * x.size))
    before, after = mm_of(eng, legs), mm_of(eng, legs + off)
    assert after <= before * (1 + 1e-9) + 1e-9


@SETTINGS
@given(
    spot=st.floats(-50, 50),
    perp=st.floats(-50, 50),
    lam=st.floats(0.0, 1.0),
    lam2=st.floats(0.0, 1.0),
    ch=st.sampled_from(CHAINS),
)
def test_delta_hedge_with_a_perp_never_raises_mm(
    spot: float, perp: float, lam: float, lam2: float, ch: str
) -> None:
    """A linear one-underlying book (WETH and ETH perps): a perp hedge of a fraction of
    the net delta, on any chain, never raises MM, and a larger fraction never more."""
    eng = engine()
    book = [
        SpotLeg("0xa", "ethereum", "WETH", spot),
        PerpLeg("0xa", "base", "ETH-PERP", perp, 3000.0),
    ]
    delta = spot + perp
    lo, hi = sorted((lam, lam2))
    m0 = mm_of(eng, book)
    m_lo = mm_of(eng, [*book, PerpLeg("0xa", ch, "ETH-PERP", -lo * delta, 3000.0)])
    m_hi = mm_of(eng, [*book, PerpLeg("0xa", ch, "ETH-PERP", -hi * delta, 3000.0)])
    assert m_lo <= m0 * (1 + 1e-12) + 1e-9
    assert m_hi <= m_lo * (1 + 1e-12) + 1e-9


@SETTINGS
@given(legs=legs_st(), lam=st.floats(0.0, 1.0), pick=st.integers(0, 10))
def test_buying_back_part_of_a_lone_option_never_raises_mm(
    legs: list, lam: float, pick: int
) -> None:
    eng = engine()
    opts = [x for x in legs if isinstance(x, OptionLeg)]
    if not opts:
        return
    x = opts[pick % len(opts)]
    before = mm_of(eng, [x])
    after = mm_of(eng, [x, OptionLeg("0xa", "arbitrum", x.series, -lam * x.size)])
    assert after <= before * (1 + 1e-9) + 1e-9


# -- health, finality, isolation ------------------------------------------------------
def test_tiers_hf_bp() -> None:
    eng = engine()
    mkt = eng.market(PRICES, IV, now=0.0)
    legs = [
        SpotLeg("0xa", "ethereum", "USDC", 10_000.0),
        PerpLeg("0xa", "base", "ETH-PERP", 1.0, 3000.0),
        SpotLeg("0xb", "ethereum", "USDC", 1_000.0),
        PerpLeg("0xb", "base", "ETH-PERP", 10.0, 3000.0),
        SpotLeg("0xc", "ethereum", "USDC", 100.0),
        PerpLeg("0xc", "base", "ETH-PERP", 10.0, 3100.0),
        SpotLeg("0xd", "ethereum", "USDC", 1_000.0),
    ]
    r = eng.compute(eng.book(**split(legs)), mkt)
    # 0xa: loss at the -40% extreme = 1200, contingency 0.005 * 3000 = 15.
    assert r.mm[0] == pytest.approx(1215.0)
    assert r.hf[0] == pytest.approx(10_000 / 1215) and r.tier[0] == 0
    assert r.bp[0] == pytest.approx(10_000 - 1.25 * 1215)
    assert r.row(1)["tier"] == "liquidatable" and r.row(1)["worst_scenario"].startswith(
        "WETH extreme -40%"
    )
    assert r.row(2)["tier"] == "insolvent"  # 100 - 1000 of PnL
    assert r.row(3)["hf"] == math.inf and r.row(3)["tier"] == "healthy"
    assert r.row(3)["worst_scenario"] is None


def test_worst_of_two_finality_views() -> None:
    eng = engine()
    mkt = eng.market(PRICES, IV, now=0.0)
    base = [SpotLeg("0xa", "ethereum", "WETH", 10.0)]
    head = eng.book(
        [*base], perps=[PerpLeg("0xa", "base", "ETH-PERP", -10.0, 3000.0)], accounts=["0xa"]
    )
    conf = eng.book(base, accounts=["0xa"])  # the hedge is not confirmed yet
    rh, rc = eng.compute(head, mkt), eng.compute(conf, mkt)
    w = worst_of(rh, rc, 1.25, 1.10)
    assert w.mm[0] == pytest.approx(max(rh.mm[0], rc.mm[0])) == pytest.approx(rc.mm[0])
    assert w.equity[0] == min(rh.equity[0], rc.equity[0])


def test_isolated_split_margins_each_chain_alone() -> None:
    eng = engine()
    mkt = eng.market(PRICES, IV, now=0.0)
    legs = [
        PerpLeg("0xa", "arbitrum", "ETH-PERP", 5.0, 3000.0),
        PerpLeg("0xa", "base", "ETH-PERP", -5.0, 3000.0),
    ]
    book = eng.book(**split(legs))
    cross = eng.compute(book, mkt)
    iso_book, pairs = book.isolated()
    iso = eng.compute(iso_book, mkt)
    assert pairs == [("0xa", "arbitrum"), ("0xa", "base")]
    assert cross.mm[0] == 0.0
    assert iso.mm.tolist() == pytest.approx([5 * 3000 * 0.4 + 75.0] * 2)


def test_config_section_is_strict_and_cross_checked() -> None:
    from aggregator.config import ConfigError, parse_config

    base: dict = {
        "chains": [{"name": "alpha", "chain_id": 1, "rpc_urls": ["http://127.0.0.1:1"]}],
        "assets": [
            {
                "symbol": "WETH",
                "decimals": 18,
                "ltv": 0.8,
                "lt": 0.83,
                "sources": [{"name": "x", "kind": "http", "url": "http://h/p", "path": "a"}],
            },
        ],
    }
    with pytest.raises(ConfigError, match=r"portfolio\.perps\[0\]\.underlying"):
        parse_config({**base, "portfolio": {"perps": [{"name": "X", "underlying": "DOGE"}]}})
    with pytest.raises(ConfigError, match=r"portfolio\.im_fator"):
        parse_config({**base, "portfolio": {"im_fator": 2}})
    with pytest.raises(ConfigError, match="spot_shocks"):
        parse_config({**base, "portfolio": {"spot_shocks": [-1.5]}})
    cfg = parse_config({**base, "portfolio": {"mode": "portfolio"}})
    assert cfg.portfolio.mode == "portfolio" and cfg.portfolio.im_factor == 1.25
