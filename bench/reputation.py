"""Reputation benchmark: python -m bench.reputation [--accounts N] [--share S].

The cost of personalised figures on a price tick (docs/reputation.md "Where it
applies"): the tick kernel runs unchanged, then the accounts whose multiplier is not 1
are summed again by the per-account kernel and rewritten. Prints, against a baseline
measured in the same run, a full recompute with a share S of the book personalised vs
the same recompute with reputation off; and the scoring of every account's history
(the `reputation` job's CPU work) per account; and `set_reputation`'s two halves with
every multiplier set: the prepare (worker thread) and the install (the event loop's
pause), against their sum (what the loop held when it was one call).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from aggregator.risk.reputation import DAY, History, Liquidation, Params, Reputation, score
from bench.book import loaded_engine
from bench.results import Figure, record
from bench.risk_engine import best_of


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--accounts", type=int, default=200_000)
    ap.add_argument("--share", type=float, default=1.0)
    args = ap.parse_args(argv)
    eng, _ = loaded_engine(args.accounts, seed=7)
    n = eng.book.n_accounts
    t_off = best_of(eng.recompute, 5)
    rng = np.random.default_rng(1)
    p = Params()
    pick = rng.random(n) < args.share
    mults = {eng.book.account_address[i]: float(m) for i, m in
             zip(np.flatnonzero(pick), rng.uniform(p.lower, p.upper, int(pick.sum())),
                 strict=True)}  # fmt: skip
    explain = lambda a: Reputation(a, 0.0, mults.get(a, 1.0), 0.0)  # noqa: E731
    t0 = time.perf_counter()
    prep = eng.prepare_reputation(p, mults, explain)
    t_prep = time.perf_counter() - t0
    t0 = time.perf_counter()
    eng.install_reputation(prep)
    t_install = time.perf_counter() - t0
    t_on = best_of(eng.recompute, 5)
    now = 1000 * DAY
    hist = [History(now - float(d) * DAY, (Liquidation(now - 5 * DAY, "c", 1.0),) if d % 7 == 0
                    else ()) for d in rng.integers(0, 800, 20_000)]  # fmt: skip
    t0 = time.perf_counter()
    for i, h in enumerate(hist):
        score(str(i), h, p, now)
    per_account = (time.perf_counter() - t0) / len(hist)
    print(f"{n:,} accounts, {pick.sum():,} personalised: recompute {t_on * 1e3:.1f} ms vs "
          f"{t_off * 1e3:.1f} ms off ({t_on / t_off:.2f}x); scoring {per_account * 1e6:.1f} "
          "us per account")  # fmt: skip
    print(f"set_reputation: prepare {t_prep * 1e3:.0f} ms (worker thread), install "
          f"{t_install * 1e3:.1f} ms (the event loop's pause)")  # fmt: skip
    record(
        Figure(
            "reputation_recompute",
            f"full recompute, {n:,} accounts, {args.share:.0%} with a multiplier != 1",
            t_on / t_off,
            "x",
            f"the same recompute with reputation off ({t_off * 1e3:.1f} ms)",
            "reported",
            None,
            {"on_ms": t_on * 1e3, "off_ms": t_off * 1e3, "score_us": per_account * 1e6},
        )
    )
    record(
        Figure(
            "reputation_install",
            f"set_reputation's loop pause (install), {n:,} accounts, {pick.sum():,} "
            "multipliers != 1",
            t_install / (t_prep + t_install),
            "x",
            f"the whole set_reputation (prepare in the worker thread + install: "
            f"{(t_prep + t_install) * 1e3:.0f} ms), which the loop held before",
            "reported",
            None,
            {"install_ms": t_install * 1e3, "prepare_ms": t_prep * 1e3},
        )
    )


if __name__ == "__main__":
    main()
