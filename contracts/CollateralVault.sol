// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Metadata} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Metadata.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {AggregatorV3Interface} from "@chainlink/contracts/src/v0.8/shared/interfaces/AggregatorV3Interface.sol";
import {IHealthRegistry} from "./IHealthRegistry.sol";

/// @title CollateralVault
/// @notice Holds collateral and lends debt assets on one chain. Borrowing and withdrawing
///         spend cross-chain credit that the aggregator pushed into the HealthRegistry;
///         without a fresh registry entry both are refused (fail closed).
/// @dev Cross-chain seize (docs/contracts.md, "Cross-chain seize"): an account whose
///      debt is on this chain and whose collateral is on another is liquidated in two
///      steps. `liquidateRemote` here repays the debt and emits a claim with a unique id;
///      once that claim is final, the aggregator signs a `SeizeVoucher` (EIP-712, domain
///      = the collateral chain's vault) with its keeper key for that chain, and anyone may
///      submit it to `settleRemoteSeize` on the collateral chain, which seizes the repaid
///      value plus the collateral's bonus for the liquidator named in the claim, at most
///      once per claim id. The signer must be a keeper of this chain's registry: the
///      same trust the registry's health entries already need.
contract CollateralVault is Ownable, ReentrancyGuard, EIP712 {
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

    /// What the aggregator signs for a claim made on another chain (`repaid` in raw
    /// units of `debtToken`, this chain's token of the asset that was repaid there).
    struct SeizeVoucher {
        bytes32 claimId;
        address account;
        address liquidator;
        address collateralToken;
        address debtToken;
        uint256 repaid;
    }

    uint256 private constant BPS = 10_000;
    bytes32 public constant SEIZE_VOUCHER_TYPEHASH = keccak256(
        "SeizeVoucher(bytes32 claimId,address account,address liquidator,address collateralToken,address debtToken,uint256 repaid)"
    );

    IHealthRegistry public immutable registry;
    uint256 public maxAge;

    mapping(address token => Collateral) public collaterals;
    mapping(address token => DebtAsset) public debtAssets;
    mapping(address account => mapping(address token => uint256)) public collateralOf;
    mapping(address account => mapping(address token => uint256)) public debtOf;
    /// Claims made here by liquidateRemote so far (the next claim's sequence number - 1).
    uint256 public claimCount;
    /// Claims of other chains already settled here: each claim id seizes at most once.
    mapping(bytes32 claimId => bool) public settled;

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
    /// A liquidation whose collateral is on `targetChainId` (its `collateralToken` is that
    /// chain's address): the debt is repaid here; the seizure waits for settlement there.
    event RemoteSeizeClaimed(
        bytes32 indexed claimId,
        address indexed account,
        address indexed liquidator,
        address debtToken,
        uint256 repaid,
        uint256 targetChainId,
        address collateralToken
    );
    /// The seizure of a claim made on another chain (`repaid` as the voucher gives it).
    event RemoteSeizeSettled(
        bytes32 indexed claimId,
        address indexed account,
        address indexed liquidator,
        address collateralToken,
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
    error SameChain(uint256 chainId);
    error AlreadySettled(bytes32 claimId);
    error NotKeeperSigned(address signer);

    constructor(address registry_, uint256 maxAge_) Ownable(msg.sender) EIP712("CollateralVault", "1") {
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

    /// @notice Repay part of an account's debt here against collateral it holds on chain
    ///         `targetChainId`: the same checks as `liquidate` (fresh entry, tier >= 2);
    ///         the seizure is settled there by `settleRemoteSeize` once this claim is final.
    /// @return claimId keccak256(chain id, this vault, sequence number): unique per chain.
    function liquidateRemote(
        address account,
        address debtToken,
        uint256 repayAmount,
        uint256 targetChainId,
        address collateralToken
    ) external nonReentrant returns (bytes32 claimId) {
        if (repayAmount == 0) revert ZeroAmount();
        if (targetChainId == block.chainid) revert SameChain(targetChainId);
        if (collateralToken == address(0)) revert ZeroAddress();
        if (!debtAssets[debtToken].listed) revert UnknownDebtAsset(debtToken);
        _requireFresh(account);
        (, uint8 tier,) = registry.healthOf(account);
        if (tier < 2) revert NotLiquidatable(account, tier);
        uint256 debt = debtOf[account][debtToken];
        if (repayAmount > debt) revert RepayExceedsDebt(account, debtToken, debt, repayAmount);

        claimId = keccak256(abi.encode(block.chainid, address(this), ++claimCount));
        debtOf[account][debtToken] = debt - repayAmount;
        IERC20(debtToken).safeTransferFrom(msg.sender, address(this), repayAmount);
        emit RemoteSeizeClaimed(
            claimId, account, msg.sender, debtToken, repayAmount, targetChainId, collateralToken
        );
    }

    /// @notice Seize collateral here for a claim made on another chain, against the
    ///         aggregator's signed voucher. Anyone may submit it; the collateral goes to
    ///         the claim's liquidator. Priced like `liquidate`: the repaid value at this
    ///         chain's debt feed plus the collateral's bonus, capped at the balance. No
    ///         registry freshness is needed here: the claim passed that check where the
    ///         debt was repaid, and a voucher is only signed once that claim is final.
    function settleRemoteSeize(SeizeVoucher calldata v, bytes calldata signature) external nonReentrant {
        if (settled[v.claimId]) revert AlreadySettled(v.claimId);
        if (v.repaid == 0) revert ZeroAmount();
        if (v.liquidator == address(0)) revert ZeroAddress();
        _requireKeeperSigned(v, signature);
        uint256 seized = _remoteSeized(v);
        settled[v.claimId] = true;
        collateralOf[v.account][v.collateralToken] -= seized;
        if (seized > 0) IERC20(v.collateralToken).safeTransfer(v.liquidator, seized);
        emit RemoteSeizeSettled(
            v.claimId, v.account, v.liquidator, v.collateralToken, seized, v.debtToken, v.repaid
        );
    }

    /// @notice The EIP-712 digest a keeper signs for `v` (for off-chain signers and tests).
    function voucherDigest(SeizeVoucher calldata v) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(
                    SEIZE_VOUCHER_TYPEHASH, v.claimId, v.account, v.liquidator,
                    v.collateralToken, v.debtToken, v.repaid
                )
            )
        );
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

    function _requireKeeperSigned(SeizeVoucher calldata v, bytes calldata signature) private view {
        address signer = ECDSA.recover(voucherDigest(v), signature);
        if (!registry.isKeeper(signer)) revert NotKeeperSigned(signer);
    }

    /// Collateral a voucher seizes: its repaid value plus the bonus, capped at the balance.
    function _remoteSeized(SeizeVoucher calldata v) private view returns (uint256) {
        DebtAsset memory d = debtAssets[v.debtToken];
        if (!d.listed) revert UnknownDebtAsset(v.debtToken);
        Collateral memory c = collaterals[v.collateralToken];
        if (!c.listed) revert UnknownCollateral(v.collateralToken);
        uint256 repaidUsd6 = _usd6(v.repaid, d.decimals, d.feed, Math.Rounding.Floor);
        uint256 seized = _amountOf(Math.mulDiv(repaidUsd6, BPS + c.bonusBps, BPS), c.decimals, c.feed);
        uint256 balance = collateralOf[v.account][v.collateralToken];
        return seized > balance ? balance : seized;
    }

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
