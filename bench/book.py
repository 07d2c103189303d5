"""The benchmarks' ledger: bench/risk_engine.py's synthetic book of N accounts (3 chains,
8 assets, about 5 positions each, generated a chunk at a time so 1M accounts load
without holding the whole book twice) in a risk engine, priced and rated.

One set-up for every benchmark that starts from the loaded book (what-if, plans, memory,
VaR RSS, history, reputation, API load, push economy, pool impact), so their figures
are of the same book.
"""

from __future__ import annotations

from aggregator.risk import RiskEngine
from bench.risk_engine import build_engine, set_market, synth_rows


def load_book(eng: RiskEngine, n_accounts: int, seed: int) -> int:
    """The synthetic book of `n_accounts` (deterministic in `seed`) into `eng`; the
    number of positions loaded."""
    return eng.load_positions(synth_rows(n_accounts, seed))


def loaded_engine(
    n_accounts: int, seed: int, *, bump: float = 1.0, recompute: bool = True
) -> tuple[RiskEngine, int]:
    """A fresh engine with the synthetic book loaded and the benchmark market set
    (prices x `bump`, USDC at 1), then one full recompute unless `recompute` is False
    (a benchmark that sets more inputs first). Returns (engine, positions)."""
    eng = build_engine()
    n_rows = load_book(eng, n_accounts, seed)
    set_market(eng, bump)
    if recompute:
        eng.recompute()
    return eng, n_rows


__all__ = ["load_book", "loaded_engine"]
