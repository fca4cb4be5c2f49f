"""Prompted tool calling: the tools are described in the system prompt and every model turn is
constrained (`response_format` json_schema) to one tool call or a final answer, then parsed and
checked again (a constraint is never trusted alone). For models and servers without native
tool-call parsing. The trajectory is still written in the OpenAI chat format."""

from __future__ import annotations

import json
from typing import Any

import openai

from simgate.results import bounded
from simgate.runner.agents.base import Draft, assistant_tool_calls, call_id, complete, llm_client, run_calls
from simgate.runner.errors import AgentError, LLMRequestRejected
from simgate.runner.mcp_tools import GatewaySession
from simgate.runner.settings import RunSettings
from simgate.runner.tasks import Task

INSTRUCTIONS = (
    "You are a helpful assistant with access to tools. Use the tools when they help to answer the user's "
    "question, then give a final answer.\n\n"
    "Answer with exactly one JSON object and nothing else:\n"
    '- to call a tool: {"tool_call": {"name": "<tool name>", "arguments": {<arguments>}}}\n'
    '- when you are done: {"final_answer": "<your answer to the user>"}\n'
    "After a tool call you get its result and answer again.")
# Keys a JSON schema may carry that constrained decoders reject or that say nothing to them.
_DROP = ("$schema", "$id", "title", "examples", "default")


def system_prompt(tools: list[dict[str, Any]]) -> str:
    lines = [INSTRUCTIONS, "", "Tools:"]
    for tool in tools:
        function = tool["function"]
        lines.append(f"- {function['name']}: {function['description'].strip() or '(no description)'}")
        lines.append(f"  arguments (JSON schema): {json.dumps(function['parameters'], sort_keys=True)}")
    if not tools:
        lines.append("(none: answer directly)")
    return "\n".join(lines)


def _clean(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _clean(v) for k, v in schema.items() if k not in _DROP}
    if isinstance(schema, list):
        return [_clean(item) for item in schema]
    return schema


def _nest(schema: dict[str, Any], prefix: str, at: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A tool's argument schema made to work nested at JSON pointer `at` of the answer schema: its
    definitions are returned to be hoisted to the root under `{prefix}{name}` (tools' definitions
    may share names), and its local `$ref`s rewritten to match."""
    definitions = {**(schema.get("definitions") or {}), **(schema.get("$defs") or {})}

    def rewrite(node: Any) -> Any:
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        if not isinstance(node, dict):
            return node
        out = {key: rewrite(value) for key, value in node.items() if key not in ("$defs", "definitions")}
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#"):
            for root in ("#/$defs/", "#/definitions/"):
                if ref.startswith(root):
                    out["$ref"] = "#/$defs/" + prefix + ref[len(root):]
                    break
            else:
                out["$ref"] = "#" + at + ref[1:]
        return out

    hoisted = {prefix + name: rewrite(definition) for name, definition in definitions.items()}
    return rewrite(schema), hoisted


def answer_schema(tools: list[dict[str, Any]], *, per_tool_arguments: bool, max_string: int | None,
                  max_items: int | None) -> dict[str, Any]:
    """One tool call (per tool: its name and its own argument schema, or a name enum and any object)
    or a final answer."""
    names = [tool["function"]["name"] for tool in tools]
    final = {"type": "object", "properties": {"final_answer": {"type": "string"}},
             "required": ["final_answer"], "additionalProperties": False}
    if not names:
        return bounded(final, max_string=max_string, max_items=max_items)
    call: dict[str, Any]
    definitions: dict[str, Any] = {}
    if per_tool_arguments:
        branches = []
        for index, tool in enumerate(tools):
            at = f"/anyOf/0/properties/tool_call/anyOf/{index}/properties/arguments"
            arguments, hoisted = _nest(_clean(tool["function"]["parameters"]), f"t{index}_", at)
            definitions.update(hoisted)
            branches.append({"type": "object", "properties": {
                "name": {"type": "string", "enum": [tool["function"]["name"]]}, "arguments": arguments},
                "required": ["name", "arguments"], "additionalProperties": False})
        call = {"anyOf": branches}
    else:
        # additionalProperties spelled out so that `bounded` caps how many a small model writes
        call = {"type": "object", "properties": {"name": {"type": "string", "enum": names},
                                                 "arguments": {"type": "object", "additionalProperties": True}},
                "required": ["name", "arguments"], "additionalProperties": False}
    tool_call = {"type": "object", "properties": {"tool_call": call}, "required": ["tool_call"],
                 "additionalProperties": False}
    schema: dict[str, Any] = {"anyOf": [tool_call, final]}
    if definitions:
        schema["$defs"] = definitions
    return bounded(schema, max_string=max_string, max_items=max_items)


def prompted_view(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages as a model without native tool calling sees them: its tool calls as the JSON it
    answered, and tool results as user turns."""
    names: dict[str, str] = {}
    view: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role == "assistant" and message.get("tool_calls"):
            for tool_call in message["tool_calls"]:
                function = tool_call["function"]
                names[tool_call["id"]] = function["name"]
                try:
                    arguments = json.loads(function.get("arguments") or "{}")
                except json.JSONDecodeError:
                    arguments = function.get("arguments")
                view.append({"role": "assistant", "content": json.dumps(
                    {"tool_call": {"name": function["name"], "arguments": arguments}}, ensure_ascii=False)})
        elif role == "assistant":
            view.append({"role": "assistant", "content": json.dumps({"final_answer": message.get("content") or ""},
                                                                    ensure_ascii=False)})
        elif role == "tool":
            name = names.get(message.get("tool_call_id", ""), "the tool")
            view.append({"role": "user", "content": f"Result of {name}:\n{message.get('content') or ''}"})
        elif role in ("system", "developer", "user"):
            content = message.get("content")
            if isinstance(content, list):  # content parts
                content = "\n".join(part.get("text", "") for part in content if isinstance(part, dict))
            view.append({"role": "system" if role == "developer" else role, "content": content or ""})
    return view


def response_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "agent_turn", "schema": schema}}


def parse_answer(raw: str | None, names: set[str]) -> tuple[str, Any]:
    """("tool_call", (name, arguments)) or ("final_answer", text); AgentError when it is neither."""
    try:
        value = json.loads(raw or "")
    except json.JSONDecodeError as exc:
        raise AgentError(f"the model's answer is not JSON ({exc.msg} at column {exc.colno}): {raw!r:.200}") from None
    if not isinstance(value, dict) or len(value) != 1:
        raise AgentError(f"the model's answer must be one of tool_call or final_answer: {raw!r:.200}")
    if isinstance(value.get("final_answer"), str):
        return "final_answer", value["final_answer"]
    call = value.get("tool_call")
    if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not isinstance(
            call.get("arguments", {}), dict):
        raise AgentError(f"the model's tool_call needs a name and an arguments object: {raw!r:.200}")
    if call["name"] not in names:
        raise AgentError(f"the model called an unknown tool {call['name']!r}")
    return "tool_call", (call["name"], call.get("arguments", {}))


class PromptedAgent:
    kind = "prompted"

    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings

    async def run(self, task: Task, gateway: GatewaySession, draft: Draft) -> None:
        settings = self.settings
        draft.tools = gateway.openai_tools()
        names = {tool["function"]["name"] for tool in draft.tools}
        system = system_prompt(draft.tools)
        draft.open_turn(system, task.question)
        per_tool = True
        async with llm_client(settings) as client:
            for step in range(draft.steps, draft.steps + settings.max_turns):
                draft.steps = step + 1
                schema = answer_schema(draft.tools, per_tool_arguments=per_tool, max_string=settings.max_string_length,
                                       max_items=settings.max_array_items)
                try:
                    choice = await self._ask(client, draft, schema)
                except LLMRequestRejected as exc:
                    if not per_tool or exc.status != 400:
                        raise
                    # An endpoint whose grammar compiler cannot take a tool's schema: fall back to a
                    # name enum and any object (the gateway still validates the arguments).
                    per_tool = False
                    schema = answer_schema(draft.tools, per_tool_arguments=False,
                                           max_string=settings.max_string_length, max_items=settings.max_array_items)
                    choice = await self._ask(client, draft, schema)
                raw = choice.message.content
                try:
                    kind, value = parse_answer(raw, names)
                except AgentError:
                    draft.messages.append({"role": "assistant", "content": raw or ""})
                    raise
                if kind == "final_answer":
                    draft.final_answer = value.strip()
                    draft.messages.append({"role": "assistant", "content": value})
                    draft.outcome = "final_answer"
                    return
                name, arguments = value
                cid = call_id(step, 0)
                draft.messages.append(assistant_tool_calls([(cid, name, arguments)]))
                await run_calls(gateway, draft, step, [(cid, name, arguments)])
        draft.outcome = "max_turns"

    async def _ask(self, client: openai.AsyncOpenAI, draft: Draft, schema: dict[str, Any]) -> Any:
        return await complete(client, self.settings, draft, messages=prompted_view(draft.messages),
                              response_format=response_format(schema))
