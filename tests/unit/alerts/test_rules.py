"""Alert rules and state (pure): each kind's condition, deduplication while active,
resolution when the condition clears, and the config's kinds == the registry's."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
from pydantic import TypeAdapter

from aggregator.alerts.config import (
    RULE_TAGS,
    AccountTierDownRule,
    ChainLagRule,
    KeeperBalanceRule,
    LeaseLostRule,
    PriceStatusRule,
    PusherStaleRule,
    RuleConfig,
)
from aggregator.alerts.rules import RULE_KINDS, ChainFacts, LeaseFacts, Snapshot, TierMove
from aggregator.alerts.state import AlertBook, step
from aggregator.config import ConfigError, load_config

ACC = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"


def test_config_kinds_are_the_registry() -> None:
    union = typing.get_args(typing.get_args(RuleConfig)[0])
    tags = {m.model_fields["kind"].default for m in union}
    assert tags == set(RULE_KINDS) == set(RULE_TAGS)


def test_rule_union_parses_by_kind() -> None:
    ta = TypeAdapter(RuleConfig)
    rule = ta.validate_python({"name": "lag", "kind": "chain_lag", "max_blocks": 5})
    assert isinstance(rule, ChainLagRule)
    with pytest.raises(Exception, match="max_blocks"):
        ta.validate_python({"name": "lag", "kind": "chain_lag"})


def move(frm: int, to: int, coll: float = 200_000.0) -> TierMove:
    return TierMove(ACC, frm, to, coll, coll * 0.9, 0.97)


def test_tier_down_fires_once_and_resolves_when_back() -> None:
    book = AlertBook([AccountTierDownRule(name="big", min_usd=100_000)])
    ev = book.apply(Snapshot(now=1.0, tier_moves=[move(0, 2)], account_tiers={ACC: 2}))
    assert [(e.status, e.alert.key) for e in ev] == [("firing", f"big:{ACC.lower()}")]
    assert ev[0].alert.details["to_tier"] == "liquidatable"
    assert "moved healthy -> liquidatable" in ev[0].alert.message
    # Still worse than where it came from (even better than at the move): no new event.
    assert book.apply(Snapshot(now=2.0, account_tiers={ACC: 1})) == []
    # A further move down while active: deduplicated.
    assert book.apply(Snapshot(now=3.0, tier_moves=[move(1, 3)], account_tiers={ACC: 3})) == []
    ev = book.apply(Snapshot(now=4.0, account_tiers={ACC: 0}))
    assert [(e.status, e.resolved_at, e.alert.started_at) for e in ev] == [("resolved", 4.0, 1.0)]
    assert book.active == {}


def test_tier_down_ignores_small_accounts_and_moves_up() -> None:
    rule = AccountTierDownRule(name="big", min_usd=100_000)
    snap = Snapshot(now=1.0, tier_moves=[move(0, 2, coll=99_999.0), move(2, 1)])
    assert step([rule], snap, {}) == ({}, [])


def test_price_status_by_status_and_asset() -> None:
    rules = [
        PriceStatusRule(name="p"),
        PriceStatusRule(name="weth-down", statuses=["unavailable"], assets=["WETH"]),
    ]
    prices = {"WETH": ("disputed", "spread 3%"), "USDC": ("ok", ""), "WBTC": ("unavailable", "")}
    active, ev = step(rules, Snapshot(now=1.0, prices=prices), {})
    assert sorted(active) == ["p:WBTC", "p:WETH"]
    assert {e.alert.key: e.alert.message for e in ev}[
        "p:WETH"
    ] == "price WETH is disputed (spread 3%)"
    prices = {**prices, "WETH": ("unavailable", "no source")}
    active, ev = step(rules, Snapshot(now=2.0, prices=prices), active)
    # p:WETH stays active (deduplicated across disputed -> unavailable); weth-down fires.
    assert [e.alert.key for e in ev] == ["weth-down:WETH"]
    active, ev = step(rules, Snapshot(now=3.0, prices={"WETH": ("ok", "")}), active)
    assert sorted((e.status, e.alert.key) for e in ev) == [
        ("resolved", "p:WBTC"), ("resolved", "p:WETH"), ("resolved", "weth-down:WETH"),
    ]  # fmt: skip


def test_chain_lag_pusher_stale_keeper_balance() -> None:
    rules = [
        ChainLagRule(name="lag", max_blocks=10),
        PusherStaleRule(name="push", max_age_s=300, chains=["beta"]),
        KeeperBalanceRule(name="keeper"),
        KeeperBalanceRule(name="keeper-hi", min_eth=2.0),
    ]
    chains = {
        "alpha": ChainFacts(100, 89, fatal=False, landed_age_s=900, keeper_balance_eth=1.0),
        "beta": ChainFacts(100, 95, fatal=False, landed_age_s=301, keeper_balance_eth=0.01),
        "gamma": ChainFacts(head=5, indexed=5, fatal=True),
    }
    active, _ = step(rules, Snapshot(now=1.0, chains=chains, keeper_min_eth=0.05), {})
    assert sorted(active) == [
        "keeper-hi:alpha", "keeper-hi:beta", "keeper:beta", "lag:alpha", "lag:gamma", "push:beta",
    ]  # fmt: skip
    assert active["lag:alpha"].details["lag_blocks"] == 11
    assert "stopped (fatal)" in active["lag:gamma"].message


def test_lease_lost_holds_until_a_live_holder() -> None:
    rule = LeaseLostRule(name="lease", severity="critical")
    gone = {"index:alpha": LeaseFacts(held_here=False, live=False, holder="me")}
    active, ev = step([rule], Snapshot(now=1.0, leases=gone, lost_leases=frozenset(gone)), {})
    assert [(e.status, e.alert.key, e.alert.severity) for e in ev] == [
        ("firing", "lease:index:alpha", "critical")
    ]
    active, ev = step([rule], Snapshot(now=2.0, leases=gone), active)
    assert ev == [] and "lease:index:alpha" in active
    other = {"index:alpha": LeaseFacts(held_here=False, live=True, holder="other")}
    active, ev = step([rule], Snapshot(now=3.0, leases=other), active)
    assert [e.status for e in ev] == ["resolved"] and active == {}


def test_recent_is_bounded_newest_first() -> None:
    book = AlertBook([PriceStatusRule(name="p")], recent_limit=3)
    for k in range(4):
        status = "disputed" if k % 2 == 0 else "ok"
        book.apply(Snapshot(now=float(k), prices={"WETH": (status, "")}))
    view = book.view(10)
    assert [(e["status"], e["at"]) for e in view["recent"]] == [
        ("resolved", 3.0), ("firing", 2.0), ("resolved", 1.0),
    ]  # fmt: skip
    assert book.view(1)["recent"][0]["at"] == 3.0


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    text = """
[[chains]]
name = "alpha"
chain_id = 1
rpc_urls = ["http://127.0.0.1:1"]

[[assets]]
symbol = "USDC"
decimals = 6
ltv = 0.8
lt = 0.85
sources = [{ kind = "http", name = "x", url = "http://127.0.0.1:1", path = "p" }]

[[alerts.rules]]
name = "lag"
kind = "chain_lag"
max_blocks = -1

[[alerts.rules]]
name = "p"
kind = "price_status"
assets = ["DOGE"]

[[alerts.rules]]
name = "x"
kind = "nonsense"

[[alerts.webhooks]]
name = "ops"
rules = ["missing"]
"""
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "alerts.rules[0].max_blocks" in msg
    assert "alerts.rules[2]" in msg and "nonsense" in msg
    assert "alerts.webhooks[0]" in msg and "url" in msg
    fixed = (
        text.replace("max_blocks = -1", "max_blocks = 3")
        .replace('[[alerts.rules]]\nname = "x"\nkind = "nonsense"\n', "")
        .replace('rules = ["missing"]', 'rules = ["missing"]\nurl = "http://127.0.0.1:9/hook"')
    )
    path.write_text(fixed)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "alerts.rules[1].assets[0]: unknown asset 'DOGE'" in msg
    assert "alerts.webhooks[0].rules[0]: unknown rule 'missing'" in msg


def test_a_follower_evaluates_only_its_own_lease_rules() -> None:
    book = AlertBook([PriceStatusRule(name="p"), LeaseLostRule(name="lease")])
    bad = {"WETH": ("disputed", "")}
    (fired,) = book.apply(Snapshot(now=1.0, prices=bad))
    # No longer the leader: the price alert is neither re-sent nor resolved...
    gone = {"push:alpha": LeaseFacts(held_here=False, live=False, holder=None)}
    snap = Snapshot(now=2.0, prices={}, leases=gone, lost_leases=frozenset(gone))
    ev = book.apply(snap, local_only=True)
    assert [e.alert.key for e in ev] == ["lease:push:alpha"]
    assert fired.alert.key in book.active
    # ...until this instance evaluates it again.
    ev = book.apply(Snapshot(now=3.0, prices={}, leases=gone))
    assert [(e.status, e.alert.key) for e in ev] == [("resolved", "p:WETH")]
