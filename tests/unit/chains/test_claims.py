"""chains/claims.py: RemoteSeizeClaimed decoding, the finality decision, the voucher's
EIP-712 digest (against eth_account's independent encoder; the contract's own
voucherDigest is checked in tests/contract/test_seize_voucher.py), and KeeperKey's
typed-data signature."""

from __future__ import annotations

from typing import Any

import pytest
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from hypothesis import given
from hypothesis import strategies as st

from chains.claims import (
    CLAIM_TOPIC,
    SeizeVoucher,
    decode_claims,
    finality,
    voucher_digest,
    voucher_typed_data,
)
from chains.events import DecodeError
from chains.pusher.keys import key_from_hex
from devkit.anvil import DEV_KEYS

VAULT = "0x" + "5a" * 20
OTHER = "0x" + "6b" * 20
ACCOUNT = "0x" + "11" * 20
LIQUIDATOR = "0x" + "22" * 20
DEBT = "0x" + "33" * 20
COLLATERAL = "0x" + "44" * 20
TX = "0x" + "ab" * 32
BLOCK_HASH = "0x" + "cd" * 32


def topic_of(address: str) -> str:
    return "0x" + "00" * 12 + address[2:]


def claim_log(
    claim_id: str = "0x" + "01" * 32,
    *,
    address: str = VAULT,
    index: int = 0,
    repaid: int = 1500 * 10**6,
    target: int = 71002,
) -> dict[str, Any]:
    data = abi_encode(
        ["address", "uint256", "uint256", "address"], [DEBT, repaid, target, COLLATERAL]
    )
    return {
        "address": address,
        "topics": [CLAIM_TOPIC, claim_id, topic_of(ACCOUNT), topic_of(LIQUIDATOR)],
        "data": "0x" + data.hex(),
        "logIndex": hex(index),
        "blockNumber": "0x64",
        "transactionHash": TX,
    }


def receipt(*logs: dict[str, Any], status: str = "0x1") -> dict[str, Any]:
    return {
        "transactionHash": TX,
        "blockNumber": "0x64",
        "blockHash": BLOCK_HASH,
        "status": status,
        "logs": list(logs),
    }


def test_decodes_every_claim_of_the_vault_in_log_order() -> None:
    other_event = {**claim_log(index=1), "topics": ["0x" + "ee" * 32]}
    r = receipt(
        claim_log("0x" + "01" * 32, index=0),
        other_event,
        claim_log("0x" + "02" * 32, index=2, repaid=7, target=5),
    )
    out = decode_claims("alpha", r, VAULT.upper().replace("0X", "0x"))
    assert out.succeeded and out.block_number == 100 and out.block_hash == BLOCK_HASH
    assert [c.claim_id for c in out.claims] == ["0x" + "01" * 32, "0x" + "02" * 32]
    first, second = out.claims
    assert first.account.lower() == ACCOUNT and first.liquidator.lower() == LIQUIDATOR
    assert first.debt_token.lower() == DEBT and first.collateral_token.lower() == COLLATERAL
    assert (first.repaid, first.target_chain_id, first.log_index) == (1500 * 10**6, 71002, 0)
    assert (second.repaid, second.target_chain_id, second.log_index) == (7, 5, 2)
    assert first.chain == "alpha" and first.tx_hash == TX and first.block_number == 100


def test_a_claim_log_of_another_contract_is_not_a_claim() -> None:
    out = decode_claims("alpha", receipt(claim_log(address=OTHER)), VAULT)
    assert out.claims == ()


def test_a_reverted_receipt_is_not_succeeded() -> None:
    assert not decode_claims("alpha", receipt(status="0x0"), VAULT).succeeded


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda e: e.update(data=e["data"][:-64]), "data is 96 bytes"),
        (lambda e: e.update(topics=e["topics"][:3]), "2 indexed topics"),
        (lambda e: e["topics"].__setitem__(2, "0x" + "ff" * 32), "account topic"),
        (lambda e: e.update(data="zz"), "not 0x-prefixed"),
        (lambda e: e.update(logIndex="7"), "logIndex"),
    ],
)
def test_a_malformed_claim_log_of_the_vault_names_chain_tx_and_log(
    mutate: Any, needle: str
) -> None:
    entry = claim_log(index=3)
    mutate(entry)
    with pytest.raises(DecodeError) as info:
        decode_claims("alpha", receipt(entry), VAULT)
    msg = str(info.value)
    assert "chain 'alpha'" in msg and TX in msg and needle in msg, msg


@pytest.mark.parametrize(
    ("field", "value"),
    [("blockHash", None), ("status", "1"), ("logs", {}), ("transactionHash", "0x12")],
)
def test_a_malformed_receipt_is_a_decode_error(field: str, value: Any) -> None:
    r = receipt(claim_log())
    r[field] = value
    with pytest.raises(DecodeError, match=f"chain 'alpha' .*malformed receipt: {field}"):
        decode_claims("alpha", r, VAULT)


# -- finality -----------------------------------------------------------------------
H = "0x" + "aa" * 32


@pytest.mark.parametrize(
    ("block", "head", "canonical", "needed", "final", "confs", "reorged"),
    [
        (100, 100, H, 2, False, 0, False),  # just mined
        (100, 101, H, 2, False, 1, False),
        (100, 102, H, 2, True, 2, False),  # exactly `needed` deep
        (100, 150, H, 2, True, 50, False),
        (100, 100, H, 0, True, 0, False),  # confirmations = 0: the head block counts
        (100, 150, "0x" + "bb" * 32, 2, False, 0, True),  # reorged out, however deep
        (100, 99, None, 2, False, 0, False),  # the node's head is below the block
        (100, 150, None, 0, False, 50, False),  # no canonical block: never final
        (100, 150, H.upper().replace("0X", "0x"), 2, True, 50, False),  # hex case
    ],
)
def test_finality(  # noqa: PLR0917
    block: int,
    head: int,
    canonical: str | None,
    needed: int,
    final: bool,
    confs: int,
    reorged: bool,
) -> None:
    f = finality(block, H, head, canonical, needed)
    assert (f.final, f.confirmations, f.needed, f.reorged) == (final, confs, needed, reorged)


@given(
    block=st.integers(0, 10**6),
    ahead=st.integers(-5, 50),
    needed=st.integers(0, 40),
    same=st.booleans(),
)
def test_finality_matches_the_scalar_rule(block: int, ahead: int, needed: int, same: bool) -> None:
    head = max(0, block + ahead)
    canonical = H if same else "0x" + "bb" * 32
    f = finality(block, H, head, canonical, needed)
    # Reference: final iff same hash and head - block >= needed (head >= block).
    expected = same and head >= block and head - block >= needed
    assert f.final == expected
    assert f.reorged == (not same)
    assert f.final <= (f.confirmations >= f.needed)


def test_negative_confirmations_are_refused() -> None:
    with pytest.raises(ValueError, match="confirmations must be >= 0"):
        finality(1, H, 5, H, -1)


# -- the voucher ----------------------------------------------------------------------
def voucher(**kw: Any) -> SeizeVoucher:
    base: dict[str, Any] = {
        "claim_id": "0x" + "07" * 32,
        "account": ACCOUNT,
        "liquidator": LIQUIDATOR,
        "collateral_token": COLLATERAL,
        "debt_token": DEBT,
        "repaid": 1500 * 10**6,
    }
    base.update(kw)
    return SeizeVoucher(**base)


@given(
    claim=st.binary(min_size=32, max_size=32),
    repaid=st.integers(1, 2**256 - 1),
    chain_id=st.integers(1, 2**64),
    vault=st.binary(min_size=20, max_size=20),
)
def test_digest_equals_eth_accounts_eip712_encoding(
    claim: bytes, repaid: int, chain_id: int, vault: bytes
) -> None:
    v = voucher(claim_id="0x" + claim.hex(), repaid=repaid)
    vault_hex = "0x" + vault.hex()
    signable = encode_typed_data(full_message=voucher_typed_data(v, chain_id, vault_hex))
    # EIP-191 version 0x01: digest = keccak(0x19 0x01 || domain separator || struct hash).
    from eth_utils import keccak

    reference = keccak(b"\x19" + signable.version + signable.header + signable.body)
    assert voucher_digest(v, chain_id, vault_hex) == reference


def test_digest_binds_every_field_and_the_domain() -> None:
    base = voucher_digest(voucher(), 71002, VAULT)
    variants = [
        voucher_digest(voucher(claim_id="0x" + "08" * 32), 71002, VAULT),
        voucher_digest(voucher(account=OTHER), 71002, VAULT),
        voucher_digest(voucher(liquidator=OTHER), 71002, VAULT),
        voucher_digest(voucher(collateral_token=OTHER), 71002, VAULT),
        voucher_digest(voucher(debt_token=OTHER), 71002, VAULT),
        voucher_digest(voucher(repaid=1500 * 10**6 + 1), 71002, VAULT),
        voucher_digest(voucher(), 71003, VAULT),
        voucher_digest(voucher(), 71002, OTHER),
    ]
    assert len({base, *variants}) == 1 + len(variants)


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"claim_id": "0x12"}, "claim_id"),
        ({"account": "0x12"}, "account"),
        ({"repaid": 0}, "repaid"),
        ({"repaid": 2**256}, "repaid"),
    ],
)
def test_a_malformed_voucher_is_refused(kw: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        voucher(**kw)


def test_voucher_message_is_json_with_a_decimal_repaid() -> None:
    m = voucher(repaid=2**255).message()
    assert m["repaid"] == str(2**255)
    assert m["account"] == "0x1111111111111111111111111111111111111111"
    assert m["claimId"] == "0x" + "07" * 32


def test_keeper_key_signs_typed_data_and_shows_only_the_signature() -> None:
    key = key_from_hex(DEV_KEYS[1], "test key")
    v = voucher()
    sig = key.sign_typed_data(voucher_typed_data(v, 71002, VAULT))
    assert sig.startswith("0x") and len(sig) == 2 + 130
    signer = Account._recover_hash(
        voucher_digest(v, 71002, VAULT), signature=bytes.fromhex(sig[2:])
    )
    assert signer == key.address
    assert DEV_KEYS[1][2:].lower() not in (repr(key) + sig).lower()
