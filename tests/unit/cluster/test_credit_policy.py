"""Credit split on a clustered store (aggregator/cluster/credit_policy.py): each chain's
entry is pushed by the instance holding its push lease, from that instance's split, so
any mix of the instances' per-chain credits must stay within the account's BP."""

from __future__ import annotations

import math
from itertools import product

from aggregator.cluster.credit_policy import credit_policy_for
from aggregator.config import AppConfig, AssetConfig, ChainConfig, CreditConfig
from aggregator.risk import PositionRow, PriceInput, RiskEngine

CHAINS = ["alpha", "beta", "gamma"]
ACCOUNT = "0x" + "ab" * 20


def app(policy: str) -> AppConfig:
    return AppConfig(
        chains=[
            ChainConfig(name=c, chain_id=i + 1, rpc_urls=[f"http://127.0.0.1:{i + 1}"])
            for i, c in enumerate(CHAINS)
        ],
        assets=[AssetConfig(symbol="USDC", decimals=6, ltv=0.8, lt=0.85)],
        credit=CreditConfig(policy=policy, demand_share=0.5, demand_window_s=3600),  # type: ignore[arg-type]
    )


def instance(cfg: AppConfig, consumed_on: str | None) -> RiskEngine:
    """One instance's engine; `consumed_on`: the chain its own memory saw a borrow on."""
    eng = RiskEngine.from_config(cfg)
    eng.set_prices({"USDC": PriceInput(1.0)})
    eng.set_volatility({"USDC": 0.0})
    eng.apply_position(
        PositionRow(ACCOUNT, "alpha", "USDC", "collateral", 10_000 * 10**6, 10_000 * 10**6)
    )
    eng.recompute()
    if consumed_on is not None:
        eng.record_consumption(ACCOUNT, consumed_on, 500.0, ts=90.0)
    eng.allocate_credit(now=100.0)
    return eng


def worst_mix(cfg: AppConfig) -> tuple[int, int]:
    """The largest sum over chains when each chain's entry may come from either of two
    instances whose consumption memories differ (one restarted, one saw a borrow on
    beta, ...); and the BP in USD6."""
    views = [instance(cfg, None), instance(cfg, "beta"), instance(cfg, "gamma")]
    credits = [v.credit_of(ACCOUNT) for v in views]
    worst = max(
        sum(credits[k][c] for k, c in zip(pick, CHAINS, strict=True))
        for pick in product(range(len(views)), repeat=len(CHAINS))
    )
    return worst, math.floor(views[0].health(ACCOUNT).bp * 10**6)


def test_the_demand_policy_across_instances_can_exceed_the_bp() -> None:
    # The failure the two-instance soak found: why a clustered store may not use it.
    worst, bp6 = worst_mix(app("demand"))
    assert worst > bp6


def test_on_a_clustered_store_every_mix_of_instances_stays_within_the_bp() -> None:
    cfg = credit_policy_for(app("demand"), clustered=True)
    assert cfg.credit.policy == "static"
    worst, bp6 = worst_mix(cfg)
    assert 0 < worst <= bp6


def test_one_instance_keeps_the_configured_policy() -> None:
    cfg = app("demand")
    assert credit_policy_for(cfg, clustered=False) is cfg
    static = app("static")
    assert credit_policy_for(static, clustered=True) is static
