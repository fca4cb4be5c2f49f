"""An MCP server (the SDK's low-level `Server`) that answers from an `Exposure` and the call pipeline."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Container, Mapping
from typing import Any

import anyio
import mcp_types as types
from mcp.server.caching import CacheHint
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import NotificationOptions, Server
from mcp.server.models import InitializationOptions
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from simgate.gateway.auth.api_keys import ApiKey
from simgate.gateway.auth.middleware import presented_key
from simgate.gateway.downstream.audience import Listener
from simgate.gateway.downstream.exposure import Exposure
from simgate.gateway.downstream.legacy_sse import legacy_session
from simgate.gateway.downstream.request_origin import RequestOrigin
from simgate.gateway.errors import InvalidHoldout, InvalidMode
from simgate.gateway.pipeline.call import Pipeline, ToolCall
from simgate.gateway.sessions import checked_name

logger = logging.getLogger("simgate.downstream")

Ctx = ServerRequestContext[Any, Any]
Handler = Callable[[Ctx, Any], Awaitable[dict[str, Any]]]

_LIST_METHODS = ("tools/list", "prompts/list", "resources/list", "resources/templates/list")

MODE_HEADER = "x-simgate-mode"
MODE_META_KEY = "simgate/mode"
SESSION_HEADER = "x-simgate-session"
SESSION_META_KEY = "simgate/session"
TASK_HEADER = "x-simgate-task"
TASK_META_KEY = "simgate/task"
HOLDOUT_HEADER = "x-simgate-holdout"
HOLDOUT_META_KEY = "simgate/holdout"
HOLDOUTS = ("none", "call", "task")
# Seconds a client session may take to accept a notification of no request (it is handed to its stream at once
# unless the client has stopped reading it: then its socket's buffers are full). Past that it hears no more of
# them until its next request: a client that never reads must not hold up the others, nor pile up tasks.
SLOW_CLIENT_SECONDS = 2.0


class ProxyServer(Server[Any]):
    """Capabilities, identity and instructions are read from the upstreams when a client connects."""

    def __init__(self, exposure: Exposure, pipeline: Pipeline, *,
                 open_session_ids: Callable[[], Container[str]] | None = None,
                 on_client_gone: Callable[[str], None] | None = None) -> None:
        # Lists are live views of the upstreams: 2026-era clients are told they go stale at once.
        hints = {method: CacheHint(ttl_ms=0, scope="private") for method in _LIST_METHODS}
        super().__init__(exposure.gateway_name, get_tool_input_schema=exposure.input_schema, cache_hints=hints)
        self.exposure = exposure
        self.pipeline = pipeline
        # The SDK's per-request OpenTelemetry span duplicates the gateway's own call observation.
        self.middleware = []
        self.clients: dict[str, Listener] = {}  # the client sessions met, by id
        # The ids of the client sessions still open (the app's, from its session manager).
        self.open_session_ids = open_session_ids
        # Told when a client session is known to have ended (the app drops its run state).
        self.on_client_gone = on_client_gone
        for method, params_type, handler in (
            ("tools/list", types.PaginatedRequestParams, self._list_tools),
            ("tools/call", types.CallToolRequestParams, self._call_tool),
            ("prompts/list", types.PaginatedRequestParams, self._list_prompts),
            ("prompts/get", types.GetPromptRequestParams, self._get_prompt),
            ("resources/list", types.PaginatedRequestParams, self._list_resources),
            ("resources/templates/list", types.PaginatedRequestParams, self._list_resource_templates),
            ("resources/read", types.ReadResourceRequestParams, self._resource_request),
            ("resources/subscribe", types.SubscribeRequestParams, self._resource_request),
            ("resources/unsubscribe", types.UnsubscribeRequestParams, self._resource_request),
            ("completion/complete", types.CompleteRequestParams, self._complete),
            ("logging/setLevel", types.SetLevelRequestParams, self._set_logging_level),
        ):
            self.add_request_handler(method, params_type, _for_both_eras(handler))
        # Known from the handshake on: its notifications reach it, and its calls can be answered directly.
        self.add_notification_handler("notifications/initialized", types.NotificationParams, self._initialized)

    # Identity and capabilities mirror the upstreams, which are only known once they have started.
    def get_capabilities(self, notification_options: NotificationOptions | None = None,
                         experimental_capabilities: dict[str, dict[str, Any]] | None = None,
                         extensions: dict[str, dict[str, Any]] | None = None, *,
                         protocol_version: str | None = None) -> types.ServerCapabilities:
        return self.exposure.capabilities()

    def create_initialization_options(self, notification_options: NotificationOptions | None = None,
                                      experimental_capabilities: dict[str, dict[str, Any]] | None = None,
                                      extensions: dict[str, dict[str, Any]] | None = None) -> InitializationOptions:
        info = self.exposure.server_info()
        return InitializationOptions(server_name=info.name, server_version=info.version, title=info.title,
                                     description=info.description, capabilities=self.exposure.capabilities(),
                                     instructions=self.exposure.instructions(), website_url=info.website_url,
                                     icons=info.icons)

    @property
    def server_info(self) -> types.Implementation:
        return self.exposure.server_info()

    @property
    def server_info_stamp(self) -> dict[str, Any]:
        return self.exposure.server_info().model_dump(by_alias=True, mode="json", exclude_none=True)

    @property
    def instructions(self) -> str | None:  # type: ignore[override]
        return self.exposure.instructions()

    @instructions.setter
    def instructions(self, value: str | None) -> None:
        pass  # set by Server.__init__; the upstreams' instructions are used instead

    # ---------------------------------------------------------------- handlers

    def _remember(self, ctx: Ctx) -> Listener | None:
        session_id = _client_session(ctx)
        if not session_id:
            return None
        client = self.clients.get(session_id)
        if client is None:
            if self.open_session_ids is not None:  # forget the sessions that ended, as a new one comes
                open_ids = self.open_session_ids()
                for ended in [known for known in self.clients if known not in open_ids]:
                    del self.clients[ended]
                    if self.on_client_gone is not None:
                        self.on_client_gone(ended)
            client = self.clients[session_id] = Listener(ctx.session, _api_key(ctx))
        else:
            client.key = _api_key(ctx)  # what it may hear follows the key it presents now
        return client

    async def _initialized(self, ctx: Ctx, params: Any) -> None:
        self._remember(ctx)

    async def _list_tools(self, ctx: Ctx, params: Any) -> dict[str, Any]:
        self._remember(ctx)
        key = _api_key(ctx)
        return self.exposure.list_tools(key.allows_tool if key is not None else None)

    async def _call_tool(self, ctx: Ctx, params: types.CallToolRequestParams) -> dict[str, Any]:
        self._remember(ctx)
        raw = dict(ctx.params or {})
        entry = self.exposure.resolve_tool(params.name)
        meta = raw.get("_meta") if isinstance(raw.get("_meta"), dict) else None
        holdout = (meta or {}).get(HOLDOUT_META_KEY) or _header(ctx, HOLDOUT_HEADER)
        if holdout is not None and holdout not in HOLDOUTS:
            raise InvalidHoldout(f"unknown hold-out {holdout!r}; expected one of {', '.join(HOLDOUTS)}",
                                 data={"holdout": holdout})
        call = ToolCall(
            server=entry.server,
            tool=entry.tool,
            exposed_name=entry.exposed,
            arguments=dict(raw.get("arguments") or {}),
            meta=meta,
            tool_definition=entry.definition,
            session_id=checked_name((meta or {}).get(SESSION_META_KEY), f"_meta[{SESSION_META_KEY!r}]")
            or checked_name(_header(ctx, SESSION_HEADER), "X-Simgate-Session") or _client_session(ctx),
            client_session=_client_session(ctx),
            task=_text((meta or {}).get(TASK_META_KEY)) or _header(ctx, TASK_HEADER),
            holdout=None if holdout == "none" else holdout,
            mode=_mode_asked(meta) or _header(ctx, MODE_HEADER),
            origin=RequestOrigin(ctx),
            api_key=_api_key(ctx),
        )
        return await self.pipeline(call)

    async def _list_prompts(self, ctx: Ctx, params: Any) -> dict[str, Any]:
        return await self.exposure.list_prompts(ctx.params, _server_filter(ctx))

    async def _get_prompt(self, ctx: Ctx, params: Any) -> dict[str, Any]:
        return await self.exposure.get_prompt(ctx.params or {}, RequestOrigin(ctx), _server_filter(ctx))

    async def _list_resources(self, ctx: Ctx, params: Any) -> dict[str, Any]:
        return await self.exposure.list_resources(ctx.params, _server_filter(ctx))

    async def _list_resource_templates(self, ctx: Ctx, params: Any) -> dict[str, Any]:
        return await self.exposure.list_resource_templates(ctx.params, _server_filter(ctx))

    async def _resource_request(self, ctx: Ctx, params: Any) -> dict[str, Any]:
        client = self._remember(ctx)
        result = await self.exposure.resource_request(ctx.method, ctx.params or {}, RequestOrigin(ctx),
                                                      _server_filter(ctx))
        if client is not None and ctx.method != "resources/read":
            client.subscribed(ctx.method, str((ctx.params or {}).get("uri", "")))
        return result

    async def _complete(self, ctx: Ctx, params: Any) -> dict[str, Any]:
        return await self.exposure.complete(ctx.params or {}, RequestOrigin(ctx), _server_filter(ctx))

    async def _set_logging_level(self, ctx: Ctx, params: Any) -> dict[str, Any]:
        self._remember(ctx)
        return await self.exposure.set_logging_level(ctx.params or {}, _server_filter(ctx))

    # ---------------------------------------------------------------- upstream notifications

    async def broadcast(self, server: str, notification: types.ServerNotification) -> None:
        """Pass an upstream's notification that belongs to no request on to the client sessions of this
        endpoint that may hear it (see `Listener.hears`)."""
        if server not in self.exposure.servers:
            return
        if isinstance(notification, types.LoggingMessageNotification) and self.exposure.aggregate:
            params = notification.params.model_copy(
                update={"logger": f"{server}/{notification.params.logger}" if notification.params.logger else server})
            notification = types.LoggingMessageNotification(params=params)
        elif isinstance(notification, types.ProgressNotification | types.ElicitCompleteNotification):
            return  # request-scoped; progress travels with its request
        async with anyio.create_task_group() as tg:  # each at once: one slow client delays no other
            for session_id, client in list(self.clients.items()):
                if client.hears(server, notification):
                    tg.start_soon(self._tell, session_id, client, notification)

    async def _tell(self, session_id: str, client: Listener, notification: types.ServerNotification) -> None:
        with anyio.move_on_after(SLOW_CLIENT_SECONDS) as waited:
            try:
                await client.session.send_notification(notification)
            except Exception:
                self.clients.pop(session_id, None)  # the client session is gone
                if self.on_client_gone is not None:
                    self.on_client_gone(session_id)
                return
        if waited.cancelled_caught and self.clients.get(session_id) is client:
            # Not gone (its run state stays): it is listed again by its next request.
            del self.clients[session_id]
            # Not named: a session id lets whoever reads the log post into the session.
            logger.warning("a client session of %s took no notification for %ss: it hears none until its next "
                           "request", self.exposure.endpoint, SLOW_CLIENT_SECONDS)


def _for_both_eras(handler: Handler) -> Handler:
    """Results from a handshake-era upstream lack the 2026-07-28 `resultType`; add it for modern clients."""

    async def run(ctx: Ctx, params: Any) -> dict[str, Any]:
        result = await handler(ctx, params)
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS and "resultType" not in result:
            result = {**result, "resultType": "complete"}
        return result

    return run


def _mode_asked(meta: Mapping[str, Any] | None) -> str | None:
    mode = (meta or {}).get(MODE_META_KEY)
    if mode is None or isinstance(mode, str):
        return mode
    raise InvalidMode(f"_meta[{MODE_META_KEY!r}] must be a mode's name (a string)", data={"field": MODE_META_KEY})


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _header(ctx: Ctx, name: str) -> str | None:
    request = ctx.request
    headers: Mapping[str, str] | None = getattr(request, "headers", None)
    return headers.get(name) if headers is not None else None


def _client_session(ctx: Ctx) -> str | None:
    """The client session of a request: its `mcp-session-id`, or its session of the legacy HTTP+SSE transport."""
    return _header(ctx, "mcp-session-id") or legacy_session(getattr(ctx.request, "scope", None))


def _api_key(ctx: Ctx) -> ApiKey | None:
    scope = getattr(ctx.request, "scope", None)
    return presented_key(scope) if scope is not None else None


def _server_filter(ctx: Ctx) -> Callable[[str], bool] | None:
    key = _api_key(ctx)
    return key.allows_server if key is not None else None
