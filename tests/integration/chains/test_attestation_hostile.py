"""The AttestationRegistry reader (chains/attestations.py) through the real RpcClient,
anvil and a fault proxy: a node that lies about the registry's state but not the
Multicall3 sentinel (malformed records) is an AttestationReadError naming the chain,
the last good snapshot is kept, and the next honest answer is read normally; a wrong
address in the config is an AttestationConfigError naming the field."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from chains.attestations import (
    AttestationConfigError,
    AttestationReader,
    AttestationReadError,
)
from chains.contracts import contract, deploy, install_multicall
from chains.rpc import RpcClient
from chains.types import ChainSettings
from devkit.anvil import AnvilNode, rpc_call
from devkit.deploy import send, web3_session
from devkit.testing.faultproxy import FaultProxy


def _bad_bool(items: list[tuple[bool, bytes]]) -> list[tuple[bool, bytes]]:
    """Every 192-byte sub-result (a getAttestation record) gets revoked = 2."""
    out = []
    for ok, ret in items:
        bad = ret[:96] + (2).to_bytes(32, "big") + ret[128:] if ok and len(ret) == 192 else ret
        out.append((ok, bad))
    return out


async def test_a_lying_registry_answer_names_the_chain_and_keeps_the_snapshot(
    anvil_factory: Callable[..., AnvilNode],
    proxies: Callable[..., Awaitable[FaultProxy]],
    client_for: Callable[..., RpcClient],
) -> None:
    node = anvil_factory(71009)
    install_multicall(node.url)
    with web3_session(node.url) as w3:
        registry = deploy(w3, "AttestationRegistry", sender=w3.eth.accounts[9])
        reg = contract(w3, "AttestationRegistry", registry)
        attester, subject = w3.eth.accounts[6], w3.eth.accounts[2]
        expiry = int(w3.eth.get_block("latest")["timestamp"]) + 3600
        send(w3, reg.functions.attest(subject, -3000, expiry), attester, "attest")
    for _ in range(3):
        rpc_call(node.url, "evm_mine")
    proxy = await proxies(node.url)
    s = ChainSettings(name="c", chain_id=71009, rpc_urls=(proxy.url,), confirmations=2,
                      rpc_timeout_s=2.0)  # fmt: skip
    client = client_for(s, backoff_base_s=0.01, backoff_max_s=0.05, health_interval_s=3600)
    await client.connect()

    def reader(address: str) -> AttestationReader:
        return AttestationReader(
            client,
            "c",
            address,
            attesters=frozenset({attester.lower()}),
            confirmations=2,
            field="chains[0].contracts.attestations",
        )

    r = reader(registry)
    await r.validate()
    good = await r.step()
    assert good is not None and [x.score_bps for x in good.records.values()] == [-3000]

    with web3_session(node.url) as w3:
        send(w3, contract(w3, "AttestationRegistry", registry).functions.attest(
            subject, 500, expiry), attester, "attest again")  # fmt: skip
    for _ in range(3):
        rpc_call(node.url, "evm_mine")
    proxy.set(forge_call=_bad_bool)
    with pytest.raises(AttestationReadError, match=r"chain 'c'.*getAttestation\(\d\) malformed"):
        await r.step()
    assert r.snapshot is good
    proxy.set(forge_call=None)
    fresh = await r.step()
    assert fresh is not None and sorted(x.score_bps for x in fresh.records.values()) == [-3000, 500]

    # The config names an address that is not a registry: the vault-less EOA, Multicall3.
    for wrong, why in ((attester, "no contract code"), (client.multicall, "not an Attestation")):
        with pytest.raises(AttestationConfigError, match=rf"chains\[0\]\.contracts.*{why}"):
            await reader(wrong).validate()
