"""Helpers: Chainlink MockV3Aggregator feeds on real anvil chains, read through the chains
helper's RpcClient (Multicall3 aggregate3)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from eth_abi import encode
from eth_utils import function_signature_to_4byte_selector

from chains.contracts import load_artifact
from devkit.anvil import AnvilNode

DEPLOYER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


def send(node: AnvilNode, to: str | None, data: bytes) -> dict[str, Any]:
    tx: dict[str, Any] = {"from": DEPLOYER, "data": "0x" + data.hex(), "gas": hex(3_000_000)}
    if to is not None:
        tx["to"] = to
    h = node.rpc("eth_sendTransaction", [tx])
    receipt = None
    deadline = time.monotonic() + 60
    while receipt is None and time.monotonic() < deadline:
        receipt = node.rpc("eth_getTransactionReceipt", [h])
        if receipt is None:
            time.sleep(0.02)
    assert isinstance(receipt, dict) and receipt["status"] == "0x1", receipt
    return receipt


def deploy_feed(node: AnvilNode, decimals: int, answer: int) -> str:
    art = load_artifact("MockV3Aggregator")
    data = bytes.fromhex(art.bytecode.removeprefix("0x")) + encode(
        ["uint8", "int256"], [decimals, answer]
    )
    return str(send(node, None, data)["contractAddress"])


def update_answer(node: AnvilNode, feed: str, answer: int) -> None:
    sel = function_signature_to_4byte_selector("updateAnswer(int256)")
    send(node, feed, sel + encode(["int256"], [answer]))


def update_round(
    node: AnvilNode, feed: str, *, round_id: int, answer: int, updated_at: int, started_at: int
) -> None:
    sel = function_signature_to_4byte_selector("updateRoundData(uint80,int256,uint256,uint256)")
    send(
        node,
        feed,
        sel
        + encode(
            ["uint80", "int256", "uint256", "uint256"], [round_id, answer, updated_at, started_at]
        ),
    )


def chain_now(node: AnvilNode) -> int:
    block = node.rpc("eth_getBlockByNumber", ["latest", False])
    assert isinstance(block, dict)
    return max(int(block["timestamp"], 16), int(time.time()))


class CountingCaller:
    """Wraps a BatchCaller and counts round trips (to prove one batch per chain)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.batches: list[int] = []

    async def call_batch(
        self, calls: Sequence[tuple[str, bytes]], block: int | str = "latest"
    ) -> list[bytes | None]:
        self.batches.append(len(calls))
        result: list[bytes | None] = await self.inner.call_batch(calls, block)
        return result
