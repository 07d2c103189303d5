"""Responders (devkit/replay/responders.py): who responds and how late, seeded; when a
warned account cures and by how much, against a plain reference; the cures sent to a
fake chain and booked only from a successful receipt; the report's false liquidations
with a cure before the liquidation."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from eth_abi import encode
from eth_utils import function_signature_to_4byte_selector as sel
from loopback import serving

from devkit.replay import population, responders
from devkit.replay.keeper import KeeperStats, Liquidation
from devkit.replay.report import (
    Holdings,
    Recorder,
    cure_rows,
    multiplier_range,
    reputation_rows,
)

PRICES = {"USDC": 1.0, "WBTC": 30_000.0, "WETH": 2_000.0, "wstETH": 2_300.0, "rETH": 2_150.0}
LT = {"USDC": 0.88, "WBTC": 0.75, "WETH": 0.825, "wstETH": 0.79, "rETH": 0.78}


def test_profiles_are_seeded_borrowers_with_delays_in_steps_and_budgets() -> None:
    book = population.generate(400, 5, PRICES)
    kw: dict[str, Any] = {"max_delay_h": 12, "hours_per_step": 3, "seed": 5}
    got = responders.profiles(book, PRICES, share=0.5, **kw)
    assert got == responders.profiles(book, PRICES, share=0.5, **kw)  # reproducible
    assert got != responders.profiles(book, PRICES, share=0.5, **{**kw, "seed": 6})
    borrowers = {a.address: a for a in book if any(p.side == "debt" for p in a.positions)}
    assert set(got) <= set(borrowers)
    # About half of the borrowers (binomial: 4 sigma either side).
    n = len(borrowers)
    assert abs(len(got) - n / 2) < 4 * math.sqrt(n / 4)
    for addr, prof in got.items():
        debt = sum(p.amount * PRICES[p.symbol] for p in borrowers[addr].positions
                   if p.side == "debt")  # fmt: skip
        assert prof.budget_usd == pytest.approx(responders.BUDGET_SHARE * debt)
        assert 1 <= prof.delay_steps <= 4  # 1..12 h at 3 h a step, rounded up
    assert {p.delay_steps for p in got.values()} == {1, 2, 3, 4}
    assert responders.profiles(book, PRICES, share=0.0, **kw) == {}
    everyone = responders.profiles(book, PRICES, share=1.0, **kw)
    assert set(everyone) == set(borrowers)
    # A larger share keeps the smaller share's responders (one draw per account).
    assert set(got) <= set(everyone)


@pytest.mark.parametrize(
    ("share", "delay", "said"),
    [(1.5, 12, "--responders 1.5"), (-0.1, 12, "--responders -0.1"),
     (0.5, 0, "--response-max-delay 0")],
)  # fmt: skip
def test_options_out_of_range_are_refused(share: float, delay: int, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        responders.check(share, delay)


def test_the_clock_runs_only_while_rated_at_risk() -> None:
    since: dict[str, int] = {}
    tiers = ["healthy", "warning", "warning", "liquidatable", "healthy", "warning"]
    starts = []
    for step, tier in enumerate(tiers):
        since = responders.clock(since, {"a": {"tier": tier}}, step)
        starts.append(since.get("a"))
    assert starts == [None, 1, 1, 1, None, 5]


def _view(rows: list[tuple[str, str, str, int, float]]) -> dict[str, Any]:
    positions: dict[str, list[dict[str, Any]]] = {}
    for chain, side, asset, raw, usd in rows:
        positions.setdefault(chain, []).append(
            {"side": side, "asset": asset, "counted": str(raw), "value_usd": usd}
        )
    return {"positions": positions}


VIEW = _view([
    ("alpha", "collateral", "WETH", 3 * 10**18, 6000.0),
    ("alpha", "debt", "USDC", 3_000 * 10**6, 3000.0),
    ("beta", "debt", "WETH", 10**18, 2000.0),
])  # fmt: skip


def test_a_cure_brings_the_rated_hf_to_the_target() -> None:
    got = responders.plan(VIEW, hf=1.05, target=1.25, budget_left_usd=10_000.0)
    assert {(c, s) for c, s, _, _ in got} == {("alpha", "USDC"), ("beta", "WETH")}
    # Plain reference: HF ~ 1 / debt, so the debt after is debt * hf / target.
    repaid = sum(usd for *_, usd in got)
    assert 1.05 * 5000.0 / (5000.0 - repaid) == pytest.approx(1.25, rel=1e-6)
    for chain, sym, raw, usd in got:
        row = next(r for r in VIEW["positions"][chain] if r["asset"] == sym and
                   r["side"] == "debt")  # fmt: skip
        assert 0 < raw < int(row["counted"])
        assert usd == pytest.approx(row["value_usd"] * raw / int(row["counted"]))


def test_a_cure_is_capped_by_the_budget_and_never_exceeds_a_row() -> None:
    capped = responders.plan(VIEW, hf=0.5, target=1.25, budget_left_usd=500.0)
    assert sum(usd for *_, usd in capped) == pytest.approx(500.0, rel=1e-6)
    # Insolvent (HF 0) with budget enough for everything: every row repaid, no more.
    whole = responders.plan(VIEW, hf=0.0, target=1.25, budget_left_usd=1e9)
    assert sorted(raw for _, _, raw, _ in whole) == [3_000 * 10**6, 10**18]
    assert responders.plan(VIEW, hf=1.3, target=1.25, budget_left_usd=1e9) == []
    assert responders.plan(VIEW, hf=1.0, target=1.25, budget_left_usd=0.0) == []
    assert responders.plan(_view([]), hf=1.0, target=1.25, budget_left_usd=1e9) == []


# -- the cures through a fake daemon API and chain (real aiohttp servers) -----------

ACCOUNT = "0x" + "ab" * 20
VAULT, USDC, WETH = ("0x" + c * 40 for c in "123")


@dataclass
class Chain:
    """Fake alpha and beta: simulations pass unless `revert` names an error; receipts
    succeed unless the hash is in `fails`; `mined` False leaves them pending."""

    revert: str | None = None
    mined: bool = True
    fails: set[str] = field(default_factory=set)
    sent: list[dict[str, Any]] = field(default_factory=list)

    def answer(self, method: str, params: list[Any]) -> dict[str, Any]:
        if method == "eth_call":
            if self.revert:
                # The custom error's selector and arguments, as a node answers a revert.
                data = sel(f"{self.revert}(address,address,uint256,uint256)") + encode(
                    ["address", "address", "uint256", "uint256"], [ACCOUNT, USDC, 1, 2]
                )
                return {"error": {"code": 3, "message": "reverted", "data": "0x" + data.hex()}}
            return {"result": "0x"}
        if method == "eth_sendTransaction":
            self.sent.append(params[0])
            return {"result": "0x" + f"{len(self.sent):064x}"}
        if method == "eth_getTransactionReceipt":
            if not self.mined:
                return {"result": None}
            return {"result": {"status": "0x0" if params[0] in self.fails else "0x1"}}
        raise AssertionError(method)


@dataclass
class FakeDeployment:
    vault: str = VAULT
    tokens: dict[str, str] = field(default_factory=lambda: {"USDC": USDC, "WETH": WETH})


@dataclass
class FakeState:
    base: str
    deployments: dict[str, FakeDeployment] = field(
        default_factory=lambda: {"alpha": FakeDeployment(), "beta": FakeDeployment()}
    )

    def url(self, chain: str) -> str:
        return f"{self.base}/rpc/{chain}"


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, Chain]]:
    chain = Chain()

    async def account(_req: web.Request) -> web.Response:
        return web.json_response(VIEW)

    async def rpc(req: web.Request) -> web.Response:
        body = await req.json()
        return web.json_response({"jsonrpc": "2.0", "id": 1,
                                  **chain.answer(body["method"], body["params"])})  # fmt: skip

    app = web.Application()
    app.router.add_get("/v1/accounts/{a}", account)
    app.router.add_post("/rpc/{chain}", rpc)
    async with serving(app) as url:
        yield url, chain


def _responders(url: str, session: aiohttp.ClientSession, delay: int = 2,
                budget: float = 1e6) -> responders.Responders:  # fmt: skip
    profile = {ACCOUNT: responders.Profile(delay_steps=delay, budget_usd=budget)}
    state: Any = FakeState(url)
    return responders.Responders(state, url, session, profile, target=1.25)


WARNED = {ACCOUNT: {"tier": "warning", "hf": 1.05}}


async def test_a_warned_responder_cures_after_its_delay_and_is_booked_when_mined(
    served: tuple[str, Chain],
) -> None:
    url, chain = served
    async with aiohttp.ClientSession() as session:
        r = _responders(url, session, delay=2)
        assert await r.step(0, WARNED, set()) == [] and chain.sent == []
        assert await r.step(1, WARNED, set()) == [] and chain.sent == []
        assert await r.step(2, WARNED, set()) == []  # due: sent, not yet booked
        assert len(chain.sent) == 2  # one repay per debt row (alpha USDC, beta WETH)
        assert all(tx["from"] == responders.TREASURY and tx["to"] == VAULT for tx in chain.sent)
        assert all(tx["data"].startswith("0x" + responders.SEL_REPAY.hex()) for tx in chain.sent)
        booked = await r.step(3, WARNED, set())  # mined: booked; still warned, no new cure
        assert len(booked) == 2 and {c.step for c in booked} == {2}
        assert len(chain.sent) == 2
        # The clock restarts at step 4 and the last cure was booked at 3: the next is
        # due at max(4 + delay, 3 + REFRESH_STEPS) = 6.
        assert responders.REFRESH_STEPS == 3
        for step in (4, 5):
            await r.step(step, WARNED, set())
        assert len(chain.sent) == 2
        await r.step(6, WARNED, set())
        assert len(chain.sent) == 4
        fig = r.stats.figures()
        assert fig["count"] == 2 and fig["accounts"] == 1 and fig["responders"] == 1
        assert fig["usd"] == pytest.approx(sum(c.repaid_usd for c in booked), abs=0.01)


async def test_skipped_healthy_in_flight_and_out_of_budget_accounts_are_not_cured(
    served: tuple[str, Chain],
) -> None:
    url, chain = served
    async with aiohttp.ClientSession() as session:
        r = _responders(url, session, delay=0)
        await r.step(0, WARNED, {ACCOUNT})  # the keeper took it this step
        await r.step(1, {ACCOUNT: {"tier": "healthy", "hf": 1.4}}, set())
        assert chain.sent == []
        chain.mined = False
        await r.step(2, WARNED, set())
        assert len(chain.sent) == 2
        await r.step(3, WARNED, set())  # its cure is in flight: nothing more
        assert len(chain.sent) == 2
        spent = r.stats.spent_usd[ACCOUNT]
        assert spent > 0
    async with aiohttp.ClientSession() as session:
        poor = _responders(url, session, delay=0, budget=0.0)
        await poor.step(0, WARNED, set())
        assert len(chain.sent) == 2 and poor.stats.figures()["budget_spent_accounts"] == 1


async def test_a_refused_or_reverted_cure_is_counted_never_booked_and_refunded(
    served: tuple[str, Chain],
) -> None:
    url, chain = served
    async with aiohttp.ClientSession() as session:
        chain.revert = "RepayExceedsDebt"
        r = _responders(url, session, delay=0)
        await r.step(0, WARNED, set())
        assert chain.sent == [] and r.stats.failures["RepayExceedsDebt"] == 2
        chain.revert = None
        chain.fails = {"0x" + f"{1:064x}"}  # the first send reverts when mined
        await r.step(1, WARNED, set())
        booked = await r.step(2, WARNED, set())
        assert len(booked) == 1 and r.stats.failures["reverted"] == 1
        # Only the booked cure's USD is spent from the budget.
        assert r.stats.spent_usd[ACCOUNT] == pytest.approx(booked[0].repaid_usd)


async def test_a_cure_never_mined_is_given_up_after_its_steps_and_refunded(
    served: tuple[str, Chain],
) -> None:
    """A repay the node keeps pending (dropped from a block, a stuck nonce): counted
    `unmined` after UNMINED_STEPS receipt checks, its budget back, never booked; the
    account may then be cured again."""
    url, chain = served
    async with aiohttp.ClientSession() as session:
        chain.mined = False
        r = _responders(url, session, delay=0)
        await r.step(0, WARNED, set())
        first = r.stats.spent_usd[ACCOUNT]
        assert len(chain.sent) == 2 and first > 0
        for step in range(1, responders.UNMINED_STEPS):
            assert await r.step(step, WARNED, set()) == []
            assert len(chain.sent) == 2  # still in flight: no second cure
        assert r.stats.failures["unmined"] == 0
        assert await r.step(responders.UNMINED_STEPS, WARNED, set()) == []
        # Both given up and refunded, then (delay 0, still warned) cured again at once:
        # the budget holds the new cure only, not the lost one too.
        assert r.stats.failures["unmined"] == 2
        assert len(chain.sent) == 4
        assert r.stats.spent_usd[ACCOUNT] == pytest.approx(first)
        assert r.stats.figures()["count"] == 0


def test_a_cure_before_a_liquidation_moves_the_positions_it_is_judged_on() -> None:
    a = next(x for x in population.generate(80, 9, PRICES) if x.shape == "eth_stable"
             and len({p.chain for p in x.positions}) == 1)  # fmt: skip
    coll = next(p for p in a.positions if p.side == "collateral")
    debt = next(p for p in a.positions if p.side == "debt")
    hf0 = coll.amount * PRICES["WETH"] * 0.825 / debt.amount
    low = dict(PRICES, WETH=PRICES["WETH"] * 0.8 / hf0)  # plain HF 0.8 on the book
    rec = Recorder([a], LT, [], false_window_h=5)
    rec.prices = [low] * 8
    liq = Liquidation(3, a.address, coll.chain, "USDC", debt.raw // 10, "WETH", 0, 0.0, "0x")
    stats = KeeperStats(liquidations=[liq])
    assert rec.false_liquidations(stats, Holdings.of([a]))["count"] == 0
    # A cure at step 2 repaid 30% of the debt: plain HF 0.8 / 0.7 > 1 at the liquidation,
    # which is then counted false (and above lt when taken).
    cure = responders.Cure(2, a.address, debt.chain, "USDC", debt.raw * 3 // 10, 0.0, "0x")
    rec.apply_cures([cure])
    got = rec.false_liquidations(stats, Holdings.of([a]), [cure])
    assert got["count"] == 1 and got["above_lt_at_liquidation"] == 1
    # A cure after the liquidation's step does not move what it was judged on.
    late = responders.Cure(3, a.address, debt.chain, "USDC", debt.raw * 3 // 10, 0.0, "0x")
    assert rec.false_liquidations(stats, Holdings.of([a]), [late])["count"] == 0
    # The holdings booked the cure.
    assert rec.holdings.raw[("debt", a.address, "USDC")] == debt.raw - debt.raw * 3 // 10


def test_the_report_rows_name_the_cures() -> None:
    assert cure_rows(None) == [("responders", "none")]
    stats = responders.CureStats(responders=4)
    stats.cures.append(responders.Cure(1, "0xa", "alpha", "USDC", 10, 1234.5, "0x"))
    stats.failures["reverted"] += 1
    rows = dict(cure_rows(stats.figures()))
    assert rows["responders' cures (count / accounts / USD)"] == "1 / 1 of 4 / 1,234"
    assert rows["cures failed; budget spent (accounts)"] == "reverted 1; 0"


async def test_a_node_that_cannot_be_reached_costs_the_cures_not_the_replay() -> None:
    async with aiohttp.ClientSession() as session:
        # Nothing listens on port 9: every call is a refused connection.
        r = _responders("http://127.0.0.1:9", session, delay=0)
        assert await r.step(0, WARNED, set()) == []
    assert r.stats.failures == {"api": 1}
    r.in_flight[ACCOUNT] = [responders._Sent(responders.Cure(0, ACCOUNT, "alpha", "USDC", 1,
                                                               1.0, "0x"))]  # fmt: skip
    async with aiohttp.ClientSession() as session:
        r.session = session
        assert await r.step(1, WARNED, set()) == []
    assert r.stats.failures["rpc: ClientConnectorError"] == 1


async def test_a_failed_receipt_read_keeps_that_cure_and_books_the_others(
    served: tuple[str, Chain],
) -> None:
    """A receipt read failing after another account's cure was found mined: that one
    is still booked (not dropped with the step), the failed one asked again next step."""
    url, _chain = served
    other = "0x" + "cd" * 20
    async with aiohttp.ClientSession() as session:
        r = _responders(url, session)
        first = responders.Cure(0, ACCOUNT, "alpha", "USDC", 1, 10.0, "0x" + "01" * 32)
        second = responders.Cure(0, other, "beta", "USDC", 1, 20.0, "0x" + "02" * 32)
        r.in_flight = {ACCOUNT: [responders._Sent(first)], other: [responders._Sent(second)]}
        real = r._rpc

        async def flaky(chain: str, method: str, params: list[Any]) -> dict[str, Any]:
            if params == [second.tx]:
                raise aiohttp.ClientConnectionError("dropped")
            return await real(chain, method, params)

        r._rpc = flaky  # type: ignore[method-assign]
        assert await r.step(1, {}, set()) == [first]
        assert r.stats.cures == [first] and list(r.in_flight) == [other]
        assert r.stats.failures["rpc: ClientConnectionError"] == 1
        r._rpc = real  # type: ignore[method-assign]
        assert await r.step(2, {}, set()) == [second]
        assert r.stats.cures == [first, second] and r.in_flight == {}


async def test_a_chain_whose_node_failed_is_not_asked_again_in_the_same_step(
    served: tuple[str, Chain],
) -> None:
    """Three cures on alpha, whose node drops the first read: the other two are kept in
    flight unasked (no second round of retries this step), beta's is still booked."""
    url, _chain = served
    accounts = ["0x" + f"{i:02x}" * 20 for i in (1, 2, 3, 4)]
    cures = [
        responders.Cure(0, a, "alpha" if i < 3 else "beta", "USDC", 1, 1.0, f"0x{i:064x}")
        for i, a in enumerate(accounts)
    ]
    async with aiohttp.ClientSession() as session:
        r = _responders(url, session)
        r.in_flight = {c.account: [responders._Sent(c)] for c in cures}
        real = r._rpc
        asked: list[str] = []

        async def alpha_down(chain: str, method: str, params: list[Any]) -> dict[str, Any]:
            asked.append(chain)
            if chain == "alpha":
                raise aiohttp.ClientConnectionError("dropped")
            return await real(chain, method, params)

        r._rpc = alpha_down  # type: ignore[method-assign]
        assert await r.step(1, {}, set()) == [cures[3]]
        assert asked == ["alpha", "beta"]
        assert r.stats.failures["rpc: ClientConnectionError"] == 1
        assert set(r.in_flight) == set(accounts[:3])
        assert all(s.steps == 0 for sent in r.in_flight.values() for s in sent)
        r._rpc = real  # type: ignore[method-assign]
        assert await r.step(2, {}, set()) == cures[:3]
        assert r.in_flight == {}


def test_the_reputation_range_and_its_rows() -> None:
    """Written from the definition: min / median / max and the counts off neutral."""
    got = multiplier_range([1.0, 0.9, 1.3, 1.0], [1.0, 1.0, 1.15, 1.0])
    assert got["accounts"] == 4
    assert got["borrowing"] == {"min": 0.9, "p50": 1.0, "max": 1.3, "above_1": 1, "below_1": 1}
    assert got["maintenance"] == {"min": 1.0, "p50": 1.0, "max": 1.15, "above_1": 1, "below_1": 0}
    rows = dict(reputation_rows(got))
    assert (
        rows["reputation multiplier min / p50 / max"]
        == "0.900 / 1.000 / 1.300 (1 above 1, 1 below)"
    )
    assert reputation_rows(None) == []
    assert multiplier_range([], [])["borrowing"]["min"] is None
