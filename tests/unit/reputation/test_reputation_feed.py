"""The reputation feed (aggregator/reputation_feed.py) over a real store, SQLite and
PostgreSQL: only confirmed events count, incrementally; a liquidation on one chain
raises the account's multiplier in the engine for its positions on another chain; the
risk history's episodes count against clean time; disabled, nothing is touched."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping

import pytest

from aggregator.config import AppConfig
from aggregator.reputation_feed import ReputationFeed
from aggregator.risk import PositionRow, PriceInput, RiskEngine
from aggregator.risk.reputation import DAY, Params, Reputation
from aggregator.store import Store
from aggregator.store.chain_repo import SqlChainStore
from aggregator.store.history_repo import AccountPoint, HistoryRepo
from aggregator.store.reputation_reads import EventFact, Key, ReputationReads, after_block
from chains.types import BlockRef, VaultEvent

A = "0x00000000000000000000000000000000000000a1"
B = "0x00000000000000000000000000000000000000b2"
C = "0x00000000000000000000000000000000000000c3"
WETH = {"alpha": f"0x{0xE1:040x}", "beta": f"0x{0xE2:040x}"}
USDC = {"alpha": f"0x{0xC1:040x}", "beta": f"0x{0xC2:040x}"}
BT = 3600.0  # one block an hour: 10,000 blocks are 416 days
E18 = 10**18


def config(
    enabled: bool = True, history: bool = False, reputation: dict | None = None
) -> AppConfig:
    chains = [
        {"name": n, "chain_id": i + 1, "rpc_urls": ["http://127.0.0.1:1"], "block_time": BT,
         "contracts": {"vault": f"0x{i + 1:040x}"}}
        for i, n in enumerate(["alpha", "beta"])
    ]  # fmt: skip
    return AppConfig(
        chains=chains,
        assets=[
            {"symbol": "USDC", "decimals": 6, "ltv": 0.85, "lt": 0.88, "tokens": USDC},
            {"symbol": "WETH", "decimals": 18, "ltv": 0.8, "lt": 0.825, "tokens": WETH},
        ],
        reputation={"enabled": enabled, **(reputation or {})},
        history={"enabled": history},
    )  # type: ignore[arg-type]


class Prices:
    def price_usd(self, symbol: str) -> float | None:
        return {"USDC": 1.0, "WETH": 3000.0}[symbol]


class Sink:
    def __init__(self) -> None:
        self.calls: list[dict[str, float]] = []
        # The maintenance multipliers of each call (risk/reputation.py: phased in).
        self.maintenance: list[dict[str, float]] = []
        self.explain: Callable[[str], Reputation] | None = None

    def prepare_reputation(
        self,
        params: Params,
        multipliers: Mapping[str, float],
        explain: Callable[[str], Reputation],
        maintenance: Mapping[str, float] | None = None,
    ) -> tuple[dict[str, float], Callable[[str], Reputation], dict[str, float]]:
        return dict(multipliers), explain, dict(maintenance or {})

    def install_reputation(
        self, prepared: tuple[dict[str, float], Callable[[str], Reputation], dict[str, float]]
    ) -> None:
        self.calls.append(prepared[0])
        self.explain = prepared[1]
        self.maintenance.append(prepared[2])


def ev(chain: str, block: int, idx: int, kind: str, account: str, **kw: object) -> VaultEvent:
    token = kw.pop("token", WETH[chain])
    return VaultEvent(
        chain=chain, block_number=block, block_hash=f"0x{block:064x}",
        tx_hash=f"0x{block * 1000 + idx:064x}", log_index=idx, kind=kind,  # type: ignore[arg-type]
        account=account, token=token, amount=kw.pop("amount", E18), **kw,  # type: ignore[arg-type]
    )  # fmt: skip


async def commit(repo: SqlChainStore, chain: str, head: int, events: list[VaultEvent],
                 conf: int = 10) -> None:  # fmt: skip
    blocks = [BlockRef(n, f"0x{n:064x}", f"0x{n - 1:064x}") for n in range(head - 3, head + 1)]
    await repo.apply_batch(
        chain, to_block=head, blocks=blocks, events=events, log_range=50, head_block=head,
        confirmed_block=head - conf, keep_hashes_from=head - conf,
    )  # fmt: skip


def liquidation(chain: str, block: int, account: str) -> VaultEvent:
    return ev(chain, block, 0, "liquidation", account, counterparty=C,
              debt_token=USDC[chain], debt_amount=2_500 * 10**6)  # fmt: skip


async def test_confirmed_events_only_and_a_liquidation_counts_on_every_chain(
    store: Store,
) -> None:
    repo = SqlChainStore(store)
    # A: a year-long clean history on alpha; B: as old, liquidated on beta 20 blocks ago;
    # C: only an unconfirmed deposit so far.
    await commit(repo, "alpha", 10_010, [
        ev("alpha", 10, 0, "deposit", A), ev("alpha", 11, 0, "borrow", A, token=USDC["alpha"],
                                              amount=10**9),
        ev("alpha", 12, 0, "deposit", B),
        ev("alpha", 10_005, 0, "deposit", C),
    ])  # fmt: skip
    await commit(repo, "beta", 10_010, [liquidation("beta", 9_990, B)])
    sink = Sink()
    feed = ReputationFeed(config(), store, sink, Prices())
    await feed.run()
    (mults,) = sink.calls
    assert mults[A.lower()] == pytest.approx(0.90)
    assert mults[B.lower()] == pytest.approx(1.30, abs=2e-3)
    # The maintenance side of B's liquidation is phased in (minutes old: none of it yet).
    assert sink.maintenance == [{}]
    assert C.lower() not in mults and feed.history_of(C).first_seen is None
    assert sink.explain is not None
    rep = sink.explain(B)
    assert rep.multiplier == mults[B.lower()]
    liq = {f.name: f for f in rep.factors}["liquidations"]
    assert "2500.00 USD" in liq.note and "beta" in liq.note
    # The history's age comes from the block-time anchor: ~416 days.
    assert feed.history_of(A).first_seen == pytest.approx(time.time() - 10_000 * BT, abs=600)

    # Ten more blocks confirm C's deposit (a fresh address: neutral, not better).
    await commit(repo, "alpha", 10_020, [])
    await feed.run()
    assert feed.history_of(C).first_seen is not None
    assert feed.reputation(C).multiplier == 1.0

    # The engine: B holds positions on alpha only; its multiplier applies there: the
    # borrowing side at once, the maintenance side (HF) not yet (phased in).
    eng = RiskEngine.from_config(config())
    eng.set_prices({"USDC": PriceInput(1.0, "ok"), "WETH": PriceInput(3000.0, "ok")})
    eng.set_volatility({"USDC": 0.001, "WETH": 0.02})
    eng.load_positions([
        PositionRow(B, "alpha", "WETH", "collateral", 10 * E18, 10 * E18),
        PositionRow(B, "alpha", "USDC", "debt", 20_000 * 10**6, 20_000 * 10**6),
    ])  # fmt: skip
    eng.recompute()
    base = eng.health(B)
    feed.sink = eng
    await feed.run()
    eng.recompute()
    assert eng.health(B).bp < base.bp and eng.health(B).hf == base.hf
    assert eng.explain(B)["reputation"]["multiplier"] == pytest.approx(1.30, abs=2e-3)
    assert eng.explain(B)["reputation"]["maintenance_multiplier"] == 1.0
    # With the first step's rule (at once) the maintenance side follows at once.
    at_once = config(reputation={"maintenance": {"kind": "at_once"}})
    feed2 = ReputationFeed(at_once, store, eng, Prices())
    await feed2.run()
    eng.recompute()
    assert eng.health(B).hf < base.hf
    assert eng.explain(B)["reputation"]["maintenance_multiplier"] == pytest.approx(1.30, abs=2e-3)


async def test_a_cross_chain_liquidation_is_valued_by_its_claim(store: Store) -> None:
    """The settlement on the collateral chain carries no debt leg; the claim on the
    debt chain (a repay by the liquidator with the same claim id) says what was repaid.
    A settlement whose claim is not indexed is shown at 0 USD, and still counts, until
    a later run finds the claim (the debt chain's indexer was behind)."""
    repo = SqlChainStore(store)
    ref, orphan = "0x" + "ab" * 32, "0x" + "cd" * 32
    await commit(repo, "alpha", 10_010, [
        ev("alpha", 12, 0, "borrow", B, token=USDC["alpha"], amount=2_000 * 10**6),
        ev("alpha", 9_980, 0, "repay", B, token=USDC["alpha"], amount=1_500 * 10**6,
           counterparty=C, ref=ref),
    ])  # fmt: skip
    await commit(repo, "beta", 10_010, [
        ev("beta", 11, 0, "deposit", B),
        ev("beta", 9_990, 0, "liquidation", B, counterparty=C, ref=ref,
           debt_token=USDC["beta"], debt_amount=0, amount=E18 // 2),
        ev("beta", 9_995, 0, "liquidation", B, counterparty=C, ref=orphan,
           debt_token=USDC["beta"], debt_amount=0, amount=E18 // 4),
    ])  # fmt: skip
    feed = ReputationFeed(config(), store, Sink(), Prices())
    await feed.run()
    liqs = feed.history_of(B).liquidations
    assert [(x.chain, x.usd) for x in liqs] == [("beta", pytest.approx(1_500.0)), ("beta", 0.0)]
    # The debt chain's indexer catches up: the orphan's claim is indexed, and the next
    # run prices the seizure folded before it (and folds nothing twice).
    await commit(repo, "alpha", 10_030, [
        ev("alpha", 10_015, 0, "repay", B, token=USDC["alpha"], amount=700 * 10**6,
           counterparty=C, ref=orphan),
    ])  # fmt: skip
    await feed.run()
    liqs = feed.history_of(B).liquidations
    assert [(x.chain, x.usd) for x in liqs] == [
        ("beta", pytest.approx(1_500.0)),
        ("beta", pytest.approx(700.0)),
    ]
    assert feed.view(B)["history"]["liquidations"][1]["usd"] == pytest.approx(700.0)


async def test_loops_in_one_block_do_not_move_the_score(store: Store) -> None:
    repo = SqlChainStore(store)
    await commit(repo, "alpha", 10_010, [ev("alpha", 10, 0, "deposit", A)])
    sink = Sink()
    at = time.time()  # one evaluation time for both runs, so only the facts differ
    feed = ReputationFeed(config(), store, sink, Prices(), clock=lambda: at)
    await feed.run()
    before = feed.reputation(A)
    assert before.multiplier < 1.0
    # 100 deposit/withdraw/borrow/repay events in one block, and 100 more within an hour.
    loops = [ev("alpha", 9_000, i, k, A) for i, k in
             enumerate(["deposit", "withdraw", "borrow", "repay"] * 25)]  # fmt: skip
    loops += [ev("alpha", 9_001, i, k, A) for i, k in
              enumerate(["borrow", "repay"] * 50)]  # fmt: skip
    await commit(repo, "alpha", 10_020, loops)
    await feed.run()
    assert feed.reputation(A) == before
    assert sink.calls[0] == sink.calls[1]


async def test_warning_time_from_the_risk_history_is_not_clean_time(store: Store) -> None:
    repo = SqlChainStore(store)
    now = time.time()
    await commit(repo, "alpha", 10_010, [ev("alpha", 10_010 - 24 * 200, 0, "deposit", A)])
    hist = HistoryRepo(store)
    steps = [60, 3600]
    # 30 days in warning, 60 days ago, then healthy.
    await hist.write(now - 60 * DAY, steps, None, [AccountPoint(A, 1.05, 1.0, 1, 100.0, 90.0)])
    await hist.write(now - 30 * DAY, steps, None, [AccountPoint(A, 1.5, 1.0, 0, 100.0, 60.0)])
    with_history = ReputationFeed(config(history=True), store, Sink(), Prices())
    without = ReputationFeed(config(history=False), store, Sink(), Prices())
    await with_history.run()
    await without.run()
    # 200 days old: 110 earned days without history, 80 with the 30 warning days out.
    assert without.reputation(A).multiplier == pytest.approx(1 - 0.01 * 110 / 30, abs=1e-3)
    assert with_history.reputation(A).multiplier == pytest.approx(1 - 0.01 * 80 / 30, abs=1e-3)
    names = {f.name: f for f in with_history.reputation(A).factors}
    assert names["days_in_warning_or_worse"].value == pytest.approx(30, abs=0.1)
    # Credit consumed vs allocatable from the same points: debt / (debt + BP), shown.
    use = names["credit_utilisation"]
    assert use.value == pytest.approx((90 / 91 + 60 / 61) / 2)
    assert use.weight == 0.0 and use.contribution == 0.0


async def test_disabled_does_nothing(store: Store) -> None:
    repo = SqlChainStore(store)
    await commit(repo, "alpha", 10_010, [liquidation("alpha", 9_990, A)])
    sink = Sink()
    feed = ReputationFeed(config(enabled=False), store, sink, Prices())
    await feed.run()
    assert sink.calls == []


async def test_section_absent_is_disabled_and_the_figures_are_identical(store: Store) -> None:
    """No [reputation] section: the feed does nothing, the engine's figures and the
    explanation are those of an engine that never heard of reputation."""
    cfg = AppConfig(**{k: v for k, v in config().model_dump().items() if k != "reputation"})
    assert cfg.reputation.enabled is False
    repo = SqlChainStore(store)
    await commit(repo, "beta", 10_010, [liquidation("beta", 9_990, B)])
    engines = []
    for feed_on in (True, False):
        eng = RiskEngine.from_config(cfg)
        eng.set_prices({"USDC": PriceInput(1.0, "ok"), "WETH": PriceInput(3000.0, "ok")})
        eng.set_volatility({"USDC": 0.001, "WETH": 0.02})
        eng.load_positions([
            PositionRow(B, "alpha", "WETH", "collateral", 10 * E18, 10 * E18),
            PositionRow(B, "alpha", "USDC", "debt", 21_000 * 10**6, 21_000 * 10**6),
        ])  # fmt: skip
        if feed_on:
            await ReputationFeed(cfg, store, eng, Prices()).run()
        eng.recompute()
        engines.append(eng)
    on, off = engines
    assert on.explain(B, now=1.0) == off.explain(B, now=1.0)
    assert "reputation" not in on.explain(B, now=1.0)
    assert on.r_hf.tobytes() == off.r_hf.tobytes() and on.r_bp.tobytes() == off.r_bp.tobytes()


async def test_events_are_read_in_pages_and_a_failed_run_folds_nothing_twice(
    store: Store,
) -> None:
    repo = SqlChainStore(store)
    liqs = [liquidation("alpha", 9_000 + i, B) for i in range(5)]
    await commit(repo, "alpha", 10_010, [ev("alpha", 10, 0, "deposit", B), *liqs])
    reads = ReputationReads(store)
    pages = [p async for p in reads.events("alpha", after_block(-1), 10_000, page=2)]
    assert [len(p) for p in pages] == [2, 2, 2]
    assert [f.block_number for p in pages for f in p] == [10, *range(9_000, 9_005)]

    feed = ReputationFeed(config(), store, Sink(), Prices())
    real = feed.reads.events
    served = 0

    async def flaky(chain: str, after: Key, upto: int) -> AsyncIterator[list[EventFact]]:
        nonlocal served
        async for page in real(chain, after, upto, page=2):
            if served == 2:
                raise ConnectionError("store went away")
            served += 1
            yield page

    feed.reads.events = flaky  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await feed.run()
    feed.reads.events = real  # type: ignore[method-assign]
    await feed.run()
    assert len(feed.history_of(B).liquidations) == 5


def test_bad_reputation_config_names_the_field() -> None:
    from pydantic import ValidationError

    base = config().model_dump()
    for key, value in (("lower", 1.2), ("upper", 0.95), ("half_life_days", 0)):
        with pytest.raises(ValidationError, match=rf"reputation\.{key}"):
            AppConfig(**{**base, "reputation": {"enabled": True, key: value}})


def _pushes(eng: RiskEngine, chain: str) -> dict[str, tuple[int, int, int]]:
    """What the pusher would write on `chain` for a registry with no entries yet:
    (HF 1e9, tier, credit USD6) per account."""
    from aggregator.push.controller import OnchainArrays, TriggerRules
    from aggregator.push.planning import plan_accounts
    from aggregator.risk.view import LedgerView

    ledger = LedgerView(eng)
    base = OnchainArrays()
    base.sync({}, None, ledger.account_index, ledger.addresses, ledger.n_accounts)
    rules = TriggerRules(hf_deviation=0.02, credit_deviation=0.05, heartbeat_s=600)
    planned = plan_accounts(ledger, chain, base=base, onchain={}, chain_ts=2_000_000_000,
                            inflight={}, rules=rules)  # fmt: skip
    return {p.account: (p.entry.hf_1e9, p.entry.tier, p.entry.credit_usd6) for p in planned}


async def test_a_liquidation_on_one_chain_lowers_what_every_chain_is_pushed(
    store: Store,
) -> None:
    """A has collateral on alpha and beta and a year-long history; it is liquidated on
    beta. The credit the pusher writes to alpha's registry and to beta's falls below a
    neutral account's at once (the one borrowing multiplier, 1.30, on every chain); the
    HF (the maintenance side, phased in) is the neutral one until the penalty phases
    in, and with the at-once rule it falls on every chain too."""
    repo = SqlChainStore(store)
    await commit(repo, "alpha", 10_010, [ev("alpha", 10, 0, "deposit", A)])
    await commit(repo, "beta", 10_010, [liquidation("beta", 9_990, A)])

    def book() -> RiskEngine:
        eng = RiskEngine.from_config(config())
        eng.set_prices({"USDC": PriceInput(1.0, "ok"), "WETH": PriceInput(3000.0, "ok")})
        eng.set_volatility({"USDC": 0.001, "WETH": 0.02})
        eng.load_positions([
            PositionRow(A, "alpha", "WETH", "collateral", 5 * E18, 5 * E18),
            PositionRow(A, "beta", "WETH", "collateral", 5 * E18, 5 * E18),
            PositionRow(A, "alpha", "USDC", "debt", 12_000 * 10**6, 12_000 * 10**6),
        ])  # fmt: skip
        return eng

    neutral, rated, at_once = book(), book(), book()
    await ReputationFeed(config(), store, rated, Prices()).run()
    cfg = config(reputation={"maintenance": {"kind": "at_once"}})
    await ReputationFeed(cfg, store, at_once, Prices()).run()
    assert rated.explain(A)["reputation"]["multiplier"] == pytest.approx(1.30, abs=2e-3)
    for eng in (neutral, rated, at_once):
        eng.recompute()
        eng.allocate_credit(now=1.0)
    for chain in ("alpha", "beta"):
        hf0, _, credit0 = _pushes(neutral, chain)[A.lower()]
        hf1, _, credit1 = _pushes(rated, chain)[A.lower()]
        hf2, _, credit2 = _pushes(at_once, chain)[A.lower()]
        assert hf1 == hf0 and hf2 < hf0, chain
        # The two feeds ran a moment apart and the score decays with the wall clock:
        # their multipliers differ in the ninth digit (18 usd6 of 5.1e9 was seen).
        assert 0 < credit1 < credit0 and credit2 == pytest.approx(credit1, rel=1e-8), chain


def test_block_times_interpolate_between_real_anchors() -> None:
    from aggregator.reputation_feed import BlockTimes

    bt = BlockTimes(2.0)
    with pytest.raises(ValueError, match="anchor"):
        bt.time_of(5)
    bt.add(100, 1_000.0)
    assert bt.time_of(100) == 1_000.0 and bt.time_of(110) == 1_020.0  # configured beyond
    bt.add(10, 100.0)
    bt.add(100, 5.0)  # an anchor is fixed once read (confirmed blocks)
    assert bt.time_of(10) == 100.0
    assert bt.time_of(55) == pytest.approx(550.0)  # 10 s a block between the anchors
    assert bt.time_of(0) == 80.0


async def test_real_block_timestamps_date_the_history(store: Store) -> None:
    """The chain really runs at 2 x the configured block time: with the RPC's
    timestamps the first event and the liquidation get their real times (the estimate
    would make the account half as old); an RPC failure fails the run and folds
    nothing, the next run folds each event once."""
    repo = SqlChainStore(store)
    await commit(repo, "alpha", 10_010, [ev("alpha", 10, 0, "deposit", A)])
    t0 = time.time() - 10_000 * 2 * BT
    calls: list[int] = []
    broken = False

    async def ts(block: int) -> float:
        if broken:
            raise ConnectionError("rpc down")
        calls.append(block)
        return t0 + block * 2 * BT

    feed = ReputationFeed(config(), store, Sink(), Prices(), timestamps={"alpha": ts})
    await feed.run()
    assert feed.history_of(A).first_seen == pytest.approx(t0 + 10 * 2 * BT)
    assert sorted(calls) == [10, 10_000]
    estimate = ReputationFeed(config(), store, Sink(), Prices())
    await estimate.run()
    assert estimate.history_of(A).first_seen == pytest.approx(time.time() - 10_000 * BT, abs=600)

    await commit(repo, "alpha", 10_020, [liquidation("alpha", 10_005, A)])
    broken = True
    with pytest.raises(ConnectionError):
        await feed.run()
    assert feed.history_of(A).liquidations == ()
    broken = False
    await feed.run()
    await feed.run()
    (liq,) = feed.history_of(A).liquidations
    assert liq.t == pytest.approx(t0 + 10_005 * 2 * BT)
