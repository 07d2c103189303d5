"""The soak checker's judgement of a keeper nonce jump (runs in `make test`)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from soak_checker import Checker, CheckStats

KEEPER = "0x" + "ab" * 20


class Node:
    """The node's account nonce before each block, and the transactions it knows."""

    def __init__(self, nonce_before: int, known: dict[str, str]) -> None:
        self.nonce_before, self.known = nonce_before, known

    async def __call__(self, method: str, params: list[Any]) -> Any:
        if method == "eth_getTransactionCount":
            return hex(self.nonce_before)
        if method == "eth_getTransactionByHash":
            n = self.known.get(params[0])
            return None if n is None else {"blockNumber": n}
        raise AssertionError(method)


class Store:
    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        assert args == ("alpha", 272, 274)
        return [(273, "confirmed", "0x" + "11" * 32, None)]


def checker(nonce_before: int) -> Any:
    node = Node(nonce_before, {"0x" + "11" * 32: "0x99"})
    return SimpleNamespace(rpc={"alpha": node}, keeper=KEEPER, store=Store(), stats=CheckStats())


async def test_a_node_that_executed_a_nonce_past_the_account_is_a_node_fault() -> None:
    c = checker(nonce_before=273)
    assert await Checker._skipped_by_the_node(c, "alpha", 272, 274, 100)
    assert c.stats.info["node fault: alpha blocks skip a keeper nonce"] == 1
    assert "executed nonce 274 with the account at nonce 273" in c.stats.evidence[0]
    assert "nonce 273 confirmed" in c.stats.evidence[0] and "block 0x99" in c.stats.evidence[0]


async def test_a_node_whose_state_counts_nonces_no_block_holds_is_a_node_fault() -> None:
    c = checker(nonce_before=274)
    assert await Checker._skipped_by_the_node(c, "alpha", 272, 274, 100)
    assert "counts nonces 273..273 that none of its blocks holds" in c.stats.evidence[0]


async def test_any_other_account_nonce_leaves_the_jump_a_violation() -> None:
    c = checker(nonce_before=280)
    assert not await Checker._skipped_by_the_node(c, "alpha", 272, 274, 100)
    assert not c.stats.info and not c.stats.evidence
