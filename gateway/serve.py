"""Run a gateway under uvicorn until SIGINT/SIGTERM; every upstream is closed on the way out."""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys
from pathlib import Path

import anyio
import uvicorn

from simgate.gateway.app import Gateway
from simgate.gateway.config.models import GatewayConfig
from simgate.gateway.downstream.headers import header_deadline_protocol
from simgate.gateway.errors import ConfigError
from simgate.gateway.logs import configure_logging
from simgate.gateway.replicas.orphans import die_with_parent
from simgate.gateway.replicas.plan import plan_from_environment
from simgate.gateway.replicas.sockets import inherited
from simgate.gateway.upstream.pool import docker_hosts, sweep_containers
from simgate.private_apis import check as check_private_apis

logger = logging.getLogger("simgate.gateway")


def serve(config: GatewayConfig, *, host: str | None = None, port: int | None = None, insecure: bool = False,
          workers: int | None = None, config_path: str | None = None) -> int:
    """`workers` (default `gateway.workers`) above 1: that many replicas behind one address (see
    `gateway.replicas`); each is this same command, started again from `config_path`, with its plan."""
    replica = plan_from_environment()
    configure_logging(config.gateway.log_level, replica=replica.index if replica is not None else None)
    # A library release without a private detail the gateway relies on stops it here, by name, not a call later.
    for warning in check_private_apis():
        logger.warning(warning)
    host = host or config.gateway.host
    port = config.gateway.port if port is None else port
    workers = workers or config.gateway.workers
    if replica is None and workers > 1:
        if config_path is None:
            raise ConfigError("several workers need the config file they are started from")
        return _supervise(config, config_path, workers, host, port, insecure)
    if replica is not None:
        die_with_parent(replica.parent_pid)
    try:
        gateway = Gateway(config, host=host, insecure=insecure, replica=replica)
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
    server.run(sockets=[inherited(replica.public_fd), inherited(replica.private_fd)] if replica is not None else None)
    return 0 if server.started else 1


class _Server(uvicorn.Server):
    def __init__(self, gateway: Gateway, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._gateway = gateway

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Streams that never end by themselves (pages watching live calls) end now, not at the graceful timeout.
        self._gateway.feed.close()
        await super().shutdown(sockets)


def _supervise(config: GatewayConfig, config_path: str, workers: int, host: str, port: int, insecure: bool) -> int:
    from simgate.gateway.replicas.supervisor import Supervisor

    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "simgate", "serve", config_path, "--host", host, "--port", str(port),
                *(["--insecure"] if insecure else [])]

    try:
        supervisor = Supervisor(command, workers, host, port)
    except OSError as exc:
        print(f"simgate: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    # Before any replica starts: what an earlier run left, by any number of replicas or a single process (each
    # replica then sweeps only its own, when it is restarted).
    anyio.run(sweep_containers, docker_hosts(config), Path(config.gateway.state_dir), None)
    logger.info("serving", extra={"url": f"http://{_url_host(host)}:{supervisor.port}/mcp", "workers": workers})
    return anyio.run(supervisor.run)


def _url_host(host: str) -> str:
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host
