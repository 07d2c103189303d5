"""Every table module is imported here so that SQLModel.metadata (and Alembic) sees it."""

from aggregator.store.models import chain, meta, prices

__all__ = ["chain", "meta", "prices"]
