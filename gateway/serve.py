"""Run a gateway under uvicorn until SIGINT/SIGTERM; every upstream is closed on the way out."""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys

import uvicorn

from gateway.app import Gateway
from gateway.config.models import GatewayConfig
from gateway.downstream.headers import header_deadline_protocol
from gateway.errors import ConfigError
from gateway.logs import configure_logging

logger = logging.getLogger("simgate.gateway")


def serve(config: GatewayConfig, *, host: str | None = None, port: int | None = None, insecure: bool = False) -> int:
    configure_logging(config.gateway.log_level)
    host = host or config.gateway.host
    port = config.gateway.port if port is None else port
    try:
        gateway = Gateway(config, host=host, insecure=insecure)
    except ConfigError as exc:  # e.g. a vault secret a server refers to is missing: the gateway does not start
        print(f"simgate: {exc}", file=sys.stderr)
        return 2
    server = _Server(gateway, uvicorn.Config(
        gateway.app(), host=host, port=port, log_config=None, access_log=False, lifespan="on",
        timeout_graceful_shutdown=5,
        # Past this many connections (or requests in progress), a new request is answered 503 at once;
        # headers that do not arrive in time end their connection, and a body is cut off by the app (`BoundedBodies`).
        limit_concurrency=config.gateway.max_connections,
        http=header_deadline_protocol(config.gateway.header_timeout),
    ))
    logger.info("serving", extra={"url": f"http://{_url_host(host)}:{port}/mcp"})
    server.run()
    return 0 if server.started else 1


class _Server(uvicorn.Server):
    def __init__(self, gateway: Gateway, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._gateway = gateway

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Streams that never end by themselves (pages watching live calls) end now, not at the graceful timeout.
        self._gateway.feed.close()
        await super().shutdown(sockets)


def _url_host(host: str) -> str:
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host
