"""The `history` job over a real ledger and a real store (SQLite and PostgreSQL): what it
writes on the first run, nothing for an unchanged book, the moved accounts after a price
move, the system totals against plain sums, and a restart that neither loses nor
rewrites anything."""

from __future__ import annotations

import math
from typing import Any

from aggregator.history.config import HistoryConfig
from aggregator.history.recorder import HistoryRecorder
from aggregator.metrics import Metrics
from aggregator.risk import PositionRow, PriceInput, RiskEngine
from aggregator.risk.view import LedgerView
from aggregator.store import Store
from aggregator.store.history_repo import HistoryRepo
from chains.units import TIERS
from tests.unit.risk.helpers import ADDRS, CHAINS, SYMBOLS, engine

E18 = 10**18
T0 = 1_765_000_800
PRICES = dict(zip(SYMBOLS, [1.0, 1.0, 60_000.0, 3_000.0, 3_500.0, 3_300.0], strict=True))
A, B, C = ADDRS[0], ADDRS[1], ADDRS[2]


def book() -> RiskEngine:
    eng = engine()
    eng.set_prices({s: PriceInput(p) for s, p in PRICES.items()})
    eng.set_volatility({s: 0.02 for s in SYMBOLS})
    rows = [
        # A: WETH collateral, USDC debt (moves with WETH).
        PositionRow(A, CHAINS[0], "WETH", "collateral", 10 * E18, 10 * E18),
        PositionRow(A, CHAINS[1], "USDC", "debt", 20_000 * 10**6, 20_000 * 10**6),
        # B: WBTC collateral, DAI debt (does not move with WETH).
        PositionRow(B, CHAINS[1], "WBTC", "collateral", 10**8, 10**8),
        PositionRow(B, CHAINS[2], "DAI", "debt", 10_000 * E18, 10_000 * E18),
        # C: collateral only (infinite HF).
        PositionRow(C, CHAINS[2], "USDC", "collateral", 500 * 10**6, 500 * 10**6),
    ]
    eng.load_positions(rows)
    eng.recompute()
    return eng


def recorder(eng: RiskEngine, store: Store, clock: list[float]) -> HistoryRecorder:
    return HistoryRecorder(
        HistoryConfig(),
        HistoryRepo(store),
        LedgerView(eng),
        metrics=Metrics(),
        ready=lambda: True,
        clock=lambda: clock[0],
    )


async def test_first_run_then_only_moves_then_restart(store: Store) -> None:
    eng, clock = book(), [float(T0)]
    rec = recorder(eng, store, clock)
    repo = rec.repo
    await rec.run()
    assert set(await repo.last_points(60)) == {A.lower(), B.lower(), C.lower()}

    clock[0] += 60
    await rec.run()  # nothing moved: no account point, one more system sample
    assert len(await repo.account_points(60, A, T0, T0 + 600)) == 1
    assert len(await repo.system_points(60, T0, T0 + 600)) == 2

    eng.set_prices({"WETH": PriceInput(2_400.0)})  # -20%: A's HF moves, B's and C's do not
    eng.recompute()
    clock[0] += 60
    await rec.run()
    a_points = await repo.account_points(60, A, T0, T0 + 600)
    assert [p.t for p in a_points] == [T0, T0 + 120]
    assert a_points[1].hf < a_points[0].hf
    assert a_points[1].req_standard == a_points[1].debt_usd == 20_000.0
    assert len(await repo.account_points(60, B, T0, T0 + 600)) == 1
    (c_point,) = await repo.account_points(60, C, T0, T0 + 600)
    assert c_point.hf == math.inf

    # Restart: a new recorder on the same store writes nothing for an unchanged book...
    clock[0] += 60
    again = recorder(eng, store, clock)
    await again.run()
    assert len(await repo.account_points(60, A, T0, T0 + 600)) == 2
    # ...and the account that moved while it was down on its next run.
    eng.set_prices({"WBTC": PriceInput(30_000.0)})
    eng.recompute()
    again = recorder(eng, store, clock)
    clock[0] += 60
    await again.run()
    assert len(await repo.account_points(60, B, T0, T0 + 600)) == 2
    assert len(await repo.account_points(60, A, T0, T0 + 600)) == 2


async def test_system_sample_matches_plain_sums(store: Store) -> None:
    eng, clock = book(), [float(T0)]
    rec = recorder(eng, store, clock)
    await rec.run()
    (p,) = await rec.repo.system_points(60, T0, T0 + 60)
    view = LedgerView(eng)
    # Plain loops over the accounts and the configured prices.
    want_tiers = {t: 0 for t in TIERS}
    for addr in (A, B, C):
        want_tiers[view.tier(view.find_account(addr))] += 1  # type: ignore[arg-type]
    assert {t: v["accounts"] for t, v in p["tiers"].items()} == want_tiers
    coll = 10 * PRICES["WETH"] + PRICES["WBTC"] + 500 * PRICES["USDC"]
    debt = 20_000 * PRICES["USDC"] + 10_000 * PRICES["DAI"]
    assert math.isclose(p["total"]["collateral_usd"], coll)
    assert math.isclose(p["total"]["debt_usd"], debt)
    chains = p["chains"]
    assert math.isclose(chains[CHAINS[0]]["collateral_usd"], 10 * PRICES["WETH"])
    assert math.isclose(chains[CHAINS[1]]["collateral_usd"], PRICES["WBTC"])
    assert math.isclose(chains[CHAINS[1]]["debt_usd"], 20_000.0)
    assert math.isclose(chains[CHAINS[2]]["debt_usd"], 10_000.0)
    assert p["total"]["accounts"] == 3


async def test_nothing_is_recorded_before_prices_or_on_another_instance(store: Store) -> None:
    eng, clock = book(), [float(T0)]
    for ready, recording in ((False, True), (True, False)):
        rec = HistoryRecorder(
            HistoryConfig(), HistoryRepo(store), LedgerView(eng), metrics=Metrics(),
            ready=lambda r=ready: r, recording=lambda r=recording: r, clock=lambda: clock[0],
        )  # fmt: skip
        await rec.run()
    assert await HistoryRepo(store).system_points(60, 0, T0 + 60) == []


async def test_prune_job_removes_old_buckets_by_level(store: Store) -> None:
    eng, clock = book(), [float(T0)]
    rec = recorder(eng, store, clock)
    await rec.run()
    eng.set_prices({"WETH": PriceInput(2_000.0)})
    eng.recompute()
    clock[0] = T0 + 2 * 86400
    await rec.run()
    await rec.prune()
    # Minute level (1 day): the first run's system row is gone; A keeps only its newest
    # point, B and C (unchanged since) keep their only one. Hour level (90 days): all.
    assert [p["t"] for p in await rec.repo.system_points(60, 0, 10**10)] == [T0 + 2 * 86400]
    assert [p.t for p in await rec.repo.account_points(60, A, 0, 10**10)] == [T0 + 2 * 86400]
    assert [p.t for p in await rec.repo.account_points(60, B, 0, 10**10)] == [T0]
    assert len(await rec.repo.system_points(3600, 0, 10**10)) == 2


async def test_pushed_models_requirement_is_recorded(store: Store) -> None:
    eng, clock = book(), [float(T0)]
    asked: list[list[int]] = []

    def requirement(idx: Any) -> Any:
        asked.append(idx.tolist())
        return idx.astype(float) * 100.0 + 1.0

    rec = HistoryRecorder(
        HistoryConfig(), HistoryRepo(store), LedgerView(eng), metrics=Metrics(),
        ready=lambda: True, clock=lambda: clock[0], model="portfolio",
        pushed_requirement=requirement,
    )  # fmt: skip
    await rec.run()
    assert asked == [[0, 1, 2]]  # only the accounts written, in one call
    (p,) = await rec.repo.account_points(60, B, T0, T0 + 60)
    assert (p.req_portfolio, p.req_var) == (101.0, None)
    assert p.req_standard == 10_000.0


def test_chain_unit_sums_are_the_slot_bincount_bit_for_bit() -> None:
    # The per-chain amounts of the system sample, now one compiled pass over the
    # position rows, are exactly the bincount of (chain, side, asset) slots they
    # replaced.
    import numpy as np

    from aggregator.risk.kernels import chain_unit_sums_kernel

    rng = np.random.default_rng(11)
    k, n_chains, na = 50_000, 3, 6
    chain = rng.integers(0, n_chains, k).astype(np.int16)
    side = rng.integers(0, 2, k).astype(np.int8)
    asset = rng.integers(0, na, k).astype(np.int16)
    amount = rng.lognormal(3, 4, k) * rng.choice([1.0, 0.0], k, p=[0.9, 0.1])
    used = k - 7  # rows past the book's length are not counted
    slot = (chain[:used].astype(np.int64) * 2 + side[:used]) * na + asset[:used]
    want = np.bincount(slot, weights=amount[:used], minlength=2 * n_chains * na)
    got = chain_unit_sums_kernel(chain, side, asset, amount, used, n_chains, na)
    assert got.tobytes() == want.tobytes()


def test_tier_sums_are_the_bincounts_bit_for_bit() -> None:
    # The system sample's per-tier count and sums, now one compiled pass over the
    # accounts, are exactly the bincounts they replaced (a non-finite BP counts 0).
    import numpy as np

    from aggregator.history.recorder import _tier_sums

    rng = np.random.default_rng(12)
    n, k = 40_000, len(TIERS)
    tier = rng.integers(0, k, n).astype(np.int8)
    coll, debt = rng.lognormal(6, 3, (2, n))
    bp = rng.normal(0, 1e5, n)
    bp[rng.random(n) < 0.05] = math.inf
    bp[rng.random(n) < 0.01] = -math.inf
    bp[rng.random(n) < 0.01] = math.nan
    counts, sums = _tier_sums(tier, coll, debt, bp, k)
    code = tier.astype(np.int64)
    assert counts.tolist() == np.bincount(code, minlength=k).tolist()
    finite_bp = np.where(np.isfinite(bp), bp, 0.0)
    for row, w in zip(sums, (coll, debt, finite_bp), strict=True):
        assert row.tobytes() == np.bincount(code, weights=w, minlength=k).tobytes()
