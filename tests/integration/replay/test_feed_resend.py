"""The replay's feed-update guard on a real anvil: a transaction the node accepted and
then dropped from its pool is sent again (and mined), while a plain (url, hash) that
was dropped still fails the guard with the node's own account of it, and a replay
miner hung in its evm_mine is named in the guard's error."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from aggregator.replay import SentTx, _mined
from devkit.anvil import AnvilNode
from devkit.replay.blocks import Miner
from devkit.simulator import _rpc


@pytest.fixture
def node() -> Iterator[AnvilNode]:
    n = AnvilNode(chain_id=31337).start()
    try:
        n.rpc("evm_setAutomine", [False])
        n.rpc("evm_setIntervalMining", [1])
        yield n
    finally:
        n.stop()


def _transfer(node: AnvilNode) -> dict[str, object]:
    a, b = node.rpc("eth_accounts")[:2]  # type: ignore[index]
    return {"from": a, "to": b, "value": hex(10**15)}


@pytest.mark.timeout(60)
async def test_a_dropped_feed_update_is_sent_again_and_mined(node: AnvilNode) -> None:
    tx = _transfer(node)
    h = str(node.rpc("eth_sendTransaction", [tx]))
    node.rpc("anvil_dropTransaction", [h])
    assert node.rpc("eth_getTransactionByHash", [h]) is None
    async with aiohttp.ClientSession() as session:
        resent = await _mined(session, [SentTx(node.url, h, tx)], within_s=20.0)
        assert resent == 1
        # The copy was mined: the sender's nonce moved by exactly one.
        mined = await _rpc(session, node.url, "eth_getTransactionCount", [tx["from"], "latest"])
        assert int(mined, 16) == 1


@pytest.mark.timeout(60)
async def test_a_dropped_transaction_without_its_call_fails_naming_it(node: AnvilNode) -> None:
    h = str(node.rpc("eth_sendTransaction", [_transfer(node)]))
    node.rpc("anvil_dropTransaction", [h])
    async with aiohttp.ClientSession() as session:
        with pytest.raises(RuntimeError, match=f"feed update {h} not mined.*unknown to the node"):
            await _mined(session, [(node.url, h)], within_s=2.0)


@pytest.mark.timeout(60)
async def test_a_miner_hung_in_evm_mine_is_named_when_a_feed_update_does_not_mine(
    node: AnvilNode,
) -> None:
    hung = asyncio.Event()

    async with aiohttp.ClientSession() as session:

        async def rpc(url: str, method: str, params: list[Any]) -> Any:
            if method == "evm_mine":
                hung.set()
                await asyncio.Event().wait()  # a node that never answers
            return await _rpc(session, url, method, params)

        async with Miner(rpc, {"alpha": node.url}, 0.1, devnet_block_s=1) as miner:
            await hung.wait()
            h = str(await _rpc(session, node.url, "eth_sendTransaction", [_transfer(node)]))
            with pytest.raises(RuntimeError, match=r"not mined.*evm_mine is unanswered on alpha"):
                await _mined(session, [(node.url, h)], within_s=1.5, stall_note=miner.stall_note)
        # The devnet's interval mining is back: the transaction is mined.
        await _mined(session, [(node.url, h)], within_s=20.0)
