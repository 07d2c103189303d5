"""AttestationRegistry (contracts/AttestationRegistry.sol): anyone attests, only the
attester revokes, once; scores in -10000..10000; expiry in the future; the latest uid
per (attester, subject); events with indexed subject / attester / uid; every revert a
named custom error. Gas of attest / revoke measured and bounded loosely."""

from __future__ import annotations

from typing import Any

from chains.contracts import contract
from tests.contract.conftest import System, events, revert_reason, tx

ZERO = "0x" + "00" * 20


def reg(system: System) -> Any:
    assert system.dep.attestations, "deploy_chain deploys the AttestationRegistry"
    return contract(system.w3, "AttestationRegistry", system.dep.attestations)


def attest(system: System, sender: str, subject: str, score: int, expiry: int) -> Any:
    return tx(reg(system).functions.attest(subject, score, expiry), sender)


def test_attest_stores_emits_and_tracks_the_latest(system: System) -> None:
    r = reg(system)
    attester, other, subject = system.accounts[6], system.accounts[7], system.accounts[2]
    expiry = system.now() + 3600
    rc = attest(system, attester, subject, -2500, expiry)
    (ev,) = events(r, "Attested", rc)
    assert (ev.subject, ev.attester, ev.uid, ev.score, ev.expiry) == (
        subject, attester, 1, -2500, expiry,
    )  # fmt: skip
    block_ts = system.w3.eth.get_block(rc["blockNumber"])["timestamp"]
    a = r.functions.getAttestation(1).call()
    assert tuple(a) == (attester, expiry, -2500, False, subject, block_ts)
    assert r.functions.latestUid(attester, subject).call() == 1
    assert r.functions.isLive(1).call()
    # A second attester and a superseding one: uids in order, latest per pair.
    attest(system, other, subject, 10_000, expiry)
    attest(system, attester, subject, 500, expiry + 10)
    assert r.functions.attestationCount().call() == 3
    assert r.functions.latestUid(attester, subject).call() == 3
    assert r.functions.latestUid(other, subject).call() == 2
    assert r.functions.latestUid(other, attester).call() == 0
    # Topics: subject, attester and uid are indexed (filterable by eth_getLogs).
    log = rc["logs"][0]
    assert len(log["topics"]) == 4
    assert int.from_bytes(log["topics"][1][-20:], "big") == int(subject, 16)


def test_revoke_only_by_its_attester_and_only_once(system: System) -> None:
    r = reg(system)
    attester, subject = system.accounts[6], system.accounts[3]
    attest(system, attester, subject, 9000, system.now() + 3600)
    assert revert_reason(r.functions.revoke(1), subject) == f"NotAttester(1, {subject.lower()})"
    assert revert_reason(r.functions.revoke(1), system.owner).startswith("NotAttester(1,")
    rc = tx(r.functions.revoke(1), attester)
    (ev,) = events(r, "Revoked", rc)
    assert (ev.subject, ev.attester, ev.uid) == (subject, attester, 1)
    assert r.functions.getAttestation(1).call()[3] is True
    assert not r.functions.isLive(1).call()
    assert revert_reason(r.functions.revoke(1), attester) == "AlreadyRevoked(1)"
    # Revoking the latest does not bring an older one back: latestUid still names it.
    assert r.functions.latestUid(attester, subject).call() == 1


def test_reverts(system: System) -> None:
    r = reg(system)
    a, subject = system.accounts[6], system.accounts[2]
    now = system.now()
    assert revert_reason(r.functions.attest(ZERO, 1, now + 60), a) == "ZeroSubject()"
    assert revert_reason(r.functions.attest(subject, 10_001, now + 60), a) == (
        "ScoreOutOfRange(10001)"
    )
    assert revert_reason(r.functions.attest(subject, -10_001, now + 60), a) == (
        "ScoreOutOfRange(-10001)"
    )
    assert revert_reason(r.functions.attest(subject, 0, 1), a).startswith("ExpiryNotInFuture(1,")
    assert revert_reason(r.functions.revoke(0), a) == "UnknownUid(0)"
    assert revert_reason(r.functions.revoke(1), a) == "UnknownUid(1)"
    assert revert_reason(r.functions.getAttestation(1), a) == "UnknownUid(1)"
    # The bounds themselves are accepted.
    attest(system, a, subject, -10_000, now + 60)
    attest(system, a, subject, 10_000, now + 60)
    assert r.functions.attestationCount().call() == 2


def test_expiry_by_block_time(system: System) -> None:
    r = reg(system)
    a, subject = system.accounts[6], system.accounts[4]
    expiry = system.now() + 100
    attest(system, a, subject, 100, expiry)
    assert r.functions.isLive(1).call()
    system.set_next_timestamp(expiry)
    system.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    assert not r.functions.isLive(1).call()  # live while block.timestamp < expiry


def test_gas_of_attest_and_revoke(system: System) -> None:
    """Figures for docs/contracts.md; loose bounds (a layout change that doubles them
    should be noticed, not a tight benchmark)."""
    a, subject = system.accounts[6], system.accounts[5]
    first = attest(system, a, subject, 100, system.now() + 3600)["gasUsed"]
    again = attest(system, a, subject, 200, system.now() + 3600)["gasUsed"]
    revoke = tx(reg(system).functions.revoke(2), a)["gasUsed"]
    print(f"gas: first attest {first}, superseding attest {again}, revoke {revoke}")
    assert 60_000 < first < 140_000
    assert again < first
    assert revoke < 50_000
