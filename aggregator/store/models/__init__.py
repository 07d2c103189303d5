"""Every table module is imported here so that SQLModel.metadata (and Alembic) sees it."""

from aggregator.store.models import meta

__all__ = ["meta"]
