from __future__ import annotations

import pytest

from aggregator.config import ChainConfig, ChainContracts
from chains.types import ChainSettings, Position


def test_settings_from_the_daemon_config() -> None:
    cfg = ChainConfig(
        name="beta",
        chain_id=71002,
        rpc_urls=["http://127.0.0.1:1", "http://127.0.0.1:2"],
        confirmations=7,
        start_block=12,
        contracts=ChainContracts(vault="0x" + "ab" * 20),
        max_log_range=500,
        reconcile_every_blocks=10,
        reconcile_sample=3,
    )
    s = ChainSettings.from_config(cfg)
    assert s.rpc_urls == ("http://127.0.0.1:1", "http://127.0.0.1:2")
    assert (s.chain_id, s.confirmations, s.start_block, s.max_log_range) == (71002, 7, 12, 500)
    assert s.vault == cfg.contracts.vault and s.multicall == cfg.contracts.multicall
    assert (s.reconcile_every_blocks, s.reconcile_sample, s.reorg_window) == (10, 3, 7)


def test_settings_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="chain x: rpc_urls"):
        ChainSettings(name="x", chain_id=1, rpc_urls=())
    with pytest.raises(ValueError, match="confirmations"):
        ChainSettings(name="x", chain_id=1, rpc_urls=("http://a",), confirmations=-1)
    assert (
        ChainSettings(name="x", chain_id=1, rpc_urls=("http://a",), confirmations=0).reorg_window
        == 1
    )


def test_confirmed_view_is_conservative_in_both_directions() -> None:
    col = Position("c", "a", "t", "collateral", head_amount=70, pending_amount=100, updated_block=1)
    debt = Position("c", "a", "t", "debt", head_amount=30, pending_amount=20, updated_block=1)
    # A withdrawal of not-yet-confirmed collateral cannot make the confirmed view negative.
    assert col.confirmed_amount == 0
    assert debt.confirmed_amount == 50
