"""Replay of real market crashes through the live devnet and daemon (docs/replay.md).

episodes   the four shipped episodes, built from history/ with the strict loader
population a seeded, reproducible book of accounts and its seeding on the vaults
feeds      drives every chain's Chainlink feeds and LST rates along an episode's path
keeper     liquidates on chain what the daemon's plans allow
report     what a replay measured: tiers, liquidations, bad debt, margin, pushes, gas
"""
