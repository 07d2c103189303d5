"""The daemon with the devnet's Uniswap v3 pools (config.toml includes
data/devnet/pools.toml): `pools:<chain>` tasks run, the largest demo account's
explanation shows its pool-based impact, GET /v1/liquidity answers per asset and chain,
and the three largest accounts' haircuts under pool depth vs the static depth_usd are
printed (the figures of docs/risk.md "Liquidity weighting from pools")."""

from __future__ import annotations

from typing import Any

from daemon_helpers import aget, wait_ready, wait_until

from aggregator.daemon import Daemon


def largest(d: Daemon, n: int) -> list[str]:
    view = d.ledger.view
    values = []
    for i in range(view.n_accounts):
        addr = view.address(i)
        values.append((d.engine.health(addr).collateral_usd, addr))
    return [a for _, a in sorted(values, reverse=True)[:n]]


def haircuts(ex: dict[str, Any]) -> dict[str, tuple[float, float, str]]:
    out = {}
    for sym, a in ex["assets"].items():
        c = a.get("collateral")
        if c:
            hc = c["haircut"]
            out[sym] = (hc["concentration_term"], hc["total"], hc["liquidity"]["source"])
    return out


async def test_pool_based_impact_in_the_daemon(daemon: Daemon) -> None:
    await wait_ready(daemon)
    tasks = {t["name"]: t for t in daemon.supervisor.snapshot()}
    assert {"pools:alpha", "pools:beta", "pools:gamma"} <= set(tasks)
    assert all(tasks[f"pools:{c}"]["state"] == "running" for c in ("alpha", "beta", "gamma"))

    top = largest(daemon, 3)

    async def pools_in_use() -> bool:
        # On a fresh devnet the first read can precede the fork point of alpha: the
        # task retries, and a later price round hands the pools over.
        return "pools" in {h[2] for h in haircuts(daemon.engine.explain(top[0])).values()}

    await wait_until(pools_in_use, 60, "pool-based haircuts")
    ex = daemon.engine.explain(top[0])
    sources = {s: h[2] for s, h in haircuts(ex).items()}
    assert "pools" in sources.values(), sources
    weth = ex["assets"].get("WETH", {}).get("collateral")
    if weth:
        liq = weth["haircut"]["liquidity"]
        assert liq["source"] == "pools" and {p["chain"] for p in liq["pools"]} == {
            "alpha", "beta", "gamma"
        }  # fmt: skip

    status, body = await aget(daemon, "/v1/liquidity")
    assert status == 200
    assert body["slippages"] == [0.01, 0.02, 0.05]
    chains = body["assets"]["WETH"]["chains"]
    assert {"alpha", "beta", "gamma", "all"} <= set(chains)
    assert chains["all"]["source"] == "pools"
    assert chains["all"]["sellable"]["0.05"] > chains["alpha"]["sellable"]["0.05"]

    # The same accounts under the static depth (no pools this round), for the record.
    rows = []
    pooled = {a: daemon.engine.explain(a) for a in top}
    judged = dict(daemon.engine.market.liquidity.pools)
    daemon.engine.set_pools({})
    static = {a: daemon.engine.explain(a) for a in top}
    daemon.engine.set_pools({daemon.engine.symbols[t]: ap for t, ap in judged.items()})
    for a in top:
        p, s = haircuts(pooled[a]), haircuts(static[a])
        for sym in p:
            rows.append(
                f"{a} {sym:7s} value {pooled[a]['assets'][sym]['collateral']['value_usd']:>14,.0f}"
                f"  pools: conc {p[sym][0]:.5f} h {p[sym][1]:.5f} ({p[sym][2]})"
                f"  static: conc {s[sym][0]:.5f} h {s[sym][1]:.5f}"
            )
        rows.append(
            f"{a} HF pools {pooled[a]['hf']}  static {static[a]['hf']}; "
            f"C_liq pools {pooled[a]['c_liq_usd']:,.0f} static {static[a]['c_liq_usd']:,.0f}"
        )
    print("\n".join(rows))
