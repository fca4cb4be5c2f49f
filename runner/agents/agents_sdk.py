"""The same tasks through a real agent framework: the OpenAI Agents SDK, its `MCPServerStreamableHttp`
pointed at the gateway with the trajectory's mode and session headers. The framework is used
unchanged; the runner only watches: a subclass of the SDK's MCP server records each call's
provenance, hooks count model turns, and the run's items become OpenAI chat messages.

`openai-agents` (>= 0.24) supports mcp 2.x and installs beside it (`pip install 'simgate[agents]'`).
"""

from __future__ import annotations

import time
from typing import Any

from mcp.shared.exceptions import MCPError

from simgate.gateway.config.execution import Source
from simgate.runner.agents.base import SYSTEM_PROMPT, Draft, api_key, call_id
from simgate.runner.errors import AgentError, DependencyMissing, LLMRequestRejected, LLMUnreachable
from simgate.runner.mcp_tools import PROVENANCE, GatewaySession, session_headers
from simgate.runner.settings import RunSettings
from simgate.runner.tasks import Task
from simgate.runner.trajectory import ToolEvent


def _sdk() -> Any:
    try:
        import agents
        import agents.mcp
    except ImportError:
        raise DependencyMissing("--agent agents-sdk needs the OpenAI Agents SDK: pip install 'simgate[agents]' "
                                "(openai-agents)") from None
    return agents


class AgentsSDKAgent:
    kind = "agents-sdk"

    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings
        self.sdk = _sdk()

    async def run(self, task: Task, gateway: GatewaySession, draft: Draft) -> None:
        import openai
        from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, RunConfig, RunHooks, Runner
        from agents.exceptions import AgentsException, MaxTurnsExceeded
        from agents.mcp import MCPServerStreamableHttp, create_static_tool_filter

        settings = self.settings
        session = settings.session_id(task.id, settings.repeat)
        draft.tools = gateway.openai_tools()
        events: list[ToolEvent] = []
        turns = [0]

        class WatchedGateway(MCPServerStreamableHttp):  # type: ignore[misc,valid-type]
            """The SDK's own MCP client; each call's provenance is noted on the way through."""

            async def call_tool(self, tool_name: str, arguments: dict[str, Any] | None,
                                meta: dict[str, Any] | None = None) -> Any:
                started = time.perf_counter()
                step = max(turns[0] - 1, 0)
                try:
                    result = await super().call_tool(tool_name, arguments, meta)
                except Exception as exc:
                    events.append(_event(step, tool_name, arguments, _error_provenance(exc), True, started))
                    raise
                provenance = (result.meta or {}).get(PROVENANCE) or {}
                events.append(_event(step, tool_name, arguments, provenance, bool(result.is_error), started))
                return result

        class CountTurns(RunHooks):  # type: ignore[misc,valid-type]
            async def on_llm_end(self, context: Any, agent: Any, response: Any) -> None:
                turns[0] += 1

        server = WatchedGateway(
            params={"url": settings.gateway, "headers": session_headers(settings.mode, session, task=task.id,
                                                                          holdout=settings.holdout),
                    "timeout": 30, "sse_read_timeout": settings.task_timeout},
            name="simgate", cache_tools_list=True, client_session_timeout_seconds=settings.task_timeout,
            tool_filter=create_static_tool_filter(allowed_tool_names=sorted(gateway.names)))
        client = openai.AsyncOpenAI(base_url=settings.llm_base_url, api_key=api_key(settings),
                                    timeout=settings.llm_timeout, max_retries=2)
        extra: dict[str, Any] = {"seed": settings.seed} if settings.seed is not None else {}
        model_settings = ModelSettings(temperature=settings.temperature, max_tokens=settings.max_tokens,
                                       parallel_tool_calls=settings.parallel_tool_calls if draft.tools else None,
                                       # The SDK resets it to auto after the first tool call.
                                       tool_choice=settings.first_tool_choice if draft.tools else None,
                                       extra_args=extra or None)
        system = SYSTEM_PROMPT  # what the model is shown, kept as the trajectory's system message
        if settings.agents_sdk_tool_calls == "prompted":
            from simgate.runner.agents.prompted import system_prompt
            from simgate.runner.agents.sdk_prompted import PromptedChatModel

            model: Any = PromptedChatModel(client, settings)
            system = system_prompt(draft.tools)
        else:
            model = OpenAIChatCompletionsModel(model=settings.model, openai_client=client)
        agent = Agent(name="simgate-runner", instructions=SYSTEM_PROMPT, mcp_servers=[server], model=model,
                      model_settings=model_settings)
        items: list[Any] = [{"role": "user", "content": task.question}]
        context: Any = None  # the run's context, which holds its usage
        try:
            async with client, server:
                try:
                    result = await Runner.run(agent, task.question, max_turns=settings.max_turns, hooks=CountTurns(),
                                              run_config=RunConfig(tracing_disabled=True))
                    items, context = result.to_input_list(), result.context_wrapper
                    draft.final_answer = str(result.final_output or "").strip()
                    draft.outcome = "final_answer"
                except MaxTurnsExceeded as exc:
                    items, context = _partial_items(task.question, exc), _context(exc)
                    draft.outcome = "max_turns"
                except AgentsException as exc:
                    items, context = _partial_items(task.question, exc), _context(exc)
                    raise AgentError(f"the Agents SDK stopped: {type(exc).__name__}: {exc}") from None
                except openai.APIConnectionError:
                    raise LLMUnreachable(f"cannot reach the LLM at {settings.llm_base_url}") from None
                except openai.APIStatusError as exc:
                    raise LLMRequestRejected(exc.status_code, exc.message) from None
        finally:
            usage = getattr(context, "usage", None)
            if usage is not None:
                draft.usage.prompt_tokens += usage.input_tokens
                draft.usage.completion_tokens += usage.output_tokens
                draft.usage.total_tokens += usage.total_tokens
            draft.usage.llm_calls += turns[0]
            messages, draft.tool_events = chat_messages(items, events)
            draft.messages = [{"role": "system", "content": system}, *messages]


def _event(step: int, name: str, arguments: dict[str, Any] | None, provenance: dict[str, Any], is_error: bool,
           started: float) -> ToolEvent:
    server, _, tool = name.partition("__")
    source = provenance.get("source")
    return ToolEvent(step=step, call_id="", name=name, server=provenance.get("server") or server or None,
                     tool=provenance.get("tool") or tool or None, arguments=dict(arguments or {}),
                     source=Source(source) if source in tuple(Source) else None,
                     cache_key=provenance.get("cache_key"),
                     latency_ms=round((time.perf_counter() - started) * 1000, 3), is_error=is_error)


def _error_provenance(exc: BaseException | None) -> dict[str, Any]:
    """The gateway's provenance on a JSON-RPC error, which the SDK wraps in its own exception."""
    while exc is not None:
        if isinstance(exc, MCPError):
            data = exc.error.data
            return (data.get(PROVENANCE) or {}) if isinstance(data, dict) else {}
        exc = exc.__cause__ or exc.__context__
    return {}


def _context(exc: Any) -> Any:
    return getattr(getattr(exc, "run_data", None), "context_wrapper", None)


def _partial_items(question: str, exc: Any) -> list[Any]:
    """What the run had done when it stopped (the SDK keeps it on the exception)."""
    data = getattr(exc, "run_data", None)
    if data is None:
        return [{"role": "user", "content": question}]
    return [{"role": "user", "content": question}, *(item.to_input_item() for item in data.new_items)]


def chat_messages(items: list[Any], events: list[ToolEvent]) -> tuple[list[dict[str, Any]], list[ToolEvent]]:
    """The run's items as OpenAI chat messages with runner-assigned call ids (`call_{step}_{i}`: the
    model's own ids are random), and the recorded events matched to the calls by name, in order."""
    from agents.models.chatcmpl_converter import Converter

    messages = [_plain(m) for m in Converter.items_to_messages(items)] if items else []
    renamed: dict[str, str] = {}
    pending = list(events)
    matched: list[ToolEvent] = []
    step = -1
    for message in messages:
        if message.get("role") == "assistant":
            step += 1
            for index, tool_call in enumerate(message.get("tool_calls") or []):
                new_id = call_id(step, index)
                renamed[tool_call["id"]] = new_id
                tool_call["id"] = new_id
                name = tool_call.get("function", {}).get("name")
                for position, event in enumerate(pending):
                    if event.name == name:
                        matched.append(event.model_copy(update={"call_id": new_id, "step": step}))
                        del pending[position]
                        break
        elif message.get("role") == "tool" and message.get("tool_call_id") in renamed:
            message["tool_call_id"] = renamed[message["tool_call_id"]]
    for message in messages:
        if message.get("role") == "tool" and not isinstance(message.get("content"), str):
            message["content"] = _text(message.get("content"))
    return messages, matched


def _plain(message: Any) -> dict[str, Any]:
    return dict(message) if isinstance(message, dict) else dict(message.model_dump(exclude_none=True))


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    return "" if content is None else str(content)


__all__ = ["AgentsSDKAgent", "chat_messages"]
