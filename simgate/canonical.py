"""Canonical JSON, and its sha256: one definition of "the same JSON value" for the whole project.

Keys sorted, no spaces, UTF-8 as is; numbers normalized: a float with an integral value is that integer
(`1.0` and `1` are one value, as JSON Schema's `type: integer` and every JSON parser that reads numbers
as floats have it); values JSON has no form for are written as their `str()`. The cache key hashes
this, so a simulator's memo and seed, a tool-call comparison and a recording all agree on which
arguments are the same.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any


def normalized(value: Any) -> Any:
    """The value with integral floats as ints, keys as strings, tuples as lists, other objects as text."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else value
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        return {str(key): normalized(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [normalized(item) for item in value]
    return str(value)


def canonical_json(value: Any) -> str:
    return json.dumps(normalized(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(value: Any) -> str:
    """Hex sha256 of the canonical JSON."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()
