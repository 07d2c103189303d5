"""What every API handler module shares: the JSON encoder, the error type and the error
body that names the field (aggregator/api.py re-exports them)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from aiohttp import web


class ApiError(Exception):
    def __init__(self, status: int, field: str | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.field = field
        self.message = message


def _json_default(obj: Any) -> Any:
    # numpy scalars that are not Python floats/ints (float32, int64, bool_) arrive here:
    # unwrap them so they are numbers, and non-finite ones null, not strings.
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    return str(obj)


def _clean(obj: Any) -> Any:
    # JSON has no Infinity: an infinite health factor (no debt) is sent as null
    # with the string form next to it where the view provides one.
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def dumps(data: Any) -> str:
    # allow_nan=False: a non-finite number that escaped _clean is a bug to surface as a
    # 500 with an error id, never "NaN"/"Infinity" that strict JSON parsers reject.
    # Fast path first: most bodies hold no non-finite float, and walking every dict to
    # look was a tenth of the /health route's CPU (bench/api_load.py).
    # One encoder, not json.dumps(**options), which builds a new one on every call.
    try:
        return _ENCODER.encode(data)
    except ValueError:
        return _ENCODER.encode(_clean(data))


_ENCODER = json.JSONEncoder(default=_json_default, allow_nan=False)


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=dumps(data),
        status=status,
        content_type="application/json",
    )


def error_body(status: int, field: str | None, message: str) -> web.Response:
    return json_response({"error": {"field": field, "message": message}}, status=status)
