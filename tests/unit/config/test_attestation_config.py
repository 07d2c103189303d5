"""`[reputation.attestation]` and `chains[i].contracts.attestations`: validation errors
name the field."""

from __future__ import annotations

from pathlib import Path

from test_config import BASE, problems, write  # type: ignore[import-not-found]

from aggregator.config import load_config

REG = "0x" + "44" * 20
ATTESTER = "0x" + "ab" * 20


def with_registry(text: str, address: str = REG) -> str:
    return text.replace(
        'rpc_urls = ["http://127.0.0.1:8546"]\n',
        f'rpc_urls = ["http://127.0.0.1:8546"]\ncontracts = {{ attestations = "{address}" }}\n',
    )


def test_attestation_input_loads(tmp_path: Path) -> None:
    text = with_registry(BASE) + (
        f'\n[reputation]\nenabled = true\n[reputation.attestation]\nattesters = ["{ATTESTER}"]\n'
        "bonus = 0.02\npenalty = 0.5\n"
    )
    cfg = load_config(write(tmp_path, text))
    assert cfg.chain("beta").contracts.attestations == "0x4444444444444444444444444444444444444444"
    att = cfg.reputation.attestation
    assert [a.lower() for a in att.attesters] == [ATTESTER] and (att.bonus, att.penalty) == (
        0.02, 0.5,
    )  # fmt: skip
    # Off by default: no attesters, the defaults.
    assert load_config(write(tmp_path, BASE)).reputation.attestation.attesters == []


def test_bad_addresses_and_bounds_name_the_field(tmp_path: Path) -> None:
    assert problems(tmp_path, with_registry(BASE, "0x12")) == [
        "chains[1].contracts.attestations: not a valid 20-byte hex address: '0x12'"
    ]
    section = "\n[reputation.attestation]\n"
    out = problems(tmp_path, with_registry(BASE) + section + 'attesters = ["nope"]\n')
    assert out == ["reputation.attestation.attesters[0]: not a valid 20-byte hex address: 'nope'"]
    for key, value in (("bonus", "1.5"), ("penalty", "-1"), ("weight", "1")):
        out = problems(tmp_path, with_registry(BASE) + section + f"{key} = {value}\n")
        assert any(p.startswith(f"reputation.attestation.{key}") for p in out), (key, out)


def test_attesters_without_a_registry_and_duplicates_are_errors(tmp_path: Path) -> None:
    upper = "0x" + ATTESTER[2:].upper()
    att = f'\n[reputation.attestation]\nattesters = ["{ATTESTER}", "{upper}"]\n'
    out = problems(tmp_path, BASE + att)
    assert any(p.startswith("reputation.attestation.attesters: attesters listed but no chain")
               for p in out), out  # fmt: skip
    assert any("duplicate attester" in p for p in out), out
