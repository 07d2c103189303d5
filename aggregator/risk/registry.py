"""The margin models by name: `MODELS` (like oracles' SOURCE_KINDS).

Each entry builds a model from the app config and the I/O layer's extra inputs
(`ModelSources`). The pushed model is the one named by `[portfolio] mode`; the
standard model is the ledger's own and always computed. Adding a model: one new
module under risk/ implementing `MarginModel` (risk/model.py) plus one line here.
"""

from __future__ import annotations

from collections.abc import Callable

from aggregator.config import AppConfig
from aggregator.risk.model import MarginModel, ModelSources
from aggregator.risk.portfolio_model import PortfolioModel
from aggregator.risk.standard import StandardModel
from aggregator.risk.var_model import VarModel

ModelFactory = Callable[[AppConfig, ModelSources], MarginModel]

STANDARD = "standard"

MODELS: dict[str, ModelFactory] = {
    STANDARD: StandardModel.from_config,
    "portfolio": PortfolioModel.from_config,
    "var": VarModel.from_config,
}


def pushed_model(
    cfg: AppConfig, sources: ModelSources, models: dict[str, ModelFactory] | None = None
) -> MarginModel:
    """The model whose HF, BP and tier the pusher carries, per `[portfolio] mode`."""
    table = MODELS if models is None else models
    name = cfg.portfolio.mode
    if name not in table:
        raise ValueError(f"portfolio.mode: {name!r} not in {sorted(table)}")
    return table[name](cfg, sources)


__all__ = ["MODELS", "STANDARD", "ModelFactory", "pushed_model"]
