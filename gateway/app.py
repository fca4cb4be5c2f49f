"""The Starlette application: MCP endpoints, health, readiness, metrics and the admin API."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.auth.keys import KeyFileError, KeyStore
from gateway.auth.middleware import RequireApiKey
from gateway.auth.rebinding import CheckHostAndOrigin, rebinding_settings
from gateway.cache.store import DiskStore
from gateway.config.models import GatewayConfig
from gateway.downstream.bodies import BoundedBodies
from gateway.downstream.direct_calls import DirectCalls
from gateway.downstream.exposure import exposures_for
from gateway.downstream.inbound import InboundCheck, live_transports
from gateway.downstream.server import ProxyServer
from gateway.errors import ConfigError, GatewayError
from gateway.executors.gated import GatedSimulator, gated_simulated_mode
from gateway.executors.hybrid import HybridExecutor
from gateway.executors.live import LiveExecutor
from gateway.executors.record import RecordingLive
from gateway.executors.replay import ReplayExecutor
from gateway.executors.shadow import ShadowExecutor
from gateway.executors.simulated import SimulatedExecutor
from gateway.fidelity.evidence import EvidenceBook, ShadowEstimate
from gateway.logs import redact_logs
from gateway.metrics import GatewayMetrics
from gateway.pipeline.authorize import Authorize
from gateway.pipeline.call import CallNext, Pipeline
from gateway.pipeline.faults import InjectFaults
from gateway.pipeline.keying import AssignCacheKey
from gateway.pipeline.modes import ChooseMode, ModeResolver, RouteByMode
from gateway.pipeline.observe import ObserveCalls
from gateway.pipeline.provenance import AttachProvenance
from gateway.pipeline.ratelimit import RateLimits
from gateway.pipeline.redact import (
    RedactingSessions,
    RedactingShadowLog,
    RedactingSnapshots,
    RedactingStore,
    Redactor,
    RedactResponses,
    RedactSecrets,
)
from gateway.pipeline.validate import ValidateArguments
from gateway.replicas.forward import ReplicaFront, ReplicaLinks, ReplicaRouting
from gateway.replicas.plan import ReplicaPlan
from gateway.replicas.sessions import TaggedSessionManager
from gateway.upstream.pool import UpstreamPool
from gateway.vault.runtime import GatewaySecrets
from simulators.config import build_simulator

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
        self.store = DiskStore(Path(config.gateway.cache_path))
        upstream_config = config.model_copy(update={"servers": {**config.servers, **resolved}}) if resolved else config
        self.pool = UpstreamPool(upstream_config, state_dir, snapshots=RedactingSnapshots(self.store, self.redactor),
                                 replica=replica.index if replica is not None else None)
        for name, server in resolved.items():
            if server.transport == "stdio":
                self.pool.upstreams[name].errlog_redactor = self.redactor
        self.metrics = GatewayMetrics()
        self.sessions = RedactingSessions(self.redactor, keep_history=config.gateway.simulator is not None)
        self.modes = ModeResolver(config, self.sessions)
        self.shadow_log = RedactingShadowLog(Path(config.gateway.cache_path) / "shadow", self.redactor)
        simulator_config = config.gateway.simulator
        simulator = build_simulator(simulator_config) if simulator_config is not None else None
        self.simulator = simulator
        live = RecordingLive(LiveExecutor(self.pool), self.store, config, self.pool, redactor=self.redactor)
        replay = ReplayExecutor(self.store, config)
        simulated = SimulatedExecutor(simulator, RedactingStore(self.store, self.redactor), self.sessions, self.pool,
                                      examples=simulator_config.examples if simulator_config else 5)
        self.gate: GatedSimulator | None = None
        simulator_source, simulated_mode, estimate = self._gated(simulated, replay, live)
        self.shadow = ShadowExecutor(live, simulated, self.shadow_log, estimate=estimate)
        executors = {
            "live": live,
            "replay": replay,
            "simulated": simulated_mode,
            "hybrid": HybridExecutor(config.gateway.hybrid_order, {"cache": replay, "live": live,
                                                                   "simulator": simulator_source}),
            "shadow": self.shadow,
        }
        self.pipeline = Pipeline(
            [ObserveCalls(self.metrics), RedactSecrets(self.redactor), AttachProvenance(self.sessions),
             Authorize(), ValidateArguments(), ChooseMode(self.modes), RateLimits(config, metrics=self.metrics),
             InjectFaults(config, metrics=self.metrics), AssignCacheKey(config, self.sessions)],
            RouteByMode(executors),
        )
        aggregate, singles = exposures_for(self.pool, config.gateway.name)
        self.security = security = rebinding_settings(host or config.gateway.host)
        self.servers: dict[str, ProxyServer] = {"/mcp": ProxyServer(aggregate, self.pipeline)}
        self.servers.update({single.endpoint: ProxyServer(single, self.pipeline) for single in singles.values()})
        for server in self.servers.values():
            server.on_client_gone = self.sessions.forget_connection
        # A replica's session ids name it, so that its siblings pass the session's requests to it.
        managers = partial(TaggedSessionManager, prefix=replica.session_prefix()) if replica is not None \
            else StreamableHTTPSessionManager
        self.managers = {
            endpoint: managers(app=server, security_settings=security,
                               max_request_body_size=config.gateway.max_body_bytes)
            for endpoint, server in self.servers.items()
        }
        for endpoint, server in self.servers.items():
            server.open_session_ids = partial(live_transports, self.managers[endpoint])
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
        self.metrics.watch_pool(self.pool, _LiveSessions(self.managers))
        if replica is not None:
            self.metrics.label_replica(replica.index, replica.count)

    def _gated(self, simulated: SimulatedExecutor, replay: CallNext, live: CallNext) \
            -> tuple[CallNext, CallNext, ShadowEstimate | None]:
        """(the simulator as a source of `hybrid`, the `simulated` mode, shadow's running estimate): behind
        the fidelity gate when `gateway.simulator.gate` is set, else the simulator itself."""
        settings = self.config.gateway.simulator
        if settings is None or settings.gate is None:
            return simulated, simulated, None
        # Shadow pairs logged before this start count too (a bounded window per tool, read once).
        estimate = ShadowEstimate.from_pairs(self.shadow_log.pairs())
        book = EvidenceBook(Path(self.config.gateway.cache_path), estimate)
        self.gate = GatedSimulator(simulated, settings.gate, book, settings.identity)
        return self.gate, gated_simulated_mode(self.gate, settings.gate, {"cache": replay, "live": live}), estimate

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            stack.callback(self.store.close)
            if (close_simulator := getattr(self.simulator, "aclose", None)) is not None:
                stack.push_async_callback(close_simulator)
            stack.callback(self.shadow_log.close)
            stack.callback(redact_logs(self.redactor))
            self.shadow.background = await stack.enter_async_context(anyio.create_task_group())
            if self.secrets.servers:
                watcher = await stack.enter_async_context(anyio.create_task_group())
                stack.callback(watcher.cancel_scope.cancel)
                watcher.start_soon(self.secrets.watch, self.pool.upstreams, name="vault watcher")
            if self.links is not None:
                stack.push_async_callback(self.links.aclose)
                if self.replica is not None and self.replica.restarted:  # before it takes any request
                    await self.links.adopt_modes(self.modes)
            await stack.enter_async_context(self.pool.running())
            for manager in self.managers.values():
                await stack.enter_async_context(manager.run())
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
                Route("/healthz", self._healthz),
                Route("/readyz", self._readyz),
                Route("/metrics", self._metrics),
                Route("/admin/servers", self._servers),
                Route("/admin/servers/{name}/restart", self._restart, methods=["POST"]),
                Route("/admin/modes", self._modes, methods=["GET", "PUT"]),
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

    async def _restart(self, request: Request) -> Response:
        """Start a server again: a failed install is tried once more, a running server restarted."""
        name = request.path_params["name"]
        upstream = self.pool.upstreams.get(name)
        if upstream is None:
            return JSONResponse({"error": f"unknown server {name!r}", "known": sorted(self.pool.upstreams)},
                                status_code=404)
        upstream.retry()
        return JSONResponse({"server": name, "state": upstream.state.value}, status_code=202)

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
        if request.method == "PUT":
            try:
                body = ModeChange.model_validate_json(await request.body())
                if body.server is not None and body.server not in self.pool.upstreams:
                    raise GatewayError(f"unknown server {body.server!r}")
                self.modes.set(body.mode, server=body.server, tool=body.tool, session=body.session)
            except ValidationError as exc:
                return JSONResponse({"error": f"invalid mode change: {exc.errors(include_url=False)[0]['msg']}"},
                                    status_code=400)
            except GatewayError as exc:
                return JSONResponse({"error": exc.message}, status_code=400)
            logger.info("mode changed", extra=body.model_dump(exclude_none=True))
        return JSONResponse(self.modes.show())


class ModeChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: str
    server: str | None = None
    tool: str | None = None
    session: str | None = None


def server_status(name: str, upstream: Any) -> dict[str, Any]:
    info = upstream.initialize_result.server_info if upstream.initialize_result else None
    return {
        "name": name,
        "state": upstream.state.value,
        "transport": upstream.config.transport,
        "tools": len(upstream.tools),
        "restarts": upstream.restarts,
        "last_error": upstream.last_error,
        "server_info": info.model_dump(exclude_none=True) if info else None,
        "protocol_version": upstream.initialize_result.protocol_version if upstream.initialize_result else None,
    }


class _McpEndpoint:
    """ASGI endpoint handing a request to the session manager of its exposure."""

    def __init__(self, gateway: Gateway, endpoint: str | None) -> None:
        self._gateway = gateway
        self._endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self._endpoint or f"/servers/{scope['path_params']['name']}/mcp"
        manager = self._gateway.managers.get(endpoint)
        if manager is None:
            known = sorted(name for name in self._gateway.pool.upstreams)
            response = JSONResponse({"error": f"unknown server {scope['path_params']['name']!r}", "known": known},
                                    status_code=404)
            await response(scope, receive, send)
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


class _LiveSessions(dict[str, int]):
    """Live client sessions per endpoint, read from the session managers at scrape time."""

    def __init__(self, managers: dict[str, StreamableHTTPSessionManager]) -> None:
        super().__init__()
        self._managers = managers

    def items(self) -> Any:
        return [(endpoint, len(live_transports(manager))) for endpoint, manager in self._managers.items()]
