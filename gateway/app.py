"""The Starlette application: MCP endpoints, health, readiness, metrics and the admin API."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from simgate.gateway.assembly import build_executors, build_pipeline
from simgate.gateway.auth.api_keys import KeyFileError, KeyStore
from simgate.gateway.auth.middleware import RequireApiKey
from simgate.gateway.auth.rebinding import CheckHostAndOrigin, rebinding_settings
from simgate.gateway.cache.backends import open_backend
from simgate.gateway.config.models import GatewayConfig
from simgate.gateway.downstream.bodies import BoundedBodies
from simgate.gateway.downstream.direct_calls import DirectCalls
from simgate.gateway.downstream.exposure import exposures_for
from simgate.gateway.downstream.inbound import InboundCheck, live_transports
from simgate.gateway.downstream.legacy_sse import LegacySse
from simgate.gateway.downstream.server import ProxyServer
from simgate.gateway.errors import ConfigError, GatewayError
from simgate.gateway.logs import redact_logs
from simgate.gateway.pipeline.mode_targets import ModeNotSet, UnknownTarget, check_shape, check_target, not_set
from simgate.gateway.pipeline.modes import ModeResolver
from simgate.gateway.pipeline.redact import (
    RedactingSessions,
    RedactingShadowLog,
    RedactingSnapshots,
    Redactor,
    RedactResponses,
)
from simgate.gateway.prometheus import GatewayMetrics
from simgate.gateway.replicas.forward import FROM_SIBLING, ReplicaFront, ReplicaLinks, ReplicaRouting
from simgate.gateway.replicas.plan import ReplicaPlan
from simgate.gateway.replicas.sessions import TaggedSessionManager
from simgate.gateway.sessions import MAX_NAME_CHARS
from simgate.gateway.ui.data_api import DataApi
from simgate.gateway.ui.feed import CallFeed
from simgate.gateway.ui.routes import ui_routes
from simgate.gateway.upstream.connection import UpstreamState
from simgate.gateway.upstream.pool import UpstreamPool
from simgate.gateway.vault.gateway_secrets import GatewaySecrets
from simgate.simulators.config import build_simulator

logger = logging.getLogger("simgate.gateway")


class Gateway:
    """Everything one running gateway owns; built from a config, no global state."""

    def __init__(self, config: GatewayConfig, *, host: str | None = None, insecure: bool = False,
                 replica: ReplicaPlan | None = None) -> None:
        """`insecure`: the gateway may serve without client keys (also after the last one is removed).
        `replica`: this process is one of several replicas of the gateway (`simgate serve --workers N`)."""
        self.config = config
        self.insecure = insecure
        self.replica = replica
        self.links = ReplicaLinks(replica) if replica is not None else None
        state_dir = Path(config.gateway.state_dir)
        # Vault secrets: resolved into the upstreams' env/headers now (a missing one stops the start),
        # and redacted from everything the gateway returns or writes.
        self.redactor = Redactor()
        self.secrets = GatewaySecrets(config, self.redactor)
        resolved = self.secrets.resolve()
        self.keys = KeyStore(config.gateway.keys_file)
        try:
            # A broken key file stops the start instead of locking every client out later.
            self.keys_at_start = self.keys.enabled
        except KeyFileError as exc:
            raise ConfigError(str(exc)) from None
        self.backend = open_backend(config.gateway)  # diskcache, or Redis shared by a cluster of gateways
        self.store = self.backend.store
        upstream_config = config.model_copy(update={"servers": {**config.servers, **resolved}}) if resolved else config
        # The stderr of a stdio server given vault secrets is redacted on its way to stderr.log.
        self.pool = UpstreamPool(upstream_config, state_dir, snapshots=RedactingSnapshots(self.store, self.redactor),
                                 stderr_redactor=self.redactor,
                                 redact_stderr_of={name for name, server in resolved.items() if server.transport == "stdio"},
                                 replica=replica.index if replica is not None else None)
        self.metrics = GatewayMetrics()
        self.feed = CallFeed()  # finished calls, for the pages watching them (`/ui`)
        self.sessions = RedactingSessions(self.redactor, keep_history=config.gateway.simulator is not None,
                                          shared=self.backend.run_state)
        self.modes = ModeResolver(config, self.sessions)
        self.shadow_log = RedactingShadowLog(Path(config.gateway.cache_path) / "shadow", self.redactor)
        simulator_config = config.gateway.simulator
        self.simulator = build_simulator(simulator_config) if simulator_config is not None else None
        executors = build_executors(config, pool=self.pool, store=self.store, sessions=self.sessions,
                                    simulator=self.simulator, shadow_log=self.shadow_log, redactor=self.redactor)
        self.shadow, self.gate = executors.shadow, executors.gate
        self.pipeline = build_pipeline(config, executors, metrics=self.metrics, redactor=self.redactor,
                                       sessions=self.sessions, modes=self.modes, feed=self.feed,
                                       counters=self.backend.counters)
        aggregate, singles = exposures_for(self.pool, config.gateway.name)
        self.security = security = rebinding_settings(host or config.gateway.host)
        # A replica's session ids name it, so that its siblings pass the session's requests to it.
        managers = partial(TaggedSessionManager, prefix=replica.session_prefix()) if replica is not None \
            else StreamableHTTPSessionManager
        self.managers: dict[str, StreamableHTTPSessionManager] = {}
        self.legacy: dict[str, LegacySse] = {}
        self.servers: dict[str, ProxyServer] = {
            exposure.endpoint: ProxyServer(
                exposure, self.pipeline, on_client_gone=self.sessions.forget_connection,
                # The manager serving this endpoint is made from the server just below; read when called.
                open_session_ids=partial(_open_session_ids, self.managers, self.legacy, exposure.endpoint))
            for exposure in (aggregate, *singles.values())
        }
        self.managers.update({
            endpoint: managers(app=server, security_settings=security,
                               max_request_body_size=config.gateway.max_body_bytes)
            for endpoint, server in self.servers.items()
        })
        # Clients of protocol 2024-11-05 (or set to an `sse` transport) use HTTP+SSE: `.../sse` beside `.../mcp`.
        self.legacy.update({
            endpoint: LegacySse(server, endpoint.removesuffix("mcp") + "messages/", security,
                                config.gateway.max_body_bytes,
                                replica_tag=f"r{replica.index}" if replica is not None else None)
            for endpoint, server in self.servers.items()
        })
        # Every POST body is checked once, in front of the SDK (see `inbound`).
        self.inbound = {endpoint: InboundCheck(manager, security, config.gateway.max_body_bytes)
                        for endpoint, manager in self.managers.items()}
        # Most tool calls are answered in their request's own task (see `direct_calls`); the rest by the SDK.
        longest_call = max((server.call_timeout for server in config.servers.values()), default=0.0)
        self.direct_calls = {
            endpoint: DirectCalls(self.managers[endpoint], server, longest_call)
            for endpoint, server in self.servers.items()
        } if config.gateway.fast_paths else {}
        for server in self.servers.values():
            self.pool.add_listener(server.broadcast)
        self.metrics.watch_pool(self.pool, _LiveSessions(self.managers, self.legacy))
        self.ui_data = DataApi(config, self.store, self.redactor)
        if replica is not None:
            self.metrics.label_replica(replica.index, replica.count)

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            stack.callback(self.store.close)
            stack.push_async_callback(self.backend.aclose)
            keepalive = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(keepalive.cancel_scope.cancel)
            keepalive.start_soon(self.backend.keepalive, name="store keepalive")
            if (close_simulator := getattr(self.simulator, "aclose", None)) is not None:
                stack.push_async_callback(close_simulator)
            stack.callback(self.shadow_log.close)
            stack.callback(redact_logs(self.redactor))
            await stack.enter_async_context(self.shadow.running())
            if self.secrets.servers:
                watcher = await stack.enter_async_context(anyio.create_task_group())
                stack.callback(watcher.cancel_scope.cancel)
                watcher.start_soon(self.secrets.watch, self.pool.upstreams, name="vault watcher")
            if self.links is not None:
                stack.push_async_callback(self.links.aclose)
                if self.replica is not None and self.replica.restarted:  # before it takes any request
                    await self.links.adopt_modes(self.modes)
            await stack.enter_async_context(self.pool.running())
            stack.callback(self.feed.close)  # open pages' streams end before the upstreams stop
            for manager in self.managers.values():
                await stack.enter_async_context(manager.run())
            stack.callback(self.ui_data.close)  # first thing at shutdown: a page's fidelity run stops at once
            logger.info("gateway started", extra={"servers": list(self.pool.upstreams)})
            yield
        logger.info("gateway stopped; every upstream is closed")

    def app(self) -> Starlette:
        settings = self.config.gateway
        # A replica's: answers named (outermost), requests of another replica's sessions passed on (innermost).
        front = [Middleware(ReplicaFront, plan=self.links.plan, modes=self.modes)] if self.links is not None else []
        routing = [Middleware(ReplicaRouting, links=self.links, max_body_bytes=settings.max_body_bytes)] \
            if self.links is not None else []
        return Starlette(
            routes=[
                Route("/mcp", endpoint=_McpEndpoint(self, "/mcp"), methods=["GET", "POST", "DELETE"]),
                Route("/servers/{name}/mcp", endpoint=_McpEndpoint(self, None), methods=["GET", "POST", "DELETE"]),
                Route("/sse", endpoint=_LegacyEndpoint(self, "/mcp"), methods=["GET"]),
                Route("/messages/", endpoint=_LegacyEndpoint(self, "/mcp"), methods=["POST"]),
                Route("/messages/{replica}/", endpoint=_LegacyEndpoint(self, "/mcp"), methods=["POST"]),
                Route("/servers/{name}/sse", endpoint=_LegacyEndpoint(self, None), methods=["GET"]),
                Route("/servers/{name}/messages/", endpoint=_LegacyEndpoint(self, None), methods=["POST"]),
                Route("/servers/{name}/messages/{replica}/", endpoint=_LegacyEndpoint(self, None), methods=["POST"]),
                Route("/healthz", self._healthz),
                Route("/readyz", self._readyz),
                Route("/metrics", self._metrics),
                Route("/admin/servers", self._servers),
                Route("/admin/servers/{name}", self._server),
                Route("/admin/servers/{name}/restart", self._restart, methods=["POST"]),
                Route("/admin/servers/{name}/start", self._start, methods=["POST"]),
                Route("/admin/servers/{name}/stop", self._stop, methods=["POST"]),
                Route("/admin/modes", self._modes, methods=["GET", "PUT", "DELETE"]),
                *ui_routes(self),
            ],
            lifespan=self.lifespan,
            middleware=[*front, Middleware(RedactResponses, redactor=self.redactor),
                        Middleware(CheckHostAndOrigin, settings=self.security),
                        Middleware(RequireApiKey, keys=self.keys, required=self.keys_at_start,
                                   keyless_allowed=self.insecure),
                        Middleware(BoundedBodies, max_bytes=settings.max_body_bytes, timeout=settings.body_timeout,
                                   max_pending=settings.max_pending_body_bytes), *routing],
        )

    async def _healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    def _upstream(self, request: Request) -> Any:
        """The upstream named in the path, or None."""
        return self.pool.upstreams.get(request.path_params["name"])

    def _unknown(self, request: Request) -> Response:
        return JSONResponse({"error": f"unknown server {request.path_params['name']!r}",
                             "known": sorted(self.pool.upstreams)}, status_code=404)

    async def _restart(self, request: Request) -> Response:
        """Start a server again: a failed install is tried once more, a running (or stopped) server restarted."""
        if (upstream := self._upstream(request)) is None:
            return self._unknown(request)
        state = upstream.state.value
        upstream.retry()
        logger.info("server restart requested", extra={"server": upstream.name})
        return JSONResponse({"server": upstream.name, "state": state}, status_code=202)

    async def _start(self, request: Request) -> Response:
        """Start a server stopped with `/stop` (a server that is not stopped is left as it is)."""
        if (upstream := self._upstream(request)) is None:
            return self._unknown(request)
        state = upstream.state.value
        upstream.start()
        logger.info("server start requested", extra={"server": upstream.name})
        return JSONResponse({"server": upstream.name, "state": state}, status_code=202)

    async def _stop(self, request: Request) -> Response:
        """Stop a server until `/start` (or `/restart`): its calls fail at once meanwhile, replay still answers."""
        if (upstream := self._upstream(request)) is None:
            return self._unknown(request)
        state = upstream.state.value
        upstream.stop()
        logger.info("server stop requested", extra={"server": upstream.name})
        return JSONResponse({"server": upstream.name, "state": state}, status_code=202)

    async def _server(self, request: Request) -> Response:
        """One server's status with its tools (and their schemas) as the gateway knows them."""
        if (upstream := self._upstream(request)) is None:
            return self._unknown(request)
        return JSONResponse({**server_status(upstream.name, upstream), "tool_list": upstream.tools})

    async def _readyz(self, request: Request) -> Response:
        """Ready: every server of `gateway.ready_when` (default all) is up, or those of `?servers=a,b`;
        `any` is ready as soon as one is. The body gives each server's state either way."""
        states = {name: upstream.state.value for name, upstream in self.pool.upstreams.items()}
        asked = request.query_params.get("servers")
        wanted: list[str] | str = [n for n in asked.split(",") if n] if asked else self.config.gateway.ready_when
        if isinstance(wanted, list) and (unknown := [name for name in wanted if name not in states]):
            return JSONResponse({"error": f"unknown server(s) {', '.join(map(repr, unknown))}",
                                 "known": sorted(states)}, status_code=400)
        up = [states[name] == "ready" for name in (states if isinstance(wanted, str) else wanted)]
        ready = any(up) if wanted == "any" else all(up)
        return JSONResponse({"ready": ready, "servers": states}, status_code=200 if ready else 503)

    async def _metrics(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def _servers(self, request: Request) -> Response:
        return JSONResponse({"servers": [server_status(name, upstream) for name, upstream in self.pool.upstreams.items()]})


    async def _modes(self, request: Request) -> Response:
        """GET: the modes in force; PUT {mode, server?, tool?, session?}: set one; DELETE ?server=&tool=&session=:
        drop a run-time setting (that level follows the config again). A server or tool the gateway does not
        know is refused (400, naming it and the nearest known names); dropping what is not set, 404."""
        if request.method not in ("PUT", "DELETE"):
            return JSONResponse(self.modes.show())
        try:
            if request.method == "PUT":
                body = ModeChange.model_validate_json(await request.body())
            else:
                body = ModeChange.model_validate({**request.query_params, "mode": None})
            if body.mode is None and request.method == "PUT":
                raise GatewayError("a mode is needed (DELETE drops a setting)")
            # A change a sibling replica passed on was checked by the replica the client reached, and is
            # applied here unchecked: this replica's view of a tool list (its own copy of the server) may
            # differ for a moment, and a refusal here would leave the change on some replicas only.
            checked = not request.scope.get(FROM_SIBLING, False)
            warnings = self._check_mode_change(body) if checked else []
            if body.mode is None:
                self.modes.clear(server=body.server, tool=body.tool, session=body.session)
            else:
                self.modes.set(body.mode, server=body.server, tool=body.tool, session=body.session)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in first["loc"])
            return JSONResponse({"error": f"invalid mode change: {where + ': ' if where else ''}{first['msg']}"},
                                status_code=400)
        except ModeNotSet as exc:
            return JSONResponse({"error": exc.message}, status_code=404)
        except UnknownTarget as exc:
            return JSONResponse({"error": exc.message, "unknown": exc.data["unknown"]}, status_code=400)
        except GatewayError as exc:
            return JSONResponse({"error": exc.message}, status_code=400)
        logger.info("mode changed" if body.mode else "mode setting dropped",
                    extra={**body.model_dump(exclude_none=True), **({"warnings": warnings} if warnings else {})})
        return JSONResponse({**self.modes.show(), **({"warnings": warnings} if warnings else {})})

    def _check_mode_change(self, change: ModeChange) -> list[str]:
        """Refuse a change naming what the gateway does not know (or, to drop, what is not set); the warnings
        of one accepted unchecked."""
        server, tool, session = change.server, change.tool, change.session
        check_shape(server=server, tool=tool, session=session, servers=self.pool.upstreams,
                    tool_names=self._tool_names)

        def check(tool: str | None) -> list[str]:
            return check_target(server=server, tool=tool, servers=self.pool.upstreams,
                                disabled=set(self.config.servers) - set(self.pool.upstreams),
                                tool_names=self._tool_names,
                                state_of=lambda name: self.pool.upstreams[name].state.value)

        if change.mode is not None:
            return check(tool)
        if self.modes.is_set(server=server, tool=tool, session=session):
            # Dropped without checking the tool against the list: a setting stored while the list was not
            # known, or of a tool the server has stopped listing, must stay droppable.
            return []
        check(None)  # an unknown server is named as such (400), not as "not set"
        raise not_set(server=server, tool=tool, session=session, configured=self.config.gateway.mode.value,
                      set_here=self.modes.set_at_level(server=server, tool=tool, session=session))

    def _tool_names(self, server: str) -> list[str] | None:
        """The server's tools as calls are resolved against them (`exposure.tool_index`): the list it gave when
        it came up (or since, on `list_changed`); while it is down, the last one, or the one recorded in the
        store (what replay answers `tools/list` from). None: down, and no list recorded."""
        upstream = self.pool.upstreams[server]
        if upstream.state != UpstreamState.READY and not upstream.tools:
            return None
        return [tool.get("name", "") for tool in upstream.tools]


class ModeChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: str | None  # None: drop the setting (DELETE)
    # Bounded: a name the gateway cannot check (a session's, a tool of a server whose list is not known) is kept.
    server: str | None = Field(None, max_length=MAX_NAME_CHARS)
    tool: str | None = Field(None, max_length=MAX_NAME_CHARS)
    session: str | None = Field(None, max_length=MAX_NAME_CHARS)


def server_status(name: str, upstream: Any) -> dict[str, Any]:
    info = upstream.initialize_result.server_info if upstream.initialize_result else None
    return {
        "name": name,
        "state": upstream.state.value,
        "transport": upstream.config.transport,
        "tools": len(upstream.tools),
        "restarts": upstream.restarts,
        "last_error": upstream.last_error,
        "sandbox": upstream.config.sandbox.backend if upstream.config.sandbox is not None else "none",
        "latency_ms": latency_percentiles(upstream.latencies),
        "server_info": info.model_dump(exclude_none=True) if info else None,
        "protocol_version": upstream.initialize_result.protocol_version if upstream.initialize_result else None,
    }


def latency_percentiles(samples: Any) -> dict[str, Any]:
    """p50/p95/p99 (milliseconds, nearest rank) of a server's recent upstream tool calls."""
    ordered = sorted(samples)
    if not ordered:
        return {"count": 0, "p50": None, "p95": None, "p99": None}

    def rank(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] * 1000, 3)

    return {"count": len(ordered), "p50": rank(0.50), "p95": rank(0.95), "p99": rank(0.99)}


class _ExposureEndpoint:
    """An ASGI endpoint of one exposure: the aggregate's (`endpoint` given) or the server's named in the path."""

    def __init__(self, gateway: Gateway, endpoint: str | None) -> None:
        self._gateway = gateway
        self._endpoint = endpoint

    def endpoint(self, scope: Scope) -> str:
        return self._endpoint or f"/servers/{scope['path_params']['name']}/mcp"


class _McpEndpoint(_ExposureEndpoint):
    """ASGI endpoint handing a request to the session manager of its exposure."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.endpoint(scope)
        manager = self._gateway.managers.get(endpoint)
        if manager is None:
            await _unknown_server(self._gateway, scope)(scope, receive, send)
            return
        if scope["method"] == "POST":
            inbound = await self._gateway.inbound[endpoint](scope, receive, send)
            if inbound is None:
                return  # refused by the check
            receive = inbound.receive
            direct = self._gateway.direct_calls.get(endpoint)
            if direct is not None and await direct(scope, send, inbound):
                return
        await manager.handle_request(scope, receive, send)


def _unknown_server(gateway: Gateway, scope: Scope) -> Response:
    known = sorted(name for name in gateway.pool.upstreams)
    return JSONResponse({"error": f"unknown server {scope['path_params']['name']!r}", "known": known}, status_code=404)


class _LegacyEndpoint(_ExposureEndpoint):
    """ASGI endpoint handing a request of the HTTP+SSE transport to its exposure's (see `legacy_sse`)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        legacy = self._gateway.legacy.get(self.endpoint(scope))
        if legacy is None:
            await _unknown_server(self._gateway, scope)(scope, receive, send)
        elif scope["method"] == "GET":
            await legacy.stream(scope, receive, send)
        else:
            await legacy.message(scope, receive, send)


def _open_session_ids(managers: dict[str, StreamableHTTPSessionManager], legacy: dict[str, LegacySse],
                      endpoint: str) -> set[str]:
    open_legacy = legacy[endpoint].open_session_ids() if endpoint in legacy else set()
    return {*live_transports(managers[endpoint]), *open_legacy}


class _LiveSessions(dict[str, int]):
    """Live client sessions per endpoint (streamable HTTP and legacy HTTP+SSE), read at scrape time."""

    def __init__(self, managers: dict[str, StreamableHTTPSessionManager], legacy: dict[str, LegacySse]) -> None:
        super().__init__()
        self._managers = managers
        self._legacy = legacy

    def items(self) -> Any:
        return [(endpoint, len(_open_session_ids(self._managers, self._legacy, endpoint)))
                for endpoint in self._managers]
