"""The keeper key: env or encrypted keystore, never shown anywhere."""

from __future__ import annotations

import copy
import json
import logging
import pickle
from pathlib import Path

import pytest
from eth_account import Account

from aggregator.config import AppConfig, Secrets, parse_config
from chains.pusher.keys import KeeperKey, KeyLoadError, load_keeper_key

KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
ADDRESS = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
BODY = KEY[2:]


def _no_secret(text: str) -> None:
    assert BODY not in text.lower() and BODY[:16] not in text.lower()


def test_env_key_shows_only_its_address(caplog: pytest.LogCaptureFixture) -> None:
    key = load_keeper_key(KEY)
    assert key is not None and key.address == ADDRESS
    for text in (repr(key), str(key), f"{key}", f"{key!r}"):
        assert ADDRESS in text
        _no_secret(text)
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("t").info("key %s %r", key, key)
    _no_secret(caplog.text)
    with pytest.raises(TypeError):
        pickle.dumps(key)
    with pytest.raises(TypeError):
        copy.deepcopy(key)
    assert not hasattr(key, "__dict__")


def test_bad_env_key_error_does_not_quote_it() -> None:
    bad = KEY[:-2] + "zz"
    with pytest.raises(KeyLoadError) as err:
        load_keeper_key(bad)
    assert "AGG_KEEPER_KEY" in str(err.value)
    assert bad[2:20] not in str(err.value) and err.value.__cause__ is None


def test_keystore_with_password_from_env_or_file(tmp_path: Path) -> None:
    ks = tmp_path / "keeper.json"
    ks.write_text(json.dumps(Account.encrypt(KEY, "s3cret", iterations=2)))
    key = load_keeper_key(None, keystore=ks, password_env="KS_PW", env={"KS_PW": "s3cret"})
    assert isinstance(key, KeeperKey) and key.address == ADDRESS
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    key = load_keeper_key(None, keystore=ks, password_file=pw)
    assert key is not None and key.address == ADDRESS
    with pytest.raises(KeyLoadError, match="wrong password") as err:
        load_keeper_key(None, keystore=ks, password_env="KS_PW", env={"KS_PW": "nope"})
    assert "nope" not in str(err.value)
    with pytest.raises(KeyLoadError, match="needs a password"):
        load_keeper_key(None, keystore=ks, password_env="KS_PW", env={})
    with pytest.raises(KeyLoadError, match="exactly one"):
        load_keeper_key(KEY, keystore=ks)
    assert load_keeper_key(None) is None


def test_secrets_and_config_dumps_never_contain_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGG_KEEPER_KEY", KEY)
    s = Secrets()
    assert s.keeper_key is not None and s.keeper_key.get_secret_value() == KEY
    for text in (repr(s), str(s), s.model_dump_json(), str(s.model_dump())):
        _no_secret(text)


def test_pusher_config_keys_validate() -> None:
    base = {
        "chains": [{"name": "a", "chain_id": 1, "rpc_urls": ["http://x"]}],
        "assets": [
            {
                "symbol": "C",
                "decimals": 18,
                "ltv": 0.5,
                "lt": 0.6,
                "sources": [{"name": "h", "kind": "http", "url": "http://p", "path": "a"}],
            }
        ],
    }
    cfg = parse_config({**base, "pusher": {"dry_run": True, "max_in_flight": 2}})
    assert isinstance(cfg, AppConfig) and cfg.pusher.dry_run and cfg.pusher.max_in_flight == 2
    with pytest.raises(Exception, match="unknown key"):
        parse_config({**base, "pusher": {"keeper_addr": "x"}})
    with pytest.raises(Exception, match="fee_bump"):
        parse_config({**base, "pusher": {"fee_bump": 0.05}})
