"""Plain-data helpers on `CallToolResult` dicts and JSON schemas: the simulators' backends, the runner's agents
and onboarding, the gateway's exports all read and check results through these."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for

from simgate.canonical import canonical_json


def strip_meta(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """A result without `_meta` (provenance, timings: they differ between equal answers) or `resultType`."""
    if result is None:
        return None
    return {key: value for key, value in result.items() if key not in ("_meta", "resultType")}


def text_of(result: dict[str, Any]) -> str:
    """The text a client shows for a result: its text blocks joined, other blocks named."""
    parts: list[str] = []
    for block in result.get("content") or []:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            parts.append(str(block.get("text", "")))
        elif kind in ("image", "audio"):
            parts.append(f"[{kind} {block.get('mimeType', '')}]".replace(" ]", "]"))
        elif kind == "resource":
            resource = block.get("resource") or {}
            parts.append(str(resource.get("text") or f"[resource {resource.get('uri', '')}]"))
        elif kind == "resource_link":
            parts.append(f"[resource {block.get('uri', '')}]")
    return "\n".join(parts)


def text_result(text: str, *, is_error: bool = False, structured: Any = None) -> dict[str, Any]:
    """A `CallToolResult` dict with one text block (and `structuredContent` when given)."""
    result: dict[str, Any] = {"content": [{"type": "text", "text": text}]}
    if structured is not None:
        result["structuredContent"] = structured
    result["isError"] = is_error
    return result


@lru_cache(maxsize=512)
def _validator(schema_text: str) -> Any:
    schema = json.loads(schema_text)
    cls = validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def schema_error(schema: dict[str, Any], value: Any) -> str | None:
    """None when `value` is valid against `schema`; otherwise the most relevant error, in one line.

    Raises `ValueError` when the schema itself is not a valid JSON schema.
    """
    try:
        validator = _validator(canonical_json(schema))
    except SchemaError as exc:
        raise ValueError(f"not a valid JSON schema: {exc.message}") from None
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return None
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path)
    return f"at ${where}: {error.message}"


_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMAS = ("items", "additionalProperties", "additionalItems", "contains", "not", "if", "then", "else",
               "propertyNames", "unevaluatedItems", "unevaluatedProperties")


def bounded(schema: Any, *, max_string: int | None = None, max_items: int | None = None) -> Any:
    """A copy of a schema in which strings, arrays and maps without an upper bound get one.

    Constrained decoding then ends a string or a list where a small model would ramble on until
    `max_tokens`. Bounds already there are kept (never loosened, never made tighter than a minimum).
    """
    if isinstance(schema, list):
        return [bounded(item, max_string=max_string, max_items=max_items) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _SUBSCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: bounded(sub, max_string=max_string, max_items=max_items) for name, sub in value.items()}
        elif key in _SUBSCHEMA_LISTS or key in _SUBSCHEMAS:
            out[key] = bounded(value, max_string=max_string, max_items=max_items)
        else:
            out[key] = value
    kinds = schema.get("type")
    kinds = set(kinds) if isinstance(kinds, list) else {kinds}
    fixed = "enum" in schema or "const" in schema
    if max_string is not None and "string" in kinds and "maxLength" not in schema and not fixed:
        out["maxLength"] = max(max_string, int(schema.get("minLength", 0)))
    if max_items is not None and "array" in kinds and "maxItems" not in schema:
        out["maxItems"] = max(max_items, int(schema.get("minItems", 0)))
    if (max_items is not None and "object" in kinds and "maxProperties" not in schema
            and schema.get("additionalProperties") not in (None, False) and not schema.get("properties")):
        out["maxProperties"] = max(max_items, int(schema.get("minProperties", 0)))
    return out
