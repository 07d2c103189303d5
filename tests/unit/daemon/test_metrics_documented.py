"""Every metric the daemon exports is named in the operations docs, the way a scrape
shows it (counters with their _total suffix), so an operator can look any of them up."""

from __future__ import annotations

from pathlib import Path

from aggregator.jobs import Jobs
from aggregator.metrics import Metrics

DOCS = Path(__file__).resolve().parents[3] / "docs"


async def test_every_exported_metric_is_documented() -> None:
    m = Metrics()
    Jobs(m)  # registers the job metrics on the same registry
    exported = {
        fam.name + ("_total" if fam.type == "counter" else "") for fam in m.registry.collect()
    }
    assert len(exported) >= 40
    docs = "".join(p.read_text() for p in sorted(DOCS.glob("*.md")))
    assert sorted(n for n in exported if n not in docs) == []
