// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title Markets
/// @notice Position ledger of perpetuals and European cash-settled options beside the
///         CollateralVault on one chain. Trades are matched off chain by the venue; its
///         keeper records each account's resulting position here, and the events carry
///         the full new state (absolute, not deltas), so the aggregator's indexer can
///         replay, dedupe and roll them back like vault events.
/// @dev Fixed point: sizes, prices, strikes and funding indexes have 18 decimals.
///      Funding index: cumulative USD per unit of size; a long pays
///      size * (index_now - index_at_entry).
contract Markets is Ownable {
    struct Perp {
        int256 size;
        uint256 entryPrice;
        int256 entryFunding;
    }

    mapping(address keeper => bool) public isKeeper;
    mapping(bytes32 market => bool) public perpListed;
    mapping(bytes32 market => int256) public fundingIndex;
    mapping(address account => mapping(bytes32 market => Perp)) private _perps;
    mapping(address account => mapping(bytes32 seriesId => int256)) public optionOf;

    event KeeperSet(address indexed keeper, bool enabled);
    event PerpListed(bytes32 indexed market);
    event FundingUpdated(bytes32 indexed market, int256 index);
    event PerpPositionChanged(
        address indexed account, bytes32 indexed market, int256 size, uint256 entryPrice, int256 fundingIndex
    );
    event OptionPositionChanged(
        address indexed account,
        bytes32 indexed seriesId,
        bytes32 underlying,
        uint256 strike,
        uint64 expiry,
        bool isCall,
        int256 size
    );

    error NotKeeper(address caller);
    error UnknownMarket(bytes32 market);
    error BadPrice(uint256 price);
    error BadSeries(bytes32 underlying, uint256 strike, uint64 expiry);

    constructor(address owner_) Ownable(owner_) {}

    modifier onlyKeeper() {
        if (!isKeeper[msg.sender]) revert NotKeeper(msg.sender);
        _;
    }

    function setKeeper(address keeper, bool enabled) external onlyOwner {
        isKeeper[keeper] = enabled;
        emit KeeperSet(keeper, enabled);
    }

    function listPerp(bytes32 market) external onlyOwner {
        perpListed[market] = true;
        emit PerpListed(market);
    }

    function updateFunding(bytes32 market, int256 index) external onlyKeeper {
        if (!perpListed[market]) revert UnknownMarket(market);
        fundingIndex[market] = index;
        emit FundingUpdated(market, index);
    }

    /// @notice Record the account's new perp position; the entry funding index is the
    ///         market's current one (the venue settles accrued funding on each trade).
    function setPerpPosition(address account, bytes32 market, int256 size, uint256 entryPrice)
        external
        onlyKeeper
    {
        if (!perpListed[market]) revert UnknownMarket(market);
        if (size != 0 && entryPrice == 0) revert BadPrice(entryPrice);
        int256 f = fundingIndex[market];
        _perps[account][market] = Perp(size, size == 0 ? 0 : entryPrice, f);
        emit PerpPositionChanged(account, market, size, size == 0 ? 0 : entryPrice, f);
    }

    function seriesId(bytes32 underlying, uint256 strike, uint64 expiry, bool isCall)
        public
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(underlying, strike, expiry, isCall));
    }

    /// @notice Record the account's new position (signed contracts) in an option series.
    function setOptionPosition(
        address account,
        bytes32 underlying,
        uint256 strike,
        uint64 expiry,
        bool isCall,
        int256 size
    ) external onlyKeeper {
        if (underlying == bytes32(0) || strike == 0 || expiry == 0) {
            revert BadSeries(underlying, strike, expiry);
        }
        bytes32 id = seriesId(underlying, strike, expiry, isCall);
        optionOf[account][id] = size;
        emit OptionPositionChanged(account, id, underlying, strike, expiry, isCall, size);
    }

    function perpOf(address account, bytes32 market)
        external
        view
        returns (int256 size, uint256 entryPrice, int256 entryFunding)
    {
        Perp memory p = _perps[account][market];
        return (p.size, p.entryPrice, p.entryFunding);
    }
}
