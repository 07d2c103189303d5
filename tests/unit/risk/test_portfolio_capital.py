"""Capital-efficiency report and stress replay (aggregator/risk/capital.py) on the
shipped reference book, hand-checked figures, and a weakened grid that the stress
replay must catch."""

from __future__ import annotations

import json
import tomllib

import pytest

from aggregator import cli
from aggregator.risk import capital


@pytest.fixture(scope="module")
def report() -> capital.CapitalReport:
    return capital.capital_report()


def row(rep: capital.CapitalReport, name: str) -> capital.ReportRow:
    return next(r for r in rep.rows if r.name == name)


def test_reference_book_has_the_five_portfolios(report: capital.CapitalReport) -> None:
    assert [r.name for r in report.rows] == [
        "hedged-perp-pair", "lst-vs-short-perp", "covered-call", "unhedged-long",
        "leveraged-lst-loop",
    ]  # fmt: skip


def test_hedged_perp_pair_by_hand(report: capital.CapitalReport) -> None:
    r = row(report, "hedged-perp-pair")
    # Each chain alone: 10% of 30 x 3000 = 9,000; standard sums the legs gross.
    assert r.per_chain == {
        "alpha": {"requirement_usd": pytest.approx(9000.0), "equity_usd": 0.0},
        "beta": {"requirement_usd": pytest.approx(9000.0), "equity_usd": 0.0},
    }
    assert r.isolated_usd == pytest.approx(18_000.0)
    assert r.standard_usd == pytest.approx(18_000.0)
    # Portfolio: the same market nets across chains: no loss, no contingency.
    assert r.portfolio_usd == 0.0 and r.worst_scenario is None


def test_unhedged_long_by_hand(report: capital.CapitalReport) -> None:
    r = row(report, "unhedged-long")
    # Worst loss: the -40% extreme on 20 x 3000; contingency 0.5% of the notional.
    assert r.portfolio_mm_usd == pytest.approx(0.40 * 60_000 + 0.005 * 60_000)
    assert r.portfolio_usd == pytest.approx(1.25 * r.portfolio_mm_usd)
    assert r.standard_usd == pytest.approx(6_000.0)


def test_leveraged_loop_isolated_funds_the_debt_chain(report: capital.CapitalReport) -> None:
    r = row(report, "leveraged-lst-loop")
    assert r.per_chain["beta"]["equity_usd"] == pytest.approx(-35.4 * 3000)
    # Alone, alpha has no debt (no e-mode): wstETH at its own ltv 0.75.
    assert r.per_chain["alpha"]["requirement_usd"] == pytest.approx(40 * 3540 * 0.25)
    assert r.isolated_usd == pytest.approx(40 * 3540 * 0.25 + 35.4 * 3000)
    assert r.post_isolated_usd == pytest.approx(35.4 * 3000)
    assert r.post_portfolio_usd == 0.0 and r.post_standard_usd == 0.0
    # Crash with de-peg: wstETH x 0.6 x 0.93, WETH debt x 0.6.
    loss = 40 * 3540 * (1 - 0.6 * 0.93) - 35.4 * 3000 * 0.4
    assert r.portfolio_mm_usd == pytest.approx(loss)


def test_totals_and_reduction(report: capital.CapitalReport) -> None:
    t = report.totals()
    red = report.reductions()
    assert red["portfolio_vs_isolated"] == pytest.approx(1 - t["portfolio_usd"] / t["isolated_usd"])
    assert t["portfolio_usd"] < t["isolated_usd"]
    # The hedged books need less under portfolio margin than under either rule model.
    for name in ("hedged-perp-pair", "lst-vs-short-perp"):
        r = row(report, name)
        assert r.portfolio_usd < r.standard_usd <= r.isolated_usd
    text = capital.render_report(report)
    assert "TOTAL" in text and "portfolio vs isolated" in text


def test_stress_replay_passes_on_the_reference_book() -> None:
    rep = capital.stress_replay()
    assert rep.violations == []
    assert sum(r.tier == "healthy" for r in rep.rows) >= 10
    for r in rep.rows:
        if r.funded.startswith("PM HF"):
            assert r.hf == pytest.approx(r.funded_hf, rel=1e-9) or r.mm == 0.0
    # The rule-based standard model funded to BP = 0 does not survive it.
    std = [r for r in rep.rows if r.funded == "std BP=0" and r.name == "unhedged-long"]
    assert std[0].equity_after < 0 and std[0].tier == "liquidatable"


def _weak_reference(tmp_path) -> str:  # type: ignore[no-untyped-def]
    text = capital.REFERENCE_PATH.read_text()
    data = tomllib.loads(text)
    assert data["portfolio"]["extreme_moves"] == [-0.40, 0.40]
    text = text.replace("extreme_moves = [-0.40, 0.40]", "extreme_moves = [-0.25, 0.25]")
    text = text.replace("crash_moves = [-0.40]", "crash_moves = [-0.25]")
    path = tmp_path / "weak.toml"
    path.write_text(text)
    return str(path)


def test_stress_replay_catches_a_grid_that_is_too_narrow(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rep = capital.stress_replay(capital.load_reference(_weak_reference(tmp_path)))
    bad = {r.name for r in rep.violations}
    assert "unhedged-long" in bad
    assert all(r.tier == "healthy" and r.equity_after < 0 for r in rep.violations)


def test_cli_report_and_stress(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert cli.main(["margin", "report", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["reductions"]["portfolio_vs_isolated"] > 0
    assert cli.main(["margin", "stress"]) == 0
    assert "PASSED" in capsys.readouterr().out
    assert cli.main(["margin", "stress", "--file", _weak_reference(tmp_path)]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_reference_file_is_strict(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "typo.toml"
    path.write_text(capital.REFERENCE_PATH.read_text().replace("[stress]", "[stress]\nspto = 1"))
    with pytest.raises(Exception, match="spto"):
        capital.load_reference(path)
