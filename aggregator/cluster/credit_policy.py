"""The credit split policy a multi-instance deployment can honour.

The demand policy leans each account's split towards the chains where it consumed
credit lately, and that consumption history lives in each instance's memory (fed by
what its ledger saw at the head, lost on a restart). With several instances each
chain's registry entry is pushed by whichever instance holds that chain's push lease,
from its own split: two instances whose histories differ give shares that add up to
more than one, and the credits on chain over all chains exceed the account's borrowing
power (found by the two-instance soak: 74,489 USD of credit against a bound of 73,895).

Invariant: on a clustered store every instance splits with the static weights, a pure
function of the configuration and the shared data, so the per-chain credits pushed by
different instances still sum to at most the BP. One instance (SQLite) keeps the
configured policy.
"""

from __future__ import annotations

import logging

from aggregator.config import AppConfig

log = logging.getLogger(__name__)


def credit_policy_for(cfg: AppConfig, *, clustered: bool) -> AppConfig:
    """`cfg`, with the static credit split when several instances may push."""
    if not clustered or cfg.credit.policy == "static":
        return cfg
    log.warning(
        "credit.policy = %r is per-instance memory; on a multi-instance (PostgreSQL) "
        "store every instance splits credit with the static weights instead, so the "
        "chains' credits pushed by different instances never sum above the BP "
        "(docs/deployment.md, Limits)",
        cfg.credit.policy,
    )
    return cfg.model_copy(update={"credit": cfg.credit.model_copy(update={"policy": "static"})})


__all__ = ["credit_policy_for"]
