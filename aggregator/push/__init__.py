"""Drives the HealthRegistry pusher: what changed enough to push, per chain (docs/pusher.md)."""
