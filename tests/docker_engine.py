"""A private Docker engine for the tests, started exactly as shared/TESTING.md §4 says.

Its data-root, exec-root, socket and pidfile live in a temp dir; it adds no bridge, no iptables
rules and no IP forwarding, so the host's network is left alone. It is stopped by its pid at the end
(SIGTERM, wait, then SIGKILL). Skipped only where `dockerd` is missing and `CI` is unset; in CI a
missing engine is a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
from docker.errors import DockerException

_START_TIMEOUT = 60
_STOP_TIMEOUT = 20


@dataclass
class DockerEngine:
    host: str  # unix://<private socket>
    pid: int
    root: Path

    def client(self) -> contextlib.closing[docker.DockerClient]:
        return contextlib.closing(docker.DockerClient(base_url=self.host, version="auto", timeout=60))


def _answers(host: str) -> bool:
    try:
        with contextlib.closing(docker.DockerClient(base_url=host, version="auto", timeout=5)) as client:
            return bool(client.ping())
    except DockerException:
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            # Its own session: the group holds dockerd and the containerd it started, nothing else.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextlib.contextmanager
def private_engine() -> Iterator[DockerEngine]:
    """Start dockerd with everything private and the host network untouched; stop it by its pid."""
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise FileNotFoundError("dockerd")
    # Short path: the socket's path must fit in sun_path (108 bytes).
    root = Path(tempfile.mkdtemp(prefix="sgd-"))
    socket_path, pidfile = root / "docker.sock", root / "docker.pid"
    host = f"unix://{socket_path}"
    with open(root / "dockerd.log", "wb") as log:
        process = subprocess.Popen(
            [dockerd, "--data-root", str(root / "data"), "--exec-root", str(root / "exec"), "-H", host,
             "--pidfile", str(pidfile), "--bridge=none", "--iptables=false", "--ip-forward=false", "--ip-masq=false"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + _START_TIMEOUT
        while not _answers(host):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = (root / "dockerd.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"dockerd did not come up (exit {process.poll()}):\n{tail}")
            time.sleep(0.2)
        yield DockerEngine(host=host, pid=process.pid, root=root)
    finally:
        _stop(process)
        # Only our own temp dir goes; a still-mounted layer (after a SIGKILL) is left rather than forced.
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    if shutil.which("dockerd") is None:
        if os.environ.get("CI"):
            pytest.fail("dockerd is missing in CI: scripts/test.sh installs docker.io")
        pytest.skip("dockerd is not installed on this machine (apt-get install docker.io); CI runs these tests")
    try:
        with private_engine() as engine:
            yield engine
    except RuntimeError as exc:
        pytest.fail(str(exc))
