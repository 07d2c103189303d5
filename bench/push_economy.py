"""Push economy: registry updates and gas per account-hour with the credit buffer,
against the rule before it (any credit decrease pushed at once), on the same book and
the same price paths: python -m bench.push_economy [--accounts N] [--buffer B].

The real risk engine (bench/risk_engine.py's synthetic book) and the real trigger
rules (aggregator/push/planning.py, controller.py) run one pusher cycle every 5 s of
market time; a batch that goes lands at once (what it costs is the point here, not its
latency); its gas is the GasModel's (bench/push_gas.py measures it on anvil). Two paths:

- calm: one hour of a random walk at 2% daily volatility for every non-stable asset;
- volatile: 6 hours of ETH and BTC around the 2022-06-13 crash (Gemini / Bitstamp
  hourly closes, history/), log-interpolated to the 5 s cycles; the other assets
  follow ETH (LSTs) or stay at 1 (stables).

Both rules must keep the safety property: after every cycle the credit on chain is at
or below the account's share of its true BP (counted; must be 0). Printed: entries and
gas per account-hour under each rule, and the ratio buffer / before.
"""

from __future__ import annotations

import argparse
import calendar
import time
from dataclasses import dataclass

import numpy as np

from aggregator.marketdata.history import load
from aggregator.push.controller import GasModel, OnchainArrays, TriggerRules, select_batch
from aggregator.push.planning import plan_accounts
from aggregator.risk import PriceInput, RiskEngine
from aggregator.risk.view import LedgerView
from bench.book import loaded_engine
from bench.results import Figure, record
from bench.risk_engine import ASSETS
from chains.registry_codec import RegistryEntry

CYCLE_S = 5
CHAIN = "ethereum"
GAS_BUDGET = 3_000_000
ETH_LIKE = {"WETH", "wstETH", "rETH"}
STABLE = {"USDC", "USDT", "DAI"}


@dataclass
class Tally:
    entries: int = 0
    batches: int = 0
    gas: int = 0
    unsafe: int = 0


def calm_path(seconds: int, seed: int) -> list[dict[str, float]]:
    """Price multipliers per cycle: a random walk at 2% daily volatility."""
    rng = np.random.default_rng(seed)
    n = seconds // CYCLE_S
    step_sigma = 0.02 * np.sqrt(CYCLE_S / 86_400)
    out: list[dict[str, float]] = []
    level = {a[0]: 1.0 for a in ASSETS}
    for _ in range(n):
        for sym in level:
            if sym not in STABLE:
                level[sym] *= float(np.exp(rng.normal(0.0, step_sigma)))
        out.append(dict(level))
    return out


def crash_path(hours: int) -> list[dict[str, float]]:
    """ETH and BTC from 2022-06-12 18:00 UTC (hourly closes, log-interpolated)."""
    start = calendar.timegm((2022, 6, 12, 18, 0, 0))
    series = {}
    files = {"WETH": "eth_usd_hourly_2022-05_07.csv", "WBTC": "btc_usd_hourly_2022-05_07.csv"}
    for sym, name in files.items():
        s = load(name)
        t = s.start + s.step * np.arange(len(s.columns["close"]))
        series[sym] = (t, s.columns["close"])
    grid = start + CYCLE_S * np.arange(hours * 3600 // CYCLE_S)
    logp = {sym: np.interp(grid, t, np.log(close)) for sym, (t, close) in series.items()}
    out = []
    for k in range(grid.size):
        eth = float(np.exp(logp["WETH"][k] - logp["WETH"][0]))
        btc = float(np.exp(logp["WBTC"][k] - logp["WBTC"][0]))
        out.append(
            {a[0]: eth if a[0] in ETH_LIKE else btc if a[0] == "WBTC" else 1.0 for a in ASSETS}
        )
    return out


def run(eng: RiskEngine, path: list[dict[str, float]], rules: TriggerRules) -> Tally:
    view = LedgerView(eng)
    base = OnchainArrays()
    onchain: dict[str, RegistryEntry | None] = {}
    gas_model = GasModel()
    tally = Tally()
    chain_ts = 1_700_000_000
    base.sync(onchain, None, view.account_index, view.addresses, view.n_accounts)
    for k, moves in enumerate(path):
        counted = k > 0  # the first cycle fills empty slots: the same for both rules
        chain_ts += CYCLE_S
        eng.set_prices({a[0]: PriceInput(a[5] * moves[a[0]]) for a in ASSETS})
        eng.recompute()
        eng.allocate_credit(now=chain_ts)
        n = view.n_accounts
        planned = plan_accounts(
            view, CHAIN, base=base, onchain=onchain, chain_ts=chain_ts, inflight={}, rules=rules
        )
        changed: list[str] = []
        # Like the pusher: batches while urgent or triggered entries remain.
        while planned:
            batch = select_batch(planned, GAS_BUDGET, gas_model)
            if not batch:
                break
            if counted:
                tally.batches += 1
                tally.entries += len(batch)
                tally.gas += gas_model.cost(batch)
            for p in batch:
                onchain[p.account] = p.entry
                changed.append(p.account)
            sent = {p.account for p in batch}
            planned = [p for p in planned if p.account not in sent]
        base.sync(onchain, changed, view.account_index, view.addresses, n)
        share = view.credit_array(CHAIN, n)
        tally.unsafe += int((base.present[:n] & (base.credit[:n] > share)).sum())
    return tally


def measure(accounts: int, path: list[dict[str, float]], rules: TriggerRules) -> Tally:
    eng, _ = loaded_engine(accounts, seed=11, recompute=False)
    return run(eng, path, rules)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--accounts", type=int, default=2_000)
    ap.add_argument("--buffer", type=float, default=0.01)
    ap.add_argument("--ride-along", type=float, default=0.5)
    ap.add_argument("--calm-s", type=int, default=3600)
    ap.add_argument("--crash-hours", type=int, default=6)
    args = ap.parse_args()
    before = TriggerRules(credit_buffer=0.0, ride_along_fraction=0.0)
    buffered = TriggerRules(credit_buffer=args.buffer, ride_along_fraction=args.ride_along)
    paths = {
        "calm": calm_path(args.calm_s, seed=5),
        "volatile": crash_path(args.crash_hours),
    }
    for name, path in paths.items():
        hours = (len(path) - 1) * CYCLE_S / 3600
        t0 = time.perf_counter()
        old = measure(args.accounts, path, before)
        new = measure(args.accounts, path, buffered)
        per = args.accounts * hours
        detail = {
            "accounts": args.accounts,
            "market_hours": hours,
            "buffer": args.buffer,
            "entries_per_account_hour": {"before": old.entries / per, "buffer": new.entries / per},
            "gas_per_account_hour": {"before": old.gas / per, "buffer": new.gas / per},
            "batches": {"before": old.batches, "buffer": new.batches},
            "unsafe_cycles": {"before": old.unsafe, "buffer": new.unsafe},
            "wall_s": round(time.perf_counter() - t0, 1),
        }
        safe = old.unsafe == 0 and new.unsafe == 0
        record(
            Figure(
                key=f"push_economy_{name}",
                figure=(
                    f"registry gas per account-hour, {name} path, credit buffer "
                    f"{args.buffer:.1%} ({new.gas / per:,.0f} gas, {new.entries / per:.2f} "
                    f"updates) vs any decrease pushed at once ({old.gas / per:,.0f} gas, "
                    f"{old.entries / per:.2f} updates)"
                ),
                value=new.gas / max(old.gas, 1),
                unit="x",
                baseline="the rule before the buffer, same book and path",
                target="reported; on-chain credit never above the share",
                met=None if safe else False,
                detail=detail,
            )
        )


if __name__ == "__main__":
    main()
