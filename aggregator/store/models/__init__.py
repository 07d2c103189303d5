"""Every table module is imported here so that SQLModel.metadata (and Alembic) sees it."""

from aggregator.store.models import chain, cluster, derivatives, history, meta, prices, push

__all__ = ["chain", "cluster", "derivatives", "history", "meta", "prices", "push"]
