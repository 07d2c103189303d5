"""Cross-chain seize claims: decoding, finality and the voucher's EIP-712 digest (pure).

A liquidator repays debt on the debt chain D with `CollateralVault.liquidateRemote`,
which emits `RemoteSeizeClaimed`; the aggregator signs a `SeizeVoucher` that the
collateral chain C's vault honours once per claim id (docs/contracts.md, "Cross-chain
seize"). This module holds the decisions of that step, no I/O:

- `decode_claims`: the claims of one receipt. Only logs emitted by D's configured vault
  count (anyone can emit a log with the same topic from another contract); a log of the
  vault with the claim's topic that does not decode is a `DecodeError` naming chain,
  transaction and log index, never skipped. A receipt whose status is not 1 has no claim.
- `finality`: a claim is final only when its receipt's block is at least `confirmations`
  deep below the head AND the canonical block at that height has the receipt's block
  hash. A different hash means the block was reorged out: never final, whatever the
  depth (the transaction may be in another block later, or in none).
- `voucher_digest`: the EIP-712 digest exactly as the vault's `voucherDigest` computes it
  (domain "CollateralVault", version "1", the collateral chain's id and vault); the
  typed-data dict (`voucher_typed_data`) is the same message for a signer, and tests
  check the two against each other and against the contract.

Amounts are exact ints; addresses are EIP-55 checksummed; ids and hashes lower-case hex.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

from chains.events import (
    CLAIM_DATA_TYPES,
    CLAIM_TOPIC,
    HEX_ADDRESS,
    HEX_QUANTITY,
    HEX_WORD,
    DecodeError,
)

DOMAIN_NAME = "CollateralVault"
DOMAIN_VERSION = "1"
VOUCHER_TYPE = (
    "SeizeVoucher(bytes32 claimId,address account,address liquidator,"
    "address collateralToken,address debtToken,uint256 repaid)"
)
_DOMAIN_TYPE = "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
_VOUCHER_TYPEHASH = keccak(text=VOUCHER_TYPE)
_DOMAIN_TYPEHASH = keccak(text=_DOMAIN_TYPE)


@dataclass(frozen=True)
class RemoteSeizeClaim:
    """One RemoteSeizeClaimed log: where it stands and what it claims."""

    chain: str
    tx_hash: str
    block_number: int
    block_hash: str
    log_index: int
    claim_id: str
    account: str
    liquidator: str
    debt_token: str
    repaid: int
    target_chain_id: int
    collateral_token: str


@dataclass(frozen=True)
class ReceiptClaims:
    """What a receipt says: its block, whether it succeeded, and the vault's claims."""

    tx_hash: str
    block_number: int
    block_hash: str
    succeeded: bool
    claims: tuple[RemoteSeizeClaim, ...]


def _word(value: Any, what: str) -> str:
    if not isinstance(value, str) or HEX_WORD.fullmatch(value) is None:
        raise ValueError(f"{what} is not a 32-byte hex word: {str(value)[:80]!r}")
    return value.lower()


def _quantity(value: Any, what: str) -> int:
    if not isinstance(value, str) or HEX_QUANTITY.fullmatch(value) is None:
        raise ValueError(f"{what} is not a hex quantity: {str(value)[:80]!r}")
    return int(value, 16)


def _topic_address(topic: str, what: str) -> str:
    body = topic[2:]
    if body[:24].strip("0"):
        raise ValueError(f"{what} topic {topic} is not an address (high bytes set)")
    return to_checksum_address("0x" + body[24:])


def decode_claims(chain: str, receipt: Mapping[str, Any], vault: str) -> ReceiptClaims:
    """The receipt's RemoteSeizeClaimed logs emitted by `vault`, in log order.

    Raises DecodeError naming chain, transaction (and log index) on a malformed receipt
    or a malformed claim log of the vault."""
    where = f"chain {chain!r} tx {str(receipt.get('transactionHash'))[:80]}"
    try:
        tx_hash = _word(receipt.get("transactionHash"), "transactionHash")
        block_number = _quantity(receipt.get("blockNumber"), "blockNumber")
        block_hash = _word(receipt.get("blockHash"), "blockHash")
        status = _quantity(receipt.get("status"), "status")
        logs = receipt.get("logs")
        if not isinstance(logs, list):
            raise ValueError(f"logs is not a list: {type(logs).__name__}")
    except ValueError as exc:
        raise DecodeError(f"{where}: malformed receipt: {exc}") from None
    vault_lower = vault.lower()
    claims: list[RemoteSeizeClaim] = []
    for position, entry in enumerate(logs):
        if not isinstance(entry, Mapping):
            raise DecodeError(f"{where} log #{position}: not an object")
        address = entry.get("address")
        topics = entry.get("topics")
        if not isinstance(address, str) or address.lower() != vault_lower:
            continue  # another contract's log: never a claim, whatever its topic
        if not isinstance(topics, list) or not topics or str(topics[0]).lower() != CLAIM_TOPIC:
            continue  # another event of the vault
        claims.append(_decode_claim(chain, tx_hash, block_number, block_hash, entry, where))
    return ReceiptClaims(tx_hash, block_number, block_hash, status == 1, tuple(claims))


def _decode_claim(  # noqa: PLR0917
    chain: str,
    tx_hash: str,
    block_number: int,
    block_hash: str,
    entry: Mapping[str, Any],
    where: str,
) -> RemoteSeizeClaim:
    at = f"{where} log {str(entry.get('logIndex'))[:20]}"
    try:
        log_index = _quantity(entry.get("logIndex"), "logIndex")
        topics = [_word(t, "topic") for t in entry["topics"]]
        if len(topics) != 4:
            raise ValueError(f"RemoteSeizeClaimed log has {len(topics) - 1} indexed topics, not 3")
        data_hex = entry.get("data")
        if not isinstance(data_hex, str) or not data_hex.startswith("0x"):
            raise ValueError("data is not 0x-prefixed hex")
        data = bytes.fromhex(data_hex[2:])
        if len(data) != 32 * len(CLAIM_DATA_TYPES):
            raise ValueError(f"data is {len(data)} bytes, not {32 * len(CLAIM_DATA_TYPES)}")
        debt_token, repaid, target_chain_id, collateral_token = abi_decode(CLAIM_DATA_TYPES, data)
    except (ValueError, TypeError, KeyError) as exc:
        raise DecodeError(f"{at}: malformed RemoteSeizeClaimed log: {exc}") from None
    except Exception as exc:  # eth_abi's errors share no useful base class
        raise DecodeError(f"{at}: undecodable RemoteSeizeClaimed data: {exc}") from None
    try:
        account = _topic_address(topics[2], "account")
        liquidator = _topic_address(topics[3], "liquidator")
    except ValueError as exc:
        raise DecodeError(f"{at}: {exc}") from None
    return RemoteSeizeClaim(
        chain=chain,
        tx_hash=tx_hash,
        block_number=block_number,
        block_hash=block_hash,
        log_index=log_index,
        claim_id=topics[1],
        account=account,
        liquidator=liquidator,
        debt_token=to_checksum_address(debt_token),
        repaid=int(repaid),
        target_chain_id=int(target_chain_id),
        collateral_token=to_checksum_address(collateral_token),
    )


@dataclass(frozen=True)
class Finality:
    """`confirmations`: blocks above the receipt's block (head - block, 0 when reorged or
    the node's head is below it); final when that is at least `needed` and not reorged."""

    final: bool
    confirmations: int
    needed: int
    reorged: bool


def finality(
    block_number: int,
    block_hash: str,
    head: int,
    canonical_hash: str | None,
    needed: int,
) -> Finality:
    """Is a receipt in block (`block_number`, `block_hash`) final, given the chain's head
    and the canonical block hash at that height (None: the node has no block there)?"""
    if needed < 0:
        raise ValueError(f"confirmations must be >= 0, got {needed}")
    if canonical_hash is not None and canonical_hash.lower() != block_hash.lower():
        return Finality(final=False, confirmations=0, needed=needed, reorged=True)
    depth = max(0, head - block_number)
    # No canonical block at that height (the node's head is below it): not final yet.
    final = canonical_hash is not None and head >= block_number and depth >= needed
    return Finality(final=final, confirmations=depth, needed=needed, reorged=False)


@dataclass(frozen=True)
class SeizeVoucher:
    """The vault's `SeizeVoucher` struct, tokens and ids as the collateral chain has them."""

    claim_id: str
    account: str
    liquidator: str
    collateral_token: str
    debt_token: str
    repaid: int

    def __post_init__(self) -> None:
        if HEX_WORD.fullmatch(self.claim_id) is None:
            raise ValueError(f"claim_id is not a 32-byte hex word: {self.claim_id[:80]!r}")
        for name in ("account", "liquidator", "collateral_token", "debt_token"):
            value = getattr(self, name)
            if not isinstance(value, str) or HEX_ADDRESS.fullmatch(value) is None:
                raise ValueError(f"{name} is not a 20-byte hex address: {str(value)[:80]!r}")
        if not 0 < self.repaid < 2**256:
            raise ValueError(f"repaid must be in (0, 2**256), got {self.repaid}")

    def message(self) -> dict[str, Any]:
        """The struct as JSON: the contract's field names, `repaid` a decimal string (no
        float anywhere can round it)."""
        return {
            "claimId": self.claim_id.lower(),
            "account": to_checksum_address(self.account),
            "liquidator": to_checksum_address(self.liquidator),
            "collateralToken": to_checksum_address(self.collateral_token),
            "debtToken": to_checksum_address(self.debt_token),
            "repaid": str(self.repaid),
        }


def voucher_typed_data(voucher: SeizeVoucher, chain_id: int, vault: str) -> dict[str, Any]:
    """The EIP-712 typed data (eth_account `full_message` form) of `voucher` for the
    vault `vault` on chain `chain_id`."""
    m = voucher.message()
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "SeizeVoucher": [
                {"name": "claimId", "type": "bytes32"},
                {"name": "account", "type": "address"},
                {"name": "liquidator", "type": "address"},
                {"name": "collateralToken", "type": "address"},
                {"name": "debtToken", "type": "address"},
                {"name": "repaid", "type": "uint256"},
            ],
        },
        "primaryType": "SeizeVoucher",
        "domain": {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": chain_id,
            "verifyingContract": to_checksum_address(vault),
        },
        "message": {**m, "claimId": bytes.fromhex(m["claimId"][2:]), "repaid": voucher.repaid},
    }


def domain_separator(chain_id: int, vault: str) -> bytes:
    return keccak(
        abi_encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [
                _DOMAIN_TYPEHASH,
                keccak(text=DOMAIN_NAME),
                keccak(text=DOMAIN_VERSION),
                chain_id,
                to_checksum_address(vault),
            ],
        )
    )


def voucher_digest(voucher: SeizeVoucher, chain_id: int, vault: str) -> bytes:
    """keccak256("\\x19\\x01" || domainSeparator || structHash): the vault's voucherDigest."""
    struct_hash = keccak(
        abi_encode(
            ["bytes32", "bytes32", "address", "address", "address", "address", "uint256"],
            [
                _VOUCHER_TYPEHASH,
                bytes.fromhex(voucher.claim_id[2:]),
                to_checksum_address(voucher.account),
                to_checksum_address(voucher.liquidator),
                to_checksum_address(voucher.collateral_token),
                to_checksum_address(voucher.debt_token),
                voucher.repaid,
            ],
        )
    )
    return keccak(b"\x19\x01" + domain_separator(chain_id, vault) + struct_hash)
