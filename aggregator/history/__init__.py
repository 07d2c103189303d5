"""Risk history: per-account and system time series in the store (docs/operations.md
"History").

Invariants:
- Recording is off the hot path: a scheduled job reads the ledger's read-only arrays
  once per bucket; the choice of what to write is a pure function (`select.py`).
- Every write goes to every configured level's bucket at once (`last` values,
  `hf_min`, worst tier): no roll-up job, so a coarse bucket is never missing the data
  its fine buckets held.
- An account's series is a step function: a point holds until the next.
"""
