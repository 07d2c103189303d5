"""Regenerate the initial Alembic revision from the current SQLModel metadata.

Until the first release there is a single revision (0001); after it, add new
revisions with `alembic revision --autogenerate` instead of running this.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic import command
from sqlalchemy import create_engine

from aggregator.store.migrate import MIGRATIONS, alembic_config


def main() -> int:
    for old in (MIGRATIONS / "versions").glob("*.py"):
        old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{Path(tmp) / 'empty.db'}")
        with engine.begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.revision(cfg, message="initial schema", autogenerate=True, rev_id="0001")
        engine.dispose()
    print("regenerated", *sorted(p.name for p in (MIGRATIONS / "versions").glob("*.py")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
