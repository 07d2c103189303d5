"""EIP-1559 fee suggestion and bumps, and classification of node send errors."""

from __future__ import annotations

import pytest

from chains.pusher.errors import SendErrorKind, classify_send_error
from chains.pusher.fees import Fees, bump, fees_from_history, replacement_fees

GWEI = 10**9


def test_fees_follow_the_next_base_fee_and_median_tip() -> None:
    history = {
        "baseFeePerGas": [hex(10 * GWEI), hex(11 * GWEI), hex(12 * GWEI)],
        "reward": [[hex(2 * GWEI)], [hex(0)], [hex(3 * GWEI)]],
    }
    f = fees_from_history(history, min_priority=GWEI // 10, cap=500 * GWEI)
    assert f.base_fee == 12 * GWEI
    assert f.priority_fee == int(2.5 * GWEI)  # median of the non-zero tips
    assert f.max_fee == 2 * 12 * GWEI + int(2.5 * GWEI) and not f.capped


def test_fees_floor_and_cap() -> None:
    history = {"baseFeePerGas": [hex(100 * GWEI)], "reward": [[hex(0)]]}
    f = fees_from_history(history, min_priority=GWEI, cap=150 * GWEI)
    assert f.priority_fee == GWEI and f.max_fee == 150 * GWEI and f.capped


@pytest.mark.parametrize("value", [1, 7, 8, 1_000_000_007, 10**18 + 1])
def test_bump_is_at_least_12_5_percent_exactly(value: int) -> None:
    b = bump(value, 0.125)
    assert b * 8 >= value * 9 > (b - 1) * 8


def test_replacement_bumps_both_fees_and_respects_the_cap() -> None:
    low = Fees(max_fee=GWEI, priority_fee=GWEI // 10, base_fee=GWEI // 2)
    r = replacement_fees(20 * GWEI, 2 * GWEI, low, fee_bump=0.125, cap=100 * GWEI)
    assert r.valid and r.max_fee == int(22.5 * GWEI) and r.priority_fee == int(2.25 * GWEI)
    high = Fees(max_fee=40 * GWEI, priority_fee=5 * GWEI, base_fee=18 * GWEI)
    r = replacement_fees(20 * GWEI, 2 * GWEI, high, fee_bump=0.125, cap=100 * GWEI)
    assert r.valid and (r.max_fee, r.priority_fee) == (40 * GWEI, 5 * GWEI)
    r = replacement_fees(20 * GWEI, 2 * GWEI, low, fee_bump=0.125, cap=21 * GWEI)
    assert not r.valid and r.max_fee <= 21 * GWEI


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("already known", SendErrorKind.ALREADY_KNOWN),  # geth
        ("transaction already imported", SendErrorKind.ALREADY_KNOWN),  # anvil
        ("Known transaction", SendErrorKind.ALREADY_KNOWN),  # nethermind style
        ("AlreadyKnown", SendErrorKind.ALREADY_KNOWN),
        ("nonce too low", SendErrorKind.NONCE_TOO_LOW),
        ("nonce too low: next nonce 5, tx nonce 4", SendErrorKind.NONCE_TOO_LOW),
        ("OldNonce", SendErrorKind.NONCE_TOO_LOW),
        ("replacement transaction underpriced", SendErrorKind.UNDERPRICED),
        ("transaction underpriced: tip needed 1, tip permitted 0", SendErrorKind.UNDERPRICED),
        ("max fee per gas less than block base fee", SendErrorKind.FEE_TOO_LOW),
        ("Insufficient funds for gas * price + value", SendErrorKind.INSUFFICIENT_FUNDS),
        ("insufficient funds for gas * price + value: balance 0", SendErrorKind.INSUFFICIENT_FUNDS),
        ("nonce too high", SendErrorKind.NONCE_TOO_HIGH),
        ("intrinsic gas too low", SendErrorKind.INVALID),
    ],
)
def test_send_errors_are_classified(message: str, kind: SendErrorKind) -> None:
    assert classify_send_error(message) is kind
