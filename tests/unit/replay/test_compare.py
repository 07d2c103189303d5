"""The comparison reads a `+reputation` run next to its model: both rows, in the
models' order, the reputation one right after its model; unknown labels are skipped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from devkit.replay import compare


def fake(mode: str, bad: float) -> dict[str, Any]:
    margin = [0.10 + 0.001 * i for i in range(48)]
    return {
        "episode": "2022-06", "mode": mode, "accounts": 10,
        "series": {"margin": margin, "prices": {"WETH": [1.0] * 48},
                   "hf_p5_p25_p50": [[1.0, 1.1, 1.2]] * 48},
        "time": {"hours_per_step": 3, "measured_step_s": 1.05},
        "tiers_reached": {"warning": 1, "liquidatable": 1, "insolvent": 0},
        "liquidations": {"count": 2, "usd": 1000.0}, "liquidated_accounts": 1,
        "bad_debt_usd": bad, "healthy_to_negative_equity": 0,
        "false_liquidations": {"count": 0, "accounts": 0},
        "chains": {"alpha": {"pushes": 3, "gas": 2e6}},
    }  # fmt: skip


def test_reputation_runs_sit_beside_their_model(tmp_path: Path) -> None:
    for mode, bad in (("predictive", 5.0), ("predictive+reputation", 7.0), ("standard", 9.0),
                      ("bogus", 1.0)):  # fmt: skip
        name = f"2022-06-{mode}".replace("+", "-")
        (tmp_path / f"{name}.json").write_text(json.dumps(fake(mode, bad)))
    reports = compare.load(tmp_path)
    assert set(reports["2022-06"]) == {"standard", "predictive", "predictive+reputation"}
    rows = [r.split("|")[2].strip() for r in compare.summary(reports).splitlines()[2:]]
    assert rows == ["standard", "predictive", "predictive+reputation"]
    table = compare.table("2022-06", reports["2022-06"])
    assert "| predictive+reputation | 10 |" in table and "| standard | 10 |" in table
    assert "- predictive+reputation:" in table


def test_venue_only_healthy_to_negative_accounts_are_shown_apart() -> None:
    old, new = fake("standard", 0.0), fake("predictive", 0.0)
    old["healthy_to_negative_equity"] = 4  # a report from before the split: no field
    new.update(healthy_to_negative_equity=5, healthy_to_negative_venue_only=3)
    assert compare.h2n(old) == "4" and compare.h2n(new) == "5 (3 venue-only)"
    for r in (old, new):
        r["procyclicality"] = {"peak_over_trough": 1.05}
    summary = compare.summary({"2022-06": {"standard": old, "predictive": new}})
    assert "| 0 | 5 (3 venue-only) |" in summary and "| 0 | 4 |" in summary


def test_derivative_table_reads_the_netting_and_skips_older_reports(tmp_path: Path) -> None:
    new = fake("portfolio", 0.0) | {
        "netting_at_start": {
            "hedged_perp": {"portfolio_mm_over_collateral_median": 0.017,
                            "standard_requirement_over_collateral_median": 0.175},
        },
        "derivatives": {"bad_debt_usd": 1234.0, "bad_debt_net_usd": 0.0},
    }  # fmt: skip
    new["liquidations"] = {**new["liquidations"], "by_shape": {"covered_call": 3}}
    (tmp_path / "2022-06-portfolio.json").write_text(json.dumps(new))
    (tmp_path / "2022-06-standard.json").write_text(json.dumps(fake("standard", 1.0)))
    rows = compare.derivatives(compare.load(tmp_path)).splitlines()[2:]
    assert rows == ["| 2022-06 | portfolio | 1.7% / 17.5% | - | 0 / 3 | 1,234 (0) |"]


def test_an_older_report_gets_its_cross_chain_bad_debt_from_the_regenerated_book() -> None:
    from devkit.replay import population

    first = {"USDC": 1.0, "WBTC": 30_000.0, "WETH": 2_000.0, "wstETH": 2_300.0, "rETH": 2_150.0}
    last = dict(first, WETH=700.0, WBTC=9_000.0, wstETH=800.0, rETH=750.0)
    book = population.generate(500, 7, first)
    # Reference: borrowers whose debt sits on another chain than their collateral (the
    # generator's one shape of it), their spot deficit at the last prices, less a
    # positive perp gain (a written call's value is never positive: it offsets nothing).
    cross = hedge = 0.0
    for a in book:
        chains = {p.side: p.chain for p in a.positions}
        if "debt" not in chains or chains["debt"] == chains["collateral"]:
            continue
        c = sum(p.amount * last[p.symbol] for p in a.positions if p.side == "collateral")
        d = sum(p.amount * last[p.symbol] for p in a.positions if p.side == "debt")
        gain = sum(x.size * (last[x.asset] - x.entry_price) for x in a.perps)
        if d > c:
            off = min(d - c, max(0.0, gain))
            hedge, cross = hedge + off, cross + (d - c - off)
    assert cross > 0 and hedge > 0
    rep = fake("standard", cross + hedge + 500.0) | {
        "accounts": 500, "seed": 7, "warmup": {"topped_up": 0},
        "implied_vol": {"WETH": 0.7, "WBTC": 0.6},
        "series": {"prices": {s: [first[s], last[s]] for s in first}, "margin": [0.1, 0.1],
                   "hf_p5_p25_p50": [[1.0, 1.0, 1.0]] * 2},
    }  # fmt: skip
    got = compare.causes_from_report(rep)
    assert got is not None
    assert abs(got["usd"]["cross_chain"] - cross) < 0.01
    assert abs(got["usd"]["hedge_offset"] - hedge) < 0.01
    assert abs(got["usd"]["not_split"] - 500.0) < 0.02
    assert compare.causes_from_report(rep | {"warmup": {"topped_up": 3}}) is None


def test_queue_table_shows_collapse_and_saturated_steps(tmp_path: Path) -> None:
    """Collapse steps come from every report's series; the queue cell only from a report
    that recorded it ("-" for an older one)."""
    old = fake("standard", 0.0)
    hf = [[1.0, 1.1, 1.2]] * 20 + [[0.0, 0.0, 1.0]] * 3 + [[1.0] * 3] * 25
    old["series"]["hf_p5_p25_p50"] = hf
    new = fake("predictive", 0.0) | {
        "liquidity": {"assets": {"WETH": {"max_dust_impact": 0.9991, "saturated_steps": [5, 6],
                                          "max_queue_usd": 1.0, "max_beyond_band_units": 2.0}},
                      "collapse_steps": []},
    }  # fmt: skip
    for rep in (old, new):
        (tmp_path / f"2022-06-{rep['mode']}.json").write_text(json.dumps(rep))
    rows = compare.queue(compare.load(tmp_path)).splitlines()[2:]
    assert rows == [
        "| 2022-06 | standard | 20-22 | - |",
        "| 2022-06 | predictive | none | WETH 0.999, 5-6 |",
    ]


def test_cures_are_shown_and_older_reports_ran_without_responders() -> None:
    old, new = fake("standard", 0.0), fake("predictive", 0.0)
    new["cures"] = {"responders": 120, "count": 31, "accounts": 25, "usd": 1.0, "failures": {}}
    assert compare.cured(old) == "none" and compare.cured(new) == "31 (25) of 120"
    assert compare.cured(fake("var", 0.0) | {"cures": {"responders": 0}}) == "none"
    for r in (old, new):
        r["procyclicality"] = {"peak_over_trough": 1.05}
    rows = compare.summary({"2022-06": {"standard": old, "predictive": new}}).splitlines()
    assert rows[0].endswith("| cures (accounts) of responders |")
    assert rows[2].endswith("| none |") and rows[3].endswith("| 31 (25) of 120 |")
