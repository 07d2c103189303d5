"""Development and test scaffolding, never shipped in the wheel: the local multi-chain
devnet (anvil processes, contract deployment, demo seeding, the exchange price server,
the market simulator) and, in `devkit.testing`, the RPC fault proxy and the vault harness.

It imports chains/ (and nothing of aggregator/); aggregator/ reaches it only from the
`demo` and `devnet` commands, which need a source checkout."""
