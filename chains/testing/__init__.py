"""Test helpers that ship with chains/ (the RPC fault proxy)."""
