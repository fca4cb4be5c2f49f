"""Stage: arguments must satisfy the tool's `inputSchema` before anything reaches an upstream."""

from __future__ import annotations

import json
from typing import Any

from jsonschema import exceptions as schema_errors
from jsonschema import validators

from simgate.gateway.config.models import GatewayConfig
from simgate.gateway.errors import InvalidArguments
from simgate.gateway.pipeline.call import CallNext, CallResult, ToolCall


class ValidateArguments:
    def __init__(self, unchecked: frozenset[str] = frozenset()) -> None:
        self._unchecked = unchecked  # servers with `validate_arguments: false`
        # Compiled validators by schema: compiling costs far more than validating. Keyed by the schema
        # object (a tool list keeps its dicts until it is replaced) and, failing that, by its text.
        self._by_id: dict[int, tuple[dict[str, Any], Any]] = {}
        self._validators: dict[str, Any] = {}

    async def __call__(self, call: ToolCall, call_next: CallNext) -> CallResult:
        schema = call.tool_definition.get("inputSchema")
        if isinstance(schema, dict) and schema and call.server not in self._unchecked:
            error = self._first_error(schema, call.arguments)
            if error is not None:
                path = _json_path(error.absolute_path)
                raise InvalidArguments(
                    f"invalid arguments for tool {call.exposed_name!r} at {path}: {error.message}",
                    data={"tool": call.exposed_name, "path": path, "validator": str(error.validator)},
                )
        return await call_next(call)

    def _first_error(self, schema: dict[str, Any], arguments: dict[str, Any]) -> schema_errors.ValidationError | None:
        cached = self._by_id.get(id(schema))
        if cached is not None and cached[0] is schema:
            validator = cached[1]
        else:
            validator = self._compile(schema)
            self._by_id[id(schema)] = (schema, validator)
        if validator is False or validator.is_valid(arguments):
            return None
        return schema_errors.best_match(validator.iter_errors(arguments))

    def _compile(self, schema: dict[str, Any]) -> Any:
        key = json.dumps(schema, sort_keys=True)
        validator = self._validators.get(key)
        if validator is None:
            cls = validators.validator_for(schema, default=validators.Draft202012Validator)
            try:
                cls.check_schema(schema)
            except schema_errors.SchemaError:
                # The server's own schema is broken: let the server judge its arguments.
                validator = False
            else:
                validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
            self._validators[key] = validator
        return validator


def _json_path(parts: Any) -> str:
    path = "$"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def unchecked_servers(config: GatewayConfig) -> frozenset[str]:
    return frozenset(name for name, server in config.servers.items() if not server.validate_arguments)
