// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @notice What the vault needs from the HealthRegistry.
interface IHealthRegistry {
    function healthOf(address account) external view returns (uint64 hf, uint8 tier, uint40 asOf);
    function creditOf(address account) external view returns (uint128);
    function isFresh(address account, uint256 maxAge) external view returns (bool);
    function isKeeper(address keeper) external view returns (bool);
    function consumeCredit(address account, uint128 amountUsd6) external;
}
