"""The replay's own miner (devkit/replay/blocks.py) against a recording fake RPC."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from devkit.replay.blocks import Miner, MinerError

URLS = {"alpha": "http://a", "beta": "http://b"}


class FakeRpc:
    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[tuple[str, str, list[Any]]] = []
        self.fail_on = fail_on

    async def __call__(self, url: str, method: str, params: list[Any]) -> Any:
        self.calls.append((url, method, params))
        if method == "evm_mine" and url == self.fail_on:
            raise OSError("connection refused")
        return None

    def methods(self, url: str) -> list[str]:
        return [m for u, m, _ in self.calls if u == url]


async def test_mines_every_chain_and_restores_the_devnet_interval() -> None:
    rpc = FakeRpc()
    async with Miner(rpc, URLS, 0.02, devnet_block_s=1) as miner:
        assert miner.own
        await asyncio.sleep(0.15)
        miner.check()
    for url in URLS.values():
        m = rpc.methods(url)
        assert m[0] == "evm_setIntervalMining"
        assert m[-1] == "evm_setIntervalMining"
        assert m.count("evm_mine") >= 3
    first, last = rpc.calls[0], rpc.calls[-1]
    assert first[2] == [0] and last[2] == [1]
    assert miner.blocks >= 3
    # No block after the context exits.
    n = len(rpc.calls)
    await asyncio.sleep(0.06)
    assert len(rpc.calls) == n


async def test_the_devnet_interval_is_restored_on_error() -> None:
    rpc = FakeRpc()
    with pytest.raises(RuntimeError, match="boom"):
        async with Miner(rpc, URLS, 0.02, devnet_block_s=2):
            raise RuntimeError("boom")
    assert [c for c in rpc.calls if c[1] == "evm_setIntervalMining"][-2:] == [
        ("http://a", "evm_setIntervalMining", [2]),
        ("http://b", "evm_setIntervalMining", [2]),
    ]


async def test_an_automine_devnet_gets_automine_back() -> None:
    rpc = FakeRpc()
    async with Miner(rpc, URLS, 0.5, devnet_block_s=0):
        pass
    assert rpc.calls[-1] == ("http://b", "evm_setAutomine", [True])


async def test_the_devnets_own_interval_is_left_to_anvil() -> None:
    rpc = FakeRpc()
    async with Miner(rpc, URLS, 1.0, devnet_block_s=1) as miner:
        assert not miner.own
        await asyncio.sleep(0.05)
    assert rpc.calls == []


async def test_a_failed_mine_is_raised_by_check_naming_the_chain() -> None:
    rpc = FakeRpc(fail_on="http://b")
    async with Miner(rpc, URLS, 0.02, devnet_block_s=1) as miner:
        await asyncio.sleep(0.1)
        with pytest.raises(MinerError, match=r"beta: evm_mine failed: connection refused"):
            miner.check()
        mined = rpc.methods("http://a").count("evm_mine")
        await asyncio.sleep(0.06)
        # It stopped: no block after its failure.
        assert rpc.methods("http://a").count("evm_mine") == mined


def test_bad_interval() -> None:
    with pytest.raises(MinerError, match="block interval"):
        Miner(FakeRpc(), URLS, 0.0, devnet_block_s=1)


async def test_a_node_gone_at_exit_does_not_hide_the_error_that_ended_the_steps(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Gone(FakeRpc):
        async def __call__(self, url: str, method: str, params: list[Any]) -> Any:
            if method == "evm_setIntervalMining" and params == [1]:
                raise OSError("connection refused")
            return await super().__call__(url, method, params)

    with pytest.raises(RuntimeError, match="the step loop's own error"):
        async with Miner(Gone(), URLS, 0.02, devnet_block_s=1):
            raise RuntimeError("the step loop's own error")
    assert "alpha kept manual mining" in caplog.text and "beta kept manual mining" in caplog.text


async def test_a_hung_evm_mine_is_named_by_the_stall_note() -> None:
    class Hangs(FakeRpc):
        async def __call__(self, url: str, method: str, params: list[Any]) -> Any:
            if method == "evm_mine" and url == URLS["beta"]:
                await asyncio.Event().wait()
            return await super().__call__(url, method, params)

    async with Miner(Hangs(), URLS, 0.02, devnet_block_s=1) as miner:
        await asyncio.sleep(0.15)
        note = miner.stall_note(min_s=0.1)
        assert "beta for" in note and "alpha" not in note
        assert miner.stall_note(min_s=60.0) == ""
        miner.check()  # hung is not failed: the wait that runs out names it
