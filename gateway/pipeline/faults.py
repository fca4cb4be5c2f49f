"""Stage: seeded fault injection per server/tool — errors, added latency, timeouts, malformed results.

Off unless a server or tool has `faults`. Each (server, tool) has its own `random.Random`, seeded from
the configured seed and the names, and every call draws exactly two numbers from it (the outcome, the
latency jitter), so the n-th call of a tool meets the same fault in every run with the same seed,
whatever the other tools do. The outcome is one of timeout / error / malformed / none with the
configured rates as probabilities; latency is added to any outcome.

- `error`: the upstream is not called; a JSON-RPC error (`error_code`, `error_message`) or, with
  `error_as: tool_result`, a result with `isError: true`.
- `timeout`: the upstream is not called; the call hangs `timeout_after_s` (default: the server's
  `call_timeout`), then fails as an upstream timeout does (-32002).
- `malformed`: the upstream answers and its answer is spoiled on the way back: for a tool with an
  `outputSchema`, `structuredContent` no longer matches it (clients that validate, like the `mcp`
  SDK, reject it); otherwise the text is cut off half-way.
- `latency`: sleep `latency_ms` + uniform(0, `latency_jitter_ms`) before the call goes on.

A fired fault is recorded in `call.provenance["fault"]` (so in `_meta["simgate/provenance"]`,
and in the error's data for errors). Faults happen before the executor, so the cache only ever
holds real answers.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from jsonschema import exceptions as schema_errors
from jsonschema import validators
from mcp.shared.exceptions import MCPError
from referencing.exceptions import Unresolvable

from simgate.gateway.config.limits import FaultConfig
from simgate.gateway.config.models import GatewayConfig
from simgate.gateway.errors import UpstreamTimeout
from simgate.gateway.pipeline.call import CallNext, CallResult, ToolCall
from simgate.gateway.pipeline.ratelimit import AnyioClock, Clock
from simgate.gateway.prometheus import GatewayMetrics

FAULT_SOURCE = "fault"  # provenance source of an answer made up by the injector (error, timeout)
# Values of every JSON type, tried in turn until one breaks the schema (fresh each time: never shared).
_WRONG_VALUES: tuple[Callable[[], Any], ...] = (lambda: "simgate-malformed", lambda: -1.5, lambda: True,
                                               lambda: None, list, dict)


@dataclass
class _Sequence:
    config: FaultConfig
    rng: random.Random
    calls: int = 0


class InjectFaults:
    def __init__(self, config: GatewayConfig, *, clock: Clock | None = None,
                 metrics: GatewayMetrics | None = None) -> None:
        self._config = config
        self._clock = clock or AnyioClock()
        self._metrics = metrics
        self._sequences: dict[tuple[str, str], _Sequence] = {}

    def faults_for(self, server: str, tool: str) -> FaultConfig | None:
        """The tool's fault config, else the server's."""
        server_config = self._config.servers.get(server)
        if server_config is None:
            return None
        tool_faults = server_config.settings_for(tool).faults
        return tool_faults if tool_faults is not None else server_config.faults

    def _sequence(self, server: str, tool: str, faults: FaultConfig) -> _Sequence:
        sequence = self._sequences.get((server, tool))
        if sequence is None or sequence.config is not faults:
            # A str seed is hashed with SHA-512: the same in every process, whatever PYTHONHASHSEED.
            sequence = _Sequence(faults, random.Random(f"{faults.seed}/{server}/{tool}"))
            self._sequences[(server, tool)] = sequence
        return sequence

    async def __call__(self, call: ToolCall, call_next: CallNext) -> CallResult:
        faults = self.faults_for(call.server, call.tool)
        if faults is None or not faults.active:
            return await call_next(call)
        sequence = self._sequence(call.server, call.tool, faults)
        index = sequence.calls
        sequence.calls += 1
        outcome_draw = sequence.rng.random()
        jitter_draw = sequence.rng.random()

        outcome = _outcome(faults, outcome_draw)
        latency_ms = faults.latency_ms + jitter_draw * faults.latency_jitter_ms
        if outcome is None and latency_ms <= 0:
            return await call_next(call)
        record: dict[str, Any] = {"kind": "latency", "seed": faults.seed, "index": index}
        if latency_ms > 0:
            record["added_latency_ms"] = round(latency_ms, 3)
            call.provenance["fault"] = record
            self._count(call.server, "latency")
            await self._clock.sleep(latency_ms / 1000)

        if outcome == "timeout":
            server_config = self._config.servers.get(call.server)
            call_timeout = server_config.call_timeout if server_config is not None else 60.0
            hang = faults.timeout_after_s or call_timeout
            record.update(kind="timeout", hung_s=hang)
            call.provenance.update(source=FAULT_SOURCE, fault=record)
            self._count(call.server, "timeout")
            await self._clock.sleep(hang)
            raise UpstreamTimeout(f"upstream server {call.server!r} did not answer tools/call within {call_timeout:g}s",
                                  data={"server": call.server, "timeout": call_timeout})
        if outcome == "error":
            record.update(kind="error", code=faults.error_code, error_as=faults.error_as)
            call.provenance.update(source=FAULT_SOURCE, fault=record)
            self._count(call.server, "error")
            if faults.error_as == "tool_result":
                return {"content": [{"type": "text", "text": faults.error_message}], "isError": True}
            raise MCPError(faults.error_code, faults.error_message, {"server": call.server, "tool": call.tool})

        result = await call_next(call)
        if outcome == "malformed":
            result, variant = malform(result, call.tool_definition.get("outputSchema"))
            record.update(kind="malformed", variant=variant)
            call.provenance["fault"] = record
            self._count(call.server, "malformed")
        return result

    def _count(self, server: str, kind: str) -> None:
        if self._metrics is not None:
            self._metrics.faults_injected.labels(server, kind).inc()


def _outcome(faults: FaultConfig, draw: float) -> str | None:
    threshold = faults.timeout_rate
    if draw < threshold:
        return "timeout"
    threshold += faults.error_rate
    if draw < threshold:
        return "error"
    threshold += faults.malformed_rate
    if draw < threshold:
        return "malformed"
    return None


# ---------------------------------------------------------------------- malformed results


def malform(result: CallResult, output_schema: Any) -> tuple[CallResult, str]:
    """A spoiled copy of `result` that a client notices, and the name of the spoiling.

    - `schema_violation`: `structuredContent` made to break the tool's `outputSchema` (a declared
      property of the wrong type, a required one missing, or an extra one where none are allowed);
      the text content carries the same broken JSON.
    - `missing_structured_content`: the tool has an `outputSchema` that any object satisfies; the
      structured content is dropped, which the schema's presence forbids.
    - `truncated`: no `outputSchema`; the text of the result is cut off half-way.
    The result stays a protocol-valid `CallToolResult`, so it reaches the client instead of being
    refused by the gateway's own MCP server.
    """
    spoiled = {key: value for key, value in result.items() if key != "structuredContent"}
    if isinstance(output_schema, dict) and output_schema:
        broken = _schema_violation(output_schema, result.get("structuredContent"))
        if broken is None:
            return spoiled, "missing_structured_content"
        spoiled["structuredContent"] = broken
        spoiled["content"] = [{"type": "text", "text": json.dumps(broken)}]
        return spoiled, "schema_violation"
    text = "".join(block.get("text", "") for block in result.get("content") or []
                   if isinstance(block, dict) and block.get("type") == "text")
    if not text and result.get("structuredContent") is not None:
        text = json.dumps(result["structuredContent"])
    spoiled["content"] = [{"type": "text", "text": text[: len(text) // 2]}]
    return spoiled, "truncated"


def _schema_violation(schema: dict[str, Any], original: Any) -> dict[str, Any] | None:
    try:
        cls = validators.validator_for(schema, default=validators.Draft202012Validator)
        cls.check_schema(schema)
        validator = cls(schema)
        for candidate in _candidates(schema, original if isinstance(original, dict) else {}):
            if not validator.is_valid(candidate):
                return candidate
    except (schema_errors.SchemaError, Unresolvable):  # unusable schema: drop the structured content instead
        return None
    return None


def _candidates(schema: dict[str, Any], base: dict[str, Any]) -> Iterator[dict[str, Any]]:
    properties = found if isinstance(found := schema.get("properties"), dict) else {}
    for name in properties:
        for wrong in _WRONG_VALUES:
            yield {**base, name: wrong()}
    for name in schema.get("required") or []:
        yield {key: value for key, value in base.items() if key != name}
    yield {**base, "simgate_malformed": True}
