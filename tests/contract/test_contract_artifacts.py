"""Committed artifacts match the sources: build.js --check, staleness detection, and a
full recompile compared byte for byte."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from chains.contracts import ArtifactError, load_artifact

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "contracts" / "build.js"
ARTIFACTS = ROOT / "contracts" / "artifacts"
EXPECTED = {
    "HealthRegistry",
    "CollateralVault",
    "MockERC20",
    "MockWstETH",
    "MockRETH",
    "MockCbETH",
    "MockERC4626Vault",
    "Multicall3",
    "MockV3Aggregator",
}


def node() -> str:
    path = shutil.which("node")
    if path is None:
        pytest.fail("node is not on PATH; the artifact checks need it (npm ci / make setup)")
    return path


def run_build(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [node(), str(script), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_committed_artifacts_are_up_to_date() -> None:
    result = run_build(BUILD, "--check")
    assert result.returncode == 0, result.stderr


def test_every_spec_contract_has_an_artifact() -> None:
    for name in EXPECTED:
        art = load_artifact(name)
        assert art.bytecode.startswith("0x") and len(art.bytecode) > 2, name
        assert art.deployed_bytecode.startswith("0x") and len(art.deployed_bytecode) > 2, name
        assert len(art.source_hash) == 64, name


def test_unknown_artifact_is_a_clear_error() -> None:
    with pytest.raises(ArtifactError, match="NoSuchContract"):
        load_artifact("NoSuchContract")


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """A copy of contracts/ next to a link to the real node_modules, safe to tamper with."""
    shutil.copytree(ROOT / "contracts", tmp_path / "contracts")
    (tmp_path / "node_modules").symlink_to(ROOT / "node_modules")
    return tmp_path


def test_check_names_each_stale_artifact(sandbox: Path) -> None:
    src = sandbox / "contracts" / "HealthRegistry.sol"
    src.write_text(src.read_text() + "\n// changed\n")
    result = run_build(sandbox / "contracts" / "build.js", "--check")
    assert result.returncode == 1
    assert "HealthRegistry: stale" in result.stderr
    # The vault imports only the interface, not HealthRegistry.sol: it stays valid.
    assert "CollateralVault" not in result.stderr


def test_check_follows_imports(sandbox: Path) -> None:
    iface = sandbox / "contracts" / "IHealthRegistry.sol"
    iface.write_text(iface.read_text() + "\n// changed\n")
    result = run_build(sandbox / "contracts" / "build.js", "--check")
    assert result.returncode == 1
    assert "CollateralVault: stale" in result.stderr
    assert "HealthRegistry:" not in result.stderr


def test_check_reports_new_sources_and_missing_artifacts(sandbox: Path) -> None:
    (sandbox / "contracts" / "Extra.sol").write_text(
        "// SPDX-License-Identifier: MIT\npragma solidity ^0.8.24;\ncontract Extra {}\n"
    )
    (sandbox / "contracts" / "artifacts" / "MockRETH.json").unlink()
    result = run_build(sandbox / "contracts" / "build.js", "--check")
    assert result.returncode == 1
    assert "contracts/Extra.sol: new source, never built" in result.stderr
    assert "MockRETH: artifact missing" in result.stderr


def test_recompile_reproduces_committed_artifacts(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_build(BUILD, "--out", str(out))
    assert result.returncode == 0, result.stderr
    fresh = {p.name for p in out.glob("*.json")}
    committed = {p.name for p in ARTIFACTS.glob("*.json")}
    assert fresh == committed
    for name in sorted(committed):
        a = json.loads((ARTIFACTS / name).read_text())
        b = json.loads((out / name).read_text())
        assert a == b, f"{name} differs from a fresh compile; run node contracts/build.js"
