"""HealthRegistry pusher: carries the ledger's decisions back on chain (see docs/pusher.md).

- listener.RegistryListener reads what is on chain now (registry slots via Multicall3);
- sender.ChainSender owns one keeper key on one chain: nonces, EIP-1559 fees, the
  persisted transaction record, replacement of stuck transactions, receipts,
  reorgs and restart reconciliation;
- keys.load_keeper_key reads the key from the environment or an encrypted keystore.

The decision *what* to push lives in aggregator/push (it needs the risk engine);
nothing here imports aggregator/.
"""
