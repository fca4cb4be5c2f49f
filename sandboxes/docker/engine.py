"""Reaching the Docker engine: which host, whether it answers, and why not."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import docker
from docker.errors import DockerException

from simgate.sandboxes.launch import SandboxUnavailable

# API calls that can take long (image builds) get their own timeout; this one is for the rest.
_API_TIMEOUT = 60


def docker_host(configured: str | None) -> str | None:
    """The engine to use: the policy's `docker_host`, else `DOCKER_HOST`, else the SDK's default socket."""
    return configured or os.environ.get("DOCKER_HOST") or None


def connect(configured: str | None, timeout: int = _API_TIMEOUT) -> docker.DockerClient:
    """A client for the engine that answers a ping; `SandboxUnavailable` says precisely why not."""
    host = docker_host(configured)
    where = host or "the default socket (unix:///var/run/docker.sock)"
    socket_path = (host or "unix:///var/run/docker.sock").removeprefix("unix://")
    if (host is None or host.startswith("unix://")) and not os.path.exists(socket_path):
        hint = "is dockerd running?" if shutil.which("dockerd") else "not installed: apt-get install docker.io"
        raise SandboxUnavailable(f"docker: no engine: the socket {socket_path} does not exist ({hint}); "
                                 "DOCKER_HOST or sandbox.docker_host names another engine")
    try:
        client = docker.DockerClient(base_url=host, version="auto", timeout=timeout) if host else \
            docker.DockerClient.from_env(version="auto", timeout=timeout)
    except DockerException as exc:
        raise SandboxUnavailable(f"docker: the engine at {where} is unreachable: {_short(exc)}") from None
    try:
        client.ping()
    except DockerException as exc:
        client.close()
        raise SandboxUnavailable(f"docker: the engine at {where} does not answer: {_short(exc)}") from None
    return client


@contextmanager
def connected(configured: str | None, timeout: int = _API_TIMEOUT) -> Iterator[docker.DockerClient]:
    client = connect(configured, timeout)
    try:
        yield client
    finally:
        client.close()


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
