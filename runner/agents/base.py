"""What every agent shares: the trajectory under construction, the LLM client, the error mapping."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Protocol

import openai

from simgate.runner.errors import AgentError, LLMRequestRejected, LLMUnreachable
from simgate.runner.mcp_tools import GatewaySession
from simgate.runner.settings import RunSettings
from simgate.runner.tasks import Task
from simgate.runner.trajectory import Outcome, ToolEvent, Usage, UserTurn

SYSTEM_PROMPT = ("You are a helpful assistant with access to tools. Use the tools when they help to answer the "
                 "user's question, then give a final answer.")


@dataclass
class Draft:
    """A trajectory being made. Agents append as they go; the runner turns it into a `Trajectory`."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_events: list[ToolEvent] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    final_answer: str | None = None
    outcome: Outcome | None = None
    error: str | None = None
    turns: list[UserTurn] = field(default_factory=list)
    conversation_end: str | None = None
    steps: int = 0  # model turns so far, over every user turn: step numbers and call ids stay unique

    def open_turn(self, system: str, question: str) -> None:
        """Start answering a user message: the conversation begins with the system prompt; later user
        turns continue it (same tools, same gateway session)."""
        if not self.messages:
            self.messages.append({"role": "system", "content": system})
        self.messages.append({"role": "user", "content": question})
        self.final_answer, self.outcome = None, None


class Agent(Protocol):
    kind: str

    async def run(self, task: Task, gateway: GatewaySession, draft: Draft) -> None:
        """Work the task; set `draft.outcome` to `final_answer` or `max_turns` (errors are raised)."""


def api_key(settings: RunSettings) -> str:
    if settings.api_key_env is None:
        return "not-needed"  # local OpenAI-compatible servers take any key
    value = os.environ.get(settings.api_key_env)
    if not value:
        raise LLMUnreachable(f"the environment variable {settings.api_key_env} (--api-key-env) is not set")
    return value


def llm_client(settings: RunSettings) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=settings.llm_base_url, api_key=api_key(settings),
                              timeout=settings.llm_timeout, max_retries=2)


def sampling(settings: RunSettings) -> dict[str, Any]:
    """The request fields that make answers reproducible (temperature, seed) and bounded."""
    fields: dict[str, Any] = {"temperature": settings.temperature}
    if settings.seed is not None:
        fields["seed"] = settings.seed
    if settings.max_tokens is not None:
        fields["max_tokens"] = settings.max_tokens
    return fields


async def complete(client: openai.AsyncOpenAI, settings: RunSettings, draft: Draft, **request: Any) -> Any:
    """One chat completion, counted in the usage; endpoint failures become typed errors."""
    try:
        response = await client.chat.completions.create(model=settings.model, **sampling(settings), **request)
    except openai.APIConnectionError as exc:
        raise LLMUnreachable(f"cannot reach the LLM at {settings.llm_base_url}: {exc}") from None
    except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as exc:
        raise LLMUnreachable(f"the LLM at {settings.llm_base_url} refused the request: {exc.message}") from None
    except openai.APIStatusError as exc:
        raise LLMRequestRejected(exc.status_code, exc.message) from None
    usage = getattr(response, "usage", None)
    draft.usage.add(getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None),
                    getattr(usage, "total_tokens", None))
    if not response.choices:
        raise AgentError("the LLM answered without a choice")
    return response.choices[0]


def call_id(step: int, index: int) -> str:
    """Ids the runner assigns (servers' own ids are random): a trajectory is byte-reproducible."""
    return f"call_{step}_{index}"


def arguments_json(arguments: dict[str, Any]) -> str:
    return json.dumps(arguments, ensure_ascii=False)


def assistant_tool_calls(calls: list[tuple[str, str, dict[str, Any] | str]],
                         content: str | None = None) -> dict[str, Any]:
    """An assistant message in the OpenAI chat format asking for (call_id, name, arguments) calls;
    arguments the model gave as unparseable text stay as it gave them."""
    return {"role": "assistant", "content": content,
            "tool_calls": [{"id": cid, "type": "function", "function": {
                "name": name, "arguments": args if isinstance(args, str) else arguments_json(args)}}
                for cid, name, args in calls]}


async def run_calls(gateway: GatewaySession, draft: Draft, step: int,
                    calls: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
    """Call the tools one after another, in order (a sequential replay depends on it), and append the
    `role: tool` messages; returns the texts."""
    texts = []
    for cid, name, arguments in calls:
        outcome = await gateway.call(name, arguments, call_id=cid, step=step)
        draft.tool_events.append(outcome.event)
        draft.messages.append({"role": "tool", "tool_call_id": cid, "content": outcome.text})
        texts.append(outcome.text)
    return texts
