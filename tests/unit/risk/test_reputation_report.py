"""The reputation capital-efficiency report (aggregator/risk/reputation_report.py): the
same seed gives the same report; the clean year-long cohort is below neutral and gains
borrowing power, the new cohort is exactly neutral, a liquidated one pays; the cohort
figures add up from the engine's per-account figures (scalar loop); the safety checks
pass; the CLI prints the JSON."""

from __future__ import annotations

import pytest

from aggregator.risk.capital import load_reference
from aggregator.risk.reputation import Params, score
from aggregator.risk.reputation_report import NOW, population, render, reputation_report

N = 300


def test_reproducible_and_the_cohorts_behave() -> None:
    a = reputation_report(accounts=N, seed=5)
    assert a.to_json() == reputation_report(accounts=N, seed=5).to_json()
    assert a.to_json() != reputation_report(accounts=N, seed=6).to_json()
    c = {x.cohort: x for x in a.cohorts}
    assert sum(x.accounts for x in a.cohorts) == N
    clean, new, liq = c["clean_year"], c["new"], c["liquidated"]
    assert clean.multiplier["max"] < 1.0 and clean.multiplier["min"] >= 0.90
    assert clean.bp_change_usd > 0 and clean.haircut_saved_usd > 0
    assert new.multiplier["min"] == new.multiplier["max"] == 1.0
    assert new.bp_change_usd == 0.0
    assert liq.multiplier["max"] > 1.0 and liq.haircut_saved_usd < 0
    assert sum(k for _, _, k in a.histogram) == N
    assert a.passed and a.unsafe_rated == 0 and a.haircut_below_lower == 0
    text = render(a)
    assert "clean_year" in text and "PASSED" in text


def test_clean_cohort_saving_matches_a_scalar_loop() -> None:
    """haircut saved = sum over the cohort of (V - C_borrow) - max(m (V - C_borrow),
    V - C_liq): the borrowing haircut scaled by m, never past the liquidation line
    (docs/reputation.md)."""
    from aggregator.risk.reputation_report import _engine

    ref = load_reference()
    pop = population(ref, N, seed=7)
    eng = _engine(ref, [r for s in pop for r in s.rows])
    p = Params()
    want = 0.0
    for s in pop:
        if s.cohort != "clean_year":
            continue
        m = score(s.account, s.history, p, NOW).multiplier
        h = eng.health(s.account)
        v = h.collateral_usd
        want += (v - h.c_borrow) - max(m * (v - h.c_borrow), v - h.c_liq)
    rep = reputation_report(ref, accounts=N, seed=7)
    got = next(c for c in rep.cohorts if c.cohort == "clean_year").haircut_saved_usd
    assert got == pytest.approx(want, rel=1e-9)


def test_cli_prints_the_report(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from aggregator.cli import main

    assert main(["reputation", "report", "--accounts", "120", "--seed", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["accounts"] == 120 and out["passed"] is True
    assert {c["cohort"] for c in out["cohorts"]} == {"clean_year", "new", "warned", "liquidated"}


def test_portfolio_stress_replay_with_the_best_multiplier_rates_no_one_unsafe() -> None:
    """The reference portfolios funded to personal HF 1.0, warn_hf, im_factor and to the
    reward's borrowing limit (BP = 0 at m = lower), rated with the multiplier, then the
    stress: no account rated healthy ends with negative equity."""
    from aggregator.risk.reputation_report import personal_stress

    for m in (0.90, 1.0, 1.30):
        r = personal_stress(multiplier=m)
        assert r.accounts > 0 and r.healthy > 0
        assert r.passed, r.violations


def test_cli_refuses_an_empty_population(capsys: pytest.CaptureFixture[str]) -> None:
    from aggregator.cli import EXIT_CONFIG, main

    assert main(["reputation", "report", "--accounts", "0"]) == EXIT_CONFIG
    assert "--accounts" in capsys.readouterr().err


def test_cli_takes_the_bounds_of_a_config(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    import json
    from pathlib import Path

    from aggregator.cli import main

    cfg = Path(str(tmp_path)) / "c.toml"
    cfg.write_text(
        '[[chains]]\nname = "alpha"\nchain_id = 1\nrpc_urls = ["http://127.0.0.1:1"]\n'
        'contracts = { vault = "0x0000000000000000000000000000000000000001" }\n'
        '[[assets]]\nsymbol = "USDC"\ndecimals = 6\nltv = 0.85\nlt = 0.88\n'
        'tokens = { alpha = "0x00000000000000000000000000000000000000c1" }\n'
        '[[assets.sources]]\nkind = "chainlink"\nname = "cl"\nchain = "alpha"\n'
        'address = "0x00000000000000000000000000000000000000f1"\n'
        "[reputation]\nlower = 0.95\nupper = 1.2\n"
    )
    assert main(["-c", str(cfg), "reputation", "report", "--accounts", "150", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bounds"] == [0.95, 1.2]
    clean = next(c for c in out["cohorts"] if c["cohort"] == "clean_year")
    assert clean["multiplier"]["min"] >= 0.95
