"""Untrusted servers under bubblewrap: a hostile server's break-out attempts are contained, the
gateway stays up, and real servers from PyPI and npm run offline inside the sandbox."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
import real_servers as rs
from harness import REPO_ROOT, GatewayProcess, fixture_server, mcp_session, running_gateway, wait_until
from mcp.shared.exceptions import MCPError

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed on this machine"),
]

ROOT = rs.default_install_root()
SANDBOX = {"backend": "bwrap", "limits": {"memory_mb": 512, "processes": 48, "open_files": 256}}


class Listener:
    """A loopback TCP server outside the sandbox that records whether anything reached it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.reached = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        try:
            connection, _ = self.sock.accept()
            self.reached.set()
            connection.close()
        except OSError:
            pass


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    work = tmp_path_factory.mktemp("sandbox")
    servers: dict[str, Any] = {
        "hostile": {**fixture_server("hostile_server.py"), "sandbox": SANDBOX, "call_timeout": 3,
                    "ping_timeout": 2},
        "friend": fixture_server("misbehaving_server.py"),
        "raw": {**fixture_server("raw_stdio_server.py"), "sandbox": SANDBOX},
        # Stopped by its wall clock every 4 s, and started again.
        "brief": {**fixture_server("hostile_server.py"), "sandbox": {**SANDBOX, "wall_clock": 4},
                  "max_restart_backoff": 1},
    }
    with running_gateway({"mcpServers": servers}, work) as running:
        yield running


def _text(result: types.CallToolResult) -> str:
    return "".join(block.text for block in result.content if isinstance(block, types.TextContent))


async def _call(gateway: GatewayProcess, tool: str, arguments: dict[str, Any]) -> str:
    async with mcp_session(gateway.mcp_url("hostile")) as session:
        with anyio.fail_after(60):
            return _text(await session.call_tool(tool, arguments))


async def _friend_still_answers(gateway: GatewayProcess) -> None:
    async with mcp_session(gateway.mcp_url("friend")) as session:
        assert _text(await session.call_tool("echo", {"text": "still here"})) == "still here"
    assert httpx.get(gateway.url + "/healthz").status_code == 200


async def test_cannot_read_outside_its_directories(gateway: GatewayProcess, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("the crown jewels")
    answer = await _call(gateway, "read_file", {"path": str(secret)})
    assert answer.startswith("DENIED") and "crown jewels" not in answer
    config = await _call(gateway, "read_file", {"path": str(gateway.workdir / "simgate.json")})
    assert config.startswith("DENIED")
    await _friend_still_answers(gateway)


async def test_cannot_write_outside_its_directories(gateway: GatewayProcess, tmp_path: Path) -> None:
    for target in (Path("/usr/planted.txt"), Path("/root/planted.txt"), Path("/etc/planted.txt")):
        answer = await _call(gateway, "write_file", {"path": str(target), "text": "pwned"})
        assert answer.startswith("DENIED"), answer
        assert not target.exists()
    # /tmp inside is a private tmpfs: a write there lands nowhere on the host.
    for target in (tmp_path / "planted.txt", gateway.workdir / "planted.txt", REPO_ROOT / "planted.txt"):
        await _call(gateway, "write_file", {"path": str(target), "text": "pwned"})
        assert not target.exists()
    # Its own work directory is writable.
    own = gateway.workdir / ".simgate" / "servers" / "hostile" / "work" / "note.txt"
    assert await _call(gateway, "write_file", {"path": str(own), "text": "mine"}) == "WROTE"


async def test_cannot_reach_a_loopback_port_outside(gateway: GatewayProcess) -> None:
    listener = Listener()
    answer = await _call(gateway, "connect", {"port": listener.port})
    assert answer.startswith("DENIED") and not listener.reached.wait(0.5)


async def test_fork_bomb_is_capped(gateway: GatewayProcess) -> None:
    answer = await _call(gateway, "fork_bomb", {})
    assert answer.startswith("STOPPED after"), answer
    children = int(answer.split()[2])
    assert children < 48
    await _friend_still_answers(gateway)


async def test_two_gigabytes_are_refused(gateway: GatewayProcess) -> None:
    assert await _call(gateway, "allocate", {"megabytes": 2048}) == "DENIED: MemoryError"
    assert (await _call(gateway, "allocate", {"megabytes": 16})).startswith("ALLOCATED 16")


async def test_stdout_flood_is_skipped(gateway: GatewayProcess) -> None:
    async with mcp_session(gateway.mcp_url("raw")) as session:
        assert _text(await session.call_tool("flood", {"lines": 20_000})) == "FLOODED"
        assert _text(await session.call_tool("echo", {"text": "after"})) == "after"
    assert wait_until(lambda: "not JSON-RPC (20000 so far)" in gateway.log_text(), timeout=10)
    log = gateway.log_text()
    assert log.count("skipped a line that is not JSON-RPC") < 40  # summarized, not 20000 log lines
    await _friend_still_answers(gateway)


async def test_a_hang_times_out_and_the_gateway_stays_up(gateway: GatewayProcess) -> None:
    async with mcp_session(gateway.mcp_url("hostile")) as session:
        with anyio.fail_after(20), pytest.raises(MCPError) as hung:
            await session.call_tool("hang", {})
    assert hung.value.code in (-32001, -32002)
    await _friend_still_answers(gateway)


async def _answers_between_stops(gateway: GatewayProcess) -> str:
    # A call can meet the very moment the wall clock stops the server (-32001); the next one is served.
    for _ in range(3):
        try:
            async with mcp_session(gateway.mcp_url("brief")) as session:
                with anyio.fail_after(60):
                    return _text(await session.call_tool("allocate", {"megabytes": 1}))
        except* MCPError as group:  # bare, or wrapped by the client's task group on the way out
            for exc in group.exceptions:
                assert isinstance(exc, MCPError) and exc.error.code == -32001, exc
    raise AssertionError("the server never answered between its wall-clock stops")


async def test_the_wall_clock_restarts_the_server(gateway: GatewayProcess) -> None:
    assert (await _answers_between_stops(gateway)).startswith("ALLOCATED")
    log = gateway.workdir / ".simgate" / "servers" / "brief" / "stderr.log"
    assert wait_until(lambda: "wall-clock limit of 4s reached" in log.read_text(), timeout=30)
    # Restarted with backoff: it answers again.
    assert wait_until(lambda: gateway.log_text().count("upstream brief ready") >= 2, timeout=30)
    assert (await _answers_between_stops(gateway)).startswith("ALLOCATED")


async def test_a_call_in_flight_when_the_wall_clock_stops_the_server_fails_at_once(gateway: GatewayProcess) -> None:
    async with mcp_session(gateway.mcp_url("brief")) as session:
        started = time.monotonic()
        with anyio.fail_after(30), pytest.raises(MCPError) as stopped:
            await session.call_tool("hang", {})  # the server's call timeout is 60 s; its wall clock 4 s
    assert stopped.value.error.code == -32001, stopped.value
    assert time.monotonic() - started < 15


@pytest.mark.parametrize("name", ["calculator", "sqlite", "memory", "everything"])
async def test_real_servers_run_offline_in_the_sandbox(name: str, tmp_path: Path) -> None:
    if not rs.installed(name, ROOT):
        pytest.skip(f"{name} not installed under {ROOT}: run .ci/install-servers")
    work = rs.prepare_work_dir(name, tmp_path / name)
    command, args, env = rs.server_command(name, ROOT, tmp_path / name)
    # A cwd outside the server's own directories is read-only unless the policy lists it as writable.
    config = {"mcpServers": {name: {"command": command, "args": args, "env": env, "cwd": str(work),
                                    "sandbox": {"backend": "bwrap", "read_write": [str(work)]}}}}
    with running_gateway(config, tmp_path / "gw", ready_timeout=60) as gateway:
        async with mcp_session(gateway.mcp_url(name)) as session:
            tools = {tool.name for tool in (await session.list_tools()).tools}
            assert set(rs.get(name).tools) <= tools
            call = rs.get(name).calls[0]
            result = await session.call_tool(call.tool, rs.expand(call.arguments, tmp_path / name))
            assert (result.is_error is True) == (call.expect == "isError"), _text(result)


def test_sandbox_check_command() -> None:
    done = subprocess.run([sys.executable, "-m", "simgate", "sandbox", "check"], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "bwrap: works" in done.stdout
