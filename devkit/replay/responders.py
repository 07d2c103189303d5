"""Borrowers who answer a margin warning: a seeded share of the replay's book repays
debt once the daemon has rated it at warning or worse for its reaction delay.

Why: a warning tier exists so that the account cures before it is liquidated. A book
that never reacts can only be liquidated earlier by a model that warns earlier, so it
cannot measure what an early warning buys (docs/replay.md "Responders").

Profile (`profiles`, pure, seeded by the population seed alone, so every model meets
the same book): each account with vault debt responds with probability `share`; a
responder's delay is drawn uniformly from 1..`max_delay_h` market hours, rounded up to
whole steps; its budget is `BUDGET_SHARE` of its debt's USD at the episode's first
prices, outside money spent once.

Decision (`clock`, `plan`, pure): a responder rated warning, liquidatable or insolvent
at every sample for at least its delay cures, unless a cure of its is in flight, its
budget is spent, the keeper liquidated it this step or holds a claim on it. A cure
repays the share of each vault debt row (the daemon's view, per chain) that brings the
rated HF to `target` (warn_hf + CURE_MARGIN; HF ~ 1 / debt for fixed collateral),
scaled down to the budget left. A mined cure restarts the clock: another needs the
delay again, and at least `REFRESH_STEPS` (the daemon's rating must show the first).

I/O (`Responders`): each cure is `CollateralVault.repay(account, token, amount)` from
the responders' treasury (an impersonated address funded before the replay: the
accounts' outside money), simulated first and sent unawaited, so it is mined in the
next block with the step's feeds; the next step books the mined ones (`cures`) and
counts the rest by reason (`failures`). Read-only calls retry a dropped connection as the
keeper's do; a node or API error that remains costs the step's cures (`rpc: <error>`),
never the replay.

Invariants: a cure never repays more than the row the daemon's view shows (a row the
keeper repaid meanwhile reverts `RepayExceedsDebt` in simulation: counted, not sent);
only a successful receipt is booked; an account's cures never exceed its budget.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
from eth_abi import encode
from eth_utils import keccak, to_checksum_address

from devkit.deploy import ASSET_BY_SYMBOL
from devkit.manager import INDEXED_CHAINS, DevnetState
from devkit.replay.keeper import (
    DEBT_SYMBOLS,
    LIQUIDATOR_TOPUP,
    SEL_APPROVE,
    SEL_MINT,
    revert_name,
)
from devkit.replay.keeper import rpc as keeper_rpc
from devkit.replay.population import GAS, MAX_UINT, Account, _call, _Chain
from devkit.replay.topup import REPAY_GAS, SEL_REPAY, repay_share

AT_RISK = frozenset({"warning", "liquidatable", "insolvent"})
# A cure restores a cushion above the warning line, not just the line itself.
CURE_MARGIN = 0.15
# What a responder can bring from outside, as a share of its debt at the first prices.
BUDGET_SHARE = 0.5
# A cure with no receipt after this many steps is given up (`unmined`).
UNMINED_STEPS = 10
# After a mined cure, the steps before the next: the daemon's rating shows a repayment a
# block or two later (indexer, recompute), and a cure sized on the old HF would repeat it.
REFRESH_STEPS = 3
TREASURY = to_checksum_address(keccak(b"replay-responders-treasury")[-20:])


@dataclass(frozen=True)
class Profile:
    delay_steps: int
    budget_usd: float


@dataclass(frozen=True)
class Cure:
    step: int  # the step whose ratings it answered (mined in the next block)
    account: str
    chain: str
    debt: str
    repaid_raw: int
    repaid_usd: float
    tx: str


@dataclass
class CureStats:
    responders: int = 0
    cures: list[Cure] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    spent_usd: dict[str, float] = field(default_factory=dict)
    # Accounts due a cure with no budget left.
    budget_spent: set[str] = field(default_factory=set)

    def figures(self) -> dict[str, Any]:
        return {
            "responders": self.responders,
            "count": len(self.cures),
            "accounts": len({c.account for c in self.cures}),
            "usd": round(sum(c.repaid_usd for c in self.cures), 2),
            "failures": dict(self.failures),
            "budget_spent_accounts": len(self.budget_spent),
        }


def check(share: float, max_delay_h: int) -> None:
    """Refuse options no book can follow (before anything starts)."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"--responders {share}: a share of the borrowers, within 0..1")
    if max_delay_h < 1:
        raise ValueError(f"--response-max-delay {max_delay_h}: at least 1 market hour")


def profiles(
    book: list[Account],
    prices: Mapping[str, float],
    *,
    share: float,
    max_delay_h: int,
    hours_per_step: int,
    seed: int,
) -> dict[str, Profile]:
    """The responders among `book`'s borrowers (module docstring), by address."""
    check(share, max_delay_h)
    rng = np.random.default_rng([seed, 0x7E5])
    out: dict[str, Profile] = {}
    for a in book:
        # Drawn for every account, so the book's order alone fixes who responds.
        responds = rng.random() < share
        delay_h = int(rng.integers(1, max_delay_h + 1))
        debt = sum(p.amount * prices[p.symbol] for p in a.positions if p.side == "debt")
        if responds and debt > 0:
            out[a.address] = Profile(math.ceil(delay_h / hours_per_step), BUDGET_SHARE * debt)
    return out


def clock(
    since: Mapping[str, int], ratings: Mapping[str, Mapping[str, Any]], step: int
) -> dict[str, int]:
    """Per account, the step from which it has been rated at risk without a break."""
    out = {}
    for a, r in ratings.items():
        if r.get("tier") in AT_RISK:
            out[a] = since.get(a, step)
    return out


def plan(
    view: Mapping[str, Any], hf: float, target: float, budget_left_usd: float
) -> list[tuple[str, str, int, float]]:
    """(chain, debt symbol, raw to repay, USD) per vault debt row of the account's view:
    the share of each that brings `hf` to `target`, scaled to the budget left."""
    rows = [
        (chain, r)
        for chain, rs in view.get("positions", {}).items()
        for r in rs
        if r["side"] == "debt" and int(r["counted"]) > 0
    ]
    debt_usd = sum(float(r["value_usd"]) for _, r in rows)
    if debt_usd <= 0 or hf >= target or budget_left_usd <= 0:
        return []
    share = min(repay_share(hf, target), budget_left_usd / debt_usd)
    out = []
    for chain, r in rows:
        raw = min(int(r["counted"]), int(int(r["counted"]) * share))
        if raw > 0:
            usd = float(r["value_usd"]) * raw / int(r["counted"])
            out.append((chain, str(r["asset"]), raw, usd))
    return out


def fund(state: DevnetState) -> None:
    """Mint the treasury its debt tokens and approve every vault (before the replay)."""
    for chain in INDEXED_CHAINS:
        dep = state.deployments[chain]
        c = _Chain(state.url(chain), dep)
        deployer = dep.deployer or state.accounts["deployer"]
        c.batch([("anvil_impersonateAccount", [TREASURY]),
                 ("anvil_setBalance", [TREASURY, hex(10**21)])])  # fmt: skip
        txs = []
        for sym in DEBT_SYMBOLS:
            raw = LIQUIDATOR_TOPUP[sym] * 10 ** ASSET_BY_SYMBOL[sym].decimals
            txs += [
                (deployer, dep.tokens[sym], _call(SEL_MINT, TREASURY, raw), GAS["mint"], "mint"),
                (TREASURY, dep.tokens[sym], _call(SEL_APPROVE, dep.vault, MAX_UINT),
                 GAS["approve"], "approve"),
            ]  # fmt: skip
        c.send(txs)
        c.settle()
        c.session.close()


@dataclass
class _Sent:
    cure: Cure
    steps: int = 0


class Responders:
    """The responders' cures through one replay (module docstring)."""

    def __init__(
        self,
        state: DevnetState,
        api_url: str,
        session: aiohttp.ClientSession,
        profiles: Mapping[str, Profile],
        target: float,
    ) -> None:
        self.state, self.api, self.session = state, api_url.rstrip("/"), session
        self.profiles, self.target = dict(profiles), target
        self.stats = CureStats(responders=len(profiles))
        self.since: dict[str, int] = {}
        self.in_flight: dict[str, list[_Sent]] = {}
        self.last_cure: dict[str, int] = {}

    async def step(
        self, step: int, ratings: Mapping[str, Mapping[str, Any]], skip: set[str]
    ) -> list[Cure]:
        """Book the cures mined since the last step (returned), then send this step's.
        `skip`: accounts the keeper liquidated this step or holds a claim on."""
        mined = await self._receipts()
        mine = {a: r for a, r in ratings.items() if a in self.profiles}
        self.since = clock(self.since, mine, step)
        for cure in mined:
            self.since.pop(cure.account, None)
            self.last_cure[cure.account] = step
        for a, start in sorted(self.since.items()):
            if step - start < self.profiles[a].delay_steps or a in self.in_flight or a in skip:
                continue
            if step - self.last_cure.get(a, -REFRESH_STEPS) < REFRESH_STEPS:
                continue
            hf = mine[a].get("hf")
            if hf is None:
                continue
            left = self.profiles[a].budget_usd - self.stats.spent_usd.get(a, 0.0)
            if left <= 0:
                self.stats.budget_spent.add(a)
                continue
            try:
                await self._cure(step, a, float(hf), left)
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.stats.failures[f"rpc: {type(exc).__name__}"] += 1
        return mined

    async def _cure(self, step: int, account: str, hf: float, left: float) -> None:
        try:
            async with self.session.get(
                f"{self.api}/v1/accounts/{account}", timeout=aiohttp.ClientTimeout(10)
            ) as r:
                if r.status != 200:
                    self.stats.failures[f"api: HTTP {r.status}"] += 1
                    return
                view = await r.json()
        except (aiohttp.ClientError, TimeoutError):
            self.stats.failures["api"] += 1
            return
        for chain, sym, raw, usd in plan(view, hf, self.target, left):
            dep = self.state.deployments[chain]
            data = SEL_REPAY + encode(
                ["address", "address", "uint256"], [account, dep.tokens[sym], raw]
            )
            tx = {"from": TREASURY, "to": dep.vault, "data": "0x" + data.hex()}
            sim = await self._rpc(chain, "eth_call", [tx, "latest"])
            if "error" in sim:
                self.stats.failures[revert_name(sim["error"])] += 1
                continue
            sent = await self._rpc(chain, "eth_sendTransaction", [{**tx, "gas": hex(REPAY_GAS)}])
            if "error" in sent:
                self.stats.failures["send"] += 1
                continue
            cure = Cure(step, account, chain, sym, raw, usd, str(sent["result"]))
            self.in_flight.setdefault(account, []).append(_Sent(cure))
            self.stats.spent_usd[account] = self.stats.spent_usd.get(account, 0.0) + usd

    async def _receipts(self) -> list[Cure]:
        mined: list[Cure] = []
        # Chains whose node failed a read this step: their other cures are not asked
        # (each read would spend the retries' backoff again), only kept for next step.
        down: set[str] = set()
        for account, sent in list(self.in_flight.items()):
            still = []
            for s in sent:
                if s.cure.chain in down:
                    still.append(s)
                    continue
                try:
                    got = await self._rpc(s.cure.chain, "eth_getTransactionReceipt", [s.cure.tx])
                except (aiohttp.ClientError, TimeoutError) as exc:
                    # Not known, not lost: asked again next step (not an unmined step),
                    # and the receipts already read this step are still booked.
                    self.stats.failures[f"rpc: {type(exc).__name__}"] += 1
                    down.add(s.cure.chain)
                    still.append(s)
                    continue
                r = got.get("result")
                if r is None:
                    s.steps += 1
                    if s.steps < UNMINED_STEPS:
                        still.append(s)
                    else:
                        self._refund(s.cure, "unmined")
                elif int(r["status"], 16) != 1:
                    self._refund(s.cure, "reverted")
                else:
                    mined.append(s.cure)
            if still:
                self.in_flight[account] = still
            else:
                del self.in_flight[account]
        self.stats.cures += mined
        return mined

    def _refund(self, cure: Cure, reason: str) -> None:
        """A cure that repaid nothing: counted by `reason`, its budget given back."""
        self.stats.failures[reason] += 1
        self.stats.spent_usd[cure.account] -= cure.repaid_usd

    async def _rpc(self, chain: str, method: str, params: list[Any]) -> dict[str, Any]:
        return await keeper_rpc(self.session, self.state.url(chain), method, params)
