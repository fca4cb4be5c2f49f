"""The native loop: OpenAI chat completions with the gateway's tools as functions."""

from __future__ import annotations

import json
from typing import Any

from simgate.runner.agents.base import (
    SYSTEM_PROMPT,
    Draft,
    assistant_tool_calls,
    call_id,
    complete,
    llm_client,
    run_calls,
)
from simgate.runner.mcp_tools import GatewaySession
from simgate.runner.settings import RunSettings
from simgate.runner.tasks import Task


def _parse_arguments(raw: str | None) -> tuple[dict[str, Any] | None, str | None]:
    """(arguments, None) or (None, why not)."""
    try:
        value = json.loads(raw or "{}")
    except json.JSONDecodeError as exc:
        return None, f"the arguments are not valid JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(value, dict):
        return None, f"the arguments must be a JSON object, got {type(value).__name__}"
    return value, None


class NativeAgent:
    kind = "native"

    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings

    async def run(self, task: Task, gateway: GatewaySession, draft: Draft) -> None:
        settings = self.settings
        client = llm_client(settings)
        draft.tools = gateway.openai_tools()
        draft.open_turn(SYSTEM_PROMPT, task.question)
        request: dict[str, Any] = {}
        if draft.tools:
            request = {"tools": draft.tools, "parallel_tool_calls": settings.parallel_tool_calls}
        async with client:
            first = draft.steps
            for step in range(first, first + settings.max_turns):
                draft.steps = step + 1
                if draft.tools and settings.first_tool_choice == "required":
                    request["tool_choice"] = "required" if step == first else "auto"
                choice = await complete(client, settings, draft, messages=draft.messages, **request)
                message = choice.message
                asked = list(message.tool_calls or [])
                if not settings.parallel_tool_calls:
                    asked = asked[:1]  # a model may ignore the flag; the trajectory keeps what was run
                if not asked:
                    draft.final_answer = (message.content or "").strip()
                    draft.messages.append({"role": "assistant", "content": message.content or ""})
                    draft.outcome = "final_answer"
                    return
                parsed: list[tuple[str, str, dict[str, Any], str | None]] = []
                shown: list[tuple[str, str, dict[str, Any] | str]] = []
                for index, tool_call in enumerate(asked):
                    function = getattr(tool_call, "function", None)
                    name = getattr(function, "name", "") or ""
                    raw = getattr(function, "arguments", None)
                    arguments, problem = _parse_arguments(raw)
                    parsed.append((call_id(step, index), name, arguments or {}, problem))
                    shown.append((call_id(step, index), name, arguments if arguments is not None else raw or ""))
                draft.messages.append(assistant_tool_calls(shown, message.content))
                for cid, name, arguments, problem in parsed:
                    if problem is None:
                        await run_calls(gateway, draft, step, [(cid, name, arguments)])
                    else:
                        refused = gateway.refuse(name, problem, call_id=cid, step=step)
                        draft.tool_events.append(refused.event)
                        draft.messages.append({"role": "tool", "tool_call_id": cid, "content": refused.text})
        draft.outcome = "max_turns"
