"""The gateway as the agent sees it: one MCP session per trajectory, its tools as OpenAI functions,
and each call turned into the text the model reads plus a `ToolEvent` from the result's provenance."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx2
import mcp_types as types
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from simgate.gateway.config.execution import Source
from simgate.gateway.naming import SEPARATOR, server_prefix
from simgate.runner.errors import GatewayUnreachable
from simgate.runner.trajectory import ToolEvent

PROVENANCE = "simgate/provenance"
MODE_HEADER = "X-Simgate-Mode"
SESSION_HEADER = "X-Simgate-Session"
TASK_HEADER = "X-Simgate-Task"
HOLDOUT_HEADER = "X-Simgate-Holdout"


def session_headers(mode: str, session: str, *, task: str | None = None,
                    holdout: str | None = None) -> dict[str, str]:
    """Sent on every request of the trajectory: the gateway resolves mode and session per call. The task
    labels what a live run records; a hold-out keeps the simulator from being shown recorded answers of
    the call (or of the whole task) it is evaluated on."""
    headers = {MODE_HEADER: mode, SESSION_HEADER: session}
    if task is not None:
        headers[TASK_HEADER] = task
    if holdout is not None and holdout != "none":
        headers[HOLDOUT_HEADER] = holdout
    return headers


def openai_tool(tool: types.Tool) -> dict[str, Any]:
    """An MCP tool as an OpenAI function tool definition."""
    parameters = dict(tool.input_schema or {"type": "object", "properties": {}})
    parameters.setdefault("type", "object")
    if parameters.get("type") == "object":
        parameters.setdefault("properties", {})
    return {"type": "function", "function": {"name": tool.name, "description": tool.description or "",
                                             "parameters": parameters}}


def tool_filter(servers: list[str] | None) -> Any:
    """Which gateway tool names a task may use: those of its servers (by their exposed prefix)."""
    if servers is None:
        return lambda name: True
    prefixes = tuple(server_prefix(server) + SEPARATOR for server in servers)
    return lambda name: name.startswith(prefixes)


def result_text(result: types.CallToolResult) -> str:
    """What the model reads: text blocks as they are, other blocks described, structured content
    only when there is no text (servers usually duplicate it into a text block)."""
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, types.TextContent):
            parts.append(block.text)
        elif isinstance(block, types.ImageContent | types.AudioContent):
            parts.append(f"[{block.type}: {block.mime_type}, {len(block.data)} base64 characters]")
        elif isinstance(block, types.EmbeddedResource):
            resource = block.resource
            text = getattr(resource, "text", None)
            parts.append(text if text is not None else f"[resource {resource.uri}: {resource.mime_type or 'binary'}]")
        elif isinstance(block, types.ResourceLink):
            parts.append(f"[resource link {block.uri}: {block.name}]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False, sort_keys=True))
    return "\n".join(parts)


class ToolCallOutcome:
    """A finished call: the text for the `role: tool` message and the event for the trajectory."""

    __slots__ = ("event", "text")

    def __init__(self, text: str, event: ToolEvent) -> None:
        self.text = text
        self.event = event


def _source(provenance: dict[str, Any]) -> Source | None:
    source = provenance.get("source")
    return Source(source) if source in tuple(Source) else None


class GatewaySession:
    """One trajectory's MCP session with the gateway."""

    def __init__(self, session: ClientSession, tools: list[types.Tool]) -> None:
        self._session = session
        self.tools = tools
        self.names = {tool.name for tool in tools}

    def openai_tools(self) -> list[dict[str, Any]]:
        return [openai_tool(tool) for tool in self.tools]

    def refuse(self, name: str, reason: str, *, call_id: str, step: int) -> ToolCallOutcome:
        """A call the model asked for that cannot be made (unparseable arguments): an error answer,
        never sent to the gateway."""
        server, _, tool = name.partition(SEPARATOR)
        event = ToolEvent(step=step, call_id=call_id, name=name, server=server or None, tool=tool or None,
                          arguments={}, source=None, cache_key=None, latency_ms=0.0, is_error=True)
        return ToolCallOutcome(f"Error: {reason}", event)

    async def call(self, name: str, arguments: dict[str, Any], *, call_id: str, step: int) -> ToolCallOutcome:
        """Call a tool; every failure (unknown tool, bad arguments, replay miss, upstream down) becomes
        an error answer the model reads, as a real tool-using agent would see it."""
        started = time.perf_counter()
        provenance: dict[str, Any] = {}
        try:
            if name not in self.names:
                raise MCPError(types.INVALID_PARAMS, f"unknown tool {name!r}")
            result = await self._session.call_tool(name, arguments)
        except MCPError as exc:
            data = exc.error.data if isinstance(exc.error.data, dict) else {}
            provenance = data.get(PROVENANCE) or {}
            text, is_error = f"Error: {exc.message}", True
        except Exception as exc:  # noqa: BLE001  (a broken answer, e.g. invalid structuredContent)
            text, is_error = f"Error: {type(exc).__name__}: {exc}", True
        else:
            if not isinstance(result, types.CallToolResult):
                text, is_error = f"Error: the gateway answered {type(result).__name__}, not a tool result", True
            else:
                provenance = (result.meta or {}).get(PROVENANCE) or {}
                text, is_error = result_text(result), bool(result.is_error)
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        server, _, tool = name.partition(SEPARATOR)
        event = ToolEvent(step=step, call_id=call_id, name=name, server=provenance.get("server") or server or None,
                          tool=provenance.get("tool") or tool or None, arguments=arguments,
                          source=_source(provenance), cache_key=provenance.get("cache_key"),
                          latency_ms=latency_ms, is_error=is_error)
        return ToolCallOutcome(text, event)


async def list_all_tools(session: ClientSession) -> list[types.Tool]:
    tools: list[types.Tool] = []
    cursor: str | None = None
    while True:
        params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await session.list_tools(params=params)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            return tools


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@asynccontextmanager
async def gateway_session(url: str, *, mode: str, session: str, servers: list[str] | None = None,
                          timeout: float = 300.0, task: str | None = None,
                          holdout: str | None = None) -> AsyncIterator[GatewaySession]:
    """Open the trajectory's session and list its tools (sorted by name, so the prompt is stable)."""
    opened = False
    try:
        async with AsyncExitStack() as stack:
            http = await stack.enter_async_context(httpx2.AsyncClient(
                headers=session_headers(mode, session, task=task, holdout=holdout),
                timeout=httpx2.Timeout(30, read=timeout)))
            read, write = await stack.enter_async_context(streamable_http_client(url, http_client=http))
            client = await stack.enter_async_context(ClientSession(read, write))
            await client.initialize()
            allowed = tool_filter(servers)
            tools = sorted((t for t in await list_all_tools(client) if allowed(t.name)), key=lambda t: t.name)
            opened = True
            yield GatewaySession(client, tools)
    except Exception as exc:
        if opened:
            raise  # the trajectory's own failure, not the gateway's absence
        leaf = _leaf(exc)
        if isinstance(leaf, MCPError):
            raise GatewayUnreachable(f"the gateway at {url} refused the session: {leaf.message}") from None
        raise GatewayUnreachable(f"cannot reach the gateway at {url}: {_describe(leaf)}") from None


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
