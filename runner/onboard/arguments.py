"""Probe arguments for a tool, from its input schema (and, when an LLM is configured, from the LLM).

Each set is named so the report can say which kind of call showed what: `minimal` (required
properties only, from `default`/`examples`/`enum`/`const` where the schema has them, else an example the
property's description quotes, else a value fitting its name), `full` (a
valid value for every property, from the schema synthesizer) and `invalid` (a required property
missing, or a property of the wrong type: the tool must refuse it, and how it refuses is observed).
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel

from simgate.results import schema_error
from simgate.simulators.schema import SchemaSynthesisError, synthesize

# Realistic values for properties by name, for schemas that give no example: a calculator's
# `expression` gets an expression, not a random word. Only used where the value fits the schema.
NAME_HINTS: tuple[tuple[re.Pattern[str], Any], ...] = tuple((re.compile(pattern, re.IGNORECASE), value) for pattern, value in (
    (r"^(expr|expression|formula|equation|calculation)$", "2*21"),
    (r"^(command|cmd|command_?line|shell_?command)$", "echo hello"),
    (r"sql|^query_?string$", "SELECT 1"),
    (r"^(url|uri|link|href|endpoint)$", "https://example.com/"),
    (r"^(path|file|filename|file_?path|filepath)$", "notes.txt"),
    (r"^(dir|directory|folder|root)$", "."),
    (r"^(source_)?(timezone|tz|time_?zone)$", "UTC"),
    (r"^target_(timezone|tz)$", "Europe/Paris"),
    (r"date$", "2026-01-15"),
    (r"^time$", "12:00"),
    (r"^(city|location|place|address)$", "Paris"),
    (r"^country$", "France"),
    (r"^(lang|language|locale)$", "en"),
    (r"^(email|e_?mail)$", "user@example.com"),
    (r"^(q|query|search|keywords?|term|topic)$", "weather"),
    (r"^(text|content|message|prompt|input|body|thought)$", "hello world"),
    (r"^(name|title|label)$", "example"),
))


# An example a property's description quotes ("e.g. '2024-01-01'", "for example: \"next Friday\""): what
# the author would pass, better than a guess from the name.
_QUOTED_EXAMPLE = re.compile(r"\b(?:e\.g\.|eg\.|for example|for instance|such as|example)[,:]?\s*"
                             r"(?:'([^'\n]{1,200})'|\"([^\"\n]{1,200})\"|`([^`\n]{1,200})`)", re.IGNORECASE)


def described_example(property_schema: Any) -> str | None:
    """The first example the property's description quotes, when the schema accepts it."""
    description = property_schema.get("description") if isinstance(property_schema, dict) else None
    if not isinstance(description, str):
        return None
    for match in _QUOTED_EXAMPLE.finditer(description):
        value = next(group for group in match.groups() if group is not None)
        if _accepts(property_schema, value):
            return value
    return None


def name_hints(schema: dict[str, Any], description: str | None = None) -> dict[str, Any]:
    hints: dict[str, Any] = {}
    sql = bool(description and re.search(r"\bsql|\bselect\b|\bquery\b.*\bdatabase", description, re.IGNORECASE))
    for name, property_schema in _properties(schema).items():
        example = described_example(property_schema)
        if example is not None:
            hints[name] = example
            continue
        if sql and name.lower() in ("query", "sql", "statement") and _accepts(property_schema, "SELECT 1"):
            hints[name] = "SELECT 1"
            continue
        for pattern, value in NAME_HINTS:
            if pattern.search(name) and _accepts(property_schema, value):
                hints[name] = value
                break
    return hints


def _accepts(schema: Any, value: Any) -> bool:
    try:
        return isinstance(schema, dict) and schema_error(schema, value) is None
    except ValueError:
        return False


class ProbeArguments(BaseModel):
    kind: str  # minimal | full | invalid | llm
    arguments: dict[str, Any]
    valid: bool


def _properties(schema: dict[str, Any]) -> dict[str, Any]:
    properties = schema.get("properties")
    return properties if isinstance(properties, dict) else {}


def _preferred(schema: Any) -> tuple[bool, Any]:
    """A value the schema itself offers (const, default, first example, first enum member)."""
    if not isinstance(schema, dict):
        return False, None
    if "const" in schema:
        return True, schema["const"]
    if "default" in schema:
        return True, schema["default"]
    if isinstance(schema.get("examples"), list) and schema["examples"]:
        return True, schema["examples"][0]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return True, schema["enum"][0]
    return False, None


def minimal_arguments(schema: dict[str, Any], seed: str, description: str | None = None) -> dict[str, Any]:
    """Only the required properties; each from the schema's own offer, else synthesized."""
    required = [name for name in schema.get("required") or [] if isinstance(name, str)]
    properties = _properties(schema)
    hints = name_hints(schema, description)
    values: dict[str, Any] = {}
    for name in required:
        offered, value = _preferred(properties.get(name))
        if offered:
            values[name] = value
        elif name in hints:
            values[name] = hints[name]
        else:
            values[name] = synthesize(properties.get(name) or {}, f"{seed}/{name}")
    return values


def _invalid(schema: dict[str, Any], valid: dict[str, Any]) -> dict[str, Any] | None:
    """Arguments the schema rejects: a required property left out, else one of the wrong type."""
    required = [name for name in schema.get("required") or [] if isinstance(name, str)]
    if required:
        return {name: value for name, value in valid.items() if name != required[0]}
    for name, property_schema in _properties(schema).items():
        wrong: Any = {"unexpected": [1, 2]} if (property_schema or {}).get("type") != "object" else "not an object"
        candidate = {**valid, name: wrong}
        if not _accepts(schema, candidate):
            return candidate
    return None


def probe_arguments(schema: dict[str, Any] | None, seed: str, description: str | None = None) -> list[ProbeArguments]:
    """The argument sets to probe a tool with; never two identical ones. Values that the schema
    rejects are not offered as valid (a schema the synthesizer cannot satisfy gives fewer sets)."""
    schema = schema if isinstance(schema, dict) else {"type": "object"}
    found: list[ProbeArguments] = []
    seen: set[str] = set()

    def add(kind: str, arguments: Any, valid: bool) -> None:
        if not isinstance(arguments, dict):
            return
        key = json.dumps(arguments, sort_keys=True, default=str)
        if key in seen:
            return
        if valid and not _accepts(schema, arguments):
            return
        seen.add(key)
        found.append(ProbeArguments(kind=kind, arguments=arguments, valid=valid))

    try:
        add("minimal", minimal_arguments(schema, seed, description), True)
    except (SchemaSynthesisError, ValueError):
        pass
    try:
        add("full", synthesize(schema, f"{seed}/full", name_hints(schema, description)), True)
    except (SchemaSynthesisError, ValueError):
        pass
    base = found[0].arguments if found else {}
    invalid = _invalid(schema, base)
    if invalid is not None:
        add("invalid", invalid, False)
    return found
