// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title HealthRegistry
/// @notice Per-account health and credit pushed by the off-chain aggregator (keepers),
///         consumed by the vault on this chain (consumers).
/// @dev One uint256 slot per account:
///      bits 255..128 credit (USD, 6 decimals) | 127..64 hf (9 decimals, max = infinite)
///      | 63..24 asOf (unix s) | 23..16 tier | 15..0 reserved, must be zero.
contract HealthRegistry is Ownable {
    uint64 public constant HF_INFINITE = type(uint64).max;
    uint256 private constant ENTRY_LEN = 52;
    uint256 private constant CREDIT_SHIFT = 128;
    uint256 private constant HF_SHIFT = 64;
    uint256 private constant AS_OF_SHIFT = 24;
    uint256 private constant TIER_SHIFT = 16;
    uint256 private constant RESERVED_MASK = 0xffff;
    uint256 private constant LOW_128_MASK = (uint256(1) << 128) - 1;

    mapping(address account => uint256 slot) private _entries;
    mapping(address keeper => bool) public isKeeper;
    mapping(address consumer => bool) public isConsumer;

    event EntryUpdated(address indexed account, uint256 slot);
    event EntrySkipped(address indexed account, uint40 storedAsOf, uint40 givenAsOf);
    event BatchApplied(address indexed keeper, uint256 applied, uint256 skipped);
    event CreditConsumed(address indexed account, address indexed consumer, uint128 amount, uint128 remaining);
    event KeeperSet(address indexed keeper, bool enabled);
    event ConsumerSet(address indexed consumer, bool enabled);

    error NotKeeper(address caller);
    error NotConsumer(address caller);
    error BadBatchLength(uint256 length);
    error ReservedBitsSet(address account, uint256 slot);
    error InsufficientCredit(address account, uint128 available, uint128 needed);

    constructor() Ownable(msg.sender) {}

    function setKeeper(address keeper, bool enabled) external onlyOwner {
        isKeeper[keeper] = enabled;
        emit KeeperSet(keeper, enabled);
    }

    function setConsumer(address consumer, bool enabled) external onlyOwner {
        isConsumer[consumer] = enabled;
        emit ConsumerSet(consumer, enabled);
    }

    /// @notice Apply a packed batch: N x (20-byte account ++ 32-byte slot).
    /// @dev Entries not newer than what is stored are skipped, not reverted: a delayed or
    ///      replayed batch must not undo a fresher one, and must not block the rest.
    ///      Reserved bits set means the encoder and this contract disagree on the layout;
    ///      the whole batch reverts rather than storing a misread entry.
    function update(bytes calldata batch) external {
        if (!isKeeper[msg.sender]) revert NotKeeper(msg.sender);
        uint256 len = batch.length;
        if (len % ENTRY_LEN != 0) revert BadBatchLength(len);
        uint256 applied;
        uint256 skipped;
        for (uint256 off = 0; off < len; off += ENTRY_LEN) {
            address account = address(bytes20(batch[off:off + 20]));
            uint256 slot = uint256(bytes32(batch[off + 20:off + ENTRY_LEN]));
            if (slot & RESERVED_MASK != 0) revert ReservedBitsSet(account, slot);
            uint40 given = _asOf(slot);
            uint40 stored = _asOf(_entries[account]);
            if (given <= stored) {
                emit EntrySkipped(account, stored, given);
                ++skipped;
                continue;
            }
            _entries[account] = slot;
            emit EntryUpdated(account, slot);
            ++applied;
        }
        emit BatchApplied(msg.sender, applied, skipped);
    }

    /// @notice Spend part of the account's local credit (vault borrow / withdraw).
    function consumeCredit(address account, uint128 amountUsd6) external {
        if (!isConsumer[msg.sender]) revert NotConsumer(msg.sender);
        uint256 slot = _entries[account];
        uint128 available = uint128(slot >> CREDIT_SHIFT);
        if (amountUsd6 > available) revert InsufficientCredit(account, available, amountUsd6);
        uint128 remaining = available - amountUsd6;
        // Only the credit field changes: hf, asOf and tier stay as the keeper pushed them.
        _entries[account] = (uint256(remaining) << CREDIT_SHIFT) | (slot & LOW_128_MASK);
        emit CreditConsumed(account, msg.sender, amountUsd6, remaining);
    }

    function entryOf(address account) external view returns (uint256) {
        return _entries[account];
    }

    function healthOf(address account) external view returns (uint64 hf, uint8 tier, uint40 asOf) {
        uint256 slot = _entries[account];
        return (uint64(slot >> HF_SHIFT), uint8(slot >> TIER_SHIFT), _asOf(slot));
    }

    function creditOf(address account) external view returns (uint128) {
        return uint128(_entries[account] >> CREDIT_SHIFT);
    }

    /// @notice True when an entry exists, is not from the future and is at most maxAge old.
    function isFresh(address account, uint256 maxAge) public view returns (bool) {
        uint256 asOf = _asOf(_entries[account]);
        return asOf != 0 && asOf <= block.timestamp && block.timestamp - asOf <= maxAge;
    }

    function _asOf(uint256 slot) private pure returns (uint40) {
        return uint40(slot >> AS_OF_SHIFT);
    }
}
