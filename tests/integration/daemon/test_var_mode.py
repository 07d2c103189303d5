"""The daemon on the devnet with the VaR/ES model pushed (`[portfolio] mode = "var"`):
the stored (pushed) figures are the var model's, calibrated at start from the shipped
history, credit stays within the model's borrowing power, and the account's
liquidation plan is the var model's."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from daemon_helpers import aget, daemon_config, wait_ready

from aggregator.config import AppConfig
from aggregator.daemon import Daemon
from aggregator.store import Store
from devkit import manager


@pytest.fixture
async def var_daemon(devnet_cfg: AppConfig, store: Store) -> AsyncIterator[Daemon]:
    cfg = daemon_config(devnet_cfg, store.url)
    cfg = cfg.model_copy(update={"portfolio": cfg.portfolio.model_copy(update={"mode": "var"})})
    d = Daemon(cfg, store=store)
    await asyncio.wait_for(d.start(), 120)
    try:
        yield d
    finally:
        await d.stop()


async def test_var_mode_pushes_the_var_models_figures(
    var_daemon: Daemon, devnet: manager.DevnetState
) -> None:
    await wait_ready(var_daemon)
    checked = 0
    for user in devnet.accounts["users"]:
        status, margin = await aget(var_daemon, f"/v1/accounts/{user}/margin")
        if status == 404:
            continue
        var = margin["var"]
        assert var["available"], var
        assert var["calibration"]["source"] == "shipped", var["calibration"]
        # Euler contributions of the binding figure add up to the requirement.
        by_asset = sum(var["contributions"]["by_asset"].values())
        assert by_asset == pytest.approx(var["requirement_usd"], rel=1e-6, abs=1e-6)
        _, health = await aget(var_daemon, f"/v1/accounts/{user}/health")
        assert health["tier"] == var["tier"]
        if var["hf"] is None:
            assert health["hf"] is None
        else:
            assert math.isclose(health["hf"], var["hf"], rel_tol=1e-9)
        assert health["borrowing_power_usd"] == pytest.approx(
            var["borrowing_power_usd"], rel=1e-9, abs=1e-6
        )
        credit = sum(Decimal(v) for v in health["credit_usd"].values())
        assert credit <= Decimal(repr(health["borrowing_power_usd"])) + Decimal("0.000001")
        # The account's liquidation plan is the var model's (docs/var.md), the standard
        # one beside it.
        _, detail = await aget(var_daemon, f"/v1/accounts/{user}")
        assert "standard_liquidation" in detail
        plan = detail["liquidation"]
        if var["hf"] is not None and var["hf"] < 1.0:
            assert plan["model"] == "var" and plan["kind"] in ("partial", "full"), plan
        else:
            assert plan is None
        checked += 1
    assert checked >= 3
