"""CollateralVault + HealthRegistry under random sequences (hypothesis RuleBasedStateMachine)
on a real anvil: user actions, keeper updates (older, replayed, future-dated ones too),
updates from strangers, and time jumps. A plain Python model tracks what must be true.

Invariants:
- only the keeper changes an entry; an entry not newer than the stored one is skipped;
- no borrow or withdrawal beyond the local credit: each one consumes at least the value
  the vault's own feed gives it (x LTV for a withdrawal), and credit never underflows;
- nothing happens against a stale entry (absent, older than maxAge, or from the future);
- liquidation only when the registry says liquidatable (tier >= 2) and the entry is fresh;
- vault balances always equal the model's.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from web3.exceptions import ContractLogicError

from chains.contracts import decode_error
from chains.registry_codec import RegistryEntry, pack_batch

from .conftest import System

MAX_AGE = 900
TOKENS = ("WETH", "USDC")  # WETH collateral+debt, USDC collateral+debt


def _send(fn: Any, sender: str) -> tuple[bool, str, Any]:
    """(ok, revert reason, receipt). Reverts are caught at estimation (never mined)."""
    try:
        h = fn.transact({"from": sender})
    except ContractLogicError as exc:
        data = exc.data
        if isinstance(data, str) and data.startswith("0x") and len(data) >= 10:
            return False, decode_error(data), None
        return False, str(exc.message), None
    receipt = fn.w3.eth.wait_for_transaction_receipt(h)
    assert receipt["status"] == 1
    return True, "", receipt


class VaultMachine(RuleBasedStateMachine):
    system: System

    def __init__(self) -> None:
        super().__init__()
        s = self.system
        w3 = s.w3
        self.snap = w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
        self.users = [s.accounts[2], s.accounts[3]]
        self.liquidator = s.accounts[6]
        self.stranger = s.accounts[7]
        self.coll: dict[tuple[str, str], int] = {}
        self.debt: dict[tuple[str, str], int] = {}
        # account -> (credit, hf, as_of, tier), as the registry must hold it
        self.entry: dict[str, tuple[int, int, int, int]] = {}
        for who in [*self.users, self.liquidator]:
            for sym in TOKENS:
                tok = s.token(sym)
                amount = 10**30
                s.w3.eth.wait_for_transaction_receipt(
                    tok.functions.mint(who, amount).transact({"from": s.owner})
                )
                s.w3.eth.wait_for_transaction_receipt(
                    tok.functions.approve(s.dep.vault, 2**256 - 1).transact({"from": who})
                )
        for u in self.users:
            for sym in TOKENS:
                self.coll[(u, sym)] = int(
                    s.vault.functions.collateralOf(u, s.dep.tokens[sym]).call()
                )
                self.debt[(u, sym)] = int(s.vault.functions.debtOf(u, s.dep.tokens[sym]).call())
            self.entry[u] = self._read_entry(u)

    def teardown(self) -> None:
        w3 = self.system.w3
        assert w3.provider.make_request("evm_revert", [self.snap])["result"]  # type: ignore[arg-type]

    def _read_entry(self, u: str) -> tuple[int, int, int, int]:
        reg = self.system.registry
        hf, tier, as_of = reg.functions.healthOf(u).call()
        return int(reg.functions.creditOf(u).call()), int(hf), int(as_of), int(tier)

    def _fresh_at(self, u: str, ts: int) -> bool:
        as_of = self.entry[u][2]
        return as_of != 0 and as_of <= ts and ts - as_of <= MAX_AGE

    def _block_ts(self, receipt: Any) -> int:
        return int(self.system.w3.eth.get_block(receipt["blockNumber"])["timestamp"])

    def _check_stale_refusal(self, u: str, reason: str) -> None:
        if reason.startswith("Stale"):
            now = self.system.now()
            # Judged at the next block: its timestamp is now or now + 1.
            assert not (self._fresh_at(u, now) and self._fresh_at(u, now + 1)), (
                f"refused as stale but entry {self.entry[u]} is fresh at {now}"
            )

    # ---------------------------------------------------------------- keeper

    @rule(
        u=st.integers(0, 1),
        credit=st.integers(0, 10**12),
        hf=st.integers(0, 3 * 10**9),
        tier=st.integers(0, 3),
        offset=st.sampled_from([-2000, -1000, -300, -1, 0, 0, 0, 5, 120]),
        replay=st.booleans(),
    )
    def keeper_update(
        self, *, u: int, credit: int, hf: int, tier: int, offset: int, replay: bool
    ) -> None:
        s = self.system
        user = self.users[u]
        stored = self.entry[user]
        # A replay of the stored as_of must be skipped like an older one.
        as_of = stored[2] if replay and stored[2] else max(1, s.now() + offset)
        batch = pack_batch([(user, RegistryEntry(credit, hf, as_of, tier))])
        ok, reason, _ = _send(s.registry.functions.update(batch), s.keeper)
        assert ok, reason
        if as_of > stored[2]:
            self.entry[user] = (credit, hf, as_of, tier)

    @rule(u=st.integers(0, 1), credit=st.integers(1, 10**12))
    def stranger_update(self, u: int, credit: int) -> None:
        s = self.system
        user = self.users[u]
        batch = pack_batch([(user, RegistryEntry(credit, 10**9, s.now() + 1, 0))])
        for who in (self.stranger, user, self.liquidator):
            ok, reason, _ = _send(s.registry.functions.update(batch), who)
            assert not ok and reason.startswith("NotKeeper"), reason
        # A stranger cannot consume credit either (only the vault is a consumer).
        ok, reason, _ = _send(s.registry.functions.consumeCredit(user, 1), self.stranger)
        assert not ok and reason.startswith("NotConsumer"), reason

    @rule(seconds=st.sampled_from([1, 30, 299, 600, 899, 901, 1500]))
    def time_jump(self, seconds: int) -> None:
        self.system.warp(seconds)

    # ---------------------------------------------------------------- users

    @rule(u=st.integers(0, 1), sym=st.sampled_from(TOKENS), amount=st.integers(1, 10**22))
    def deposit(self, u: int, sym: str, amount: int) -> None:
        s = self.system
        user = self.users[u]
        ok, reason, _ = _send(s.vault.functions.deposit(s.dep.tokens[sym], amount), user)
        assert ok, reason
        self.coll[(user, sym)] += amount

    @rule(u=st.integers(0, 1), sym=st.sampled_from(TOKENS), amount=st.integers(1, 10**21))
    def borrow(self, u: int, sym: str, amount: int) -> None:
        s = self.system
        user = self.users[u]
        tok = s.dep.tokens[sym]
        credit_before = self.entry[user][0]
        value = int(s.vault.functions.valueOf(tok, amount).call())
        ok, reason, receipt = _send(s.vault.functions.borrow(tok, amount), user)
        if ok:
            ts = self._block_ts(receipt)
            assert self._fresh_at(user, ts), f"borrowed against stale {self.entry[user]} at {ts}"
            credit_after = self._read_entry(user)[0]
            consumed = credit_before - credit_after
            assert credit_before >= consumed >= value, (credit_before, consumed, value)
            self.entry[user] = (credit_after, *self.entry[user][1:])
            self.debt[(user, sym)] += amount
            return
        self._check_stale_refusal(user, reason)
        if reason.startswith("InsufficientCredit"):
            # The vault rounds the consumption up: refused means credit < ceil(value).
            assert credit_before <= value, (reason, credit_before, value)
        assert reason.split("(")[0] in ("Stale", "InsufficientCredit", "InsufficientLiquidity"), (
            reason
        )

    @rule(u=st.integers(0, 1), sym=st.sampled_from(TOKENS), frac=st.floats(0.01, 1.5))
    def withdraw(self, u: int, sym: str, frac: float) -> None:
        s = self.system
        user = self.users[u]
        tok = s.dep.tokens[sym]
        bal = self.coll[(user, sym)]
        amount = max(1, int(bal * frac))
        credit_before = self.entry[user][0]
        value = int(s.vault.functions.valueOf(tok, amount).call())
        ltv_bps = int(s.vault.functions.collaterals(tok).call()[1])
        ok, reason, receipt = _send(s.vault.functions.withdraw(tok, amount), user)
        if ok:
            assert amount <= bal
            assert self._fresh_at(user, self._block_ts(receipt))
            credit_after = self._read_entry(user)[0]
            consumed = credit_before - credit_after
            assert consumed >= value * ltv_bps // 10_000, (consumed, value, ltv_bps)
            self.entry[user] = (credit_after, *self.entry[user][1:])
            self.coll[(user, sym)] -= amount
            return
        if amount > bal:
            assert reason.startswith("InsufficientCollateral"), reason
            return
        self._check_stale_refusal(user, reason)
        assert reason.split("(")[0] in ("Stale", "InsufficientCredit"), reason

    @rule(u=st.integers(0, 1), sym=st.sampled_from(TOKENS), frac=st.floats(0.01, 1.2))
    def repay(self, u: int, sym: str, frac: float) -> None:
        s = self.system
        user = self.users[u]
        debt = self.debt[(user, sym)]
        amount = max(1, int(debt * frac))
        ok, reason, _ = _send(s.vault.functions.repay(user, s.dep.tokens[sym], amount), user)
        if amount <= debt:
            assert ok, reason
            self.debt[(user, sym)] -= amount
        else:
            assert not ok and reason.startswith("RepayExceedsDebt"), reason

    @rule(u=st.integers(0, 1), dsym=st.sampled_from(TOKENS), csym=st.sampled_from(TOKENS))
    def liquidate(self, u: int, dsym: str, csym: str) -> None:
        s = self.system
        user = self.users[u]
        debt = self.debt[(user, dsym)]
        if debt == 0:
            return
        repay = max(1, debt // 2)
        ok, reason, receipt = _send(
            s.vault.functions.liquidate(user, s.dep.tokens[dsym], repay, s.dep.tokens[csym]),
            self.liquidator,
        )
        if ok:
            tier = self.entry[user][3]
            assert tier >= 2, f"liquidated at tier {tier}"
            assert self._fresh_at(user, self._block_ts(receipt))
            self.debt[(user, dsym)] -= repay
            self.coll[(user, csym)] = int(
                s.vault.functions.collateralOf(user, s.dep.tokens[csym]).call()
            )
            return
        self._check_stale_refusal(user, reason)
        if reason.startswith("NotLiquidatable"):
            assert self.entry[user][3] < 2, reason
        assert reason.split("(")[0] in ("Stale", "NotLiquidatable"), reason

    # ---------------------------------------------------------------- invariants

    @invariant()
    def registry_matches_the_model(self) -> None:
        for u in self.users:
            assert self._read_entry(u) == self.entry[u], u

    @invariant()
    def vault_matches_the_model(self) -> None:
        s = self.system
        for (u, sym), q in self.coll.items():
            assert int(s.vault.functions.collateralOf(u, s.dep.tokens[sym]).call()) == q
        for (u, sym), q in self.debt.items():
            assert int(s.vault.functions.debtOf(u, s.dep.tokens[sym]).call()) == q


@pytest.mark.timeout(240)
def test_vault_and_registry_state_machine(_deployed: System) -> None:
    VaultMachine.system = _deployed
    run_state_machine_as_test(
        VaultMachine,
        settings=settings(
            max_examples=8,
            stateful_step_count=20,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        ),
    )
