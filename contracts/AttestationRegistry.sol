// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title AttestationRegistry
/// @notice EAS-style reputation attestations: an attester states a score about a subject
///         account, valid until an expiry, revocable by that attester only.
/// @dev Permissionless on purpose: anyone may attest. Which attesters *count* is the
///      daemon's decision (its allow-list, [reputation.attestation] attesters), never the
///      contract's, so a new attester needs no on-chain governance and a rogue one is
///      dropped by configuration alone.
///
///      score: signed basis points, SCORE_MIN (-10000, worst) .. SCORE_MAX (+10000, best);
///      0 = no opinion. expiry: unix seconds, compared with block.timestamp; an
///      attestation is live while block.timestamp < expiry and it is not revoked.
///      uid: 1, 2, 3, ... in attestation order on this chain (0 = none). A new
///      attestation by the same attester about the same subject supersedes the previous
///      one (latestUid); revoking the latest does not bring an older one back.
///
///      Storage: two slots per attestation (attester | expiry | score | revoked, then
///      subject | attestedAt) plus the latestUid slot.
contract AttestationRegistry {
    int16 public constant SCORE_MIN = -10000;
    int16 public constant SCORE_MAX = 10000;

    struct Attestation {
        address attester;
        uint64 expiry;
        int16 score;
        bool revoked;
        address subject;
        uint64 attestedAt;
    }

    uint256 public attestationCount;
    mapping(uint256 uid => Attestation) private _attestations;
    mapping(address attester => mapping(address subject => uint256 uid)) public latestUid;

    event Attested(
        address indexed subject, address indexed attester, uint256 indexed uid, int16 score, uint64 expiry
    );
    event Revoked(address indexed subject, address indexed attester, uint256 indexed uid);

    error ZeroSubject();
    error ScoreOutOfRange(int16 score);
    error ExpiryNotInFuture(uint64 expiry, uint256 nowTs);
    error UnknownUid(uint256 uid);
    error NotAttester(uint256 uid, address caller);
    error AlreadyRevoked(uint256 uid);

    /// @notice State `score` about `subject` until `expiry`; returns the new uid.
    function attest(address subject, int16 score, uint64 expiry) external returns (uint256 uid) {
        if (subject == address(0)) revert ZeroSubject();
        if (score < SCORE_MIN || score > SCORE_MAX) revert ScoreOutOfRange(score);
        if (expiry <= block.timestamp) revert ExpiryNotInFuture(expiry, block.timestamp);
        uid = ++attestationCount;
        _attestations[uid] = Attestation({
            attester: msg.sender,
            expiry: expiry,
            score: score,
            revoked: false,
            subject: subject,
            attestedAt: uint64(block.timestamp)
        });
        latestUid[msg.sender][subject] = uid;
        emit Attested(subject, msg.sender, uid, score, expiry);
    }

    /// @notice Withdraw attestation `uid`; only its attester may, and only once.
    function revoke(uint256 uid) external {
        Attestation storage a = _attested(uid);
        if (a.attester != msg.sender) revert NotAttester(uid, msg.sender);
        if (a.revoked) revert AlreadyRevoked(uid);
        a.revoked = true;
        emit Revoked(a.subject, msg.sender, uid);
    }

    function getAttestation(uint256 uid) external view returns (Attestation memory) {
        return _attested(uid);
    }

    /// @notice Live: exists, not revoked, block.timestamp < expiry.
    function isLive(uint256 uid) external view returns (bool) {
        Attestation storage a = _attested(uid);
        return !a.revoked && block.timestamp < a.expiry;
    }

    function _attested(uint256 uid) private view returns (Attestation storage a) {
        if (uid == 0 || uid > attestationCount) revert UnknownUid(uid);
        a = _attestations[uid];
    }
}
