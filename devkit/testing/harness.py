"""Drive a CollateralVault on an anvil node from tests and benchmarks.

Deploys a minimal system (HealthRegistry, CollateralVault, a collateral token
COL with 18 decimals, a debt token USD with 6, two MockV3Aggregator feeds),
then sends vault actions from anvil's unlocked dev accounts with raw JSON-RPC.
Bulk generation uses JSON-RPC batches with automine off, so 20k events take
seconds instead of minutes.
"""

from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

import requests
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import to_checksum_address
from web3 import Web3

from chains.contracts import deploy, install_multicall
from chains.registry_codec import RegistryEntry, pack_batch
from chains.rpc import selector
from devkit.anvil import mined_receipt, rpc_call

# anvil's default dev accounts (mnemonic "test test ... junk").
ACCOUNTS = [
    "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
    "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
    "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
    "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65",
    "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc",
    "0x976EA74026E726554dB657fA54763abd0C3a0aa9",
    "0x14dC79964da2C08b23698B3D3cc7Ca32193d9955",
    "0x23618e81E3f5cdF7f54C3d65f7FBc0aBf5B21E8f",
    "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720",
]
DEPLOYER, KEEPER, LIQUIDATOR = ACCOUNTS[0], ACCOUNTS[1], ACCOUNTS[6]
USERS = ACCOUNTS[2:6]
MAX_UINT = 2**256 - 1
HF_INFINITE = 2**64 - 1


class HarnessError(RuntimeError):
    pass


def _call(sig: str, types: list[str] | None = None, args: list[Any] | None = None) -> str:
    data = selector(sig) + (abi_encode(types, args or []) if types else b"")
    return "0x" + data.hex()


@dataclass
class VaultHarness:
    url: str
    registry: str
    vault: str
    col: str
    usd: str
    col_feed: str
    usd_feed: str
    deploy_block: int

    # ------------------------------------------------------------- rpc

    def rpc(self, method: str, params: list[Any] | None = None) -> Any:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
        req = urllib.request.Request(
            self.url, data=body.encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            answer = json.loads(resp.read())
        if "error" in answer:
            raise HarnessError(f"{method} failed on {self.url}: {answer['error']}")
        return answer["result"]

    def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        body = json.dumps(
            [
                {"jsonrpc": "2.0", "id": i, "method": m, "params": p}
                for i, (m, p) in enumerate(calls)
            ]
        )
        req = urllib.request.Request(
            self.url, data=body.encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=120) as resp:
            answers = sorted(json.loads(resp.read()), key=lambda a: a["id"])
        for a in answers:
            if "error" in a:
                raise HarnessError(f"batch call {calls[a['id']][0]} failed: {a['error']}")
        return [a["result"] for a in answers]

    def send(self, sender: str, to: str, data: str, gas: int = 500_000) -> dict[str, Any]:
        """Send from an unlocked account (automine on) and insist on success."""
        tx = self.rpc(
            "eth_sendTransaction", [{"from": sender, "to": to, "data": data, "gas": hex(gas)}]
        )
        receipt = self.rpc("eth_getTransactionReceipt", [tx])
        deadline = time.monotonic() + 10
        while receipt is None and time.monotonic() < deadline:
            time.sleep(0.005)
            receipt = self.rpc("eth_getTransactionReceipt", [tx])
        if receipt is None or int(receipt["status"], 16) != 1:
            raise HarnessError(f"transaction {tx} ({data[:10]} to {to}) failed: {receipt}")
        return dict(receipt)

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def mine(self, n: int = 1) -> None:
        self.rpc("anvil_mine", [hex(n)])

    # ------------------------------------------------------------- deploy

    @classmethod
    def deploy(cls, url: str, *, nonce_offset: int = 0) -> VaultHarness:
        session = requests.Session()
        try:
            w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 30}, session=session))
            if nonce_offset:
                w3.provider.make_request("anvil_setNonce", [DEPLOYER, hex(nonce_offset)])  # type: ignore[arg-type]
            registry = deploy(w3, "HealthRegistry", sender=DEPLOYER)
            vault = deploy(w3, "CollateralVault", registry, 10**9, sender=DEPLOYER)
            col = deploy(w3, "MockERC20", "Collateral", "COL", 18, sender=DEPLOYER)
            usd = deploy(w3, "MockERC20", "Dollar", "USD", 6, sender=DEPLOYER)
            col_feed = deploy(w3, "MockV3Aggregator", 8, 2000 * 10**8, sender=DEPLOYER)
            usd_feed = deploy(w3, "MockV3Aggregator", 8, 10**8, sender=DEPLOYER)
            block = w3.eth.block_number
        finally:
            session.close()
        h = cls(url, registry, vault, col, usd, col_feed, usd_feed, block)
        h.send(
            DEPLOYER,
            registry,
            _call("setKeeper(address,bool)", ["address", "bool"], [KEEPER, True]),
        )
        h.send(
            DEPLOYER,
            registry,
            _call("setConsumer(address,bool)", ["address", "bool"], [vault, True]),
        )
        h.send(
            DEPLOYER,
            vault,
            _call(
                "setCollateral(address,address,uint16,uint16)",
                ["address", "address", "uint16", "uint16"],
                [col, col_feed, 8000, 500],
            ),
        )
        h.send(
            DEPLOYER,
            vault,
            _call("setDebtAsset(address,address)", ["address", "address"], [usd, usd_feed]),
        )
        h.mint(usd, vault, 10**30)
        for who in [*USERS, LIQUIDATOR]:
            h.mint(col, who, 10**30)
            h.mint(usd, who, 10**30)
            h.send(
                who,
                col,
                _call("approve(address,uint256)", ["address", "uint256"], [vault, MAX_UINT]),
            )
            h.send(
                who,
                usd,
                _call("approve(address,uint256)", ["address", "uint256"], [vault, MAX_UINT]),
            )
        install_multicall(url)
        return h

    def at(self, url: str) -> VaultHarness:
        """The same contracts seen through another node (a fork, a proxy)."""
        return VaultHarness(
            url,
            self.registry,
            self.vault,
            self.col,
            self.usd,
            self.col_feed,
            self.usd_feed,
            self.deploy_block,
        )

    def mint(self, token: str, to: str, amount: int) -> None:
        self.send(
            DEPLOYER, token, _call("mint(address,uint256)", ["address", "uint256"], [to, amount])
        )

    # ------------------------------------------------------------- actions

    def grant(self, account: str, credit_usd6: int = 10**15, tier: int = 0) -> None:
        """As keeper, give `account` a fresh registry entry (credit, tier)."""
        ts = int(self.rpc("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)
        raw = self.rpc(
            "eth_call",
            [
                {"to": self.registry, "data": _call("healthOf(address)", ["address"], [account])},
                "latest",
            ],
        )
        stored = abi_decode(["uint64", "uint8", "uint40"], bytes.fromhex(raw[2:]))[2]
        as_of = max(ts, stored + 1)
        if as_of > ts:
            self.rpc("evm_setNextBlockTimestamp", [as_of])
        hf = HF_INFINITE if tier == 0 else 5 * 10**8
        batch = pack_batch([(account, RegistryEntry(credit_usd6, hf, as_of, tier))])
        self.send(KEEPER, self.registry, _call("update(bytes)", ["bytes"], [batch]))

    def deposit_data(self, amount: int, token: str | None = None) -> str:
        return _call(
            "deposit(address,uint256)", ["address", "uint256"], [token or self.col, amount]
        )

    def deposit(self, user: str, amount: int, token: str | None = None) -> dict[str, Any]:
        return self.send(user, self.vault, self.deposit_data(amount, token))

    def withdraw(self, user: str, amount: int) -> dict[str, Any]:
        return self.send(
            user,
            self.vault,
            _call("withdraw(address,uint256)", ["address", "uint256"], [self.col, amount]),
        )

    def borrow(self, user: str, amount: int) -> dict[str, Any]:
        return self.send(
            user,
            self.vault,
            _call("borrow(address,uint256)", ["address", "uint256"], [self.usd, amount]),
        )

    def repay(self, payer: str, account: str, amount: int) -> dict[str, Any]:
        return self.send(
            payer,
            self.vault,
            _call(
                "repay(address,address,uint256)",
                ["address", "address", "uint256"],
                [account, self.usd, amount],
            ),
        )

    def claim_remote(
        self, account: str, repay_amount: int, target_chain_id: int, collateral: str
    ) -> dict[str, Any]:
        """liquidateRemote from the liquidator: repay here, seize `collateral` (the
        target chain's token) on chain `target_chain_id` once settled there."""
        return self.send(
            LIQUIDATOR,
            self.vault,
            _call(
                "liquidateRemote(address,address,uint256,uint256,address)",
                ["address", "address", "uint256", "uint256", "address"],
                [account, self.usd, repay_amount, target_chain_id, collateral],
            ),
        )

    def settle_remote(self, claim_id: bytes, account: str, repaid: int) -> dict[str, Any]:
        """settleRemoteSeize of a claim (made on any chain) seizing this vault's
        collateral for the liquidator, with a voucher signed by the registry's keeper."""
        from eth_account import Account

        from devkit.anvil import DEV_KEYS

        voucher = (claim_id, account, LIQUIDATOR, self.col, self.usd, repaid)
        kind = "(bytes32,address,address,address,address,uint256)"
        digest_raw = self.rpc(
            "eth_call",
            [{"to": self.vault, "data": _call(f"voucherDigest({kind})", [kind], [voucher])},
             "latest"],
        )  # fmt: skip
        digest = bytes.fromhex(digest_raw[2:])
        signature = Account.unsafe_sign_hash(digest, DEV_KEYS[ACCOUNTS.index(KEEPER)]).signature
        return self.send(
            LIQUIDATOR,
            self.vault,
            _call(f"settleRemoteSeize({kind},bytes)", [kind, "bytes"], [voucher, bytes(signature)]),
        )

    def liquidate(
        self, account: str, repay_amount: int, liquidator: str = LIQUIDATOR
    ) -> dict[str, Any]:
        return self.send(
            liquidator,
            self.vault,
            _call(
                "liquidate(address,address,uint256,address)",
                ["address", "address", "uint256", "address"],
                [account, self.usd, repay_amount, self.col],
            ),
        )

    def bulk_deposits(self, count: int, per_block: int = 500, amount: int = 10**15) -> None:
        """`count` deposits spread over blocks of `per_block` txs (automine off meanwhile)."""
        # With automine off anvil does not count queued txs when it picks a nonce,
        # so nonces are assigned here.
        nonces = {u: int(self.rpc("eth_getTransactionCount", [u, "pending"]), 16) for u in USERS}
        self.rpc("evm_setAutomine", [False])
        try:
            sent = 0
            while sent < count:
                n = min(per_block, count - sent)
                calls: list[tuple[str, list[Any]]] = []
                for i in range(n):
                    user = USERS[(sent + i) % len(USERS)]
                    tx = {
                        "from": user,
                        "to": self.vault,
                        "data": self.deposit_data(amount + sent + i),
                        "gas": hex(120_000),
                        "nonce": hex(nonces[user]),
                    }
                    nonces[user] += 1
                    calls.append(("eth_sendTransaction", [tx]))
                self.batch(calls)
                self.rpc("evm_mine", [])
                sent += n
        finally:
            self.rpc("evm_setAutomine", [True])

    # ------------------------------------------------------------- views

    def _uint_view(self, data: str, block: int | str) -> int:
        tag = hex(block) if isinstance(block, int) else block
        raw = self.rpc("eth_call", [{"to": self.vault, "data": data}, tag])
        return int(raw, 16)

    def collateral_of(self, account: str, block: int | str = "latest") -> int:
        return self._uint_view(
            _call("collateralOf(address,address)", ["address", "address"], [account, self.col]),
            block,
        )

    def debt_of(self, account: str, block: int | str = "latest") -> int:
        return self._uint_view(
            _call("debtOf(address,address)", ["address", "address"], [account, self.usd]), block
        )

    def onchain_positions(self, block: int | str = "latest") -> dict[tuple[str, str, str], int]:
        """(account, token, kind) -> amount of every dev user and the liquidator, non-zero only."""
        out: dict[tuple[str, str, str], int] = {}
        for acct in [*USERS, LIQUIDATOR]:
            c = self.collateral_of(acct, block)
            d = self.debt_of(acct, block)
            if c:
                out[(acct, to_checksum_address(self.col), "collateral")] = c
            if d:
                out[(acct, to_checksum_address(self.usd), "debt")] = d
        return out


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise HarnessError(f"condition not met within {timeout}s")


def transact(  # noqa: PLR0917
    url: str,
    sender: str,
    to: str,
    sig: str,
    types: list[str],
    args: list[Any],
    gas: int = 800_000,
    timeout: float = 60.0,
) -> str:
    """`sig(args)` sent from an unlocked dev account, waited for and required to
    succeed (HarnessError naming `sig` otherwise); the transaction hash."""
    data = "0x" + (selector(sig) + abi_encode(types, args)).hex()
    tx = {"from": sender, "to": to, "data": data, "gas": hex(gas)}
    h = str(rpc_call(url, "eth_sendTransaction", [tx]))
    r = mined_receipt(url, h, timeout)
    if r is None:
        raise HarnessError(f"{sig} not mined within {timeout:.0f} s (tx {h})")
    if int(r["status"], 16) != 1:
        raise HarnessError(f"{sig} reverted (tx {h})")
    return h
