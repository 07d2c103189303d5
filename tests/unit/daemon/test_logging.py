"""aggregator.logging: JSON lines off a TTY, text on one, and secrets scrubbed everywhere."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from aggregator import logging as agg_logging

KEY = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
TOKEN = "s3cret-admin-token-value"
TX = "0x" + "ab" * 32


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    agg_logging.clear_secrets()


def _setup(stream: io.StringIO, **kw: object) -> logging.Logger:
    agg_logging.setup_logging(stream=stream, secrets=["0x" + KEY, TOKEN], **kw)  # type: ignore[arg-type]
    return logging.getLogger("aggregator.test")


def test_json_lines_when_not_a_tty_with_extra_fields(restore_logging: None) -> None:
    out = io.StringIO()
    log = _setup(out)
    log.info("push landed on %s", "beta", extra={"chain": "beta", "account": "0xAb", "tx_hash": TX})
    rec = json.loads(out.getvalue().strip())
    assert rec["level"] == "info" and rec["logger"] == "aggregator.test"
    assert rec["msg"] == "push landed on beta"
    assert (rec["chain"], rec["account"], rec["tx_hash"]) == ("beta", "0xAb", TX)
    assert rec["ts"].endswith("Z")


def test_text_on_a_tty(restore_logging: None) -> None:
    out = _Tty()
    log = _setup(out)
    log.warning("chain %s lagging", "alpha", extra={"chain": "alpha"})
    line = out.getvalue().strip()
    assert "WARNING aggregator.test: chain alpha lagging" in line
    assert line.endswith("[chain=alpha]")
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_env_forces_the_format(restore_logging: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGG_LOG_FORMAT", "text")
    out = io.StringIO()
    _setup(out).info("hello")
    assert "INFO  aggregator.test: hello" in out.getvalue()


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_secrets_scrubbed_from_message_args_exception_and_fields(
    restore_logging: None, fmt: str
) -> None:
    out = io.StringIO()
    log = _setup(out, json_format=fmt == "json")
    log.info("key is %s", KEY)  # in args, without 0x
    log.info(f"key is 0x{KEY} token {TOKEN}")  # in the message itself
    log.info("loaded", extra={"keeper": {"key": "0x" + KEY}, "account": TOKEN})
    other = "9" * 64  # any 32-byte hex is taken for a key, not only the configured one
    log.info("raw %s", other)
    try:
        raise ValueError(f"signing with {KEY} failed")
    except ValueError:
        log.exception("send failed for token %s", TOKEN)
    log.info("sent", extra={"tx_hash": TX, "chain": "beta"})
    log.info("bytes key", extra={"raw": bytes.fromhex(KEY)})
    text = out.getvalue()
    assert KEY not in text and KEY.upper() not in text
    assert TOKEN not in text
    assert other not in text
    assert text.count(agg_logging.REDACTED) >= 7
    assert "ValueError" in text  # the exception is kept, only the secret goes
    # A hash in its own field survives; the same shape in a message does not.
    assert TX in text
    log.info("sent %s", TX)
    assert out.getvalue().count(TX) == 1


def test_configured_secret_is_scrubbed_even_from_hash_fields(restore_logging: None) -> None:
    out = io.StringIO()
    log = _setup(out)
    log.info("oops", extra={"tx_hash": "0x" + KEY})
    assert KEY not in out.getvalue()


def test_library_loggers_and_short_values(restore_logging: None) -> None:
    out = io.StringIO()
    agg_logging.setup_logging(stream=out, secrets=["1", None, ""])
    logging.getLogger("web3.providers").warning("provider said 1 and %s", KEY)
    text = out.getvalue()
    assert "provider said 1" in text  # a 1-char "secret" does not blank every "1"
    assert KEY not in text


def test_bad_format_string_keeps_the_record(restore_logging: None) -> None:
    out = io.StringIO()
    log = _setup(out)
    log.info("two %s %s", KEY)  # noqa: PLE1206 - the broken call is the test
    assert "two" in out.getvalue() and KEY not in out.getvalue()
