"""Seed the book healthy under the model being run: accounts the daemon rates below
HF 1 before the first step repay part of their debt (a borrower cannot have borrowed
past what the model allows; the generated book is sized against the configured LTVs,
which the model may cut: the volatility haircut, the concentration term, a buffer).

`plan` is pure: each account below HF 1 repays the share of every debt position that
brings its HF to `target` (HF scales as 1 / debt for fixed collateral; a model whose
HF is not exactly that is re-rated by the daemon and counted if still below 1).
`repay` sends the repayments from the deployer (the vault lets anyone repay for an
account), in the population's batched sender.

Invariants: only accounts rated below 1 are touched; a repayment never exceeds the
position; the returned book is the one the vaults then hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from eth_utils import function_signature_to_4byte_selector

from devkit.manager import INDEXED_CHAINS, DevnetState
from devkit.replay.population import (
    GAS,
    MAX_UINT,
    SEL_APPROVE,
    SEL_MINT,
    Account,
    Position,
    _call,
    _Chain,
)

SEL_REPAY = function_signature_to_4byte_selector("repay(address,address,uint256)")
REPAY_GAS = 150_000


def repay_share(hf: float, target: float) -> float:
    """The share of every debt position whose repayment brings `hf` to `target`: HF
    scales as 1 / debt for fixed collateral (a negative HF counts as 0: all of it)."""
    return 1.0 - max(hf, 0.0) / target


def plan(
    book: list[Account], ratings: Mapping[str, Mapping[str, Any]], target: float
) -> tuple[list[Account], list[tuple[Account, Position, int]]]:
    """(the book after the repayments, [(account, debt position, raw to repay)])."""
    out: list[Account] = []
    repays: list[tuple[Account, Position, int]] = []
    for a in book:
        hf = (ratings.get(a.address) or {}).get("hf")
        if hf is None or float(hf) >= 1.0:
            out.append(a)
            continue
        share = repay_share(float(hf), target)
        positions = []
        for p in a.positions:
            q = p
            if p.side == "debt":
                raw = min(p.raw - 1, int(p.raw * share) + 1)
                repays.append((a, p, raw))
                q = replace(p, raw=p.raw - raw)
            positions.append(q)
        out.append(replace(a, positions=tuple(positions)))
    return out, repays


def repay(state: DevnetState, repays: list[tuple[Account, Position, int]]) -> int:
    """Send the repayments; returns the transactions sent."""
    sent = 0
    for chain in INDEXED_CHAINS:
        mine = [(a, p, r) for a, p, r in repays if p.chain == chain and r > 0]
        if not mine:
            continue
        dep = state.deployments[chain]
        c = _Chain(state.url(chain), dep)
        payer = dep.deployer or state.accounts["deployer"]
        need: dict[str, int] = {}
        for _, p, r in mine:
            need[p.symbol] = need.get(p.symbol, 0) + r
        mint = [(payer, dep.tokens[s], _call(SEL_MINT, payer, r), GAS["mint"], "mint")
                for s, r in need.items()]  # fmt: skip
        approve = [(payer, dep.tokens[s], _call(SEL_APPROVE, dep.vault, MAX_UINT),
                    GAS["approve"], "approve") for s in need]  # fmt: skip
        c.send(mint + approve)
        c.settle()
        c.send([(payer, dep.vault, _call(SEL_REPAY, a.address, dep.tokens[p.symbol], r), REPAY_GAS,
                 f"repay {a.address}") for a, p, r in mine])  # fmt: skip
        c.settle()
        c.session.close()
        sent += c.sent
    return sent
