"""Prompt v1 of the LLM simulator: chat messages laid out for prefix caching, and the answer's schema.

Layout, most stable first, so a server's prefix cache (vLLM `--enable-prefix-caching`, llama.cpp's
prompt cache) reuses the longest possible prefix between calls:

1. system: the fixed instructions, then the server (name, description), then the tool definition
   (name, description, input and output schemas, annotations) -- the same for every call of a tool;
2. few-shot turns: recorded calls of the tool (user: the call; assistant: its real answer), the most
   similar last;
3. this session's earlier calls and answers, in order;
4. last, the call to answer (user: the arguments).

Every answer, recorded or generated, is one JSON object `{"structuredContent", "isError", "content_text"}`
(`structuredContent` only when the tool declares an `outputSchema`), so the model sees its own output
format in every example.
"""

from __future__ import annotations

import json
from typing import Any

from simgate.results import strip_meta, text_of, text_result
from simgate.simulators.base import Example, SimulationRequest

VERSION = "v1"

INSTRUCTIONS = """\
You are a tool simulator. You imitate one tool of an MCP server: for each call you are given, answer \
exactly what the real tool would return, as one JSON object with these keys:
- "structuredContent" (only for tools with an outputSchema): the structured result, valid against the \
tool's outputSchema. When the call fails it is ignored: keep it minimal.
- "isError": true when the real tool would fail: invalid, malformed or out-of-range arguments; a file, \
record, id, name or other entity that does not exist in this world; a missing permission. false otherwise.
- "content_text": the text the tool returns. On success, in the tool's usual format (often the JSON of \
structuredContent). On failure, a realistic, specific error message in the tool's own style.

Rules:
- Recorded calls show the tool's real answers: copy their format, style and level of detail, and the \
way the tool fails.
- Calls made earlier in this session define the state of the world: stay consistent with them. \
Entities created, changed or deleted earlier exist, are changed, or are gone accordingly.
- Invent plausible, concrete values where nothing determines them. Never mention that you are a \
simulator, never ask questions, never explain.
- Answer with the JSON object only."""

_EXCLUDED_DEF_KEYS = ("$schema", "$id", "$defs", "definitions")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _relocate_refs(node: Any) -> Any:
    """Rewrite local `$ref`s of an outputSchema so they still resolve once it is nested in the answer schema.

    Definitions are hoisted to the answer schema's root (so `#/$defs/X` keeps its meaning); any other
    local pointer (`#`, `#/properties/...`) is moved under `#/properties/structuredContent`.
    """
    if isinstance(node, list):
        return [_relocate_refs(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _relocate_refs(value) for key, value in node.items()}
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#") and not ref.startswith(("#/$defs/", "#/definitions/")):
        out["$ref"] = "#/properties/structuredContent" + ref[1:]
    return out


def answer_schema(output_schema: dict[str, Any] | None) -> dict[str, Any]:
    """The JSON schema of an answer, for `response_format` (strict: every key required, no others)."""
    # structuredContent first, then the verdict, then the text: a small model that has just written a
    # plausible result rarely flips isError at random, and the text can follow what came before it.
    properties: dict[str, Any] = {}
    if output_schema is not None:
        properties["structuredContent"] = _relocate_refs(
            {k: v for k, v in output_schema.items() if k not in _EXCLUDED_DEF_KEYS})
    properties["isError"] = {"type": "boolean"}
    properties["content_text"] = {"type": "string"}
    schema: dict[str, Any] = {"type": "object", "properties": properties, "required": list(properties),
                              "additionalProperties": False}
    if output_schema is not None:
        for key in ("$defs", "definitions"):
            if isinstance(output_schema.get(key), dict):
                schema[key] = _relocate_refs(output_schema[key])
    return schema


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more characters]"


def answer_of(example: Example, *, with_structured: bool, max_chars: int) -> dict[str, Any]:
    """A recorded answer (a `CallToolResult`, or a JSON-RPC error) in the answer format."""
    if example.result is None:
        error = example.error or {}
        message = str(error.get("message") or "error")
        answer: dict[str, Any] = {"structuredContent": {}} if with_structured else {}
        answer["isError"] = True
        answer["content_text"] = _clip(message, max_chars)
        return answer
    result = strip_meta(example.result) or {}
    is_error = bool(result.get("isError", False))
    answer = {"structuredContent": result.get("structuredContent") if not is_error else {}} if with_structured else {}
    answer["isError"] = is_error
    answer["content_text"] = _clip(text_of(result), max_chars)
    return answer


def tool_definition(request: SimulationRequest) -> dict[str, Any]:
    tool = request.tool
    definition: dict[str, Any] = {"name": tool.name}
    if tool.description:
        definition["description"] = tool.description
    definition["inputSchema"] = tool.input_schema
    if tool.output_schema is not None:
        definition["outputSchema"] = tool.output_schema
    if tool.annotations:
        definition["annotations"] = tool.annotations
    return definition


def system_message(request: SimulationRequest) -> str:
    server = request.server_description.strip() if request.server_description else "(no description)"
    return (f"{INSTRUCTIONS}\n\n# Server\n{request.server}: {server}\n\n"
            f"# Tool\n{json.dumps(tool_definition(request), ensure_ascii=False, indent=1)}")


def call_line(label: str, tool: str, arguments: dict[str, Any]) -> str:
    return f"[{label}] {tool} {_dumps(arguments)}"


def build_messages(request: SimulationRequest, *, max_chars: int = 4000) -> list[dict[str, str]]:
    structured = request.tool.output_schema is not None
    name = request.tool.name
    messages = [{"role": "system", "content": system_message(request)}]
    for example in reversed(request.examples):  # given nearest first; shown nearest last, next to the call
        messages.append({"role": "user", "content": call_line("recorded call", name, example.arguments)})
        messages.append({"role": "assistant", "content": _dumps(
            answer_of(example, with_structured=structured, max_chars=max_chars))})
    for number, earlier in enumerate(request.history, start=1):
        tool = earlier.tool or name
        messages.append({"role": "user", "content": call_line(f"this session, call {number}", tool,
                                                              earlier.arguments)})
        # Another tool's answer keeps its own structure; this tool's is shaped like the answer to give.
        messages.append({"role": "assistant", "content": _dumps(
            answer_of(earlier, with_structured=structured and tool == name, max_chars=max_chars))})
    messages.append({"role": "user", "content": call_line(f"this session, call {len(request.history) + 1}",
                                                          name, request.arguments)})
    return messages


def repair_messages(raw: str, problem: str, *, max_chars: int = 2000) -> list[dict[str, str]]:
    """Turns that show the model its invalid answer and why, asking for a corrected one."""
    return [{"role": "assistant", "content": _clip(raw, max_chars)},
            {"role": "user", "content": f"That answer is invalid: {problem}\n"
                                        "Reply again with one corrected JSON object in the required format."}]


def to_result(answer: dict[str, Any], output_schema: dict[str, Any] | None) -> dict[str, Any]:
    """The `CallToolResult` dict of a validated answer."""
    is_error = bool(answer["isError"])
    text = answer.get("content_text") or ""
    structured = answer.get("structuredContent") if output_schema is not None and not is_error else None
    if not text and structured is not None:
        text = json.dumps(structured, ensure_ascii=False, indent=2)
    return text_result(text, is_error=is_error, structured=structured)
