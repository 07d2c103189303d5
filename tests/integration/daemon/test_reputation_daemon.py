"""The daemon on the devnet with `[reputation] enabled`: the `reputation` job reads the
confirmed vault events of every chain from the store, the API serves each demo user's
reputation and the account explanation carries it; the devnet's users are minutes old,
so every multiplier is neutral (the sybil rule) and the stored figures are the base
model's. With an allow-listed attester, an attestation on beta's AttestationRegistry
moves a user's multiplier through the API once confirmed, its revocation and a reorg
that removes it take the effect back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import aget, daemon_config, wait_ready

from aggregator.config import AppConfig, AttestationConfig
from aggregator.daemon import Daemon
from aggregator.store import Store
from chains.contracts import contract
from devkit import manager
from devkit.anvil import rpc_call
from devkit.deploy import send, web3_session


@pytest.fixture
async def rep_daemon(devnet_cfg: AppConfig, store: Store) -> AsyncIterator[Daemon]:
    cfg = daemon_config(devnet_cfg, store.url)
    cfg = cfg.model_copy(update={"reputation": cfg.reputation.model_copy(update={"enabled": True})})
    d = Daemon(cfg, store=store)
    await asyncio.wait_for(d.start(), 120)
    try:
        yield d
    finally:
        await d.stop()


async def test_demo_users_have_a_neutral_reputation_on_the_api(
    rep_daemon: Daemon, devnet: manager.DevnetState
) -> None:
    await wait_ready(rep_daemon)
    await rep_daemon.reputation.run()
    seen = 0
    for user in devnet.accounts["users"]:
        status, body = await aget(rep_daemon, f"/v1/accounts/{user}/reputation")
        assert status == 200, body
        assert body["multiplier"] == 1.0 and body["bounds"] == [0.9, 1.3]
        if body["history"]["first_seen"] is None:
            continue
        seen += 1
        assert body["age_days"] < 1.0
        status, detail = await aget(rep_daemon, f"/v1/accounts/{user}")
        assert status == 200
        assert detail["reputation"]["multiplier"] == 1.0
        assert {f["name"] for f in detail["reputation"]["factors"]} >= {"clean_days"}
    assert seen >= 3


async def test_demo_population_multiplier_range(rep_daemon: Daemon) -> None:
    """Every account of the devnet's demo book through the daemon's own feed and
    engine: all neutral now (minutes old); scored by a second feed over the same store
    400 days on (the same code path, only the clock moved, no new events), every
    account is a year-long clean one, so below neutral and within the bounds. Prints
    the ranges (docs/reputation.md quotes them)."""
    from aggregator.reputation_feed import ReputationFeed
    from aggregator.risk import RiskEngine
    from aggregator.risk.view import LedgerView

    await wait_ready(rep_daemon)
    await rep_daemon.reputation.run()
    accounts = list(rep_daemon.engine.book.account_address)
    assert accounts
    now = [rep_daemon.reputation.reputation(a).multiplier for a in accounts]
    assert set(now) == {1.0}
    later_engine = RiskEngine.from_config(rep_daemon.cfg)
    feed = ReputationFeed(
        rep_daemon.cfg, rep_daemon.store, later_engine, LedgerView(later_engine),
        clock=lambda: time.time() + 400 * 86_400,
    )  # fmt: skip
    await feed.run()
    later = [feed.reputation(a) for a in accounts]
    seen = [r.multiplier for r in later if r.age_days > 0]
    assert seen and all(0.90 <= m < 1.0 for m in seen)
    print(
        f"\ndemo population: {len(accounts)} accounts; now {min(now)}..{max(now)}; "
        f"400 days on ({len(seen)} with indexed events) {min(seen):.4f}..{max(seen):.4f}"
    )


# -- the attestation input (docs/reputation.md "Attestations") ---------------------------


@pytest.fixture
async def att_daemon(
    devnet_cfg: AppConfig, devnet: manager.DevnetState, tmp_path: Path
) -> AsyncIterator[Daemon]:
    """Reputation on, account 6 the one allow-listed attester; SQLite only (the input
    never touches the store)."""
    with web3_session(devnet.nodes["beta"].url) as w3:
        attester = w3.eth.accounts[6]
    cfg = daemon_config(devnet_cfg, f"sqlite+aiosqlite:///{tmp_path}/agg.db")
    rep = cfg.reputation.model_copy(
        update={"enabled": True, "attestation": AttestationConfig(attesters=[attester])}
    )
    d = Daemon(cfg.model_copy(update={"reputation": rep}))
    await asyncio.wait_for(d.start(), 120)
    try:
        yield d
    finally:
        await d.stop()


async def test_an_attestation_moves_the_multiplier_until_revoked_or_reorged_away(
    att_daemon: Daemon, devnet: manager.DevnetState
) -> None:
    d, url = att_daemon, devnet.nodes["beta"].url
    user = devnet.accounts["users"][3]  # account 5, seen on origin/alpha and gamma
    assert d.attestations.enabled and set(d.attestations.readers) == {"alpha", "beta", "gamma"}

    async def reputation() -> dict[str, Any]:
        await d.reputation.run()
        status, body = await aget(d, f"/v1/accounts/{user}/reputation")
        assert status == 200, body
        return body  # type: ignore[no-any-return]

    def confirm(blocks: int = 3) -> None:  # past beta's 2 confirmations
        for _ in range(blocks):
            rpc_call(url, "evm_mine")

    await wait_ready(d)
    assert (await reputation())["multiplier"] == 1.0
    with web3_session(url) as w3:
        reg = contract(w3, "AttestationRegistry", devnet.deployments["beta"].attestations)
        attester = w3.eth.accounts[6]
        expiry = int(w3.eth.get_block("latest")["timestamp"]) + 3600
        send(w3, reg.functions.attest(user, -5000, expiry), attester, "attest")
        uid = int(reg.functions.latestUid(attester, user).call())
        # A stranger's praise on the same registry does not count.
        send(w3, reg.functions.attest(user, 10_000, expiry), w3.eth.accounts[7], "stranger")
        confirm()
        body = await reputation()
        assert body["multiplier"] == pytest.approx(1.15)
        factor = {f["name"]: f for f in body["factors"]}["attestation"]
        assert (factor["value"], factor["weight"]) == (-0.5, 0.30)
        statuses = {(a["chain"], a["uid"]): a["status"] for a in body["history"]["attestations"]}
        assert statuses == {("beta", uid): "counted"}  # the stranger's is not even kept
        # The engine's explanation carries the same multiplier.
        _, detail = await aget(d, f"/v1/accounts/{user}")
        assert detail["reputation"]["multiplier"] == pytest.approx(1.15)

        send(w3, reg.functions.revoke(uid), attester, "revoke")
        confirm()
        body = await reputation()
        assert body["multiplier"] == 1.0
        assert body["history"]["attestations"][0]["status"] == "revoked"

        # A reorg that removes an attestation removes its effect.
        snap = rpc_call(url, "evm_snapshot")
        send(w3, reg.functions.attest(user, -10_000, expiry), attester, "attest again")
        confirm()
        assert (await reputation())["multiplier"] == pytest.approx(1.30)
        read_at = d.attestations.readers["beta"].snapshot
        assert read_at is not None
        assert rpc_call(url, "evm_revert", [snap])
        head = int(str(rpc_call(url, "eth_blockNumber")), 16)
        confirm(read_at.block.number - head + 3)  # the new branch confirms past the old read
        body = await reputation()
        assert body["multiplier"] == 1.0
        assert [a["status"] for a in body["history"]["attestations"]] == ["revoked"]
        now_at = body["history"]["attestation_inputs"]["beta"]["snapshot"]
        assert now_at["hash"] != read_at.block.hash and now_at["count"] == uid + 1  # + the stranger
