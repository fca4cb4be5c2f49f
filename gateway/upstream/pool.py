"""All upstreams of a gateway, started together and stopped together."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types

from simgate.gateway.config.exposure import exposure_for
from simgate.gateway.config.models import GatewayConfig
from simgate.gateway.errors import UnknownServer
from simgate.gateway.upstream.connection import ToolSnapshots, Upstream, UpstreamState
from simgate.sandboxes.docker.sweep import sweep

logger = logging.getLogger("simgate.upstream")

Listener = Callable[[str, types.ServerNotification], Awaitable[None]]


class UpstreamPool:
    def __init__(self, config: GatewayConfig, state_dir: Path, snapshots: ToolSnapshots | None = None, *,
                 stderr_redactor: Any = None, redact_stderr_of: Collection[str] = (),
                 replica: int | None = None) -> None:
        """`stderr_redactor`: redacts the stderr of the servers of `redact_stderr_of` (those given vault
        secrets) on its way to their stderr.log. `replica`: this gateway is replica `replica` of several on one
        state dir; it runs its own copy of every server, in directories of its own, and its docker sweep leaves
        its siblings' containers alone."""
        self._listeners: list[Listener] = []
        self._state_dir = state_dir
        self._replica = replica
        # Engines of docker-sandboxed servers: containers an earlier run of this gateway left there are swept.
        self._docker_hosts = docker_hosts(config)
        # What each sandboxed server must never see (the gateway's files, other servers' directories).
        self.upstreams: dict[str, Upstream] = {
            name: Upstream(name, server, state_dir, on_notification=self._fan_out, snapshots=snapshots,
                           raw_calls=config.gateway.fast_paths, settings=config.gateway,
                           exposure=exposure_for(config.gateway, config.servers, name),
                           errlog_redactor=stderr_redactor if name in redact_stderr_of else None, replica=replica)
            for name, server in config.active_servers.items()
        }

    def get(self, name: str) -> Upstream:
        try:
            return self.upstreams[name]
        except KeyError:
            known = ", ".join(sorted(self.upstreams)) or "none"
            raise UnknownServer(f"unknown server {name!r} (known: {known})", data={"server": name}) from None

    def add_listener(self, listener: Listener) -> None:
        """Be told of every upstream notification (list changes, logs, resource updates)."""
        self._listeners.append(listener)

    async def _fan_out(self, server: str, notification: types.ServerNotification) -> None:
        for listener in self._listeners:
            try:
                await listener(server, notification)
            except Exception:
                logger.exception("a listener failed on a notification from %s", server)

    @property
    def ready(self) -> bool:
        return all(upstream.state == UpstreamState.READY for upstream in self.upstreams.values())

    @asynccontextmanager
    async def running(self) -> AsyncIterator[UpstreamPool]:
        """Run every upstream for the duration of the block; on exit none is left behind."""
        await sweep_containers(self._docker_hosts, self._state_dir, self._replica)
        async with anyio.create_task_group() as tg:
            for upstream in self.upstreams.values():
                tg.start_soon(upstream.run, name=f"upstream:{upstream.name}")
            try:
                yield self
            finally:
                tg.cancel_scope.cancel()

    async def wait_ready(self, timeout: float) -> bool:
        with anyio.move_on_after(timeout):
            while not self.ready:
                await anyio.sleep(0.05)
        return self.ready


def docker_hosts(config: GatewayConfig) -> set[str | None]:
    """The engines of the docker-sandboxed servers (None: the default one)."""
    return {server.sandbox.docker_host for server in config.active_servers.values()
            if server.sandbox is not None and server.sandbox.backend == "docker"}


async def sweep_containers(hosts: set[str | None], state_dir: Path, replica: int | None) -> None:
    """Remove what an earlier run of this gateway (`replica` None) or of this replica left on each engine."""
    for host in hosts:
        await anyio.to_thread.run_sync(sweep, host, state_dir, replica)
