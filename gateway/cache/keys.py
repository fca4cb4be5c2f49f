"""Cache keys: `sha256(canonical_json({server, tool, tool_fingerprint, arguments}))`.

Keys are sorted, numbers normalized (1 == 1.0), `_meta` and a tool's `ignore_args` removed; the
tool fingerprint hashes the tool's schemas, so a changed tool invalidates its recordings.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from typing import Any


def _normalize(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return int(value)
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        return {str(key): _normalize(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_normalize(item) for item in value]
    return str(value)


def canonical_json(value: Any) -> str:
    return json.dumps(_normalize(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def tool_fingerprint(tool: dict[str, Any]) -> str:
    """What makes two versions of a tool answer alike: its name and schemas (not its description)."""
    return digest({key: tool.get(key) for key in ("name", "inputSchema", "outputSchema")})[:16]


def key_arguments(arguments: dict[str, Any], ignore_args: Iterable[str] = ()) -> dict[str, Any]:
    ignored = set(ignore_args) | {"_meta"}
    return {name: value for name, value in arguments.items() if name not in ignored}


def cache_key(server: str, tool: str, fingerprint: str, arguments: dict[str, Any],
              ignore_args: Iterable[str] = ()) -> str:
    return digest({"server": server, "tool": tool, "tool_fingerprint": fingerprint,
                   "arguments": key_arguments(arguments, ignore_args)})
