// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Metadata} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Metadata.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {AggregatorV3Interface} from "@chainlink/contracts/src/v0.8/shared/interfaces/AggregatorV3Interface.sol";
import {IHealthRegistry} from "./IHealthRegistry.sol";

/// @title CollateralVault
/// @notice Holds collateral and lends debt assets on one chain. Borrowing and withdrawing
///         spend cross-chain credit that the aggregator pushed into the HealthRegistry;
///         without a fresh registry entry both are refused (fail closed).
contract CollateralVault is Ownable, ReentrancyGuard {
    using SafeERC20 for IERC20;

    struct Collateral {
        address feed;
        uint16 ltvBps;
        uint16 bonusBps;
        uint8 decimals;
        bool listed;
    }

    struct DebtAsset {
        address feed;
        uint8 decimals;
        bool listed;
    }

    uint256 private constant BPS = 10_000;

    IHealthRegistry public immutable registry;
    uint256 public maxAge;

    mapping(address token => Collateral) public collaterals;
    mapping(address token => DebtAsset) public debtAssets;
    mapping(address account => mapping(address token => uint256)) public collateralOf;
    mapping(address account => mapping(address token => uint256)) public debtOf;

    event Deposited(address indexed account, address indexed token, uint256 amount);
    event Withdrawn(address indexed account, address indexed token, uint256 amount);
    event Borrowed(address indexed account, address indexed token, uint256 amount);
    event Repaid(address indexed account, address indexed token, uint256 amount, address payer);
    event Liquidated(
        address indexed account,
        address indexed liquidator,
        address indexed collateralToken,
        uint256 seized,
        address debtToken,
        uint256 repaid
    );
    event CollateralSet(address indexed token, address feed, uint16 ltvBps, uint16 bonusBps);
    event DebtAssetSet(address indexed token, address feed);
    event MaxAgeSet(uint256 maxAge);

    error Stale(address account);
    error NotLiquidatable(address account, uint8 tier);
    error UnknownCollateral(address token);
    error UnknownDebtAsset(address token);
    error ZeroAmount();
    error ZeroAddress();
    error BadBps(uint256 value);
    error BadPrice(address feed, int256 answer);
    error InsufficientCollateral(address account, address token, uint256 balance, uint256 amount);
    error InsufficientLiquidity(address token, uint256 available, uint256 amount);
    error RepayExceedsDebt(address account, address token, uint256 debt, uint256 amount);
    error CreditOverflow(uint256 usd6);

    constructor(address registry_, uint256 maxAge_) Ownable(msg.sender) {
        if (registry_ == address(0)) revert ZeroAddress();
        registry = IHealthRegistry(registry_);
        maxAge = maxAge_;
        emit MaxAgeSet(maxAge_);
    }

    // -- owner configuration ---------------------------------------------------------

    function setCollateral(address token, address feed, uint16 ltvBps, uint16 bonusBps) external onlyOwner {
        if (token == address(0) || feed == address(0)) revert ZeroAddress();
        if (ltvBps > BPS) revert BadBps(ltvBps);
        if (bonusBps > BPS) revert BadBps(bonusBps);
        collaterals[token] = Collateral(feed, ltvBps, bonusBps, IERC20Metadata(token).decimals(), true);
        emit CollateralSet(token, feed, ltvBps, bonusBps);
    }

    function setDebtAsset(address token, address feed) external onlyOwner {
        if (token == address(0) || feed == address(0)) revert ZeroAddress();
        debtAssets[token] = DebtAsset(feed, IERC20Metadata(token).decimals(), true);
        emit DebtAssetSet(token, feed);
    }

    function setMaxAge(uint256 maxAge_) external onlyOwner {
        maxAge = maxAge_;
        emit MaxAgeSet(maxAge_);
    }

    // -- user actions ----------------------------------------------------------------

    function deposit(address token, uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        if (!collaterals[token].listed) revert UnknownCollateral(token);
        collateralOf[msg.sender][token] += amount;
        IERC20(token).safeTransferFrom(msg.sender, address(this), amount);
        emit Deposited(msg.sender, token, amount);
    }

    /// @notice Withdraw collateral; spends credit worth the collateral's borrowing power.
    function withdraw(address token, uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        Collateral memory c = collaterals[token];
        if (!c.listed) revert UnknownCollateral(token);
        uint256 balance = collateralOf[msg.sender][token];
        if (amount > balance) revert InsufficientCollateral(msg.sender, token, balance, amount);
        _requireFresh(msg.sender);
        uint256 value = _usd6(amount, c.decimals, c.feed, Math.Rounding.Ceil);
        _consume(msg.sender, Math.mulDiv(value, c.ltvBps, BPS, Math.Rounding.Ceil));
        collateralOf[msg.sender][token] = balance - amount;
        IERC20(token).safeTransfer(msg.sender, amount);
        emit Withdrawn(msg.sender, token, amount);
    }

    /// @notice Borrow a debt asset from the vault's liquidity; spends credit worth its USD value.
    function borrow(address token, uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        DebtAsset memory d = debtAssets[token];
        if (!d.listed) revert UnknownDebtAsset(token);
        _requireFresh(msg.sender);
        uint256 available = IERC20(token).balanceOf(address(this));
        if (amount > available) revert InsufficientLiquidity(token, available, amount);
        _consume(msg.sender, _usd6(amount, d.decimals, d.feed, Math.Rounding.Ceil));
        debtOf[msg.sender][token] += amount;
        IERC20(token).safeTransfer(msg.sender, amount);
        emit Borrowed(msg.sender, token, amount);
    }

    /// @notice Anyone may repay for an account. Credit is not restored here: the next
    ///         registry push reflects the lower debt.
    function repay(address account, address token, uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        if (!debtAssets[token].listed) revert UnknownDebtAsset(token);
        uint256 debt = debtOf[account][token];
        if (amount > debt) revert RepayExceedsDebt(account, token, debt, amount);
        debtOf[account][token] = debt - amount;
        IERC20(token).safeTransferFrom(msg.sender, address(this), amount);
        emit Repaid(account, token, amount, msg.sender);
    }

    /// @notice Repay part of an account's debt and seize collateral worth the repaid value
    ///         plus the collateral's bonus. Needs a fresh registry entry with tier >= 2;
    ///         the close factor is the aggregator's decision, not enforced here.
    function liquidate(address account, address debtToken, uint256 repayAmount, address collateralToken)
        external
        nonReentrant
    {
        if (repayAmount == 0) revert ZeroAmount();
        DebtAsset memory d = debtAssets[debtToken];
        if (!d.listed) revert UnknownDebtAsset(debtToken);
        Collateral memory c = collaterals[collateralToken];
        if (!c.listed) revert UnknownCollateral(collateralToken);
        _requireFresh(account);
        (, uint8 tier,) = registry.healthOf(account);
        if (tier < 2) revert NotLiquidatable(account, tier);
        uint256 debt = debtOf[account][debtToken];
        if (repayAmount > debt) revert RepayExceedsDebt(account, debtToken, debt, repayAmount);

        // Rounded down on both legs: the liquidator never gets more than the bonus.
        uint256 repaidUsd6 = _usd6(repayAmount, d.decimals, d.feed, Math.Rounding.Floor);
        uint256 seizeUsd6 = Math.mulDiv(repaidUsd6, BPS + c.bonusBps, BPS);
        uint256 seized = _amountOf(seizeUsd6, c.decimals, c.feed);
        uint256 balance = collateralOf[account][collateralToken];
        if (seized > balance) seized = balance;

        debtOf[account][debtToken] = debt - repayAmount;
        collateralOf[account][collateralToken] = balance - seized;
        IERC20(debtToken).safeTransferFrom(msg.sender, address(this), repayAmount);
        if (seized > 0) IERC20(collateralToken).safeTransfer(msg.sender, seized);
        emit Liquidated(account, msg.sender, collateralToken, seized, debtToken, repayAmount);
    }

    // -- views -----------------------------------------------------------------------

    /// @notice USD6 value of `amount` raw units of a listed collateral or debt token (rounded down).
    function valueOf(address token, uint256 amount) external view returns (uint256) {
        Collateral memory c = collaterals[token];
        if (c.listed) return _usd6(amount, c.decimals, c.feed, Math.Rounding.Floor);
        DebtAsset memory d = debtAssets[token];
        if (d.listed) return _usd6(amount, d.decimals, d.feed, Math.Rounding.Floor);
        revert UnknownCollateral(token);
    }

    // -- internals -------------------------------------------------------------------

    function _requireFresh(address account) private view {
        if (!registry.isFresh(account, maxAge)) revert Stale(account);
    }

    function _consume(address account, uint256 usd6) private {
        if (usd6 > type(uint128).max) revert CreditOverflow(usd6);
        registry.consumeCredit(account, uint128(usd6));
    }

    function _price(address feed) private view returns (uint256 answer, uint8 feedDecimals) {
        (, int256 raw,,,) = AggregatorV3Interface(feed).latestRoundData();
        if (raw <= 0) revert BadPrice(feed, raw);
        return (uint256(raw), AggregatorV3Interface(feed).decimals());
    }

    /// value = amount * answer / 10**(tokenDecimals + feedDecimals - 6)
    function _usd6(uint256 amount, uint8 tokenDecimals, address feed, Math.Rounding rounding)
        private
        view
        returns (uint256)
    {
        (uint256 answer, uint8 feedDecimals) = _price(feed);
        uint256 scale = uint256(tokenDecimals) + feedDecimals;
        if (scale >= 6) return Math.mulDiv(amount, answer, 10 ** (scale - 6), rounding);
        return amount * answer * 10 ** (6 - scale);
    }

    /// Inverse of _usd6, rounded down: raw token units worth `usd6`.
    function _amountOf(uint256 usd6, uint8 tokenDecimals, address feed) private view returns (uint256) {
        (uint256 answer, uint8 feedDecimals) = _price(feed);
        uint256 scale = uint256(tokenDecimals) + feedDecimals;
        if (scale >= 6) return Math.mulDiv(usd6, 10 ** (scale - 6), answer);
        return usd6 / (answer * 10 ** (6 - scale));
    }
}
