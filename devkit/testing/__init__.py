"""Test helpers over chains/: the RPC fault proxy (`FaultProxy`) and the anvil vault
harness (`VaultHarness`)."""
