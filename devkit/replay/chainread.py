"""What the replay's report reads back from the chains: each account's collateral and
debt in USD at the feeds' current answers (bad debt), and the registry's pushes and
their gas (BatchApplied logs and their receipts).

Invariants: only chain state is read (the vaults' `collateralOf` / `debtOf`, the
feeds' `latestRoundData`, the registry's logs), never the daemon: the report checks
the daemon, so it must not take its numbers from it. Calls go in JSON-RPC batches.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import requests
from eth_abi import decode, encode
from eth_utils import function_signature_to_4byte_selector, keccak

from devkit.deploy import ASSETS, FEED_DECIMALS
from devkit.manager import INDEXED_CHAINS, DevnetState

SEL_COLL = function_signature_to_4byte_selector("collateralOf(address,address)")
SEL_DEBT = function_signature_to_4byte_selector("debtOf(address,address)")
SEL_ROUND = function_signature_to_4byte_selector("latestRoundData()")
BATCH_APPLIED = "0x" + keccak(b"BatchApplied(address,uint256,uint256,bytes32)").hex()
CHUNK = 1000


def _batch(session: requests.Session, url: str, calls: list[tuple[str, list[Any]]]) -> list[Any]:
    out: list[Any] = []
    for k in range(0, len(calls), CHUNK):
        chunk = calls[k : k + CHUNK]
        body: Any = [
            {"jsonrpc": "2.0", "id": j, "method": m, "params": p} for j, (m, p) in enumerate(chunk)
        ]
        answers = sorted(session.post(url, json=body, timeout=120).json(), key=lambda a: a["id"])
        for (m, _), a in zip(chunk, answers, strict=True):
            if "error" in a:
                raise RuntimeError(f"{m} on {url}: {a['error']}")
            out.append(a["result"])
    return out


def _eth_call(to: str, data: bytes) -> tuple[str, list[Any]]:
    return "eth_call", [{"to": to, "data": "0x" + data.hex()}, "latest"]


def _feed_prices(s: requests.Session, state: DevnetState, chain: str) -> dict[str, float]:
    dep = state.deployments[chain]
    rounds = _batch(
        s, state.url(chain), [_eth_call(dep.feeds[a.symbol], SEL_ROUND) for a in ASSETS]
    )
    out = {}
    for a, r in zip(ASSETS, rounds, strict=True):
        answer = decode(["uint80", "int256", "uint256", "uint256", "uint80"], bytes.fromhex(r[2:]))
        out[a.symbol] = answer[1] / 10**FEED_DECIMALS
    return out


def feed_prices(state: DevnetState) -> dict[str, dict[str, float]]:
    """chain -> asset -> the feed's current answer in USD."""
    with requests.Session() as s:
        return {c: _feed_prices(s, state, c) for c in INDEXED_CHAINS}


def liquidated_events(state: DevnetState, topic: str | None = None) -> int:
    """`Liquidated` events (or those of `topic`, e.g. keeper.SETTLED_TOPIC for the
    cross-chain settlements) on every indexed vault, from genesis."""
    from devkit.replay.keeper import LIQUIDATED_TOPIC

    n = 0
    with requests.Session() as s:
        for c in INDEXED_CHAINS:
            flt = {"address": state.deployments[c].vault, "topics": [topic or LIQUIDATED_TOPIC],
                   "fromBlock": "0x0"}  # fmt: skip
            n += len(_batch(s, state.url(c), [("eth_getLogs", [flt])])[0])
    return n


def positions_usd(state: DevnetState, accounts: Iterable[str]) -> dict[str, tuple[float, float]]:
    """account -> (collateral USD, debt USD) summed over the indexed chains."""
    accounts = list(accounts)
    out = {a: (0.0, 0.0) for a in accounts}
    with requests.Session() as s:
        for chain in INDEXED_CHAINS:
            dep, url = state.deployments[chain], state.url(chain)
            price = _feed_prices(s, state, chain)
            calls = [
                _eth_call(dep.vault, sel + encode(["address", "address"], [acc, tok]))
                for acc in accounts
                for tok in (dep.tokens[a.symbol] for a in ASSETS)
                for sel in (SEL_COLL, SEL_DEBT)
            ]
            raw = iter(_batch(s, url, calls))
            for acc in accounts:
                c, d = out[acc]
                for a in ASSETS:
                    unit = price[a.symbol] / 10**a.decimals
                    c += int(next(raw), 16) * unit
                    d += int(next(raw), 16) * unit
                out[acc] = (c, d)
    return out


def heads(state: DevnetState) -> dict[str, int]:
    with requests.Session() as s:
        return {
            c: int(_batch(s, state.url(c), [("eth_blockNumber", [])])[0], 16)
            for c in INDEXED_CHAINS
        }


def pushes(state: DevnetState, since: dict[str, int]) -> dict[str, dict[str, int]]:
    """chain -> {"pushes": BatchApplied count, "gas": gas used by those transactions}."""
    out: dict[str, dict[str, int]] = {}
    with requests.Session() as s:
        for chain in INDEXED_CHAINS:
            url, reg = state.url(chain), state.deployments[chain].registry
            flt = {"address": reg, "topics": [BATCH_APPLIED], "fromBlock": hex(since[chain] + 1)}
            logs = _batch(s, url, [("eth_getLogs", [flt])])[0]
            txs = sorted({log["transactionHash"] for log in logs})
            receipts = _batch(s, url, [("eth_getTransactionReceipt", [h]) for h in txs])
            gas = sum(int(r["gasUsed"], 16) for r in receipts)
            out[chain] = {"pushes": len(logs), "gas": gas}
    return out
