"""Plans under the pushed model: python -m bench.model_plans [--accounts N] [--sample K].

The cost of risk/model_plans.py under the portfolio model on the synthetic book
(bench/risk_engine.py), prices bumped down until about 1% of the accounts are below
HF 1 under that model. Prints, against a baseline measured in the same run (the
portfolio model's evaluation of the whole book: what the daemon runs on every tick in
portfolio mode):
- one account's plan as GET /v1/accounts/{a} computes it (lazily, on the event loop):
  median and worst over K sampled liquidatable accounts, in ms;
- every liquidatable account's plan at once (the what-if's bulk case).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from aggregator.config import AppConfig
from aggregator.risk.model_plans import plan_accounts
from aggregator.risk.portfolio_model import PortfolioModel
from bench.book import loaded_engine
from bench.results import Figure, record
from bench.risk_engine import set_market
from bench.whatif import app_config


def portfolio_config() -> AppConfig:
    cfg = app_config()
    pf = cfg.portfolio.model_copy(
        update={"mode": "portfolio", "stable_assets": ["USDC", "USDT", "DAI"]}
    )
    return cfg.model_copy(update={"portfolio": pf})


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.model_plans")
    ap.add_argument("--accounts", type=int, default=1_000_000)
    ap.add_argument("--sample", type=int, default=40)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    cfg = portfolio_config()
    eng, _ = loaded_engine(args.accounts, args.seed)
    model = PortfolioModel(cfg)
    n = eng.book.n_accounts
    idx = np.arange(n, dtype=np.int64)
    now = time.time()
    # Bump prices down until ~1% of the book is below HF 1 under the model.
    bump, share, t_eval = 1.0, 0.0, 0.0
    for bump in (1.0, 0.97, 0.94, 0.91, 0.88, 0.85, 0.8, 0.75, 0.7):
        set_market(eng, bump)
        t0 = time.perf_counter()
        hf = model.evaluate(eng.book, eng.market, idx, now).hf
        t_eval = time.perf_counter() - t0
        share = float(np.mean(hf < 1.0))
        if share >= 0.01:
            break
    liq = np.flatnonzero(hf < 1.0).astype(np.int64)
    print(f"{n:,} accounts, prices x{bump}: {liq.size:,} ({share:.2%}) below HF 1 under the "
          f"portfolio model; its evaluation of the whole book {t_eval * 1e3:.0f} ms")  # fmt: skip
    risk, bonus = eng.risk_cfg, eng.model.bonus
    rng = np.random.default_rng(1)
    sample = rng.choice(liq, size=min(args.sample, liq.size), replace=False)
    one = []
    kinds: dict[int, int] = {}
    for a in sample.tolist():
        t0 = time.perf_counter()
        mp = plan_accounts(model, eng.book, eng.market, np.array([a]), risk=risk, bonus=bonus,
                           now=now)  # fmt: skip
        one.append(time.perf_counter() - t0)
        kinds[int(mp.plans.kind[0])] = kinds.get(int(mp.plans.kind[0]), 0) + 1
    t0 = time.perf_counter()
    bulk = plan_accounts(model, eng.book, eng.market, liq, risk=risk, bonus=bonus, now=now)
    t_bulk = time.perf_counter() - t0
    med, worst = statistics.median(one), max(one)
    partial = int(np.sum(bulk.plans.kind == 1))
    print(f"one account's plan (API, lazily): median {med * 1e3:.0f} ms, worst "
          f"{worst * 1e3:.0f} ms over {len(one)} accounts (kinds {kinds})")  # fmt: skip
    print(f"all {liq.size:,} plans at once (what-if): {t_bulk:.1f} s ({partial:,} partial), "
          f"{t_bulk / t_eval:.1f}x the whole-book evaluation")  # fmt: skip
    detail = {
        "accounts": n, "liquidatable": int(liq.size), "bump": bump, "eval_ms": t_eval * 1e3,
        "one_median_ms": med * 1e3, "one_worst_ms": worst * 1e3, "bulk_s": t_bulk,
        "partial": partial,
    }  # fmt: skip
    base = f"the portfolio model's evaluation of the whole book ({t_eval * 1e3:.0f} ms)"
    record(Figure("model_plan_one", "one liquidatable account's plan under the portfolio "
                  f"model (GET /v1/accounts/{{a}}), {n:,} accounts", med / t_eval, "x", base,
                  "reported", None, detail))  # fmt: skip
    record(Figure("model_plans_bulk", f"plans of all {liq.size:,} liquidatable accounts "
                  f"(what-if), {n:,} accounts", t_bulk / t_eval, "x", base, "reported", None,
                  detail))  # fmt: skip


if __name__ == "__main__":
    main()
