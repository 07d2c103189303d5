"""Compiled contract artifacts (contracts/artifacts/<Name>.json) and small deploy helpers.

`load_artifact` is what the indexer, pusher and oracles use to get ABIs; the deploy
helpers are for tests and the devnet (anvil's unlocked dev accounts send the
transactions, so no key handling happens here).
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eth_utils import to_checksum_address

if TYPE_CHECKING:
    # Annotations only: importing web3 (and through it eth_account and py_ecc, ~0.5 s of
    # CPU) would put it on the daemon's start-up path, which only needs the ABIs.
    from web3 import AsyncWeb3, Web3

MULTICALL3_ADDRESS = "0xcA11bde05977b3631167028862bE2a173976CA11"

_REPO_ARTIFACTS = Path(__file__).resolve().parents[1] / "contracts" / "artifacts"
# An installed wheel carries the artifacts inside the package (see pyproject force-include).
_PACKAGED_ARTIFACTS = Path(__file__).resolve().parent / "_artifacts"


class ArtifactError(RuntimeError):
    pass


class DeployError(RuntimeError):
    pass


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    source_hash: str


def artifacts_dir() -> Path:
    for candidate in (_REPO_ARTIFACTS, _PACKAGED_ARTIFACTS):
        if candidate.is_dir():
            return candidate
    raise ArtifactError(
        f"no contract artifacts at {_REPO_ARTIFACTS}; run `node contracts/build.js`"
    )


@cache
def load_artifact(name: str) -> Artifact:
    """The compiled ABI and bytecode of contract `name` (cached per process)."""
    path = artifacts_dir() / f"{name}.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(
            f"no artifact for contract {name!r} at {path}; run `node contracts/build.js`"
        ) from None
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"artifact {path} is not valid JSON: {exc}") from None
    for key in ("abi", "bytecode", "deployedBytecode", "sourceHash"):
        if key not in data:
            raise ArtifactError(f"artifact {path} lacks {key!r}; rebuild it")
    return Artifact(
        name=name,
        abi=data["abi"],
        bytecode=data["bytecode"],
        deployed_bytecode=data["deployedBytecode"],
        source_hash=data["sourceHash"],
    )


def _rpc(url: str, method: str, params: list[Any], timeout: float = 10) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    req = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        answer = json.loads(resp.read())
    if "error" in answer:
        raise DeployError(f"{method} failed on {url}: {answer['error']}")
    return answer["result"]


def install_multicall(rpc_url: str) -> str:
    """Place Multicall3's runtime code at the canonical address on an anvil node.

    Only works on nodes that expose anvil_setCode (anvil, hardhat); returns the address.
    """
    code = load_artifact("Multicall3").deployed_bytecode
    _rpc(rpc_url, "anvil_setCode", [MULTICALL3_ADDRESS, code])
    got = _rpc(rpc_url, "eth_getCode", [MULTICALL3_ADDRESS, "latest"])
    if str(got).lower() != code.lower():
        raise DeployError(f"Multicall3 code did not stick at {MULTICALL3_ADDRESS} on {rpc_url}")
    return MULTICALL3_ADDRESS


def _check_receipt(name: str, receipt: Any) -> str:
    if receipt["status"] != 1 or not receipt.get("contractAddress"):
        raise DeployError(
            f"deploying {name} failed in tx {receipt['transactionHash'].hex()} "
            f"(status {receipt['status']})"
        )
    return to_checksum_address(receipt["contractAddress"])


def deploy(w3: Web3, name: str, *args: Any, sender: str) -> str:
    """Deploy artifact `name` with constructor `args` from unlocked `sender`; returns address."""
    art = load_artifact(name)
    factory = w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
    tx = factory.constructor(*args).transact({"from": to_checksum_address(sender)})
    return _check_receipt(name, w3.eth.wait_for_transaction_receipt(tx, timeout=30))


async def async_deploy(w3: AsyncWeb3[Any], name: str, *args: Any, sender: str) -> str:
    """Async twin of `deploy`."""
    art = load_artifact(name)
    factory = w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
    tx = await factory.constructor(*args).transact({"from": to_checksum_address(sender)})
    return _check_receipt(name, await w3.eth.wait_for_transaction_receipt(tx, timeout=30))


def contract(w3: Web3, name: str, address: str) -> Any:
    """A web3 contract object for artifact `name` at `address`."""
    return w3.eth.contract(address=to_checksum_address(address), abi=load_artifact(name).abi)


def async_contract(w3: AsyncWeb3[Any], name: str, address: str) -> Any:
    return w3.eth.contract(address=to_checksum_address(address), abi=load_artifact(name).abi)


@cache
def _error_selectors() -> dict[bytes, tuple[str, list[str]]]:
    from eth_utils import function_signature_to_4byte_selector

    out: dict[bytes, tuple[str, list[str]]] = {}
    for path in sorted(artifacts_dir().glob("*.json")):
        if path.name == "index.json":
            continue
        for item in load_artifact(path.stem).abi:
            if item.get("type") != "error":
                continue
            types = [i["type"] for i in item["inputs"]]
            sig = f"{item['name']}({','.join(types)})"
            out[function_signature_to_4byte_selector(sig)] = (item["name"], types)
    return out


def decode_error(data: str | bytes) -> str:
    """Render revert data of any of our contracts' custom errors, e.g. 'Stale(0xAb..)'.

    Unknown data is returned as hex, so the caller can always show something."""
    from eth_abi import decode

    raw = bytes.fromhex(data.removeprefix("0x")) if isinstance(data, str) else data
    known = _error_selectors().get(raw[:4])
    if known is None:
        return "0x" + raw.hex()
    name, types = known
    try:
        args = decode(types, raw[4:])
    except Exception:
        return f"{name}(<undecodable 0x{raw[4:].hex()}>)"
    # bytes32 (a claim id) as 0x hex, as explorers and our logs show it, not b'...'.
    shown = ("0x" + a.hex() if isinstance(a, bytes) else str(a) for a in args)
    return f"{name}({', '.join(shown)})"
