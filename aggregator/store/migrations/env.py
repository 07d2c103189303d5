from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import aggregator.store.models  # noqa: F401  (registers every table on the metadata)

target_metadata = SQLModel.metadata


def run_migrations() -> None:
    conn = context.config.attributes.get("connection")
    if conn is None:
        raise RuntimeError("run migrations through aggregator.store.migrate (needs a connection)")
    context.configure(
        connection=conn,
        target_metadata=target_metadata,
        render_as_batch=conn.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
