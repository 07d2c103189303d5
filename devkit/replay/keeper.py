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
- Every attempt's repay is capped at the vault's `debtOf` read just before it (the
  daemon's view can trail a liquidation a block old), then simulated (eth_call); a
  revert is a failure counted by the custom error's name, never sent. A sent
  transaction that reverts counts as `reverted: <error>` (the node's call trace).
- An account is attempted at most once per round; what was repaid and seized comes
  from the receipt's `Liquidated` event, not from the request.

Cross-chain borrowers (CollateralVault.sol `liquidateRemote` / `settleRemoteSeize`):
when the collateral chain C (the plan's, or the fallback's) holds no debt, or its
largest debt row is smaller than the plan's repay while another chain D holds a larger
one, the keeper repays on D, the chain with the largest debt row (capped at that row,
sized in USD by the plan as above), with `liquidateRemote(account, debt, repay, C's
chain id, C's collateral token)`. The vault on D checks D's registry entry: the same wait rule on D.
The claim's life: sent on D (`Claim`, pending) -> mined (`RemoteSeizeClaimed`: its
repay is booked) -> every round, before anything else, `POST /v1/claims/{D}/{tx}`:
409 (not yet `confirmations` deep on D, or reorged out) is a wait (`claim_waits`:
`claim_not_final`); 200 gives the daemon's signed voucher, which the liquidator submits
to `settleRemoteSeize` on C (simulated first) -> mined (`RemoteSeizeSettled`: seized)
-> recorded as a `Liquidation` with `remote_from` = D and its `claim_id`, at the
claim's step. Other answers are failures (`claim: HTTP n`, a revert's error name),
retried each round up to `CLAIM_RETRIES` times, then the claim is abandoned
(`claim_abandoned`: its debt stays repaid, its collateral unseized; it counts as
pending at the end). A claim never mined within `CLAIM_UNMINED_ROUNDS` rounds is
dropped (`claim_unmined`: nothing was repaid).

Cross-chain invariants:
- Idempotent settlement: `AlreadySettled` (anyone may submit a voucher) is not a
  failure: the settlement is read from C's `RemoteSeizeSettled` log and recorded once;
  a claim is recorded at most once (it leaves the pending set when recorded).
- An account with a pending claim gets no new attempt of any kind until the round
  after the claim settles (or is abandoned): its debt on D is already repaid while its
  collateral on C is not yet seized, so the daemon's plan meanwhile would over-repay
  (`claim_waits`: `claim_pending`).
- Read-only RPC calls retry a dropped connection (`RPC_RETRIES`, short backoff); a
  transaction send is not retried (the node may have taken it: a second send would
  repay twice) and counts as a failure (`send`); a read that still fails counts as
  what was read (`debt_read`, `simulate_read`, `registry_read`), never as `send`. No
  connection error fails a round.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
from eth_abi import decode, encode
from eth_utils import function_signature_to_4byte_selector, keccak

from chains.contracts import decode_error
from chains.events import CLAIM_TOPIC, SETTLE_TOPIC
from chains.registry_codec import RegistryEntry, is_empty_slot, unpack_slot
from devkit.anvil import mined_receipt, rpc_call
from devkit.deploy import ASSET_BY_SYMBOL
from devkit.manager import INDEXED_CHAINS, DevnetState

SEL_LIQUIDATE = function_signature_to_4byte_selector("liquidate(address,address,uint256,address)")
SEL_LIQUIDATE_REMOTE = function_signature_to_4byte_selector(
    "liquidateRemote(address,address,uint256,uint256,address)"
)
VOUCHER_TYPE = "(bytes32,address,address,address,address,uint256)"
SEL_SETTLE = function_signature_to_4byte_selector(f"settleRemoteSeize({VOUCHER_TYPE},bytes)")
SEL_APPROVE = function_signature_to_4byte_selector("approve(address,uint256)")
SEL_MINT = function_signature_to_4byte_selector("mint(address,uint256)")
SEL_ENTRY_OF = function_signature_to_4byte_selector("entryOf(address)")
SEL_MAX_AGE = function_signature_to_4byte_selector("maxAge()")
SEL_DEBT_OF = function_signature_to_4byte_selector("debtOf(address,address)")
LIQUIDATABLE_TIER = 2  # the vault's `tier < 2` refusal (CollateralVault.liquidate)
LIQUIDATED_TOPIC = (
    "0x" + keccak(b"Liquidated(address,address,address,uint256,address,uint256)").hex()
)
# The cross-chain seize's two events, as the indexer decodes them.
CLAIMED_TOPIC, SETTLED_TOPIC = CLAIM_TOPIC, SETTLE_TOPIC
LIQUIDATABLE_TIERS = ("liquidatable", "insolvent")
PLAN_KINDS = ("partial", "full")
DEBT_SYMBOLS = ("USDC", "WETH")
# Minted to the liquidator per chain before the replay: enough for any book we seed.
LIQUIDATOR_TOPUP = {"USDC": 500_000_000, "WETH": 200_000}
GAS = 400_000
SETTLE_S = 15.0
# A claim whose voucher request fails (not 200, not 409) this many rounds is abandoned.
CLAIM_RETRIES = 10
# A claim whose liquidateRemote has no receipt after this many rounds (dropped from the
# node's pool: nothing was repaid) is dropped, a failure (`claim_unmined`).
CLAIM_UNMINED_ROUNDS = 30
# What `choose` says of an account no vault can liquidate, round after round until its
# positions change: counted once as a failure, every round as an idle round.
IDLE = frozenset({"no_vault_debt", "no_collateral"})
# Read-only RPC calls: tries on a dropped connection, and the first backoff (doubling).
RPC_RETRIES = 4
RPC_BACKOFF_S = 0.1
# Not retried on a dropped connection: the node may have taken the transaction.
SEND_METHODS = frozenset({"eth_sendTransaction", "eth_sendRawTransaction"})


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
    # A cross-chain liquidation: `chain` is where the collateral was seized (C, `tx` the
    # settlement), `remote_from` where the debt was repaid (D, `claim_tx`); `step` is
    # the claim's, `settled_step` the round that recorded the settlement.
    remote_from: str | None = None
    claim_id: str | None = None
    claim_tx: str | None = None
    settled_step: int | None = None


@dataclass
class Claim:
    """A `liquidateRemote` sent on `source` (D) whose seizure on `target` (C) is not
    yet recorded. `repaid_raw` and `claim_id` come from its `RemoteSeizeClaimed` event
    once mined; `settle_tx` is a settlement sent and not yet seen mined."""

    account: str
    source: str
    target: str
    debt: str
    collateral: str
    debt_price: float
    step: int
    tx: str
    sent_at: float
    mined: bool = False
    repaid_raw: int = 0
    claim_id: str = ""
    settle_tx: str | None = None
    errors: int = 0
    unmined_rounds: int = 0
    settled: bool = False


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
    # Every cross-chain claim sent, in order (settled or not): the report books a mined
    # claim's repay when it is mined, and counts the unsettled ones at the end.
    claims: list[Claim] = field(default_factory=list)
    # Rounds a claim (or its account) waited: claim_not_final (409), claim_pending (the
    # account's claim not settled yet), claim_unmined / settle_unmined. Not failures.
    claim_waits: Counter[str] = field(default_factory=Counter)
    # Claims found already settled on C (`AlreadySettled`): not failures.
    claims_already_settled: int = 0
    # Attempts whose repay the vault's current debt cut (the daemon's view trailed it).
    capped_to_vault_debt: int = 0
    # Rounds an account rated liquidatable had nothing a vault can act on (IDLE: no
    # vault debt, or debt left and no collateral anywhere), by reason. Such an account
    # is one failure (its first round); `account_failures` keeps its rounds.
    idle_rounds: Counter[str] = field(default_factory=Counter)

    def fail(self, account: str, reason: str) -> None:
        self.failures[reason] += 1
        self.account_failures.setdefault(account, Counter())[reason] += 1

    def idle(self, account: str, reason: str) -> None:
        mine = self.account_failures.setdefault(account, Counter())
        self.failures[reason] += reason not in mine
        mine[reason] += 1
        self.idle_rounds[reason] += 1

    def wait(self, account: str, reason: str) -> None:
        """A round the account waited for its registry entry (claims' own waits are
        `claim_waits`)."""
        self.waits[reason] += 1
        self.account_waits[account] += 1

    @property
    def usd(self) -> float:
        return sum(x.repaid_usd for x in self.liquidations)

    @property
    def pending_claims(self) -> list[Claim]:
        """Claims sent and not (yet) settled: their debt on D repaid (once mined), their
        collateral on C not seized."""
        return [c for c in self.claims if not c.settled]


@dataclass(frozen=True)
class Attempt:
    account: str
    chain: str
    debt: str
    repay_raw: int
    collateral: str
    debt_price: float
    # Set for a cross-chain liquidation: the chain holding `collateral` (C); `chain` is
    # where the debt is repaid (D).
    target_chain: str | None = None

    @property
    def remote(self) -> bool:
        return self.target_chain is not None


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
    r = mined_receipt(url, h, timeout)
    if r is None:
        raise RuntimeError(f"keeper setup transaction {h} not mined on {url}")
    if int(str(r["status"]), 16) != 1:
        raise RuntimeError(f"keeper setup transaction {h} reverted on {url}")


def has_plan(view: dict[str, Any]) -> bool:
    """Whether the account's view carries a plan the keeper can size from (partial or
    full, of whichever model is pushed)."""
    plan = view.get("liquidation")
    return isinstance(plan, dict) and plan.get("kind") in PLAN_KINDS


Rows = list[dict[str, Any]]


def _rows(positions: dict[str, Rows], chain: str, side: str) -> Rows:
    return [r for r in positions.get(chain, []) if r["side"] == side and int(r["counted"]) > 0]


def _target(plan: dict[str, Any], positions: dict[str, Rows]) -> tuple[str, str] | str:
    """(chain, collateral) a plan seizes on: a partial plan's own; otherwise the chain
    with the most debt that also holds collateral, its largest collateral; failing that
    (every chain holds debt or collateral, not both) the chain with the largest
    collateral row, which a cross-chain liquidation seizes."""
    if plan["kind"] == "partial":
        return plan["chain"], plan["asset"]
    usable = [
        c for c in positions if _rows(positions, c, "debt") and _rows(positions, c, "collateral")
    ]
    if usable:
        chain = max(usable, key=lambda c: sum(r["value_usd"] for r in _rows(positions, c, "debt")))
        best = max(_rows(positions, chain, "collateral"), key=lambda r: r["value_usd"])
        return chain, best["asset"]
    rows = [(c, r) for c in positions for r in _rows(positions, c, "collateral")]
    if not rows:
        return "no_collateral"
    chain, best = max(rows, key=lambda cr: cr[1]["value_usd"])
    return chain, best["asset"]


def _largest_debt(positions: dict[str, Rows]) -> tuple[str, dict[str, Any]]:
    """(chain, row) of the account's largest debt row (USD), over every chain."""
    rows = [(c, r) for c in sorted(positions) for r in _rows(positions, c, "debt")]
    return max(rows, key=lambda cr: cr[1]["value_usd"])


def choose(
    view: dict[str, Any], fallback_close_factor: float | None = None, claim_pending: bool = False
) -> Attempt | str:
    """The liquidation one account's view and plan call for, or why there is none.

    The plan is the pushed model's. Without a usable one (`has_plan`) and with
    `fallback_close_factor` set, the account repays that share of the debt of the chain
    with the most debt that also holds collateral (the vault checks the tier). The
    view's positions are the vault's (spot) legs only: derivative legs are not
    liquidatable by a vault. When the collateral chain C holds no debt, or its largest
    debt row is smaller than the plan's repay while another chain D holds a larger row,
    the attempt is cross-chain (module docstring): repaid on D, capped at D's largest
    debt row, seized on C (`target_chain`); a fallback then repays the close factor of
    D's debt. `claim_pending`: the account has a claim not yet settled, so no attempt."""
    if claim_pending:
        return "claim_pending"
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
    own = _rows(positions, chain, "debt")
    top_chain, top = _largest_debt(positions)
    if plan["kind"] == "fallback":
        # The close factor of the repaying chain's debt: C's own when it holds any.
        pay_chain = chain if own else top_chain
        debts = _rows(positions, pay_chain, "debt")
        plan = {**plan, "repay_usd": plan["share"] * sum(r["value_usd"] for r in debts)}
    if own:
        d = max(own, key=lambda r: r["value_usd"])
        if d["value_usd"] >= float(plan["repay_usd"]) or top["value_usd"] <= d["value_usd"]:
            return _sized(view["account"], chain, d=d, repay_usd=float(plan["repay_usd"]),
                          collateral=collateral, target_chain=None)  # fmt: skip
    # Here `top` is on another chain (D): C holds no debt or only smaller rows.
    return _sized(view["account"], top_chain, d=top, repay_usd=float(plan["repay_usd"]),
                  collateral=collateral, target_chain=chain)  # fmt: skip


def _sized(
    account: str,
    chain: str,
    *,
    d: dict[str, Any],
    repay_usd: float,
    collateral: str,
    target_chain: str | None,
) -> Attempt | str:
    """The attempt repaying `repay_usd` of debt row `d` on `chain`, capped at the row."""
    price = d["value_usd"] / float(d["amount"]) if float(d["amount"]) > 0 else 0.0
    if price <= 0:
        return "no_debt_price"
    dec = ASSET_BY_SYMBOL[d["asset"]].decimals
    repay = min(int(d["counted"]), int(repay_usd / price * 10**dec))
    if repay <= 0:
        return "zero_repay"
    return Attempt(account, chain, d["asset"], repay, collateral, price, target_chain)


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


@dataclass(frozen=True)
class Voucher:
    """The daemon's signed voucher for a claim, as `settleRemoteSeize` takes it."""

    claim_id: bytes
    account: str
    liquidator: str
    collateral_token: str
    debt_token: str
    repaid: int
    signature: bytes

    def calldata(self) -> bytes:
        v = (self.claim_id, self.account, self.liquidator, self.collateral_token,
             self.debt_token, self.repaid)  # fmt: skip
        return SEL_SETTLE + encode([VOUCHER_TYPE, "bytes"], [v, self.signature])


def _hex(value: Any, size: int | None, what: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ValueError(f"{what}: expected 0x-hex, got {value!r}")
    raw = bytes.fromhex(value[2:])
    if size is not None and len(raw) != size:
        raise ValueError(f"{what}: expected {size} bytes, got {len(raw)}")
    return raw


def claim_answer(
    status: int, body: Any, claim: Claim, target_vault: str, liquidator: str
) -> Voucher | tuple[str, str]:
    """What the daemon's answer to a voucher request means for `claim`: the voucher
    to submit on C, or ("wait", reason) (409: not final yet, or reorged out), or
    ("error", reason) for anything else, including a 200 whose voucher is not this
    claim's (another target chain or vault, account or liquidator)."""
    if status == 409:
        return ("wait", "claim_not_final")
    if status != 200:
        return ("error", f"claim: HTTP {status}")
    try:
        mine = [
            c for c in body["claims"]
            if c["target_chain"] == claim.target and c["source_chain"] == claim.source
        ]  # fmt: skip
        if len(mine) != 1:
            return ("error", "claim_mismatch")
        c, v = mine[0], mine[0]["voucher"]
        voucher = Voucher(
            _hex(v["claimId"], 32, "claimId"), v["account"], v["liquidator"],
            v["collateralToken"], v["debtToken"], int(v["repaid"]),
            _hex(c["signature"], None, "signature"),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError):
        return ("error", "claim_malformed")
    if (
        str(c["vault"]).lower() != target_vault.lower()
        or voucher.account.lower() != claim.account.lower()
        or voucher.liquidator.lower() != liquidator.lower()
        or (claim.claim_id and "0x" + voucher.claim_id.hex() != claim.claim_id.lower())
    ):
        return ("error", "claim_mismatch")
    return voucher


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
        # Per account, its claim not yet settled (at most one: module docstring).
        self.claims: dict[str, Claim] = {}
        self._busy: set[str] = set()
        self._max_age: dict[str, int] = {}

    async def _get(self, path: str) -> Any:
        async with self.session.get(self.api + path, timeout=aiohttp.ClientTimeout(10)) as r:
            if r.status != 200:
                raise RuntimeError(f"GET {path}: HTTP {r.status}")
            return await r.json()

    async def _rpc(self, chain: str, method: str, params: list[Any]) -> dict[str, Any]:
        return await rpc(self.session, self.state.url(chain), method, params)

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
        """One pass: the pending claims first, then every liquidatable account."""
        self.stats.rounds += 1
        # An account whose claim was pending at the round's start is not attempted in it,
        # even once its claim settles here: at most one attempt per account and round,
        # and the daemon's view may not show the settlement yet.
        self._busy = set(self.claims)
        try:
            await self.advance_claims(step)
        except (aiohttp.ClientError, RuntimeError, TimeoutError) as exc:
            self.stats.failures[f"claims: {type(exc).__name__}"] += 1
        try:
            accounts = await self.candidates()
        except (aiohttp.ClientError, RuntimeError, TimeoutError) as exc:
            self.stats.failures[f"api: {type(exc).__name__}"] += 1
            return
        sent: list[tuple[Attempt, str]] = []
        waiting: set[str] = set()
        for account in accounts:
            got = await self._one(step, account)
            if got == "waiting":
                waiting.add(account)
            elif isinstance(got, tuple):
                sent.append(got)
        self.waiting = waiting
        await self._settle(step, sent)

    async def _one(self, step: int, account: str) -> tuple[Attempt, str] | str | None:
        """One account's turn: (attempt, hash) of a same-chain liquidation sent,
        "waiting" when its registry entry does not allow one yet, else None."""
        try:
            view = await self._get(f"/v1/accounts/{account}")
        except (aiohttp.ClientError, RuntimeError, TimeoutError):
            self.stats.failures["api_account"] += 1
            return None
        attempt = choose(view, self.fallback_close_factor, account in self._busy)
        if attempt == "claim_pending":
            self.stats.claim_waits["claim_pending"] += 1
            return None
        if attempt in IDLE:
            self.stats.idle(account, attempt)
            return None
        if isinstance(attempt, str):
            self.stats.fail(account, attempt)
            return None
        self.stats.plan_fallbacks += not has_plan(view)
        try:
            why = await self._registry_says(attempt)
        except (aiohttp.ClientError, RuntimeError, TimeoutError, ValueError):
            self.stats.fail(account, "registry_read")
            return None
        if why is not None:
            self.stats.wait(account, why)
            return "waiting"
        return await self._go(step, attempt)

    async def _go(self, step: int, attempt: Attempt) -> tuple[Attempt, str] | None:
        """Send the attempt (simulated first); a cross-chain one becomes a pending claim."""
        try:
            h = await self._try(attempt)
        except (aiohttp.ClientError, TimeoutError):
            self.stats.fail(attempt.account, "send")
            return None
        if h is None:
            return None
        if attempt.remote:
            self._claim_sent(step, attempt, h)
            return None
        return attempt, h

    def _claim_sent(self, step: int, a: Attempt, h: str) -> None:
        assert a.target_chain is not None
        c = Claim(a.account, a.chain, a.target_chain, a.debt, a.collateral, a.debt_price,
                  step, h, time.monotonic())  # fmt: skip
        self.claims[a.account] = c
        self.stats.claims.append(c)

    async def _call(self, chain: str, to: str, data: bytes) -> bytes:
        answer = await self._rpc(
            chain, "eth_call", [{"to": to, "data": "0x" + data.hex()}, "latest"]
        )
        if "error" in answer:
            raise RuntimeError(f"eth_call on {chain}: {answer['error']}")
        return bytes.fromhex(str(answer["result"])[2:])

    async def _registry_says(self, a: Attempt) -> str | None:
        """What the vault on the attempt's chain would say of its registry entry now
        (for a cross-chain attempt, D's: the vault there checks it)."""
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

    def _calldata(self, a: Attempt) -> bytes:
        dep = self.state.deployments[a.chain]
        if a.target_chain is None:
            return SEL_LIQUIDATE + encode(
                ["address", "address", "uint256", "address"],
                [a.account, dep.tokens[a.debt], a.repay_raw, dep.tokens[a.collateral]],
            )
        target = self.state.deployments[a.target_chain]
        return SEL_LIQUIDATE_REMOTE + encode(
            ["address", "address", "uint256", "uint256", "address"],
            [a.account, dep.tokens[a.debt], a.repay_raw, target.chain_id,
             target.tokens[a.collateral]],
        )  # fmt: skip

    async def _try(self, a: Attempt) -> str | None:
        """Send the attempt capped at the debt the vault holds now: the daemon's view
        can trail a liquidation or repayment mined a block ago, and a repay above the
        vault's debt reverts `RepayExceedsDebt`."""
        dep = self.state.deployments[a.chain]
        try:
            held = int.from_bytes(await self._call(
                a.chain, dep.vault,
                SEL_DEBT_OF + encode(["address", "address"], [a.account, dep.tokens[a.debt]]),
            ))  # fmt: skip
        except (RuntimeError, aiohttp.ClientError, TimeoutError):
            self.stats.fail(a.account, "debt_read")
            return None
        if held == 0:
            self.stats.fail(a.account, "debt_repaid")
            return None
        if held < a.repay_raw:
            self.stats.capped_to_vault_debt += 1
            a = replace(a, repay_raw=held)
        return await self._send(a.chain, dep.vault, self._calldata(a), a.account)

    async def _send(self, chain: str, to: str, data: bytes, account: str) -> str | None:
        """Simulate, then send from the liquidator: the hash, or None after counting the
        revert by its custom error's name (or `send`)."""
        tx = {"from": self.liquidator, "to": to, "data": "0x" + data.hex()}
        try:
            sim = await self._rpc(chain, "eth_call", [tx, "latest"])
        except (aiohttp.ClientError, TimeoutError):
            self.stats.fail(account, "simulate_read")
            return None
        if "error" in sim:
            self.stats.fail(account, revert_name(sim["error"]))
            return None
        answer = await self._rpc(chain, "eth_sendTransaction", [{**tx, "gas": hex(GAS)}])
        if "error" in answer:
            self.stats.fail(account, "send")
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
                    self.stats.fail(a.account, await self._why_reverted(a.chain, h))
                else:
                    self.stats.liquidations.append(_record(step, a, h, r))
                    self.stats.derivative_liquidations += a.account in self.derivative_accounts
            pending = still
            if pending:
                await asyncio.sleep(0.2)
        if pending:
            self.stats.failures["unmined"] += len(pending)

    async def _why_reverted(self, chain: str, h: str) -> str:
        """`reverted: <custom error>` of a mined transaction that reverted, from the
        node's call trace (anvil's `debug_traceTransaction`), or the trace's error when
        it carries no revert data; plain `reverted` when the node gives no trace."""
        try:
            t = await self._rpc(chain, "debug_traceTransaction", [h, {"tracer": "callTracer"}])
        except (aiohttp.ClientError, ValueError):
            return "reverted"
        trace = t.get("result")
        if not isinstance(trace, dict):
            return "reverted"
        out = trace.get("output")
        if isinstance(out, str) and len(out) >= 10:
            return "reverted: " + decode_error(out).split("(")[0]
        # No revert data: the trace's own error (e.g. "out of gas"), if it gives one.
        err = trace.get("error")
        return f"reverted: {err}" if isinstance(err, str) and err else "reverted"

    # -- cross-chain claims (module docstring) -------------------------------------

    async def advance_claims(self, step: int) -> None:
        """Move every pending claim one stage on: its claim mined, its voucher asked
        for, its settlement sent and recorded."""
        settling: list[tuple[Claim, str]] = []
        for c in list(self.claims.values()):
            if not c.mined and not await self._claim_mined(c):
                continue
            if c.settle_tx is not None:
                settling.append((c, c.settle_tx))
                continue
            h = await self._request_voucher(step, c)
            if h is not None:
                c.settle_tx = h
                settling.append((c, h))
        await self._settlements(step, settling)

    async def _settlements(self, step: int, settling: list[tuple[Claim, str]]) -> None:
        """Wait (up to SETTLE_S) for the settlements sent; record the mined ones."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_S
        while settling and loop.time() < deadline:
            still = []
            for c, h in settling:
                r = (await self._rpc(c.target, "eth_getTransactionReceipt", [h])).get("result")
                if r is None:
                    still.append((c, h))
                elif int(r["status"], 16) != 1:
                    # Sent again next round if the voucher still stands (e.g. settled by
                    # another submitter meanwhile: AlreadySettled then).
                    c.settle_tx = None
                    self._claim_error(c, "reverted")
                else:
                    self._settled(step, c, h, r.get("logs", []))
            settling = still
            if settling:
                await asyncio.sleep(0.2)
        if settling:  # still unmined: checked again next round (`settle_tx` kept)
            self.stats.claim_waits["settle_unmined"] += len(settling)

    async def _claim_mined(self, c: Claim) -> bool:
        """Whether the claim's liquidateRemote is mined; a revert drops the claim."""
        r = (await self._rpc(c.source, "eth_getTransactionReceipt", [c.tx])).get("result")
        if r is None:
            c.unmined_rounds += 1
            if c.unmined_rounds >= CLAIM_UNMINED_ROUNDS:
                self._drop(c, "claim_unmined")
            else:
                self.stats.claim_waits["claim_unmined"] += 1
            return False
        if int(r["status"], 16) != 1:
            self._drop(c, "reverted")
            return False
        for log in r.get("logs", []):
            if log["topics"] and log["topics"][0] == CLAIMED_TOPIC:
                c.claim_id = str(log["topics"][1]).lower()
                _, repaid, _, _ = decode(
                    ["address", "uint256", "uint256", "address"], bytes.fromhex(log["data"][2:])
                )
                c.repaid_raw, c.mined = int(repaid), True
                return True
        self._drop(c, "no_claim_event")
        return False

    def _drop(self, c: Claim, reason: str) -> None:
        self.stats.fail(c.account, reason)
        self.claims.pop(c.account, None)
        self.stats.claims.remove(c)

    async def _request_voucher(self, step: int, c: Claim) -> str | None:
        """Ask the daemon for the claim's voucher and submit it on C; the settlement's
        hash, or None (a wait, a failure, or found already settled)."""
        url = f"{self.api}/v1/claims/{c.source}/{c.tx}"
        try:
            async with self.session.post(url, timeout=aiohttp.ClientTimeout(10)) as r:
                status = r.status
                body = await r.json(content_type=None) if status in (200, 409) else None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self._claim_error(c, f"claim: {type(exc).__name__}")
            return None
        dep = self.state.deployments[c.target]
        got = claim_answer(status, body, c, dep.vault, self.liquidator)
        if isinstance(got, tuple):
            kind, reason = got
            if kind == "wait":
                self.stats.claim_waits[reason] += 1
                return None
            self._claim_error(c, reason)
            return None
        tx = {"from": self.liquidator, "to": dep.vault, "data": "0x" + got.calldata().hex()}
        sim = await self._rpc(c.target, "eth_call", [tx, "latest"])
        if "error" in sim:
            reason = revert_name(sim["error"])
            if reason == "AlreadySettled":
                await self._already_settled(step, c)
                return None
            self._claim_error(c, reason)
            return None
        answer = await self._rpc(c.target, "eth_sendTransaction", [{**tx, "gas": hex(GAS)}])
        if "error" in answer:
            self._claim_error(c, "send")
            return None
        return str(answer["result"])

    def _claim_error(self, c: Claim, reason: str) -> None:
        self.stats.fail(c.account, reason)
        c.errors += 1
        if c.errors >= CLAIM_RETRIES:
            self.stats.failures["claim_abandoned"] += 1
            self.claims.pop(c.account, None)

    async def _already_settled(self, step: int, c: Claim) -> None:
        """Someone settled the claim already: record it from C's log, once."""
        self.stats.claims_already_settled += 1
        dep = self.state.deployments[c.target]
        flt = {"address": dep.vault, "fromBlock": "0x0", "toBlock": "latest",
               "topics": [SETTLED_TOPIC, c.claim_id]}  # fmt: skip
        logs = (await self._rpc(c.target, "eth_getLogs", [flt])).get("result") or []
        if logs:
            self._settled(step, c, str(logs[0]["transactionHash"]), logs)
        else:
            # The vault says settled but shows no event: nothing to record; the claim
            # still must not hold the account back.
            c.settled = True
            self.claims.pop(c.account, None)

    def _settled(self, step: int, c: Claim, h: str, logs: list[dict[str, Any]]) -> None:
        for log in logs:
            if log["topics"] and log["topics"][0] == SETTLED_TOPIC:
                _, seized, _, repaid = decode(
                    ["address", "uint256", "address", "uint256"], bytes.fromhex(log["data"][2:])
                )
                break
        else:
            seized, repaid = 0, c.repaid_raw
        c.settled = True
        self.claims.pop(c.account, None)
        dec = ASSET_BY_SYMBOL[c.debt].decimals
        self.stats.liquidations.append(Liquidation(
            c.step, c.account, c.target, c.debt, int(repaid), c.collateral, int(seized),
            int(repaid) / 10**dec * c.debt_price, h,
            remote_from=c.source, claim_id=c.claim_id, claim_tx=c.tx, settled_step=step,
        ))  # fmt: skip
        self.stats.derivative_liquidations += c.account in self.derivative_accounts


async def rpc(
    session: aiohttp.ClientSession, url: str, method: str, params: list[Any]
) -> dict[str, Any]:
    """One JSON-RPC call; a read-only one is tried again on a dropped connection
    (module docstring), a send is not."""
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    tries = 1 if method in SEND_METHODS else RPC_RETRIES
    for i in range(tries):
        try:
            async with session.post(url, json=body) as r:
                answer: dict[str, Any] = await r.json(content_type=None)
                return answer
        except aiohttp.ClientConnectionError:
            if i + 1 == tries:
                raise
            await asyncio.sleep(RPC_BACKOFF_S * 2**i)
    raise AssertionError("unreachable")


def revert_name(err: Any) -> str:
    """The custom error's name of a failed eth_call (`call` when it carries none)."""
    revert = err.get("data") if isinstance(err, dict) else None
    return decode_error(revert).split("(")[0] if isinstance(revert, str) else "call"


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
