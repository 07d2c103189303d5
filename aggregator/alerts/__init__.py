"""Alerts: rules over the daemon's state, delivered to webhooks (docs/operations.md
"Alerts").

Invariants:
- Evaluation is pure (`rules.py`: snapshot + active alerts -> conditions that hold);
  state and deduplication are `state.py` (no I/O); reading the daemon is
  `snapshot.py`; delivery (HTTP, retries, rate limit) is `delivery.py`.
- An alert key is sent once when it fires and once when it resolves, never again
  while it stays active.
- A webhook that keeps failing is visible: metric, `/v1/alerts` and `/readyz`.
"""
