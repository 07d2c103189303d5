"""The whole daemon over a real devnet (4 anvils, one forked), on SQLite and PostgreSQL.

What is checked against the chains themselves, not against the daemon's own numbers:
the positions it reports equal the vault's collateralOf/debtOf, a deposit counts only
once confirmed while a borrow counts at once, stale feeds make prices unavailable and
accounts degraded, a crash makes an account liquidatable on the SSE stream, a wrong
chain id refuses to start, and SIGTERM stops the process cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from daemon_helpers import aget, daemon_config, wait_ready, wait_until
from web3 import Web3

from aggregator.config import AppConfig, ChainConfig
from aggregator.daemon import Daemon, StartupError
from aggregator.store import Store
from chains.contracts import contract
from devkit import manager
from devkit.anvil import free_port
from devkit.deploy import FEED_DECIMALS, push_credit, web3_session

pytestmark = pytest.mark.timeout(240)

BAD_TIERS = ("liquidatable", "insolvent")


def users(devnet: manager.DevnetState) -> list[str]:
    return list(devnet.accounts["users"])


@contextmanager
def chain(devnet: manager.DevnetState, name: str) -> Iterator[Web3]:
    with web3_session(devnet.url(name)) as w3:
        yield w3


def onchain_positions(
    devnet: manager.DevnetState, cfg: AppConfig, account: str
) -> dict[tuple[str, str, str], int]:
    """(chain, asset, side) -> raw amount, read from every vault."""
    out: dict[tuple[str, str, str], int] = {}
    for c in cfg.chains:
        with chain(devnet, c.name) as w3:
            vault = contract(w3, "CollateralVault", c.contracts.vault)
            for a in cfg.assets:
                token = a.tokens[c.name]
                coll = int(vault.functions.collateralOf(account, token).call())
                debt = int(vault.functions.debtOf(account, token).call())
                if coll:
                    out[(c.name, a.symbol, "collateral")] = coll
                if debt:
                    out[(c.name, a.symbol, "debt")] = debt
    return out


def reported_positions(view: dict[str, Any], field: str) -> dict[tuple[str, str, str], int]:
    out = {}
    for chain_name, rows in view["positions"].items():
        for row in rows:
            if int(row[field]):
                out[(chain_name, row["asset"], row["side"])] = int(row[field])
    return out


def send(w3: Web3, tx: Any, sender: str) -> None:
    tx_hash = tx.transact({"from": sender, "gas": 500_000})
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
    assert receipt["status"] == 1


def deposit_usdc(
    devnet: manager.DevnetState, name: str, user: str, raw: int, *, then_stop_mining: bool = False
) -> None:
    """Mint, approve and deposit `raw` USDC for `user` on chain `name`. then_stop_mining:
    the deposit is mined alone (automine) and no block follows until mining resumes."""
    dep = devnet.deployments[name]
    usdc = dep.tokens["USDC"]
    with chain(devnet, name) as w3:
        token = contract(w3, "MockERC20", usdc)
        vault = contract(w3, "CollateralVault", dep.vault)
        send(w3, token.functions.mint(user, raw), dep.deployer)
        send(w3, token.functions.approve(dep.vault, raw), user)
        if then_stop_mining:
            w3.provider.make_request("evm_setIntervalMining", [0])  # type: ignore[arg-type]
            w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
        send(w3, vault.functions.deposit(usdc, raw), user)


def set_feeds(
    devnet: manager.DevnetState, symbol: str, price: float, updated_at: int | None
) -> None:
    """Set `symbol`'s Chainlink feed on every chain; updated_at None means now."""
    for name, dep in devnet.deployments.items():
        if symbol not in dep.feeds:
            continue
        with chain(devnet, name) as w3:
            feed = contract(w3, "MockV3Aggregator", dep.feeds[symbol])
            answer = round(price * 10**FEED_DECIMALS)
            if updated_at is None:
                send(w3, feed.functions.updateAnswer(answer), dep.deployer)
            else:
                round_id = int(feed.functions.latestRound().call()) + 1
                send(
                    w3,
                    feed.functions.updateRoundData(round_id, answer, updated_at, updated_at),
                    dep.deployer,
                )


def venues_quoting(devnet: manager.DevnetState, symbol: str) -> list[str]:
    """The exchange's venues that currently serve a quote for `symbol`. They follow the
    feeds by polling them, so a feed change reaches them one poll later."""
    assert devnet.exchange is not None
    quoting = []
    for venue, url in devnet.exchange.source_urls()[symbol].items():
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                body = json.loads(r.read())
        except OSError:
            continue
        if not body.get("error"):
            quoting.append(venue)
    return quoting


def feed_price(devnet: manager.DevnetState, symbol: str) -> float:
    dep = devnet.deployments["beta"]
    with chain(devnet, "beta") as w3:
        feed = contract(w3, "MockV3Aggregator", dep.feeds[symbol])
        return int(feed.functions.latestRoundData().call()[1]) / 10**FEED_DECIMALS


async def test_every_seeded_account_matches_the_vaults(
    daemon: Daemon, devnet: manager.DevnetState, devnet_cfg: AppConfig
) -> None:
    await wait_ready(daemon)
    status, body = await aget(daemon, "/v1/accounts?limit=100")
    assert status == 200
    listed = {a["account"] for a in body["accounts"]}
    assert set(users(devnet)) <= listed

    # Ready means caught up with the head; the seeding's last deposits still need
    # `confirmations` more blocks (1 s each) before they count.
    expected_of = {
        u: await asyncio.to_thread(onchain_positions, devnet, devnet_cfg, u) for u in users(devnet)
    }

    async def all_confirmed() -> bool:
        for u, expected in expected_of.items():
            _, v = await aget(daemon, f"/v1/accounts/{u.lower()}")
            if reported_positions(v, "counted") != expected:
                return False
        return True

    await wait_until(all_confirmed, 60.0, "seeded deposits to be confirmed")
    for user in users(devnet):
        status, view = await aget(daemon, f"/v1/accounts/{user.lower()}")
        assert status == 200
        assert view["account"] == user
        expected = expected_of[user]
        assert reported_positions(view, "head") == expected
        # Caught up and confirmed: both finality views agree with the chain.
        assert reported_positions(view, "counted") == expected
        # HF follows from the reported parts.
        if view["debt_usd"] > 0:
            assert math.isclose(view["hf"], view["c_liq_usd"] / view["debt_usd"], rel_tol=1e-9)
        else:
            # JSON has no infinity: null, with the text form beside it.
            assert view["hf"] is None and view["hf_text"] == "inf"
        # Token amounts are exact decimal strings, addresses checksummed.
        for entry in view["assets"].values():
            for field in ("collateral_amount", "debt_amount"):
                assert isinstance(entry[field], str) and Decimal(entry[field]) >= 0
        credit = sum(c["credit_usd6"] for c in view["credit"]["chains"].values())
        assert credit <= view["borrowing_power_usd"] * 1e6 + 1e-6

        status, health = await aget(daemon, f"/v1/accounts/{user}/health")
        assert status == 200 and health["tier"] == view["tier"]
        assert set(health["credit_usd"]) == {"alpha", "beta", "gamma"}

    # The forked chain reports the deposits seeded on origin before the fork.
    alpha_users = [
        u
        for u in users(devnet)
        if any(k[0] == "alpha" for k in onchain_positions(devnet, devnet_cfg, u))
    ]
    assert alpha_users, "origin's pre-fork deposits should be visible through the fork"

    status, chains = await aget(daemon, "/v1/chains")
    assert status == 200
    by_name = {c["chain"]: c for c in chains["chains"]}
    assert set(by_name) == {"alpha", "beta", "gamma"}
    for c in by_name.values():
        assert c["caught_up"] and not c["fatal"]
        assert c["endpoints"][0]["state"] == "healthy"

    status, prices = await aget(daemon, "/v1/prices")
    assert {p["status"] for p in prices["prices"].values()} == {"ok"}
    status, text = await aget(daemon, "/metrics")
    assert 'agg_chain_indexed_block{chain="beta"}' in text
    assert 'agg_price_ok{asset="WETH"} 1.0' in text


async def test_deposit_counts_when_confirmed_borrow_counts_at_once(
    daemon: Daemon, devnet: manager.DevnetState, devnet_cfg: AppConfig
) -> None:
    await wait_ready(daemon)
    user = users(devnet)[1]
    dep = devnet.deployments["gamma"]
    weth, usdc = dep.tokens["WETH"], dep.tokens["USDC"]

    def position(view: dict[str, Any], asset: str, side: str) -> dict[str, Any]:
        rows = [r for r in view["positions"]["gamma"] if r["asset"] == asset and r["side"] == side]
        return rows[0] if rows else {"head": "0", "confirmed": "0", "counted": "0"}

    _, before = await aget(daemon, f"/v1/accounts/{user}")
    coll0 = int(position(before, "WETH", "collateral")["counted"])
    debt0 = int(position(before, "USDC", "debt")["counted"])
    amount = 10**18

    def deposit_and_borrow() -> None:
        with chain(devnet, "gamma") as w3:
            # Interval mining would confirm the deposit before we look: stop it.
            w3.provider.make_request("evm_setIntervalMining", [0])  # type: ignore[arg-type]
            w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
            token = contract(w3, "MockERC20", weth)
            vault = contract(w3, "CollateralVault", dep.vault)
            send(w3, token.functions.mint(user, amount), dep.deployer)
            send(w3, token.functions.approve(dep.vault, amount), user)
            send(w3, vault.functions.deposit(weth, amount), user)

    def resume_mining() -> None:
        with chain(devnet, "gamma") as w3:
            w3.provider.make_request("evm_setIntervalMining", [devnet.block_time_s])  # type: ignore[arg-type]

    await asyncio.to_thread(deposit_and_borrow)
    try:

        async def head_seen() -> bool:
            _, v = await aget(daemon, f"/v1/accounts/{user}")
            return int(position(v, "WETH", "collateral")["head"]) == coll0 + amount

        await wait_until(head_seen, 60, "the deposit at the head")
        _, v = await aget(daemon, f"/v1/accounts/{user}")
        # At the head but not `confirmations` deep: it must not raise borrowing power yet.
        assert int(position(v, "WETH", "collateral")["counted"]) == coll0

        def borrow() -> None:
            with chain(devnet, "gamma") as w3:
                push_credit(w3, dep, user, 100.0)
                vault = contract(w3, "CollateralVault", dep.vault)
                send(w3, vault.functions.borrow(usdc, 50 * 10**6), user)

        await asyncio.to_thread(borrow)

        async def borrow_seen() -> bool:
            _, v = await aget(daemon, f"/v1/accounts/{user}")
            return int(position(v, "USDC", "debt")["counted"]) == debt0 + 50 * 10**6

        await wait_until(borrow_seen, 60, "the borrow counted from the head")
    finally:
        await asyncio.to_thread(resume_mining)

    async def deposit_confirmed() -> bool:
        _, v = await aget(daemon, f"/v1/accounts/{user}")
        return int(position(v, "WETH", "collateral")["counted"]) == coll0 + amount

    await wait_until(deposit_confirmed, 90, "the deposit once confirmed")
    expected = await asyncio.to_thread(onchain_positions, devnet, devnet_cfg, user)
    _, v = await aget(daemon, f"/v1/accounts/{user}")
    assert reported_positions(v, "counted") == expected


async def test_readiness_fails_only_when_the_ledger_lags_past_its_limit(
    daemon: Daemon, devnet: manager.DevnetState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An indexed change sits in the recompute debounce for a moment on every busy
    chain: /readyz must not flap for that, only when the ledger really lags (here a
    recompute stalled until the test lets it go)."""
    await wait_ready(daemon)
    limit = daemon.cfg.scheduler.ledger_lag_unready_s
    release = asyncio.Event()
    recompute = daemon.ledger.recompute_accounts

    async def stalled(accounts: Any) -> None:
        await release.wait()
        await recompute(accounts)

    monkeypatch.setattr(daemon.ledger, "recompute_accounts", stalled)
    await asyncio.to_thread(deposit_usdc, devnet, "beta", users(devnet)[2], 10**6)

    async def indexed_not_in_ledger() -> bool:
        return not daemon.ledger.ledger_settled()

    await wait_until(indexed_not_in_ledger, 60, "the deposit indexed")
    assert daemon.ledger.ledger_lag_s() < limit
    ok, reasons = daemon.status.readiness()
    assert ok, reasons
    started = time.monotonic()

    async def unready() -> bool:
        return not daemon.status.readiness()[0]

    await wait_until(unready, limit + 60, "readiness to fail on the stalled ledger")
    ok, reasons = daemon.status.readiness()
    assert daemon.ledger.ledger_lag_s() > limit
    assert any(r.startswith("ledger:") and "waiting for recompute" in r for r in reasons), reasons
    status, body = await aget(daemon, "/readyz")
    assert status == 503 and any(r.startswith("ledger:") for r in body["reasons"])
    assert _ledger_lag_metric(daemon) > limit
    assert time.monotonic() - started < limit + 5
    release.set()
    await wait_ready(daemon)
    assert daemon.ledger.ledger_lag_s() == 0.0 and _ledger_lag_metric(daemon) == 0.0


async def test_a_failed_recompute_loses_no_change(
    daemon: Daemon, devnet: manager.DevnetState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recompute that fails (a store read, say) takes its batch of accounts with it
    unless they go back in the queue: with mining stopped no later event would bring
    the account back, and the ledger would keep showing the old figures."""
    await wait_ready(daemon)
    user = users(devnet)[3]
    recompute = daemon.ledger.recompute_accounts
    batches: list[set[str]] = []

    async def fails_once(accounts: Any) -> None:
        batches.append({a.lower() for a in accounts})
        if len(batches) == 1:
            raise RuntimeError("injected: the store read failed")
        await recompute(accounts)

    _, before = await aget(daemon, f"/v1/accounts/{user}")
    head0 = reported_positions(before, "head").get(("beta", "USDC", "collateral"), 0)

    def resume_mining() -> None:
        with chain(devnet, "beta") as w3:
            w3.provider.make_request("evm_setIntervalMining", [devnet.block_time_s])  # type: ignore[arg-type]

    monkeypatch.setattr(daemon.ledger, "recompute_accounts", fails_once)
    await asyncio.to_thread(deposit_usdc, devnet, "beta", user, 10**6, then_stop_mining=True)
    try:

        async def in_ledger() -> bool:
            _, v = await aget(daemon, f"/v1/accounts/{user}")
            return reported_positions(v, "head").get(("beta", "USDC", "collateral"), 0) == (
                head0 + 10**6
            )

        await wait_until(in_ledger, 90, "the deposit in the ledger after the failed recompute")
        assert user.lower() in batches[0] and user.lower() in batches[1], batches
        assert daemon.supervisor.tasks["recompute"].failures == 1
    finally:
        await asyncio.to_thread(resume_mining)


def _ledger_lag_metric(d: Daemon) -> float:
    (line,) = [
        ln for ln in d.metrics.render().decode().splitlines() if ln.startswith("agg_ledger_lag")
    ]
    return float(line.split()[-1])


async def test_stale_feeds_make_price_unavailable_and_holders_degraded(
    daemon: Daemon, devnet: manager.DevnetState
) -> None:
    await wait_ready(daemon)
    price = await asyncio.to_thread(feed_price, devnet, "WBTC")
    holders = []
    for u in users(devnet):
        _, v = await aget(daemon, f"/v1/accounts/{u}")
        if "WBTC" in v["assets"]:
            holders.append(u)
    assert holders
    # Only this test's refreshes from here on: a scheduled one in between may raise
    # credit legitimately (prices still ok) and move the baseline under our feet, and a
    # run already in flight could answer "ok" after this test's stale refresh.
    await asyncio.wait_for(daemon.jobs.pause(), 30)
    credit_before = {
        u: (await aget(daemon, f"/v1/accounts/{u}/health"))[1]["credit_usd"] for u in holders
    }
    stale_at = int(time.time()) - 7 * 86400
    await asyncio.to_thread(set_feeds, devnet, "WBTC", price, stale_at)
    try:
        # The http sources follow the feeds one exchange poll later; until then they
        # still quote WBTC and keep the quorum (a slow machine reached the refresh first).
        async def venues_stopped() -> bool:
            return not await asyncio.to_thread(venues_quoting, devnet, "WBTC")

        await wait_until(venues_stopped, 60, "the exchange's venues to stop quoting WBTC")
        await daemon.ledger.refresh_prices()
        _, p = await aget(daemon, "/v1/prices/WBTC")
        assert p["status"] == "unavailable"
        assert all(s["failure"] == "stale" for s in p["sources"] if s["kind"] == "chainlink")
        status, ready = await aget(daemon, "/readyz")
        assert status == 503
        assert any(r.startswith("price WBTC: unavailable") for r in ready["reasons"])
        for u in holders:
            _, h = await aget(daemon, f"/v1/accounts/{u}/health")
            assert h["status"] == "degraded"
            for c, credit in h["credit_usd"].items():
                assert Decimal(credit) <= Decimal(credit_before[u][c])
    finally:
        await asyncio.to_thread(set_feeds, devnet, "WBTC", price, None)
        daemon.jobs.scheduler.resume()
    await daemon.ledger.refresh_prices()
    _, p = await aget(daemon, "/v1/prices/WBTC")
    assert p["status"] == "ok"


async def test_crash_reaches_the_stream_as_a_tier_change(
    daemon: Daemon, devnet: manager.DevnetState
) -> None:
    await wait_ready(daemon)
    eth = await asyncio.to_thread(feed_price, devnet, "WETH")
    events: list[dict[str, Any]] = []
    url = f"http://127.0.0.1:{daemon.api.port}/v1/stream"

    async def listen() -> None:
        async with aiohttp.ClientSession() as s, s.get(url) as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            async for raw in resp.content:
                line = raw.decode().strip()
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
                    if any(e.get("tier") in BAD_TIERS for e in events):
                        return

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.3)
    crash = {"WETH": eth * 0.5}
    try:
        for sym, value in crash.items():
            await asyncio.to_thread(set_feeds, devnet, sym, value, None)
        # LSTs follow WETH through their rate; a >jump_threshold move needs a second round.
        for _ in range(3):
            await daemon.ledger.refresh_prices()
        await asyncio.wait_for(listener, 60)
    finally:
        listener.cancel()
        await asyncio.to_thread(set_feeds, devnet, "WETH", eth, None)
    hit = [e for e in events if e.get("tier") in BAD_TIERS]
    assert hit and hit[0]["previous_tier"] in ("healthy", "warning")
    status, body = await aget(daemon, f"/v1/accounts?tier={hit[0]['tier']}")
    assert status == 200 and hit[0]["account"] in {a["account"] for a in body["accounts"]}
    _, view = await aget(daemon, f"/v1/accounts/{hit[0]['account']}")
    assert view["liquidation"] is not None and view["liquidation"]["repay_usd"] > 0
    for _ in range(3):
        await daemon.ledger.refresh_prices()


async def test_wrong_chain_id_refuses_to_start(devnet_cfg: AppConfig, tmp_path: Path) -> None:
    chains = [
        c.model_copy(update={"chain_id": 1}) if c.name == "beta" else c for c in devnet_cfg.chains
    ]
    cfg = daemon_config(devnet_cfg, f"sqlite+aiosqlite:///{tmp_path}/x.db").model_copy(
        update={"chains": chains}
    )
    assert isinstance(cfg.chains[1], ChainConfig)
    d = Daemon(cfg)
    with pytest.raises(StartupError, match=r"chain beta: .*71002.*|chain beta: .*1\b"):
        await d.start()
    await d.stop()


async def test_restart_loads_the_book_from_the_store_without_rpc(
    daemon: Daemon, devnet: manager.DevnetState, devnet_cfg: AppConfig, store: Store
) -> None:
    await wait_ready(daemon)
    n = daemon.engine.book.n_accounts
    assert n >= len(users(devnet))
    # A second daemon over the same store but with every RPC URL dead.
    dead = [
        c.model_copy(update={"rpc_urls": [f"http://127.0.0.1:{free_port()}"]})
        for c in devnet_cfg.chains
    ]
    cold = Daemon(
        daemon_config(devnet_cfg, store.url).model_copy(update={"chains": dead}), store=store
    )
    await cold.book.load(cold.engine)
    assert cold.engine.book.n_accounts == n
    for c in cold.clients.values():
        await c.close()


async def test_impossible_stored_position_is_repaired_from_the_chain_at_start(
    devnet: manager.DevnetState, devnet_cfg: AppConfig, tmp_path: Path
) -> None:
    """A stored amount no chain can hold (negative debt, as a store bug or a hand edit
    could leave) neither stops the daemon for good nor reaches the book: the start
    reconciles that account against the vault and carries on with the chain's value."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'repair.db'}"
    store = Store(url)
    try:
        first = Daemon(daemon_config(devnet_cfg, url), store=store)
        await asyncio.wait_for(first.start(), 90)
        try:
            await wait_ready(first)
        finally:
            await first.stop()
        user = users(devnet)[0]
        (chain_name, asset, side), amount = next(
            iter((await asyncio.to_thread(onchain_positions, devnet, devnet_cfg, user)).items())
        )
        token = devnet_cfg.asset(asset).tokens[chain_name]
        async with store.transaction() as s:
            done = await s.execute(
                sa.text(
                    "UPDATE chain_position SET head_amount = '-105590967', "
                    "confirmed_amount = '-105590967' WHERE chain = :c AND lower(account) = "
                    "lower(:a) AND lower(token) = lower(:t) AND kind = :k"
                ),
                {"c": chain_name, "a": user, "t": token, "k": side},
            )
            assert done.rowcount == 1
        second = Daemon(daemon_config(devnet_cfg, url), store=store)
        await asyncio.wait_for(second.start(), 90)
        try:
            # Repaired during the start (the start itself, or the reconcile job it runs
            # at once), before any push could see the account.
            assert not second.book.impossible
            await wait_ready(second)
            stored = {
                (p.kind, p.token.lower()): p.head_amount
                for p in await second.repo.positions(chain_name, [user])
            }
            assert stored[(side, token.lower())] == amount
            _, view = await aget(second, f"/v1/accounts/{user.lower()}")
            assert reported_positions(view, "head")[(chain_name, asset, side)] == amount
            ok, reasons = second.status.readiness()
            assert ok and not second.book.impossible, reasons
        finally:
            await second.stop()
    finally:
        await store.close()


def _cli(*argv: str) -> tuple[int, str, str]:
    from aggregator import cli

    out, err = io.StringIO(), io.StringIO()
    # main() installs the process's log handler: put pytest's back afterwards.
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = cli.main(list(argv))
            except SystemExit as exc:
                rc = int(exc.code or 0)
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in handlers:
            root.addHandler(h)
        root.setLevel(level)
    return rc, out.getvalue(), err.getvalue()


async def test_cli_tables_and_json_from_the_running_daemon(
    daemon: Daemon, devnet: manager.DevnetState
) -> None:
    await wait_ready(daemon)
    api = f"http://127.0.0.1:{daemon.api.port}"
    user = users(devnet)[0]

    rc, out, err = await asyncio.to_thread(_cli, "account", user.lower(), "--api", api)
    assert rc == 0, err
    _, view = await aget(daemon, f"/v1/accounts/{user}")
    assert f"account   {user}" in out  # checksummed, whatever case was typed
    assert f"tier      {view['tier']}" in out
    for chain_name, rows in view["positions"].items():
        for row in rows:
            # Each position is a table row with its exact decimal amount.
            assert any(
                line.split()[:4] == [chain_name, row["asset"], row["side"], row["amount"]]
                for line in out.splitlines()
            ), (row, out)
    rc, raw, _ = await asyncio.to_thread(_cli, "account", user, "--api", api, "--json")
    assert rc == 0 and json.loads(raw)["account"] == user

    rc, out, err = await asyncio.to_thread(_cli, "chains", "--api", api)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["chain", "chain_id", "head"]
    assert {ln.split()[0] for ln in lines[2:] if ln.strip()} >= {"alpha", "beta", "gamma"}
    rc, raw, _ = await asyncio.to_thread(_cli, "chains", "--api", api, "--json")
    assert {c["chain"] for c in json.loads(raw)["chains"]} == {"alpha", "beta", "gamma"}

    rc, out, err = await asyncio.to_thread(_cli, "prices", "--api", api)
    assert rc == 0, err
    assert sorted(ln.split()[0] for ln in out.splitlines()[2:]) == sorted(daemon.engine.symbols)
    assert all(ln.split()[2] == "ok" for ln in out.splitlines()[2:])
    rc, out, _ = await asyncio.to_thread(_cli, "prices", "WETH", "--api", api)
    assert rc == 0 and out.splitlines()[2].split()[0] == "WETH" and "source" in out
    rc, raw, _ = await asyncio.to_thread(_cli, "prices", "--api", api, "--json")
    assert set(json.loads(raw)["prices"]) == set(daemon.engine.symbols)

    # Errors are the API's, on stderr, with a non-zero exit; a dead daemon says so.
    rc, _, err = await asyncio.to_thread(_cli, "account", "0x" + "0" * 40, "--api", api)
    assert rc == 1 and "HTTP 404" in err and "no positions known" in err
    rc, _, err = await asyncio.to_thread(_cli, "chains", "--api", f"http://127.0.0.1:{free_port()}")
    assert rc == 3 and "daemon not reachable" in err


# What legitimately moves between two snapshots of an unchanged book: clocks, the
# blocks the chains mined meanwhile, the raw source observations behind a price, and the
# pool snapshots behind a concentration term (`liquidity`: read from the chain again
# after a restart, at a later block).
VOLATILE = frozenset(
    {"timestamp", "computed_at", "last_good_timestamp", "as_of", "at", "sources", "age_s",
     "liquidity"}
)  # fmt: skip


def _stable(view: Any) -> Any:
    if isinstance(view, dict):
        return {k: _stable(v) for k, v in view.items() if k not in VOLATILE}
    if isinstance(view, list):
        return [_stable(v) for v in view]
    return view


async def _snapshot(d: Daemon) -> dict[str, Any]:
    await d.ledger.refresh_prices()
    _, page = await aget(d, "/v1/accounts?limit=1000")
    out: dict[str, Any] = {"list": _stable(page)}
    for a in sorted(x["account"] for x in page["accounts"]):
        status, view = await aget(d, f"/v1/accounts/{a}")
        assert status == 200, view
        out[a] = _stable(view)
    return out


async def _nothing_pending(d: Daemon) -> bool:
    """Every indexed position confirmed (head == confirmed): the chain state a snapshot
    sees no longer moves with the next blocks."""
    _, page = await aget(d, "/v1/accounts?limit=1000")
    for a in page["accounts"]:
        _, view = await aget(d, f"/v1/accounts/{a['account']}")
        if reported_positions(view, "head") != reported_positions(view, "confirmed"):
            return False
    return True


async def test_sigterm_and_restart_from_the_store_serve_identical_accounts(
    devnet: manager.DevnetState, devnet_cfg: AppConfig, store: Store
) -> None:
    """Start, index, price, compute, answer; stop as on SIGTERM; a new daemon on the same
    store (SQLite and PostgreSQL) answers every account's breakdown identically."""
    cfg = daemon_config(devnet_cfg, store.url)
    first = Daemon(cfg, store=store)
    await asyncio.wait_for(first.start(), 90)
    try:
        await wait_ready(first)
        # A deposit confirmed between the two snapshots is the chain moving, not a
        # difference the restart made (a fast devnet start took the first snapshot with
        # the seeded deposits still unconfirmed).
        await wait_until(lambda: _nothing_pending(first), 90, "seeded deposits confirmed")
        # Only our own refreshes: a scheduled one between two reads is not a difference.
        first.jobs.scheduler.pause()
        before = await _snapshot(first)
        assert set(users(devnet)) <= set(before) - {"list"}
    finally:
        await first.stop()  # what run_daemon does on SIGTERM
    assert not first.store_lock.held

    second = Daemon(cfg, store=store)
    await asyncio.wait_for(second.start(), 90)
    try:
        # Loaded from the store before any RPC: every account is there at once.
        assert second.engine.book.n_accounts == first.engine.book.n_accounts
        await wait_ready(second)
        second.jobs.scheduler.pause()
        after = await _snapshot(second)
    finally:
        await second.stop()
    assert after.keys() == before.keys()
    for key in before:
        assert after[key] == before[key], key


DEVNET_KEEPER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
ADMIN_TOKEN = "test-admin-token-0123456789"
STOP_BOUND_S = 10.0


def _daemon_proc(devnet: manager.DevnetState, db: Path, port: int) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "AGG_STORE__URL": f"sqlite+aiosqlite:///{db}",
        "AGG_API__PORT": str(port),
        "AGG_KEEPER_KEY": DEVNET_KEEPER_KEY,
        "AGG_ADMIN_TOKEN": ADMIN_TOKEN,
        # An unclosed socket, file or session is an error line on stderr, not a warning
        # nobody reads (they surface as "Exception ignored in ... ResourceWarning").
        # No PYTHONTRACEMALLOC: it only adds where the object was allocated, and it
        # slowed start-up ~20x (67 s to /healthz on a slow machine).
        "PYTHONWARNINGS": "error::ResourceWarning",
    }
    env.pop("PYTHONTRACEMALLOC", None)
    env.pop("AGG_LOG_FORMAT", None)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aggregator.cli",
            "-c",
            str(Path(devnet.root) / "config.toml"),
            "run",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# Start-up time is a benchmark figure (bench/startup.py), not something this test
# judges: the bound only stops a daemon that never comes up.
STARTUP_LIMIT_S = 300.0


def _wait_healthz(proc: subprocess.Popen[str], port: int, timeout: float = STARTUP_LIMIT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("daemon did not serve /healthz")


def _sigterm(proc: subprocess.Popen[str]) -> tuple[float, str]:
    """SIGTERM; returns (seconds until exit, stderr)."""
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=STOP_BOUND_S + 20)
    return time.monotonic() - t0, err


def _json_log(err: str) -> list[dict[str, Any]]:
    """stderr is not a TTY here: every line must be one JSON log record."""
    records = []
    for line in err.splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise AssertionError(f"non-JSON stderr line: {line[:500]}\n{err[-3000:]}") from None
    return records


def _kill(*procs: subprocess.Popen[str]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.mark.timeout(4 * STARTUP_LIMIT_S)
def test_sigterm_stops_the_process_cleanly(devnet: manager.DevnetState, tmp_path: Path) -> None:
    """`aggregator run` as a real process: a second one on the same SQLite store refuses
    to start naming the file and the holder's pid; SIGTERM exits 0 within the bound with
    nothing left open; logs are JSON lines without secrets; the lock is released on exit."""
    db = tmp_path / "d.db"
    port, port2 = free_port(), free_port()
    first = _daemon_proc(devnet, db, port)
    second: subprocess.Popen[str] | None = None
    try:
        _wait_healthz(first, port)
        second = _daemon_proc(devnet, db, port2)
        _out, err2 = second.communicate(timeout=STARTUP_LIMIT_S)
        assert second.returncode == 1, err2[-3000:]
        refused = " ".join(r["msg"] for r in _json_log(err2) if r["level"] == "error")
        assert f"store {db} is in use by another aggregator (pid {first.pid}" in refused, err2
        assert "Traceback" not in err2

        time.sleep(2)  # let jobs run, so the drain has something to wait for
        took, err = _sigterm(first)
    finally:
        _kill(first, *([second] if second else []))
    assert first.returncode == 0, err[-3000:]
    assert took < STOP_BOUND_S, f"SIGTERM took {took:.1f}s"
    for text in (err, err2):
        assert "Traceback" not in text, text[-3000:]
        assert "Unclosed" not in text and "ResourceWarning" not in text, text[-3000:]
        assert DEVNET_KEEPER_KEY[2:] not in text.lower() and ADMIN_TOKEN not in text
    records = _json_log(err)
    assert {"ts", "level", "logger", "msg"} <= set(records[0])
    assert any(r["msg"].startswith("stopping: draining jobs") for r in records)
    assert any(r["msg"].startswith("API on http://") for r in records)

    # The lock went with the process: a new daemon takes the store and stops cleanly.
    third = _daemon_proc(devnet, db, port2)
    try:
        _wait_healthz(third, port2)
        took, err3 = _sigterm(third)
    finally:
        _kill(third)
    assert third.returncode == 0 and took < STOP_BOUND_S, err3[-3000:]
    assert "in use by another aggregator" not in err3
