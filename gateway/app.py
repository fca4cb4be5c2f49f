"""The Starlette application: MCP endpoints, health, readiness, metrics and the admin API."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.config.models import GatewayConfig
from gateway.downstream.exposure import exposures_for
from gateway.downstream.server import ProxyServer
from gateway.metrics import GatewayMetrics
from gateway.pipeline.call import Pipeline
from gateway.pipeline.live import LiveExecutor
from gateway.pipeline.observe import ObserveCalls
from gateway.pipeline.validate import ValidateArguments
from gateway.upstream.pool import UpstreamPool

logger = logging.getLogger("simgate.gateway")


class Gateway:
    """Everything one running gateway owns; built from a config, no global state."""

    def __init__(self, config: GatewayConfig, *, host: str | None = None) -> None:
        self.config = config
        state_dir = Path(config.gateway.state_dir)
        self.pool = UpstreamPool(config, state_dir)
        self.metrics = GatewayMetrics()
        self.pipeline = Pipeline([ObserveCalls(self.metrics), ValidateArguments()], LiveExecutor(self.pool))
        aggregate, singles = exposures_for(self.pool, config.gateway.name)
        security = _transport_security(host or config.gateway.host)
        self.servers: dict[str, ProxyServer] = {"/mcp": ProxyServer(aggregate, self.pipeline)}
        self.servers.update({single.endpoint: ProxyServer(single, self.pipeline) for single in singles.values()})
        self.managers = {
            endpoint: StreamableHTTPSessionManager(
                app=server, security_settings=security, max_request_body_size=config.gateway.max_body_bytes)
            for endpoint, server in self.servers.items()
        }
        for server in self.servers.values():
            self.pool.add_listener(server.broadcast)
        self.metrics.watch_pool(self.pool, _LiveSessions(self.managers))

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self.pool.running())
            for manager in self.managers.values():
                await stack.enter_async_context(manager.run())
            logger.info("gateway started", extra={"servers": list(self.pool.upstreams)})
            yield
        logger.info("gateway stopped; every upstream is closed")

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/mcp", endpoint=_McpEndpoint(self, "/mcp"), methods=["GET", "POST", "DELETE"]),
                Route("/servers/{name}/mcp", endpoint=_McpEndpoint(self, None), methods=["GET", "POST", "DELETE"]),
                Route("/healthz", self._healthz),
                Route("/readyz", self._readyz),
                Route("/metrics", self._metrics),
                Route("/admin/servers", self._servers),
            ],
            lifespan=self.lifespan,
        )

    async def _healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _readyz(self, request: Request) -> Response:
        states = {name: upstream.state.value for name, upstream in self.pool.upstreams.items()}
        return JSONResponse({"ready": self.pool.ready, "servers": states}, status_code=200 if self.pool.ready else 503)

    async def _metrics(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def _servers(self, request: Request) -> Response:
        return JSONResponse({"servers": [server_status(name, upstream) for name, upstream in self.pool.upstreams.items()]})


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
        await manager.handle_request(scope, receive, send)


class _LiveSessions(dict[str, int]):
    """Live client sessions per endpoint, read from the session managers at scrape time."""

    def __init__(self, managers: dict[str, StreamableHTTPSessionManager]) -> None:
        super().__init__()
        self._managers = managers

    def items(self) -> Any:
        # The manager keeps its sessions privately; reading the size is the least intrusive way to count them.
        return [(endpoint, len(getattr(manager, "_server_instances", {}))) for endpoint, manager in self._managers.items()]


def _transport_security(host: str) -> TransportSecuritySettings:
    """DNS-rebinding protection whenever the gateway listens on loopback only."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        return TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost", "[::1]"],
            allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
        )
    return TransportSecuritySettings(enable_dns_rebinding_protection=False)
