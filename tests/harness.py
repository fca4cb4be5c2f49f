"""Start a real gateway process for a test and talk to it with the real `mcp` client."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class GatewayProcess:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    workdir: Path

    def mcp_url(self, server: str | None = None) -> str:
        return f"{self.url}/mcp" if server is None else f"{self.url}/servers/{server}/mcp"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self, timeout: float = 20) -> int:
        """SIGTERM the gateway alone (not its process group) and wait for it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


def fixture_server(name: str, *args: str) -> dict[str, Any]:
    return {"command": sys.executable, "args": [str(FIXTURES / name), *args]}


@contextmanager
def running_gateway(config: dict[str, Any], workdir: Path, *, ready_timeout: float = 90,
                    wait_ready: bool = True, host: str = "127.0.0.1",
                    serve_args: tuple[str, ...] = ()) -> Iterator[GatewayProcess]:
    """`host`: the address to listen on; "0.0.0.0" makes a non-loopback gateway, still reached (only) at
    127.0.0.1."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "simgate.json"
    config_path.write_text(json.dumps(config))
    port = free_port()
    log = workdir / "gateway.log"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "simgate", "serve", str(config_path), "--host", host, "--port", str(port),
             *serve_args],
            cwd=workdir, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    gateway = GatewayProcess(url=f"http://127.0.0.1:{port}", process=process, log=log, workdir=workdir)
    try:
        path = "/readyz" if wait_ready else "/healthz"
        wait_for(process, lambda: http_ok(gateway.url + path), ready_timeout, "gateway",
                 lambda: gateway.log_text()[-3000:])
        yield gateway
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@asynccontextmanager
async def mcp_session(url: str, headers: dict[str, str] | None = None, **kwargs: Any) -> AsyncIterator[ClientSession]:
    async with httpx2.AsyncClient(headers=headers or {}, timeout=httpx2.Timeout(30, read=120)) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write, **kwargs) as session:
                await session.initialize()
                yield session


def http_ok(url: str) -> bool:
    """True once `url` answers 200."""
    try:
        return httpx.get(url, timeout=2, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for(process: subprocess.Popen[bytes], ready: Any, timeout: float, what: str, log_tail: Any) -> None:
    """Wait until `ready()`; fail with the process's log if it exits first or the time runs out."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before it was ready:\n{log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout:g}s:\n{log_tail()}")
        time.sleep(0.1)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(predicate: Any, timeout: float = 10, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def kill_once_written(process: subprocess.Popen[Any], path: Path, timeout: float) -> None:
    """SIGKILL `process`'s group as soon as `path` holds one complete line: a kill mid-run. The process must
    still be running then, and write that line within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_bytes().count(b"\n") >= 1):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no line written in time"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


PROVENANCE = "simgate/provenance"


def without_provenance(result: Any) -> dict[str, Any]:
    """A `CallToolResult` as its server gave it: the gateway's own provenance left out."""
    dumped = result.model_dump(mode="json", by_alias=True, exclude_none=True)
    meta = {key: value for key, value in (dumped.pop("_meta", None) or {}).items() if key != PROVENANCE}
    return {**dumped, **({"_meta": meta} if meta else {})}


def provenance(result: Any) -> dict[str, Any]:
    assert result.meta is not None and PROVENANCE in result.meta, result
    return result.meta[PROVENANCE]
