"""The replay's liquidation keeper: liquidates on chain what the daemon's plans allow.

Each round: the accounts the daemon rates liquidatable or insolvent
(GET /v1/accounts?tier=...), each one's plan (GET /v1/accounts/{a}, `liquidation`),
then on the plan's chain one `CollateralVault.liquidate(account, debtToken, repay,
collateralToken)` from the liquidator (anvil dev account 6), sized by the plan: a
partial plan names the chain and the collateral to seize and the USD to repay; a full
plan repays the debt of the chain with the most debt that also holds collateral. The
plan is the pushed model's (docs/risk.md "Plans under the pushed model"): under the
portfolio or VaR model it is sized on that model's HF, repaying the chain's largest debt
row. Only when there is genuinely no plan (the model rates the account at or above HF 1
by the time the keeper reads it, or cannot evaluate: kind "unavailable") the replay
repays the configured close factor of that chain's debt (`plan_fallbacks`). The
vault pays the collateral's bonus and checks a fresh tier >= 2 entry; the close factor
is the daemon's (the vault does not enforce it, docs/contracts.md).

Accounts with derivative legs (hedged perp pairs, covered calls: population.py) are
rated by the portfolio and VaR models with those legs, but the vault can only seize
their spot collateral against their vault debt: the keeper liquidates the spot legs
the same way and leaves the venue's positions open (nothing on chain lets it close
them); such liquidations are counted apart (`derivative_liquidations`). An account
whose only risk is derivative (no vault debt) has nothing a vault can liquidate:
`no_vault_debt`, a failure reason of its own.

The daemon's API rates an account as soon as it recomputes; the vault acts on that
chain's HealthRegistry entry, which the pusher updates a cycle or more later. So the
keeper reads the entry the vault will check (`entryOf`, the vault's `maxAge`, the head's
timestamp) and attempts only when it allows a liquidation (`registry_allows`, the
vault's own rule); otherwise the account waits for a later round (`waits`, not a
failure).

Invariants:
- No attempt on an entry the vault would refuse (not fresh, tier < 2): that is a wait,
  counted in `waits` by its reason, and the account is retried every round.
- Every attempt is simulated first (eth_call); a revert is a failure counted by the
  custom error's name, never sent. A sent transaction that reverts counts as `reverted`.
- An account is attempted at most once per round; what was repaid and seized comes
  from the receipt's `Liquidated` event, not from the request.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from eth_abi import decode, encode
from eth_utils import function_signature_to_4byte_selector, keccak

from chains.contracts import decode_error
from chains.registry_codec import RegistryEntry, is_empty_slot, unpack_slot
from devkit.anvil import rpc_call
from devkit.deploy import ASSET_BY_SYMBOL
from devkit.manager import INDEXED_CHAINS, DevnetState

SEL_LIQUIDATE = function_signature_to_4byte_selector("liquidate(address,address,uint256,address)")
SEL_APPROVE = function_signature_to_4byte_selector("approve(address,uint256)")
SEL_MINT = function_signature_to_4byte_selector("mint(address,uint256)")
SEL_ENTRY_OF = function_signature_to_4byte_selector("entryOf(address)")
SEL_MAX_AGE = function_signature_to_4byte_selector("maxAge()")
LIQUIDATABLE_TIER = 2  # the vault's `tier < 2` refusal (CollateralVault.liquidate)
LIQUIDATED_TOPIC = (
    "0x" + keccak(b"Liquidated(address,address,address,uint256,address,uint256)").hex()
)
LIQUIDATABLE_TIERS = ("liquidatable", "insolvent")
PLAN_KINDS = ("partial", "full")
DEBT_SYMBOLS = ("USDC", "WETH")
# Minted to the liquidator per chain before the replay: enough for any book we seed.
LIQUIDATOR_TOPUP = {"USDC": 500_000_000, "WETH": 200_000}
GAS = 400_000
SETTLE_S = 15.0


@dataclass(frozen=True)
class Liquidation:
    step: int
    account: str
    chain: str
    debt: str
    repaid_raw: int
    collateral: str
    seized_raw: int
    repaid_usd: float
    tx: str


@dataclass
class KeeperStats:
    rounds: int = 0
    liquidations: list[Liquidation] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    # Rounds an account waited for its registry entry (reason -> count): not failures.
    waits: Counter[str] = field(default_factory=Counter)
    # Attempts sized by the fallback close factor (no usable daemon plan: portfolio /
    # VaR model above HF 1 by the time of reading, or unable to evaluate).
    plan_fallbacks: int = 0
    # Liquidations (spot legs only) of accounts holding derivative legs at the venue.
    derivative_liquidations: int = 0
    # Per account: why the keeper did not liquidate it (reason -> rounds) and the rounds
    # it waited for its registry entry: the report's bad-debt causes read them.
    account_failures: dict[str, Counter[str]] = field(default_factory=dict)
    account_waits: Counter[str] = field(default_factory=Counter)

    def fail(self, account: str, reason: str) -> None:
        self.failures[reason] += 1
        self.account_failures.setdefault(account, Counter())[reason] += 1

    @property
    def usd(self) -> float:
        return sum(x.repaid_usd for x in self.liquidations)


@dataclass(frozen=True)
class Attempt:
    account: str
    chain: str
    debt: str
    repay_raw: int
    collateral: str
    debt_price: float


def prepare(state: DevnetState) -> None:
    """Fund the liquidator with debt tokens and approve the vaults (before the replay)."""
    liq = state.accounts["liquidator"]
    for chain in INDEXED_CHAINS:
        dep, url = state.deployments[chain], state.url(chain)
        for sym in DEBT_SYMBOLS:
            raw = LIQUIDATOR_TOPUP[sym] * 10 ** ASSET_BY_SYMBOL[sym].decimals
            for sender, data in (
                (dep.deployer, SEL_MINT + encode(["address", "uint256"], [liq, raw])),
                (liq, SEL_APPROVE + encode(["address", "uint256"], [dep.vault, 2**256 - 1])),
            ):
                tx = {"from": sender, "to": dep.tokens[sym], "data": "0x" + data.hex()}
                h = rpc_call(url, "eth_sendTransaction", [{**tx, "gas": hex(GAS)}])
                _wait_receipt_sync(url, str(h))


def _wait_receipt_sync(url: str, h: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = rpc_call(url, "eth_getTransactionReceipt", [h])
        if isinstance(r, dict):
            if int(str(r["status"]), 16) != 1:
                raise RuntimeError(f"keeper setup transaction {h} reverted on {url}")
            return
        time.sleep(0.1)
    raise RuntimeError(f"keeper setup transaction {h} not mined on {url}")


def has_plan(view: dict[str, Any]) -> bool:
    """Whether the account's view carries a plan the keeper can size from (partial or
    full, of whichever model is pushed)."""
    plan = view.get("liquidation")
    return isinstance(plan, dict) and plan.get("kind") in PLAN_KINDS


Rows = list[dict[str, Any]]


def _rows(positions: dict[str, Rows], chain: str, side: str) -> Rows:
    return [r for r in positions.get(chain, []) if r["side"] == side and int(r["counted"]) > 0]


def _target(plan: dict[str, Any], positions: dict[str, Rows]) -> tuple[str, str] | str:
    """(chain, collateral) a plan liquidates on: a partial plan's own; otherwise the
    chain with the most debt that also holds collateral, its largest collateral."""
    if plan["kind"] == "partial":
        return plan["chain"], plan["asset"]
    usable = [
        c for c in positions if _rows(positions, c, "debt") and _rows(positions, c, "collateral")
    ]
    if not usable:
        return "no_chain_with_debt_and_collateral"
    chain = max(usable, key=lambda c: sum(r["value_usd"] for r in _rows(positions, c, "debt")))
    return chain, max(_rows(positions, chain, "collateral"), key=lambda r: r["value_usd"])["asset"]


def choose(view: dict[str, Any], fallback_close_factor: float | None = None) -> Attempt | str:
    """The liquidation one account's view and plan call for, or why there is none.

    The plan is the pushed model's. Without a usable one (`has_plan`) and with
    `fallback_close_factor` set, the account repays that share of the debt of the chain
    with the most debt that also holds collateral (the vault checks the tier). The
    view's positions are the vault's (spot) legs only: derivative legs are not
    liquidatable by a vault."""
    plan = view.get("liquidation") if has_plan(view) else None
    positions: dict[str, Rows] = view.get("positions", {})
    if not any(_rows(positions, c, "debt") for c in positions):
        # Rated at risk for its derivative legs alone: no vault can act on those.
        return "no_vault_debt"
    if not plan:
        if fallback_close_factor is None:
            return "no_plan"
        plan = {"kind": "fallback", "share": fallback_close_factor}
    target = _target(plan, positions)
    if isinstance(target, str):
        return target
    chain, collateral = target
    debts = _rows(positions, chain, "debt")
    if not debts:
        return "no_debt_on_collateral_chain"
    if plan["kind"] == "fallback":
        plan = {**plan, "repay_usd": plan["share"] * sum(r["value_usd"] for r in debts)}
    d = max(debts, key=lambda r: r["value_usd"])
    raw_debt = int(d["counted"])
    price = d["value_usd"] / float(d["amount"]) if float(d["amount"]) > 0 else 0.0
    if price <= 0:
        return "no_debt_price"
    dec = ASSET_BY_SYMBOL[d["asset"]].decimals
    repay = min(raw_debt, int(float(plan["repay_usd"]) / price * 10**dec))
    if repay <= 0:
        return "zero_repay"
    return Attempt(view["account"], chain, d["asset"], repay, collateral, price)


def registry_allows(entry: RegistryEntry | None, chain_ts: int, max_age: int) -> str | None:
    """None when the vault would let this entry be liquidated at `chain_ts`, else why not.

    The vault's rule (docs/contracts.md): fresh (`asOf <= now`, `now - asOf <= maxAge`)
    and tier >= 2."""
    if entry is None:
        return "registry_empty"
    if entry.as_of > chain_ts or chain_ts - entry.as_of > max_age:
        return "registry_stale"
    if entry.tier < LIQUIDATABLE_TIER:
        return "registry_tier"
    return None


class Keeper:
    def __init__(
        self,
        state: DevnetState,
        api_url: str,
        session: aiohttp.ClientSession,
        fallback_close_factor: float | None = None,
        derivative_accounts: frozenset[str] = frozenset(),
    ) -> None:
        self.state, self.api, self.session = state, api_url.rstrip("/"), session
        self.fallback_close_factor = fallback_close_factor
        self.derivative_accounts = derivative_accounts
        self.liquidator = state.accounts["liquidator"]
        self.stats = KeeperStats()
        # Accounts whose last round found the registry not (yet) allowing a liquidation.
        self.waiting: set[str] = set()
        self._max_age: dict[str, int] = {}

    async def _get(self, path: str) -> Any:
        async with self.session.get(self.api + path, timeout=aiohttp.ClientTimeout(10)) as r:
            if r.status != 200:
                raise RuntimeError(f"GET {path}: HTTP {r.status}")
            return await r.json()

    async def _rpc(self, chain: str, method: str, params: list[Any]) -> dict[str, Any]:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        async with self.session.post(self.state.url(chain), json=body) as r:
            answer: dict[str, Any] = await r.json(content_type=None)
            return answer

    async def candidates(self) -> list[str]:
        out: list[str] = []
        for tier in LIQUIDATABLE_TIERS:
            cursor: str | None = None
            while True:
                q = f"/v1/accounts?tier={tier}&limit=1000" + (f"&cursor={cursor}" if cursor else "")
                page = await self._get(q)
                out += [a["account"] for a in page["accounts"]]
                cursor = page.get("next_cursor")
                if not cursor:
                    break
        return out

    async def round(self, step: int) -> None:
        """One pass over every liquidatable account."""
        self.stats.rounds += 1
        try:
            accounts = await self.candidates()
        except (aiohttp.ClientError, RuntimeError, TimeoutError) as exc:
            self.stats.failures[f"api: {type(exc).__name__}"] += 1
            return
        sent: list[tuple[Attempt, str]] = []
        waiting: set[str] = set()
        for account in accounts:
            try:
                view = await self._get(f"/v1/accounts/{account}")
            except (aiohttp.ClientError, RuntimeError, TimeoutError):
                self.stats.failures["api_account"] += 1
                continue
            attempt = choose(view, self.fallback_close_factor)
            if not has_plan(view) and not isinstance(attempt, str):
                self.stats.plan_fallbacks += 1
            if isinstance(attempt, str):
                self.stats.fail(account, attempt)
                continue
            try:
                why = await self._registry_says(attempt)
            except (aiohttp.ClientError, RuntimeError, TimeoutError, ValueError):
                self.stats.fail(account, "registry_read")
                continue
            if why is not None:
                self.stats.waits[why] += 1
                self.stats.account_waits[account] += 1
                waiting.add(account)
                continue
            h = await self._try(attempt)
            if h is not None:
                sent.append((attempt, h))
        self.waiting = waiting
        await self._settle(step, sent)

    async def _call(self, chain: str, to: str, data: bytes) -> bytes:
        answer = await self._rpc(
            chain, "eth_call", [{"to": to, "data": "0x" + data.hex()}, "latest"]
        )
        if "error" in answer:
            raise RuntimeError(f"eth_call on {chain}: {answer['error']}")
        return bytes.fromhex(str(answer["result"])[2:])

    async def _registry_says(self, a: Attempt) -> str | None:
        """What the vault on the attempt's chain would say of its registry entry now."""
        dep = self.state.deployments[a.chain]
        if a.chain not in self._max_age:
            self._max_age[a.chain] = int.from_bytes(
                await self._call(a.chain, dep.vault, SEL_MAX_AGE)
            )
        slot = int.from_bytes(
            await self._call(a.chain, dep.registry, SEL_ENTRY_OF + encode(["address"], [a.account]))
        )
        head = (await self._rpc(a.chain, "eth_getBlockByNumber", ["latest", False])).get("result")
        if not isinstance(head, dict):
            raise RuntimeError(f"no head block on {a.chain}")
        entry = None if is_empty_slot(slot) else unpack_slot(slot)
        return registry_allows(entry, int(head["timestamp"], 16), self._max_age[a.chain])

    async def _try(self, a: Attempt) -> str | None:
        dep = self.state.deployments[a.chain]
        data = SEL_LIQUIDATE + encode(
            ["address", "address", "uint256", "address"],
            [a.account, dep.tokens[a.debt], a.repay_raw, dep.tokens[a.collateral]],
        )
        tx = {"from": self.liquidator, "to": dep.vault, "data": "0x" + data.hex()}
        sim = await self._rpc(a.chain, "eth_call", [tx, "latest"])
        if "error" in sim:
            err = sim["error"]
            revert = err.get("data") if isinstance(err, dict) else None
            reason = decode_error(revert).split("(")[0] if isinstance(revert, str) else "call"
            self.stats.fail(a.account, reason)
            return None
        answer = await self._rpc(a.chain, "eth_sendTransaction", [{**tx, "gas": hex(GAS)}])
        if "error" in answer:
            self.stats.fail(a.account, "send")
            return None
        return str(answer["result"])

    async def _settle(self, step: int, sent: list[tuple[Attempt, str]]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_S
        pending = list(sent)
        while pending and loop.time() < deadline:
            still = []
            for a, h in pending:
                r = (await self._rpc(a.chain, "eth_getTransactionReceipt", [h])).get("result")
                if r is None:
                    still.append((a, h))
                elif int(r["status"], 16) != 1:
                    self.stats.fail(a.account, "reverted")
                else:
                    self.stats.liquidations.append(_record(step, a, h, r))
                    self.stats.derivative_liquidations += a.account in self.derivative_accounts
            pending = still
            if pending:
                await asyncio.sleep(0.2)
        if pending:
            self.stats.failures["unmined"] += len(pending)


def _record(step: int, a: Attempt, h: str, receipt: dict[str, Any]) -> Liquidation:
    seized = repaid = 0
    for log in receipt.get("logs", []):
        if log["topics"] and log["topics"][0] == LIQUIDATED_TOPIC:
            seized, _, repaid = decode(
                ["uint256", "address", "uint256"], bytes.fromhex(log["data"][2:])
            )
    dec = ASSET_BY_SYMBOL[a.debt].decimals
    return Liquidation(
        step, a.account, a.chain, a.debt, int(repaid), a.collateral, int(seized),
        int(repaid) / 10**dec * a.debt_price, h,
    )  # fmt: skip
