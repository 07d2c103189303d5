"""Every table module is imported here so that SQLModel.metadata (and Alembic) sees it."""

from aggregator.store.models import chain, derivatives, meta, prices, push

__all__ = ["chain", "derivatives", "meta", "prices", "push"]
