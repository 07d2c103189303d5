"""The daemon's start-up path does not import web3 or eth_account (with py_ecc's
pairing tables, ~0.5 s of CPU at every start: docs/performance.md "Start-up"): the
ABIs come from the artifacts, and the keeper key's library is imported when a key is
loaded (chains/pusher/keys.py). Nor scipy.special and scipy.sparse (with scipy's
array-API layer, 0.2-0.3 s): the first quantile, option value or exposure imports
them (risk/var.py `ndtri`, risk/portfolio.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

HEAVY = ("web3", "eth_account", "py_ecc", "scipy.special", "scipy.sparse")


def _loaded_after(code: str) -> dict[str, bool]:
    report = f"print(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    probe = f"{code}\nimport json, sys\n{report}"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True,
        env={**os.environ}, timeout=120,
    )  # fmt: skip
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_importing_the_daemon_leaves_web3_and_eth_account_out() -> None:
    assert _loaded_after("import aggregator.daemon") == dict.fromkeys(HEAVY, False)


def test_loading_a_keeper_key_imports_eth_account() -> None:
    code = (
        "from chains.pusher.keys import key_from_hex\n"
        "k = key_from_hex('0x' + '11' * 32, 'TEST_KEY')\n"
        "assert k.address.startswith('0x')"
    )
    assert _loaded_after(code)["eth_account"] is True


def test_the_first_quantile_imports_scipy_special() -> None:
    code = "from aggregator.risk.var import z_of\nassert abs(z_of(0.99) - 2.3263478740) < 1e-9"
    assert _loaded_after(code)["scipy.special"] is True
