"""Alert state: which keys are active, and the firing / resolved events of a step.

`step` is pure: (rules, snapshot, active alerts) -> (active alerts after, events).
A key that holds and was active stays active with its first message and start time
(deduplication: nothing is sent); a key that holds and was not active fires; an active
key of a rule that no longer holds resolves. `AlertBook` keeps the active set and the
recent events in memory (no I/O).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aggregator.alerts.config import RuleConfig
from aggregator.alerts.rules import RULE_KINDS, ActiveView, Snapshot

# Kinds about the evaluating instance itself (every instance evaluates them); the
# others are about the shared book and chains, evaluated by one instance in a cluster.
LOCAL_KINDS = frozenset({"lease_lost"})


@dataclass(frozen=True)
class Alert:
    key: str
    rule: str
    kind: str
    severity: str
    subject: str
    message: str
    details: Mapping[str, Any]
    started_at: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "rule": self.rule,
            "kind": self.kind,
            "severity": self.severity,
            "subject": self.subject,
            "message": self.message,
            "details": {k: v for k, v in self.details.items() if not k.endswith("_code")},
            "started_at": self.started_at,
        }


@dataclass(frozen=True)
class AlertEvent:
    status: Literal["firing", "resolved"]
    alert: Alert
    at: float
    resolved_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.alert.as_dict(),
            "status": self.status,
            "resolved_at": self.resolved_at,
            "at": self.at,
        }


def step(
    rules: Sequence[RuleConfig], snap: Snapshot, active: Mapping[str, Alert]
) -> tuple[dict[str, Alert], list[AlertEvent]]:
    """The active alerts after `snap`, and the events (fired, then resolved). Alerts
    of rules not in `rules` stay as they are."""
    after: dict[str, Alert] = {}
    fired: list[AlertEvent] = []
    for rule in rules:
        mine = {
            k: ActiveView(a.subject, a.details) for k, a in active.items() if a.rule == rule.name
        }
        for cond in RULE_KINDS[rule.kind](rule, snap, mine):
            if cond.key in after:
                continue
            if cond.key in active:
                after[cond.key] = active[cond.key]
                continue
            alert = Alert(
                cond.key, rule.name, rule.kind, rule.severity, cond.subject, cond.message,
                dict(cond.details), snap.now,
            )  # fmt: skip
            after[cond.key] = alert
            fired.append(AlertEvent("firing", alert, snap.now))
    evaluated = {r.name for r in rules}
    resolved = []
    for k, a in active.items():
        if k in after:
            continue
        if a.rule not in evaluated:
            after[k] = a  # its rule was not evaluated this step: unchanged
            continue
        resolved.append(AlertEvent("resolved", a, snap.now, resolved_at=snap.now))
    return after, fired + resolved


@dataclass
class AlertBook:
    rules: Sequence[RuleConfig]
    recent_limit: int = 500
    active: dict[str, Alert] = field(default_factory=dict)
    recent: deque[AlertEvent] = field(default_factory=deque)

    def apply(self, snap: Snapshot, *, local_only: bool = False) -> list[AlertEvent]:
        """One evaluation; `local_only`: only the rules about this instance itself
        (`LOCAL_KINDS`), the others' alerts left as they are."""
        rules = [r for r in self.rules if r.kind in LOCAL_KINDS] if local_only else self.rules
        self.active, events = step(rules, snap, self.active)
        for e in events:
            self.recent.appendleft(e)
        while len(self.recent) > self.recent_limit:
            self.recent.pop()
        return events

    def accounts_watched(self) -> set[str]:
        """Subjects of active account alerts (their current tier goes into the snapshot)."""
        return {a.subject for a in self.active.values() if a.kind == "account_tier_down"}

    def view(self, limit: int) -> dict[str, Any]:
        return {
            "active": [a.as_dict() for a in sorted(self.active.values(), key=_order)],
            "recent": [e.as_dict() for e in list(self.recent)[:limit]],
        }


def _order(a: Alert) -> tuple[float, str]:
    return (a.started_at, a.key)


__all__ = ["Alert", "AlertBook", "AlertEvent", "step"]
