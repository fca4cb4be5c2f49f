"""Cache keys: `sha256(canonical_json({server, tool, tool_fingerprint, arguments}))`.

Canonical JSON is `simgate.canonical`'s (keys sorted, numbers normalized: 1 == 1.0); `_meta`, a tool's `ignore_args` and arguments equal to
their `inputSchema` default removed (passing a default explicitly is the same call as leaving it out);
the tool fingerprint hashes the tool's schemas, so a changed tool invalidates its recordings.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from simgate.canonical import canonical_json, digest


def tool_fingerprint(tool: dict[str, Any]) -> str:
    """What makes two versions of a tool answer alike: its name and schemas (not its description)."""
    return digest({key: tool.get(key) for key in ("name", "inputSchema", "outputSchema")})[:16]


_MAX_REF_DEPTH = 32  # a recursive schema ($ref to itself) is followed this far, no further


def _resolve(schema: Any, root: dict[str, Any], depth: int) -> dict[str, Any] | None:
    """A subschema with a local `$ref` (`#/$defs/X`, `#/definitions/X`) followed; None when unusable."""
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and depth < _MAX_REF_DEPTH:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            return None
        node: Any = root
        for part in ref[2:].split("/"):
            node = node.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(node, dict) else None
        schema, depth = node, depth + 1
    return schema if isinstance(schema, dict) and "$ref" not in schema else None


def without_defaults(value: Any, schema: Any, root: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """`value` with every object member equal to its schema `default` left out, at any depth the schema
    describes (`properties` of objects, `items` of arrays)."""
    root = root if root is not None else (schema if isinstance(schema, dict) else {})
    resolved = _resolve(schema, root, depth)
    if resolved is None or depth >= _MAX_REF_DEPTH:
        return value
    if isinstance(value, dict):
        properties = resolved.get("properties")
        if not isinstance(properties, dict):
            return value
        kept: dict[str, Any] = {}
        for name, item in value.items():
            sub = _resolve(properties.get(name), root, depth + 1)
            if sub is not None and "default" in sub and canonical_json(item) == canonical_json(sub["default"]):
                continue
            kept[name] = without_defaults(item, properties.get(name), root, depth + 1) if sub is not None else item
        return kept
    if isinstance(value, list) and isinstance(resolved.get("items"), dict):
        return [without_defaults(item, resolved["items"], root, depth + 1) for item in value]
    return value


def key_arguments(arguments: dict[str, Any], ignore_args: Iterable[str] = (),
                  input_schema: dict[str, Any] | None = None) -> dict[str, Any]:
    ignored = set(ignore_args) | {"_meta"}
    kept = {name: value for name, value in arguments.items() if name not in ignored}
    return without_defaults(kept, input_schema) if input_schema else kept


def cache_key(server: str, tool: str, fingerprint: str, arguments: dict[str, Any],
              ignore_args: Iterable[str] = (), input_schema: dict[str, Any] | None = None) -> str:
    return digest({"server": server, "tool": tool, "tool_fingerprint": fingerprint,
                   "arguments": key_arguments(arguments, ignore_args, input_schema)})
