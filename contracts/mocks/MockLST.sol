// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @notice Shared base of the liquid-staking-token mocks: an 18-decimal mintable ERC20
///         with an owner-set exchange rate (underlying per token, 1e18 fixed point).
///         Each concrete mock exposes the rate under its protocol's real getter name.
abstract contract MockLSTBase is ERC20, Ownable {
    uint256 internal _rate;

    event RateUpdated(uint256 rate);

    constructor(string memory name_, string memory symbol_) ERC20(name_, symbol_) Ownable(msg.sender) {
        _rate = 1e18;
        emit RateUpdated(1e18);
    }

    function mint(address to, uint256 amount) external onlyOwner {
        _mint(to, amount);
    }

    /// @dev Any value is accepted, including 0: oracle tests need broken rates too.
    function setRate(uint256 rate) external onlyOwner {
        _rate = rate;
        emit RateUpdated(rate);
    }
}

/// @notice Lido wstETH: stEthPerToken().
contract MockWstETH is MockLSTBase {
    constructor() MockLSTBase("Wrapped liquid staked Ether 2.0", "wstETH") {}

    function stEthPerToken() external view returns (uint256) {
        return _rate;
    }
}

/// @notice Rocket Pool rETH: getExchangeRate().
contract MockRETH is MockLSTBase {
    constructor() MockLSTBase("Rocket Pool ETH", "rETH") {}

    function getExchangeRate() external view returns (uint256) {
        return _rate;
    }
}

/// @notice Coinbase cbETH: exchangeRate().
contract MockCbETH is MockLSTBase {
    constructor() MockLSTBase("Coinbase Wrapped Staked ETH", "cbETH") {}

    function exchangeRate() external view returns (uint256) {
        return _rate;
    }
}
