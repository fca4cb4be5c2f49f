"""Containers outlive a gateway that is killed: the next start of the same gateway removes them."""

from __future__ import annotations

import logging
from pathlib import Path

from docker.errors import DockerException

from simgate.sandboxes.docker.container import GATEWAY_LABEL, STATE_LABEL, gateway_instance
from simgate.sandboxes.docker.engine import connected
from simgate.sandboxes.launch import SandboxUnavailable

logger = logging.getLogger("simgate.sandbox")


def sweep(docker_host: str | None, state_dir: Path, replica: int | None) -> list[str]:
    """Remove the containers an earlier run left, running or not; return their names.

    A replica removes only its own (its siblings' are in use). A whole gateway starting (one process, or the
    parent of replicas before it starts any) removes every container of its state directory, whatever
    replica made it: going from 3 workers to 2, or to 1, leaves none of the third one's behind."""
    if replica is None:
        # Containers made before the state label existed carry only the single process's instance label.
        filters = [f"{STATE_LABEL}={gateway_instance(state_dir)}", f"{GATEWAY_LABEL}={gateway_instance(state_dir)}"]
    else:
        filters = [f"{GATEWAY_LABEL}={gateway_instance(state_dir, replica)}"]
    removed: list[str] = []
    try:
        with connected(docker_host) as client:
            stale = {container.id: container for label in filters
                     for container in client.containers.list(all=True, filters={"label": label})}
            for container in stale.values():
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
