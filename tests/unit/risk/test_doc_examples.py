"""docs/risk.md's worked examples are replayed here: every number the doc states
is checked against the engine, so the doc cannot drift from the code."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from aggregator.config import AssetConfig, CorrelationGroup, CreditConfig
from aggregator.risk import PositionRow, PriceInput, RiskEngine

DOC = Path(__file__).resolve().parents[3] / "docs" / "risk.md"
BLOCK = re.compile(r"```json risk-example\n(.*?)\n```", re.DOTALL)


def examples() -> list[dict[str, Any]]:
    return [json.loads(b) for b in BLOCK.findall(DOC.read_text())]


def run_example(ex: dict[str, Any]) -> dict[str, Any]:
    eng = RiskEngine(
        ex["chains"],
        [AssetConfig(**a) for a in ex["assets"]],
        [CorrelationGroup(**g) for g in ex["groups"]],
        credit=CreditConfig(**ex["credit"]),
    )
    eng.set_prices({s: PriceInput(v) for s, v in ex["prices"].items()})
    eng.set_volatility(ex["sigma"], ex["relative"])
    eng.load_positions(
        PositionRow(ex["account"], c, t, side, int(h), int(q))
        for c, t, side, h, q in ex["positions"]
    )
    for chain, ts, usd in ex["consumption"]:
        eng.record_consumption(ex["account"], chain, usd, ts)
    eng.recompute()
    eng.allocate_credit(now=ex["now"])
    out = eng.explain(ex["account"], now=ex["now"])
    # explain() and the stored book agree on every headline number.
    h = eng.health(ex["account"])
    assert (h.hf if h.debt_usd else "inf") == out["hf"]
    assert h.tier == out["tier"]
    assert eng.credit_of(ex["account"]) == {
        c: v["credit_usd6"] for c, v in out["credit"]["chains"].items()
    }
    return out


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = d
    return out


def test_doc_has_the_required_examples() -> None:
    names = {e["name"] for e in examples()}
    assert {
        "one-chain",
        "two-chains-collateral-debt-on-third",
        "lst-in-eth-group",
        "volatility-spike",
        "partial-liquidation",
    } <= names


@pytest.mark.parametrize("ex", examples(), ids=lambda e: e["name"])
def test_doc_example(ex: dict[str, Any]) -> None:
    got = flatten(run_example(ex))
    for key, want in ex["expect"].items():
        assert key in got, f"{ex['name']}: explain() has no {key}"
        value = got[key]
        shown = f"{value:.6f}" if isinstance(value, float) else value
        assert shown == want, f"{ex['name']}: {key} is {shown}, the doc says {want}"
