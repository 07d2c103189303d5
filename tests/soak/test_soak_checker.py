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


ACCT, TOKEN = "0x" + "cd" * 20, "0x" + "ef" * 20


def ev(block: int, kind: str, amount: int) -> SimpleNamespace:
    return SimpleNamespace(
        account=ACCT,
        token=TOKEN,
        debt_token=TOKEN,
        block=block,
        log_index=0,
        kind=kind,
        amount=amount,
        debt_amount=0,
    )


def balance_checker(
    node_logs: list[SimpleNamespace], stored: list[tuple[Any, ...]], nulls: set[int]
) -> Any:
    async def chain_events(chain: str) -> list[SimpleNamespace]:
        return node_logs

    async def rpc(method: str, params: list[Any]) -> Any:
        assert method == "eth_getBlockByNumber"
        return None if int(params[0], 16) in nulls else {"number": params[0]}

    class Rows:
        async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
            return stored

    return SimpleNamespace(_chain_events=chain_events, rpc={"beta": rpc}, store=Rows())


async def judge(c: Any) -> str | None:
    return await Checker._node_fault_in_balance(c, "beta", ACCT, TOKEN, 100)


async def test_store_equal_to_the_node_logs_is_a_node_fault_named_with_its_corrections() -> None:
    logs = [ev(10, "borrow", 5), ev(20, "repay", 2)]
    rows = [(10, 0, "borrow", "5", "0"), (20, 0, "repay", "2", "0")]
    assert await judge(balance_checker(logs, rows, set())) == "state differs from its own logs"
    corrected = [*rows, (30, 1 << 40, "reconcile", "1", "0")]
    assert "correction" in str(await judge(balance_checker(logs, corrected, set())))


async def test_a_log_the_store_lacks_is_a_violation() -> None:
    logs = [ev(10, "borrow", 5), ev(20, "borrow", 2)]
    rows = [(10, 0, "borrow", "5", "0")]
    assert await judge(balance_checker(logs, rows, set())) is None


async def test_a_stored_event_of_a_block_the_node_serves_is_a_violation() -> None:
    logs = [ev(10, "borrow", 5)]
    rows = [(10, 0, "borrow", "5", "0"), (17, 0, "borrow", "3", "0")]
    assert await judge(balance_checker(logs, rows, set())) is None


async def test_a_stored_event_of_a_block_the_node_serves_as_null_is_a_node_fault() -> None:
    logs = [ev(10, "borrow", 5)]
    rows = [(10, 0, "borrow", "5", "0"), (17, 0, "borrow", "3", "0")]
    got = await judge(balance_checker(logs, rows, {17, 18}))
    assert got == "the store holds events of blocks the node serves as null below its head"
