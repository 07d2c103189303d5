from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from aggregator.cli import main
from aggregator.config import ConfigError, load_config

ADDR = "0x" + "11" * 20
FEED = "0x" + "22" * 20

BASE = textwrap.dedent(
    f"""
    [[chains]]
    name = "alpha"
    chain_id = 71001
    rpc_urls = ["http://127.0.0.1:8545"]

    [[chains]]
    name = "beta"
    chain_id = 71002
    rpc_urls = ["http://127.0.0.1:8546"]

    [[assets]]
    symbol = "USDC"
    decimals = 6
    ltv = 0.8
    lt = 0.85
    tokens = {{ alpha = "{ADDR}" }}

    [[assets.sources]]
    kind = "chainlink"
    name = "cl-alpha"
    chain = "alpha"
    address = "{FEED}"
    """
)


def write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text))
    return [str(p) for p in exc.value.problems]


def test_valid_config_loads_with_checksummed_addresses(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.chain_names == ["alpha", "beta"]
    assert cfg.asset("USDC").tokens["alpha"] == "0x1111111111111111111111111111111111111111"
    assert cfg.risk.z == 2.33 and cfg.risk.ewma_lambda == 0.94


def test_empty_rpc_urls_is_named_by_toml_path(tmp_path: Path) -> None:
    text = BASE.replace('rpc_urls = ["http://127.0.0.1:8546"]', "rpc_urls = []")
    assert "chains[1].rpc_urls: must not be empty" in problems(tmp_path, text)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = (
        BASE.replace('rpc_urls = ["http://127.0.0.1:8546"]', "rpc_urls = []")
        .replace("decimals = 6", "decimals = 6\ncolour = 'blue'")
        .replace(f'address = "{FEED}"', 'address = "0x1234"')
    )
    got = problems(tmp_path, text)
    assert "chains[1].rpc_urls: must not be empty" in got
    assert "assets[0].colour: unknown key (not allowed here)" in got
    assert any(p.startswith("assets[0].sources[0].address") for p in got), got


def test_unknown_chain_references_are_errors(tmp_path: Path) -> None:
    text = BASE.replace('tokens = { alpha = "', 'tokens = { gamma = "').replace(
        'chain = "alpha"', 'chain = "delta"'
    )
    got = problems(tmp_path, text)
    assert "assets[0].tokens.gamma: unknown chain 'gamma'" in got
    assert "assets[0].sources[0].chain: unknown chain 'delta'" in got


def test_duplicate_chain_ids_and_bad_caps(tmp_path: Path) -> None:
    text = BASE.replace("chain_id = 71002", "chain_id = 71001")
    assert "chains[1]: duplicate chain_id 71001" in problems(tmp_path, text)
    got = problems(tmp_path, BASE.replace("lt = 0.85", "lt = 0.5"))
    assert got == ["assets[0]: lt (0.5) must be >= ltv (0.8)"]


def test_secrets_in_toml_are_refused(tmp_path: Path) -> None:
    got = problems(tmp_path, BASE + '\n[pusher]\nkeeper_key = "0xabc"\n')
    assert got == ["pusher.keeper_key: secrets are read from the environment only (AGG_KEEPER_KEY)"]


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    assert any("not valid TOML" in p for p in problems(tmp_path, "[[chains]\nname="))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_include_merges_by_name_and_reports_missing_file(tmp_path: Path) -> None:
    write(
        tmp_path,
        textwrap.dedent(
            """
            [[chains]]
            name = "beta"
            rpc_urls = ["http://127.0.0.1:9999"]
            [chains.contracts]
            vault = "0x3333333333333333333333333333333333333333"
            """
        ),
        "generated.toml",
    )
    cfg = load_config(write(tmp_path, 'include = ["generated.toml"]\n' + BASE))
    beta = cfg.chain("beta")
    assert beta.rpc_urls == ["http://127.0.0.1:9999"] and beta.chain_id == 71002
    assert beta.contracts.vault == "0x3333333333333333333333333333333333333333"
    got = problems(tmp_path, 'include = ["devnet/missing.toml"]\n' + BASE)
    assert len(got) == 1 and got[0].startswith("include[0]: file not found")
    assert "aggregator devnet up" in got[0]


def test_env_overrides_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGG_API__PORT", "9123")
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.api.port == 9123


def test_config_check_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, BASE)
    assert main(["config", "check", str(good)]) == 0
    assert "config OK: 2 chains" in capsys.readouterr().out
    bad = write(tmp_path, BASE.replace('rpc_urls = ["http://127.0.0.1:8546"]', "rpc_urls = []"))
    assert main(["config", "check", str(bad)]) == 2
    assert "chains[1].rpc_urls: must not be empty" in capsys.readouterr().err


def test_daemon_refuses_invalid_config(tmp_path: Path) -> None:
    bad = write(tmp_path, BASE.replace("chain_id = 71001", "chain_id = -1"))
    proc = subprocess.run(
        [sys.executable, "-m", "aggregator.cli", "-c", str(bad), "run"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "chains[0].chain_id" in proc.stderr
