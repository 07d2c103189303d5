"""Peak RSS with the VaR/ES model loaded: python -m bench.var_rss [--accounts 1000000].

The ledger's synthetic book (bench/risk_engine.py: 1M accounts x ~5 positions over 3
chains and 8 assets), loaded and recomputed as the daemon does, then the VaR model
(`[portfolio] mode = "var"`, FHS, 500 scenarios, stressed floor) calibrated on the
shipped history and evaluated for every account, as the daemon's pushed-model pass
does. The figure is the process's peak RSS against the absolute budget of the
performance issue (1.5 GB), so it is not a ratio.

The synthetic assets without a shipped series stand in on the closest one that exists
(USDT and DAI on USDC, rETH on stETH, LINK on ETH): the figure measures memory, not
risk, and those choices do not change array sizes.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from aggregator.config import AppConfig, PortfolioConfig, RiskConfig, VarConfig
from aggregator.marketdata.calibration import VarCalibration, shipped_calibration
from aggregator.risk.var_model import VarModel
from bench.book import loaded_engine
from bench.results import Figure, record
from bench.risk_engine import ASSETS, peak_mb

BUDGET_MB = 1536.0
HISTORY = {
    "USDC": "USDC",
    "USDT": "USDC",
    "DAI": "USDC",
    "WBTC": "BTC",
    "WETH": "ETH",
    "wstETH": "wstETH",
    "rETH": "stETH",
    "LINK": "ETH",
}


class _Fixed:
    """A CalibrationSource that always answers the same calibration."""

    def __init__(self, cal: VarCalibration) -> None:
        self.calibration = cal


def main(n_accounts: int) -> None:
    t0 = time.perf_counter()
    eng, _ = loaded_engine(n_accounts, seed=11)
    eng.allocate_credit()
    after_ledger = peak_mb()
    var = VarConfig(history=HISTORY)
    cfg = AppConfig.model_construct(
        assets=eng.asset_cfgs,
        portfolio=PortfolioConfig(mode="var", stable_assets=["USDC", "USDT", "DAI"]),
        risk=RiskConfig(),
        var=var,
    )
    cal = shipped_calibration({a[0]: None for a in ASSETS}, var)
    model = VarModel(cfg, calibration=_Fixed(cal))
    t1 = time.perf_counter()
    res = model.evaluate(eng.book, eng.market, np.arange(eng.book.n_accounts, dtype=np.int64))
    took = time.perf_counter() - t1
    peak = peak_mb()
    record(
        Figure(
            key="var_peak_rss",
            figure=f"peak RSS, {n_accounts:,} accounts with the VaR/ES model evaluated",
            value=peak,
            unit="MB",
            baseline="-",
            target=f"< {BUDGET_MB:.0f} MB",
            met=peak < BUDGET_MB,
            detail={
                "ledger_only_peak_mb": round(after_ledger, 1),
                "var_evaluate_s": round(took, 2),
                "load_s": round(t1 - t0, 1),
                "accounts": int(res.hf.size),
                "scenarios": int(cal.scenarios.shape[0]),
            },
        )
    )
    print(
        f"  ledger peak {after_ledger:.0f} MB; with the var model {peak:.0f} MB; "
        f"evaluate {took:.1f} s for {res.hf.size:,} accounts",
        flush=True,
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=1_000_000)
    main(ap.parse_args().accounts)
