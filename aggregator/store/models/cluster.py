"""Leases of the multi-instance deployment (PostgreSQL; aggregator/cluster, docs/deployment.md).

One row per lease ("index:<chain>", "push:<chain>"). `token` grows by one on every
acquisition (the fencing token); every write the lease protects updates this row with
`WHERE token = <the writer's token>`, so a holder that was paused past its expiry cannot
write over its successor. Times are the database's clock, never an instance's.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, DateTime
from sqlmodel import Field, SQLModel


class ClusterLease(SQLModel, table=True):
    __tablename__ = "cluster_lease"

    name: str = Field(primary_key=True, max_length=64)
    holder: str = Field(max_length=128)
    token: int = Field(sa_column=Column(BigInteger, nullable=False))
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    acquired_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    renewed_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    previous_holder: str | None = Field(default=None, max_length=128)
    # Protected writes of the current tenure: when the first landed (takeover time) and
    # how many; followers watch `writes` to know a chain's data moved.
    first_write_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    last_write_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    writes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
