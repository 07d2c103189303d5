"""Structured logs: JSON lines when stderr is not a terminal, readable lines when it is.

Context goes in `extra` fields, not in the message, so log shippers can index it:

    log.info("push landed", extra={"chain": "beta", "account": addr, "tx_hash": h})

Every record passes a redaction filter on the handler (so records from any logger,
ours or a library's, are covered) that scrubs, in the message, its arguments, the
exception and stack text and every extra field:

- the configured secrets' exact values (AGG_KEEPER_KEY, AGG_ADMIN_TOKEN, the env
  variables HTTP price sources read their API keys from, and any value registered
  with `add_secret`, e.g. a key decrypted from a keystore at run time);
- anything shaped like a 32-byte hex private key (64 hex digits, with or without 0x).

A transaction or block hash has the same shape as a private key, so the shape rule
cannot tell them apart: hashes survive only in fields named for them (`tx_hash`,
`block_hash`, `payload_hash`, `hashes`). Exact secret values are scrubbed there too.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
import traceback
from collections.abc import Iterable
from typing import IO, Any

REDACTED = "[REDACTED]"
# 64 hex digits not inside a longer hex run: a private key, or something shaped like one.
KEY_SHAPE = re.compile(r"(?<![0-9a-fA-F])(?:0[xX])?[0-9a-fA-F]{64}(?![0-9a-fA-F])")
HASH_FIELDS = frozenset({"tx_hash", "block_hash", "payload_hash", "hashes"})
# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
# Secrets shorter than this are not scrubbed by value: replacing every "1" in the log
# because a test token is "1" would make logs useless and protects nothing.
MIN_SECRET_LEN = 6
NOISY = ("web3", "urllib3", "asyncio", "apscheduler", "aiosqlite", "alembic", "hypothesis")

_secrets: set[str] = set()


def add_secret(value: str | None) -> None:
    """Scrub this exact value (and its 0x-less / 0x form) from every log record."""
    if not value or len(value) < MIN_SECRET_LEN:
        return
    _secrets.add(value)
    if value[:2] in ("0x", "0X") and len(value) - 2 >= MIN_SECRET_LEN:
        _secrets.add(value[2:])
    elif re.fullmatch(r"[0-9a-fA-F]+", value):
        _secrets.add("0x" + value)


def clear_secrets() -> None:
    _secrets.clear()


def redact(text: str, *, keep_hashes: bool = False) -> str:
    # Longest first: "0xabc.." before "abc..", so no "0x[REDACTED]" half-scrubs.
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    if not keep_hashes:
        text = KEY_SHAPE.sub(REDACTED, text)
    return text


def _redact_value(value: Any, keep_hashes: bool) -> Any:
    if isinstance(value, str):
        return redact(value, keep_hashes=keep_hashes)
    if isinstance(value, bytes | bytearray):
        return redact(value.hex(), keep_hashes=keep_hashes)
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(v, keep_hashes) for v in value]
    if isinstance(value, dict):
        return {str(k): _redact_value(v, keep_hashes) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float):
        return value
    # Anything else would be str()-ed by the formatter: scrub what it would print.
    return redact(str(value), keep_hashes=keep_hashes)


class RedactFilter(logging.Filter):
    """Rewrites the record in place: the message is rendered (args merged) and scrubbed,
    exception and stack text are rendered and scrubbed, extra fields are scrubbed."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            message = f"{record.msg!r} % {record.args!r}"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key in extra_fields(record):
            setattr(record, key, _redact_value(getattr(record, key), key in HASH_FIELDS))
        return True


def extra_fields(record: logging.LogRecord) -> list[str]:
    return [k for k in record.__dict__ if k not in _STANDARD and not k.startswith("_")]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the extra fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in extra_fields(record):
            out.setdefault(key, getattr(record, key))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The human format, with extra fields appended as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-5s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = " ".join(f"{k}={getattr(record, k)}" for k in extra_fields(record))
        if not extras:
            return line
        head, sep, tail = line.partition("\n")
        return f"{head}  [{extras}]{sep}{tail}"


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def setup_logging(
    verbose: bool = False,
    *,
    json_format: bool | None = None,
    stream: IO[str] | None = None,
    secrets: Iterable[str | None] = (),
) -> logging.Handler:
    """Replace the root handlers with one redacting handler on `stream` (stderr).

    json_format None: JSON unless the stream is a terminal; AGG_LOG_FORMAT=json|text
    overrides that (e.g. text in a terminal multiplexer that is not a TTY)."""
    stream = stream if stream is not None else sys.stderr
    if json_format is None:
        forced = os.environ.get("AGG_LOG_FORMAT", "").lower()
        if forced in ("json", "text"):
            json_format = forced == "json"
        else:
            json_format = not (hasattr(stream, "isatty") and stream.isatty())
    for value in secrets:
        add_secret(value)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if json_format else TextFormatter())
    handler.addFilter(RedactFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in NOISY:
        # web3 logs full request bodies at DEBUG; keep them out unless asked for.
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler


def secrets_from_env(source_env_vars: Iterable[str] = ()) -> list[str | None]:
    """The secret values this process was given (read straight from the environment, so
    a secret the config refused to load is still scrubbed)."""
    names = ["AGG_KEEPER_KEY", "AGG_ADMIN_TOKEN", "AGG_KEEPER_KEYSTORE_PASSWORD", *source_env_vars]
    return [os.environ.get(n) for n in names]
