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


def config(enabled: bool = True, history: bool = False) -> AppConfig:
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
        reputation={"enabled": enabled},
        history={"enabled": history},
    )  # type: ignore[arg-type]


class Prices:
    def price_usd(self, symbol: str) -> float | None:
        return {"USDC": 1.0, "WETH": 3000.0}[symbol]


class Sink:
    def __init__(self) -> None:
        self.calls: list[dict[str, float]] = []
        self.explain: Callable[[str], Reputation] | None = None

    def prepare_reputation(
        self, params: Params, multipliers: Mapping[str, float], explain: Callable[[str], Reputation]
    ) -> tuple[dict[str, float], Callable[[str], Reputation]]:
        return dict(multipliers), explain

    def install_reputation(
        self, prepared: tuple[dict[str, float], Callable[[str], Reputation]]
    ) -> None:
        self.calls.append(prepared[0])
        self.explain = prepared[1]


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

    # The engine: B holds positions on alpha only; its multiplier applies there.
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
    assert eng.health(B).hf < base.hf
    assert eng.explain(B)["reputation"]["multiplier"] == pytest.approx(1.30, abs=2e-3)


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
