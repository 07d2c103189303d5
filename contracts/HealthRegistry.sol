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

    event EntrySkipped(address indexed account, uint40 storedAsOf, uint40 givenAsOf);
    /// @dev batchHash = keccak256 of update()'s argument: the applied entries are in the
    ///      calldata (minus the EntrySkipped ones), so no per-entry log is needed.
    event BatchApplied(address indexed keeper, uint256 applied, uint256 skipped, bytes32 batchHash);
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
    ///      Gas: an applied entry costs its SLOAD + SSTORE and ~100 gas of loop, no log.
    ///      The batch is announced once by BatchApplied with keccak256(batch): an indexer
    ///      recomputes every entry from the transaction's calldata (and the rare
    ///      EntrySkipped events say which were not applied). A per-entry log would cost
    ///      ~1,400 gas, over a quarter of an update of an existing slot.
    function update(bytes calldata batch) external {
        if (!isKeeper[msg.sender]) revert NotKeeper(msg.sender);
        uint256 len = batch.length;
        if (len % ENTRY_LEN != 0) revert BadBatchLength(len);
        uint256 applied;
        uint256 skipped;
        bytes32 batchHash;
        bytes32 skippedTopic = EntrySkipped.selector;
        bytes4 reservedSel = ReservedBitsSet.selector;
        assembly ("memory-safe") {
            // Scratch space 0x00..0x3f is the mapping key buffer: keccak(account ++ slot#).
            mstore(0x20, _entries.slot)
            let ptr := mload(0x40)
            let off := batch.offset
            let end := add(off, len)
            for {} lt(off, end) { off := add(off, ENTRY_LEN) } {
                let account := shr(96, calldataload(off))
                let slot := calldataload(add(off, 20))
                if and(slot, RESERVED_MASK) {
                    mstore(ptr, reservedSel)
                    mstore(add(ptr, 4), account)
                    mstore(add(ptr, 36), slot)
                    revert(ptr, 68)
                }
                mstore(0x00, account)
                let key := keccak256(0x00, 0x40)
                let stored := and(shr(AS_OF_SHIFT, sload(key)), 0xffffffffff)
                let given := and(shr(AS_OF_SHIFT, slot), 0xffffffffff)
                switch gt(given, stored)
                case 1 {
                    sstore(key, slot)
                    applied := add(applied, 1)
                }
                default {
                    mstore(ptr, stored)
                    mstore(add(ptr, 0x20), given)
                    log2(ptr, 0x40, skippedTopic, account)
                    skipped := add(skipped, 1)
                }
            }
            calldatacopy(ptr, batch.offset, len)
            batchHash := keccak256(ptr, len)
        }
        emit BatchApplied(msg.sender, applied, skipped, batchHash);
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
