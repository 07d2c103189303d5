"""Local multi-chain devnet: anvil processes, contract deployment, demo seeding."""
