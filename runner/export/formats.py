"""Convert one trajectory (a line of `simgate run`'s output, as a dict) into a training format.

Plain functions on plain data, so a converter is trivially testable and reusable from notebooks:

- `to_toucan`: the columns of the TOUCAN dataset (Agent-Ark/Toucan-1.5M): `uuid`, `subset_name`,
  `question`, `target_tools`, `available_tools`, `messages`, `question_quality_assessment`,
  `response_quality_assessment`, `metadata`. As in the published dataset, the structured columns
  are JSON strings, so the rows load into the same `datasets` schema.
- `to_sharegpt`: LLaMA-Factory's ShareGPT layout with function calling (`conversations` of
  `system`/`human`/`gpt`/`function_call`/`observation` turns, `tools` as a JSON string).

A conversation of several user turns (multi-turn: `turns` in the trajectory) keeps every user message
in order in all three formats; TOUCAN's `question` column is the first, `metadata.turns` lists them all.

The task's own keys (`task_extra`: a TOUCAN task's `subset_name`, its assessments, anything else) are
kept: in TOUCAN rows a key that is one of its columns fills that column (a task's `subset_name` wins
over the default) and all of them are in `metadata["task"]`; in ShareGPT records each becomes a
field of its own, unless the record already has one of that name.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from simgate.errors import SimgateError

# A fixed namespace: the same trajectory always gets the same uuid, so re-exports deduplicate.
_NAMESPACE = uuid.UUID("5b0f6c3e-6a1e-4c55-9a53-2f1f3a9c7d10")


class ExportError(SimgateError, ValueError):
    """A trajectory that cannot be exported; the message names what is missing."""


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=False)


def _require(trajectory: dict[str, Any], *fields: str) -> None:
    missing = [field for field in fields if field not in trajectory]
    if missing:
        raise ExportError(f"trajectory {trajectory.get('id', '?')!r} lacks {', '.join(missing)}")


def trajectory_uuid(trajectory: dict[str, Any]) -> str:
    identity = f"{trajectory.get('id')}|{trajectory.get('mode')}|{trajectory.get('repeat', 0)}"
    return str(uuid.uuid5(_NAMESPACE, identity))


def toucan_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI chat messages in the published dataset's shape (Qwen-Agent's): one assistant message per
    call with `function_call` {name, arguments (a JSON string)}, each answer a `function` message
    with the tool's name; text an assistant wrote before its calls stays a message of its own."""
    shaped: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for message in messages:
        role = message.get("role")
        if role == "assistant" and message.get("tool_calls"):
            if _text(message.get("content")):
                shaped.append({"role": "assistant", "content": _text(message.get("content"))})
            for call in message["tool_calls"]:
                function = call.get("function") or {}
                arguments = function.get("arguments")
                names[str(call.get("id"))] = function.get("name", "")
                shaped.append({"role": "assistant", "content": "", "function_call": {
                    "name": function.get("name", ""),
                    "arguments": arguments if isinstance(arguments, str) else _dumps(arguments or {})}})
        elif role == "tool":
            shaped.append({"role": "function", "name": names.get(str(message.get("tool_call_id")), ""),
                           "content": _text(message.get("content"))})
        elif role in ("system", "user", "assistant"):
            shaped.append({"role": role, "content": _text(message.get("content"))})
        else:
            raise ExportError(f"unknown message role {role!r}")
    return shaped


def _mcp_servers(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The `metadata.mcp_servers` of the published rows: each server with its tools (own names, schemas)."""
    servers: dict[str, list[dict[str, Any]]] = {}
    for tool in tools:
        function = tool.get("function", tool)
        server, _, name = str(function.get("name", "")).partition("__")
        servers.setdefault(server if name else "", []).append(
            {"name": name or server, "description": function.get("description", ""),
             "input_schema": function.get("parameters", {})})
    return [{"server_name": server, "remote_server_response": {"tools": listed}} for server, listed in servers.items()]


def _response_assessment(trajectory: dict[str, Any]) -> dict[str, Any] | None:
    """The judge's completeness and conciseness (TOUCAN's keys), their mean, and the target-tool metrics."""
    judged = trajectory.get("response_quality_assessment")
    checks = trajectory.get("checks") or {}
    if not isinstance(judged, dict) or judged.get("error"):
        return None
    scores = [value["score"] for key, value in judged.items() if key in ("completeness", "conciseness")
              and isinstance(value, dict) and isinstance(value.get("score"), int)]
    return {**judged, "overall_score": sum(scores) / len(scores) if scores else None,
            "desired_tools_used_percentage": checks.get("target_tool_share"),
            "order_correctness": checks.get("target_order_kept"), "rule_checks": checks}


def _task_extra(trajectory: dict[str, Any]) -> dict[str, Any]:
    extra = trajectory.get("task_extra") or {}
    if not isinstance(extra, dict):
        raise ExportError(f"trajectory {trajectory.get('id', '?')!r}: task_extra must be an object")
    return extra


def _column(value: Any) -> Any:
    """A task's value for a TOUCAN column: text as it is, structures as JSON text (as the dataset has them)."""
    return value if value is None or isinstance(value, str) else _dumps(value)


def to_toucan(trajectory: dict[str, Any], subset_name: str | None = None) -> dict[str, Any]:
    """A row of the published dataset; judge scores in the assessment columns (None where not judged)."""
    _require(trajectory, "id", "question", "messages", "tools")
    extra = _task_extra(trajectory)
    metadata = {key: trajectory.get(key) for key in
                ("id", "mode", "repeat", "session", "outcome", "error", "final_answer", "tool_events", "usage",
                 "agent", "created_at", "turns", "conversation_end")}
    metadata["mcp_servers"] = _mcp_servers(trajectory["tools"])
    if extra:
        metadata["task"] = extra
    question_assessment = extra.get("question_quality_assessment")
    if isinstance(question_assessment, dict) and question_assessment.get("error"):
        question_assessment = None  # a failed judgement is no assessment
    response_assessment = _response_assessment(trajectory)
    return {
        "uuid": trajectory_uuid(trajectory),
        "subset_name": (subset_name or _column(extra.get("subset_name"))
                        or f"simgate-{trajectory.get('mode', 'unknown')}"),
        "question": trajectory["question"],
        "target_tools": ", ".join(trajectory.get("target_tools") or []),
        "available_tools": _dumps(trajectory["tools"]),
        "messages": _dumps(toucan_messages(trajectory["messages"])),
        "question_quality_assessment": _column(question_assessment),
        "response_quality_assessment": _dumps(response_assessment) if response_assessment else None,
        "metadata": _dumps(metadata),
    }


def to_openai(trajectory: dict[str, Any]) -> dict[str, Any]:
    """The trajectory as an OpenAI chat fine-tuning row: `messages` and `tools` as they were."""
    _require(trajectory, "id", "messages", "tools")
    return {"id": trajectory_uuid(trajectory), "messages": trajectory["messages"], "tools": trajectory["tools"]}


def _text(content: Any) -> str:
    """OpenAI message content (a string or a list of parts) as plain text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def _function_call(tool_calls: list[dict[str, Any]]) -> str:
    calls = []
    for call in tool_calls:
        function = call.get("function") or {}
        arguments = function.get("arguments")
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) else (arguments or {})
        except json.JSONDecodeError:
            parsed = arguments  # kept as the model wrote it: malformed calls are training signal too
        calls.append({"name": function.get("name", ""), "arguments": parsed})
    return _dumps(calls[0] if len(calls) == 1 else calls)


def to_sharegpt(trajectory: dict[str, Any]) -> dict[str, Any]:
    _require(trajectory, "id", "messages", "tools")
    conversations: list[dict[str, str]] = []
    observations: list[str] = []  # answers to one assistant turn's (possibly parallel) calls

    def flush() -> None:
        if observations:
            value = observations[0] if len(observations) == 1 else _dumps(observations)
            conversations.append({"from": "observation", "value": value})
            observations.clear()

    system = ""
    for message in trajectory["messages"]:
        role = message.get("role")
        if role == "tool":
            observations.append(_text(message.get("content")))
            continue
        flush()
        if role == "system":
            system = _text(message.get("content"))
        elif role == "user":
            conversations.append({"from": "human", "value": _text(message.get("content"))})
        elif role == "assistant":
            text = _text(message.get("content"))
            if message.get("tool_calls"):
                if text:  # what the model said before its call stays a turn of its own
                    conversations.append({"from": "gpt", "value": text})
                conversations.append({"from": "function_call", "value": _function_call(message["tool_calls"])})
            else:
                conversations.append({"from": "gpt", "value": text})
        else:
            raise ExportError(f"trajectory {trajectory['id']!r}: unknown message role {role!r}")
    flush()
    functions = [tool.get("function", tool) for tool in trajectory["tools"]]
    record: dict[str, Any] = {"id": trajectory_uuid(trajectory), "conversations": conversations,
                              "tools": _dumps(functions)}
    if system:
        record["system"] = system
    for key, value in _task_extra(trajectory).items():
        record.setdefault(key, value)
    return record


FORMATS = {"toucan": to_toucan, "openai": to_openai, "sharegpt": to_sharegpt}
