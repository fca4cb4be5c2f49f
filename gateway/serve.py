"""Run a gateway under uvicorn until SIGINT/SIGTERM; every upstream is closed on the way out."""

from __future__ import annotations

import ipaddress
import logging

import uvicorn

from gateway.app import Gateway
from gateway.config.models import GatewayConfig
from gateway.logs import configure_logging

logger = logging.getLogger("simgate.gateway")


def serve(config: GatewayConfig, *, host: str | None = None, port: int | None = None) -> int:
    listener = configure_logging(config.gateway.log_level)
    host = host or config.gateway.host
    port = config.gateway.port if port is None else port
    gateway = Gateway(config, host=host)
    server = uvicorn.Server(uvicorn.Config(
        gateway.app(), host=host, port=port, log_config=None, access_log=False, lifespan="on",
        timeout_graceful_shutdown=5,
    ))
    logger.info("serving", extra={"url": f"http://{_url_host(host)}:{port}/mcp"})
    try:
        server.run()
    finally:
        listener.stop()  # flushes what is queued
    return 0 if server.started else 1


def _url_host(host: str) -> str:
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host
