"""Gas per updated account in a HealthRegistry batch: python -m bench.push_gas [--n 200].

On a fresh anvil, the real pusher (ChainSender: estimateGas, EIP-1559 fees, persisted
record) sends update(bytes) batches of N accounts, twice over the same accounts:

- fresh: every slot empty before (zero -> non-zero SSTORE), then
- update: every slot already set (non-zero -> non-zero SSTORE),

plus a 1-entry batch to separate the fixed part. The baseline, computed for the same
payload: one SSTORE of that kind (cold: 22,100 fresh / 5,000 update, EIP-2929/3529
pricing) plus the entry's 52 calldata bytes at 16 gas per non-zero and 4 per zero
byte. Printed: gas per account (whole batch / N, and marginal over the 1-entry batch)
and its ratio to the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from eth_utils import keccak

from aggregator.store import Store
from aggregator.store.push_repo import SqlPushStore
from bench.results import Figure, record
from chains.pusher.keys import key_from_hex
from chains.pusher.sender import ChainSender
from chains.pusher.types import PushChainSettings
from chains.registry_codec import RegistryEntry, pack_entry
from chains.rpc import RpcClient
from devkit.anvil import DEV_KEYS, AnvilNode
from devkit.testing.harness import VaultHarness

SSTORE_FRESH = 22_100  # 20,000 zero -> non-zero + 2,100 cold access
SSTORE_UPDATE = 5_000  # 2,900 non-zero -> non-zero + 2,100 cold access


def calldata_gas(data: bytes) -> int:
    return sum(16 if b else 4 for b in data)


async def run(n: int) -> dict[str, float]:
    node = AnvilNode(chain_id=71900).start()
    tmp = tempfile.TemporaryDirectory()
    store = Store(f"sqlite+aiosqlite:///{Path(tmp.name) / 'bench.db'}")
    client = RpcClient("bench", 71900, [node.url], timeout_s=30, rate_limit_per_s=10_000)
    try:
        h = VaultHarness.deploy(node.url)
        await store.upgrade()
        settings = PushChainSettings(
            name="bench",
            chain_id=71900,
            registry=h.registry,
            confirmations=1,
            batch_gas_budget=29_000_000,
        )
        sender = ChainSender(settings, client, SqlPushStore(store), key_from_hex(DEV_KEYS[1], "k"))
        # Realistic addresses (mostly non-zero bytes): calldata is priced per byte.
        accounts = ["0x" + keccak(i.to_bytes(8, "big"))[:20].hex() for i in range(1, n + 2)]

        async def batch(accts: list[str], credit: int) -> tuple[int, int]:
            ts = int(h.rpc("eth_getBlockByNumber", ["latest", False])["timestamp"], 16) + 1
            entries = [
                (a, RegistryEntry(credit + i, 1_234_567_890 + i, ts, i % 2))
                for i, a in enumerate(accts)
            ]
            rec = await sender.send_batch(entries)
            while sender.records:
                await sender.step()
                # Automine makes a block only per transaction: without one on top, a
                # mined batch never reaches `confirmations` and the sender keeps it.
                h.rpc("evm_mine", [])
                await asyncio.sleep(0.02)
            assert rec.gas_used is not None and rec.status == "confirmed", rec.summary()
            per_entry = sum(calldata_gas(pack_entry(a, e)) for a, e in entries) // len(entries)
            return rec.gas_used, per_entry

        one_fresh, cd = await batch(accounts[:1], 10**9)
        fresh, cd = await batch(accounts[1:], 10**9)
        await asyncio.sleep(1.1)  # a newer as_of for the second round
        one_update, _ = await batch(accounts[:1], 2 * 10**9)
        update, _ = await batch(accounts[1:], 2 * 10**9)
        return {
            "n": n,
            "calldata_per_entry": cd,
            "fresh_total": fresh,
            "fresh_per_account": fresh / n,
            "fresh_marginal": (fresh - one_fresh) / (n - 1),
            "fresh_baseline": SSTORE_FRESH + cd,
            "update_total": update,
            "update_per_account": update / n,
            "update_marginal": (update - one_update) / (n - 1),
            "update_baseline": SSTORE_UPDATE + cd,
            "fixed_one_entry": one_fresh,
        }
    finally:
        await client.close()
        await store.close()
        node.stop()
        tmp.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="accounts per batch")
    args = ap.parse_args()
    r = asyncio.run(run(args.n))
    print(f"batch of {r['n']} accounts; calldata {r['calldata_per_entry']} gas per 52-byte entry")
    for kind in ("fresh", "update"):
        base = r[f"{kind}_baseline"]
        print(
            f"{kind:6s}: total {r[f'{kind}_total']:>10,} gas; per account "
            f"{r[f'{kind}_per_account']:>8,.0f} (ratio {r[f'{kind}_per_account'] / base:.3f}); "
            f"marginal {r[f'{kind}_marginal']:>8,.0f} (ratio {r[f'{kind}_marginal'] / base:.3f}) "
            f"vs baseline SSTORE+calldata {base:,}"
        )
    print(f"1-entry batch (fresh): {r['fixed_one_entry']:,} gas")
    for kind, what, slot in (
        ("update", "existing entry (non-zero -> non-zero slot)", "5,000"),
        ("fresh", "first entry (zero -> non-zero slot)", "22,100"),
    ):
        base = r[f"{kind}_baseline"]
        ratio = r[f"{kind}_per_account"] / base
        record(
            Figure(
                "push_gas" if kind == "update" else "push_gas_fresh",
                f"gas per updated account, batch of {r['n']}, {what}",
                ratio,
                "x",
                f"one SSTORE ({slot}) plus the entry's calldata = {base:,} gas",
                "<= 1.2x",
                ratio <= 1.2,
                {
                    "per_account": r[f"{kind}_per_account"],
                    "marginal": r[f"{kind}_marginal"],
                    "total": r[f"{kind}_total"],
                },
            )
        )


if __name__ == "__main__":
    main()
