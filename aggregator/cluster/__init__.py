"""Several daemon instances on one PostgreSQL store: leases per chain, fencing, followers.

See docs/deployment.md. Nothing here runs on SQLite (one instance, aggregator/lock.py).
"""
