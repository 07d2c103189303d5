"""The keeper key: from an environment variable or an encrypted JSON keystore.

`KeeperKey` holds the key and shows only its address and its signatures (of a
transaction, or of EIP-712 typed data: the cross-chain seize vouchers, chains/claims.py):
repr/str, logs, errors, the API and config dumps never contain it, and it refuses to be
pickled or copied into a dict. Errors while loading name the source (variable or file),
never the value.
`eth_account` is imported when a key is loaded, not with this module: its import
(py_ecc's pairing tables, ~0.45 s of CPU) would otherwise be on every start-up path,
including daemons that push nothing (docs/performance.md "Start-up").
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from eth_utils import keccak

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount


def _account() -> Any:
    from eth_account import Account

    return Account


class KeyLoadError(Exception):
    """The key could not be loaded; the message never contains key material."""


class KeeperKey:
    __slots__ = ("_account", "address")

    def __init__(self, account: LocalAccount) -> None:
        self._account = account
        self.address: str = account.address

    def sign(self, tx: dict[str, Any]) -> tuple[bytes, str]:
        """Sign an EIP-1559 transaction dict; returns (raw bytes, 0x hash)."""
        signed = self._account.sign_transaction(tx)
        raw = bytes(signed.raw_transaction)
        return raw, "0x" + keccak(raw).hex()

    def sign_typed_data(self, full_message: dict[str, Any]) -> str:
        """Sign EIP-712 typed data (eth_account's `full_message` form: types, primaryType,
        domain, message); returns only the 65-byte signature r || s || v as 0x hex."""
        signed = self._account.sign_typed_data(full_message=full_message)
        return "0x" + bytes(signed.signature).hex()

    def __repr__(self) -> str:
        return f"KeeperKey(address={self.address})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("KeeperKey cannot be pickled")

    def __copy__(self) -> NoReturn:
        raise TypeError("KeeperKey cannot be copied")

    def __deepcopy__(self, memo: Any) -> NoReturn:
        raise TypeError("KeeperKey cannot be copied")


def key_from_hex(secret: str, source: str) -> KeeperKey:
    value = secret.strip()
    account = _account()
    try:
        return KeeperKey(account.from_key(value))
    except Exception:
        # `from None`: the original exception may quote the value.
        raise KeyLoadError(
            f"{source} is not a valid private key (expected 32 bytes as 64 hex digits)"
        ) from None


def key_from_keystore(path: Path, password: str) -> KeeperKey:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise KeyLoadError(f"keystore file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise KeyLoadError(f"keystore {path} is not readable JSON: {type(exc).__name__}") from None
    account = _account()
    try:
        secret = account.decrypt(data, password)
    except ValueError:
        raise KeyLoadError(f"keystore {path}: wrong password or corrupt keystore") from None
    except Exception as exc:
        raise KeyLoadError(f"keystore {path}: cannot decrypt ({type(exc).__name__})") from None
    return KeeperKey(account.from_key(secret))


def load_keeper_key(
    env_secret: str | None,
    *,
    keystore: str | Path | None = None,
    password_env: str | None = None,
    password_file: str | Path | None = None,
    env: dict[str, str] | None = None,
) -> KeeperKey | None:
    """The key from `env_secret` (AGG_KEEPER_KEY), else from `keystore` decrypted with
    the password in env var `password_env` or in `password_file`. None when neither is
    configured. Both configured is an error: which one signs must not be a guess."""
    environ = os.environ if env is None else env
    if env_secret and keystore:
        raise KeyLoadError(
            "both AGG_KEEPER_KEY and pusher.keystore_path are set; configure exactly one"
        )
    if env_secret:
        return key_from_hex(env_secret, "AGG_KEEPER_KEY")
    if keystore is None:
        return None
    password: str | None = None
    if password_file is not None:
        try:
            password = Path(password_file).read_text().rstrip("\r\n")
        except OSError as exc:
            raise KeyLoadError(
                f"keystore password file {password_file}: {type(exc).__name__}"
            ) from None
    elif password_env:
        password = environ.get(password_env)
    if password is None:
        raise KeyLoadError(
            f"keystore {keystore} needs a password: set {password_env or 'a password env var'} "
            "or pusher.keystore_password_file"
        )
    return key_from_keystore(Path(keystore), password)
