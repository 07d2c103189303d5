"""PushService over two real anvil chains and a real RiskEngine: a price drop reaches both
registries, one chain's RPC failing never holds back the other, dry run and pause."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from push_env import chain_time, client, entry_of, eventually, keeper_key, nonce_of

from aggregator.config import AppConfig
from aggregator.metrics import Metrics
from aggregator.push.controller import GasModel, hf_fixed_array
from aggregator.push.service import PushService
from aggregator.risk.book import PositionRow
from aggregator.risk.engine import PriceInput, RiskEngine
from aggregator.store.push_repo import SqlPushStore
from chains.registry_codec import HF_INFINITE
from chains.rpc import RpcClient
from devkit.anvil import AnvilNode
from devkit.testing.faultproxy import FaultProxy
from devkit.testing.harness import USERS, VaultHarness

pytestmark = pytest.mark.timeout(120)
USER = USERS[0]


@dataclass
class TwoChains:
    nodes: dict[str, AnvilNode]
    harness: dict[str, VaultHarness]
    proxy: FaultProxy
    clients: dict[str, RpcClient]

    def cfg(self, **pusher: Any) -> AppConfig:
        chains = [
            {
                "name": name,
                "chain_id": self.nodes[name].chain_id,
                "rpc_urls": [self.clients[name].status()[0].url],
                "confirmations": 1,
                "contracts": {"registry": self.harness[name].registry},
            }
            for name in ("a", "b")
        ]
        src = [{"name": "h", "kind": "http", "url": "http://127.0.0.1:9/x", "path": "p"}]
        return AppConfig(
            chains=chains,
            assets=[
                {"symbol": "COL", "decimals": 18, "ltv": 0.8, "lt": 0.85, "sources": src},
                {
                    "symbol": "USD",
                    "decimals": 6,
                    "ltv": 0.9,
                    "lt": 0.95,
                    "borrowable": True,
                    "sources": src,
                },
            ],
            credit={"policy": "static"},
            pusher={
                "interval_s": 0.3,
                "heartbeat_s": 600,
                "vault_max_age_s": 900,
                "stuck_after_s": 30,
                **pusher,
            },
        )


def engine_for(cfg: AppConfig, col_price: float = 2000.0) -> RiskEngine:
    eng = RiskEngine.from_config(cfg)
    eng.load_positions(
        [
            PositionRow(USER, "a", "COL", "collateral", 10 * 10**18, 10 * 10**18),
            PositionRow(USER, "b", "USD", "debt", 5_000 * 10**6, 5_000 * 10**6),
        ]
    )
    set_price(eng, col_price)
    return eng


def set_price(eng: RiskEngine, col_price: float) -> None:
    now = time.time()
    eng.set_prices(
        {"COL": PriceInput(col_price, "ok", now, []), "USD": PriceInput(1.0, "ok", now, [])}
    )
    eng.set_volatility({"COL": 0.01, "USD": 0.0005}, {})
    eng.recompute()
    eng.allocate_credit()


@pytest.fixture
async def two(
    anvil_factory: Callable[..., AnvilNode],
) -> AsyncIterator[TwoChains]:
    nodes = {"a": anvil_factory(71201), "b": anvil_factory(71202)}
    harness = {k: VaultHarness.deploy(n.url) for k, n in nodes.items()}
    proxy = await FaultProxy(nodes["b"].url).start()
    clients = {
        "a": client(nodes["a"].url, 71201, "a"),
        "b": client(proxy.url, 71202, "b", timeout_s=2.0, health_interval_s=0.2),
    }
    try:
        yield TwoChains(nodes, harness, proxy, clients)
    finally:
        for c in clients.values():
            await c.close()
        await proxy.stop()


def service(two: TwoChains, store: SqlPushStore, **pusher: Any) -> PushService:
    cfg = two.cfg(**pusher)
    return PushService(
        cfg, engine_for(cfg), store, two.clients, metrics=Metrics(), key=keeper_key()
    )


async def run_loops(svc: PushService, stop: asyncio.Event) -> list[asyncio.Task[None]]:
    return [asyncio.create_task(svc.run_chain(n, stop)) for n in svc.chains]


async def stop_loops(stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> None:
    stop.set()
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await t


async def test_price_drop_reaches_both_registries(two: TwoChains, push_store: SqlPushStore) -> None:
    svc = service(two, push_store)
    await svc.load()
    stop = asyncio.Event()
    tasks = await run_loops(svc, stop)
    try:
        h_a, h_b = two.harness["a"], two.harness["b"]

        async def first() -> bool:
            return entry_of(h_a, USER) is not None and entry_of(h_b, USER) is not None

        await eventually(first, 15, "first entries on both chains")
        before = {k: entry_of(h, USER) for k, h in two.harness.items()}
        assert all(e is not None and e.hf_1e9 != HF_INFINITE for e in before.values())
        credit = svc.engine.credit_of(USER)
        assert sum(credit.values()) > 0
        set_price(svc.engine, 1700.0)  # -15% on the collateral (on chain a)
        svc.wake()

        async def lowered() -> bool:
            now = {k: entry_of(h, USER) for k, h in two.harness.items()}
            return all(
                e is not None
                and b is not None
                and e.hf_1e9 < b.hf_1e9
                and e.credit_usd6 < b.credit_usd6
                for e, b in ((now[k], before[k]) for k in now)
            )

        took = await eventually(lowered, 10, "lower HF and credit on both chains")
        assert took < 5
        view = svc.onchain_view(USER)
        assert set(view) == {"a", "b"} and view["b"]["entry"]["tier"] == "healthy"
    finally:
        await stop_loops(stop, tasks)


async def test_one_chain_rpc_down_never_holds_back_the_other(
    two: TwoChains, push_store: SqlPushStore
) -> None:
    # b's node hangs on every request (a blocking design would stall chain a too),
    # then refuses connections; chain a keeps receiving updates throughout.
    two.proxy.set(delay=1.0, delay_s=3.0)
    svc = service(two, push_store)
    await svc.load()
    stop = asyncio.Event()
    tasks = await run_loops(svc, stop)
    try:
        h_a, h_b = two.harness["a"], two.harness["b"]

        async def on_a() -> bool:
            return entry_of(h_a, USER) is not None

        await eventually(on_a, 10, "chain a updated while b hangs")
        # b's first cycle is still waiting on its hanging node (2 s timeout per request):
        # chain a did not wait for it.
        b_state = svc.chains["b"].state
        assert b_state.last_ok_at is None and b_state.consecutive_failures == 0
        assert entry_of(h_b, USER) is None
        two.proxy.set(delay=0.0, drop=1.0)
        first_a = entry_of(h_a, USER)
        set_price(svc.engine, 1500.0)
        svc.wake()

        async def a_again() -> bool:
            e = entry_of(h_a, USER)
            return e is not None and first_a is not None and e.credit_usd6 < first_a.credit_usd6

        await eventually(a_again, 10, "chain a updated again while b is down")

        async def b_reported() -> bool:
            return any("pusher b" in r for r in svc.readiness_reasons())

        await eventually(b_reported, 15, "readiness names chain b")
        assert not any("pusher a" in r for r in svc.readiness_reasons())
        assert svc.chain_status("b")["consecutive_failures"] >= 3
        two.proxy.set(drop=0.0)  # b recovers and catches up

        async def on_b() -> bool:
            return entry_of(h_b, USER) is not None

        await eventually(on_b, 15, "chain b updated after recovery")

        async def healthy() -> bool:
            return svc.readiness_reasons() == []

        await eventually(healthy, 5, "chain b no longer in readiness reasons")
    finally:
        await stop_loops(stop, tasks)


async def test_dry_run_computes_batches_and_sends_nothing(
    two: TwoChains, push_store: SqlPushStore
) -> None:
    svc = service(two, push_store, dry_run=True)
    start = nonce_of(two.harness["a"])
    planned = await svc.cycle("a")
    assert [p.reason for p in planned] == ["first"]
    st = svc.chain_status("a")
    assert st["dry_run"] and st["last_batch"]["entries"] == 1
    assert st["last_batch"]["accounts"][0]["account"] == USER
    assert nonce_of(two.harness["a"]) == start and entry_of(two.harness["a"], USER) is None
    assert await push_store.recent_txs("a") == []


async def test_account_holding_an_unpriced_asset_is_not_pushed(
    two: TwoChains, push_store: SqlPushStore
) -> None:
    """A fresh engine whose first round for an asset is not ok and knows no last good
    price counts that asset at zero: its holders' figures are wrong (collateral at zero
    reads as liquidatable; a debt at zero inflated HF to 37.9 instead of 2.7 after a
    restart in the soak), so nothing is pushed for them."""
    cfg = two.cfg(dry_run=True)
    eng = RiskEngine.from_config(cfg)
    eng.load_positions(
        [
            PositionRow(USER, "a", "COL", "collateral", 10 * 10**18, 10 * 10**18),
            PositionRow(USER, "b", "USD", "debt", 5_000 * 10**6, 5_000 * 10**6),
        ]
    )
    now = time.time()
    eng.set_prices(
        {"COL": PriceInput(None, "disputed", now, []), "USD": PriceInput(1.0, "ok", now, [])}
    )
    eng.set_volatility({"COL": 0.01, "USD": 0.0005}, {})
    eng.recompute()
    eng.allocate_credit()
    assert eng.health(USER).tier == "insolvent"  # what would have been pushed
    assert eng.unpriced_accounts(1).tolist() == [True]
    svc = PushService(cfg, eng, push_store, two.clients, metrics=Metrics(), key=keeper_key())
    assert await svc.cycle("a") == []
    # Its last good price known (a restarted oracle has it from its history): valued at
    # that price, degraded, and pushed.
    eng.set_prices({"COL": PriceInput(None, "disputed", now, [], last_good=2000.0)})
    eng.recompute()
    eng.allocate_credit()
    assert eng.unpriced_accounts(1).tolist() == [False]
    health = eng.health(USER)
    assert health.degraded and health.tier == "healthy"
    assert health.collateral_usd == pytest.approx(20_000.0)
    (planned,) = await svc.cycle("a")
    assert planned.entry.hf_1e9 == hf_fixed_array(np.array([health.hf]))[0]


async def test_paused_sends_nothing_until_resumed(two: TwoChains, push_store: SqlPushStore) -> None:
    svc = service(two, push_store)
    svc.set_paused(True)
    assert await svc.cycle("a") == []
    assert entry_of(two.harness["a"], USER) is None
    svc.set_paused(False)
    sent = await svc.cycle("a")
    assert [p.reason for p in sent] == ["first"]
    assert svc.chain_status("a")["pending_txs"] == 1
    assert sent[0].entry.as_of <= chain_time(two.harness["a"])


def _many_accounts(svc: PushService, n: int) -> list[str]:
    accounts = [f"0x{0xA000 + i:040x}" for i in range(n)]
    rows = []
    for i, a in enumerate(accounts):
        rows.append(PositionRow(a, "a", "COL", "collateral", (i + 1) * 10**18, (i + 1) * 10**18))
        rows.append(
            PositionRow(a, "a", "USD", "debt", (i + 1) * 900 * 10**6, (i + 1) * 900 * 10**6)
        )
    svc.engine.load_positions(rows)
    set_price(svc.engine, 2000.0)
    return accounts


@pytest.mark.parametrize("optimistic", [False, True])
async def test_many_changed_accounts_go_out_in_several_batches_in_one_cycle(
    two: TwoChains, push_store: SqlPushStore, optimistic: bool
) -> None:
    """24 new slots with a budget for ~9: one cycle sends every batch (consecutive
    nonces, up to max_in_flight), the most urgent first. A gas model that is short
    (the eth_call at its bound runs out of gas) falls back to eth_estimateGas, and a
    batch priced above the budget is shrunk; every account still gets its entry."""
    cfg = two.cfg(batch_gas_budget=300_000, max_in_flight=8)
    model = GasModel(per_new=2_000) if optimistic else None
    svc = PushService(
        cfg, engine_for(cfg), push_store, two.clients, metrics=Metrics(), key=keeper_key(),
        gas_model=model,
    )  # fmt: skip
    accounts = _many_accounts(svc, 24)
    await svc.load()
    h = two.harness["a"]
    start = nonce_of(h)
    sent = await svc.cycle("a")
    assert {p.account for p in sent} >= set(accounts)
    sender = svc.chains["a"].sender
    assert sender is not None
    nonces = [r.nonce for r in await push_store.recent_txs("a", 50)]
    assert sorted(nonces) == list(range(start, start + len(nonces)))
    if not optimistic:
        assert len(nonces) == 3  # 25 entries (USER too) of ~24k model gas, ~9 a batch
    else:
        assert len(nonces) > 1  # each shrunk to the budget
    liquidatable_first = [p.entry.tier for p in sent]
    assert liquidatable_first == sorted(liquidatable_first, reverse=True)

    async def all_there() -> bool:
        return all(entry_of(h, a) is not None for a in accounts)

    await eventually(all_there, 15, "every account's entry on chain a")
