"""Seeding healthy under the model: only accounts rated below HF 1 repay, each debt
leg by the share that brings HF (1 / debt for fixed collateral) to the target."""

from __future__ import annotations

import pytest

from devkit.replay import population, topup

PRICES = {"USDC": 1.0, "WBTC": 30_000.0, "WETH": 2_000.0, "wstETH": 2_300.0, "rETH": 2_150.0}


def test_only_accounts_below_one_repay_to_the_target() -> None:
    book = [a for a in population.generate(60, 2, PRICES) if a.shape != "depositor"][:6]
    hfs = [0.8, 0.99, 1.0, 1.3, None, 0.5]
    ratings = {a.address: {"hf": h} for a, h in zip(book, hfs, strict=True)}
    after, repays = topup.plan(book, ratings, target=1.12)
    touched = {a.address for a, _, _ in repays}
    assert touched == {book[0].address, book[1].address, book[5].address}
    for before, now, hf in zip(book, after, hfs, strict=True):
        d0 = sum(p.raw for p in before.positions if p.side == "debt")
        d1 = sum(p.raw for p in now.positions if p.side == "debt")
        if before.address not in touched:
            assert now == before
            continue
        assert hf is not None
        # HF after = hf * d0 / d1, at the target (to the raw unit's rounding).
        assert hf * d0 / d1 == pytest.approx(1.12, rel=1e-6)
        assert [p.raw for p in now.positions if p.side == "collateral"] == [
            p.raw for p in before.positions if p.side == "collateral"
        ]


def test_repayment_never_exceeds_the_position() -> None:
    book = [a for a in population.generate(30, 4, PRICES) if a.shape != "depositor"][:3]
    _, repays = topup.plan(book, {a.address: {"hf": 0.0} for a in book}, target=1.12)
    for _, p, raw in repays:
        assert 0 < raw < p.raw
