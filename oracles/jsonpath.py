"""A deliberately tiny JSON path: `a.b`, `a[0]`, `result.*.c[0]`, `[0].price`.

`*` selects the single (or first) key of an object, for APIs that key the
payload by a pair name we do not want to hard-code (Kraken's `XXBTZUSD`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_SEGMENT = re.compile(r"^(?P<key>[^.\[\]]*)(?P<idx>(?:\[\d+\])*)$")
_INDEX = re.compile(r"\[(\d+)\]")

WILDCARD = "*"


@dataclass(frozen=True)
class PathError(Exception):
    """The payload does not have the shape the path expects."""

    message: str

    def __str__(self) -> str:
        return self.message


def parse_path(path: str) -> tuple[str | int, ...]:
    """Split a path into keys (str) and list indexes (int); ValueError on bad syntax."""
    if not path or path.strip() != path:
        raise ValueError(f"JSON path {path!r} is empty or has surrounding spaces")
    steps: list[str | int] = []
    for seg in path.split("."):
        m = _SEGMENT.match(seg)
        if m is None or (not m["key"] and not m["idx"]):
            raise ValueError(f"JSON path {path!r}: bad segment {seg!r}")
        if m["key"]:
            steps.append(m["key"])
        steps.extend(int(i) for i in _INDEX.findall(m["idx"]))
    return tuple(steps)


def resolve(doc: Any, steps: tuple[str | int, ...], path: str) -> Any:
    """Walk `steps` through `doc`; PathError names the step that did not match."""
    cur = doc
    done = ""
    for step in steps:
        where = done or "<root>"
        if isinstance(step, int):
            if not isinstance(cur, list):
                raise PathError(f"path {path!r}: expected a list at {where}, got {_kind(cur)}")
            if step >= len(cur):
                raise PathError(f"path {path!r}: index {step} out of range at {where}")
            cur = cur[step]
            done += f"[{step}]"
            continue
        if not isinstance(cur, dict):
            raise PathError(f"path {path!r}: expected an object at {where}, got {_kind(cur)}")
        if step == WILDCARD:
            if not cur:
                raise PathError(f"path {path!r}: empty object at {where} for '*'")
            key = next(iter(cur))
        elif step not in cur:
            raise PathError(f"path {path!r}: key {step!r} missing at {where}")
        else:
            key = step
        cur = cur[key]
        done += f".{key}" if done else key
    return cur


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "list", str: "string", bool: "boolean"}.get(type(value), "number")
