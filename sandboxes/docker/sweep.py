"""Containers outlive a gateway that is killed: the next start of the same gateway removes them."""

from __future__ import annotations

import logging

from docker.errors import DockerException

from simgate.sandboxes.docker.container import GATEWAY_LABEL
from simgate.sandboxes.docker.engine import connected
from simgate.sandboxes.launch import SandboxUnavailable

logger = logging.getLogger("simgate.sandbox")


def sweep(docker_host: str | None, instance: str) -> list[str]:
    """Remove every container labelled with this gateway instance, running or not; return their names."""
    removed: list[str] = []
    try:
        with connected(docker_host) as client:
            stale = client.containers.list(all=True, filters={"label": f"{GATEWAY_LABEL}={instance}"})
            for container in stale:
                try:
                    container.remove(force=True)
                    removed.append(container.name)
                except DockerException as exc:
                    logger.warning("sandbox: could not remove stale container %s: %s", container.name, exc)
    except SandboxUnavailable as exc:
        logger.warning("sandbox: no sweep of stale containers: %s", exc)
    if removed:
        logger.info("sandbox: removed %d container(s) left by an earlier run: %s", len(removed), ", ".join(removed))
    return removed
