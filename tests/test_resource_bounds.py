"""Resource bounds of a real gateway: a result over `max_result_bytes` (stdio and HTTP upstreams) fails at
once with -32008 while the gateway's memory stays far below the result's size and other clients go on
being answered; a server spamming stderr leaves a rotated, capped `stderr.log`; slow clients that never
finish their body are cut off after `body_timeout`, hold a bounded amount of memory, and connections
over `max_connections` are refused at once."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from harness import FIXTURES, GatewayProcess, fixture_server, free_port, mcp_session, running_gateway, wait_until
from mcp.shared.exceptions import MCPError

pytestmark = pytest.mark.anyio

RESULT_TOO_LARGE = -32008
MB = 1_000_000


def _text(result: types.CallToolResult) -> str:
    return "".join(block.text for block in result.content if isinstance(block, types.TextContent))


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in bytes."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


def _reset_peak(pid: int) -> int:
    """Start the process's peak RSS afresh (Linux: 5 > clear_refs); the baseline to compare the peak with."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return _status(pid)["VmHWM"]  # not allowed here: the peak so far is the baseline
    return _status(pid)["VmRSS"]


async def _too_large(session: Any, tool: str, arguments: dict[str, Any], timeout: float = 30) -> tuple[MCPError, float]:
    started = time.monotonic()
    with anyio.fail_after(timeout), pytest.raises(MCPError) as failed:
        await session.call_tool(tool, arguments)
    return failed.value, time.monotonic() - started


# ------------------------------------------------------------------ max_result_bytes and stderr.log


def _http_fixture(port: int, *extra: str) -> subprocess.Popen[bytes]:
    args = [sys.executable, str(FIXTURES / "misbehaving_server.py"), "--http", str(port), *extra]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """Stdio servers, one with its own (smaller) limit, and the same server over HTTP with JSON bodies and SSE."""
    ports = {"webjson": free_port(), "websse": free_port()}
    web = [_http_fixture(ports["webjson"], "--json-response"), _http_fixture(ports["websse"])]
    config = {"gateway": {"max_result_bytes": 4 * MB, "stderr_log_bytes": MB, "stderr_log_backups": 2},
              "mcpServers": {"big": fixture_server("misbehaving_server.py"),
                             "other": fixture_server("misbehaving_server.py"),
                             "tight": {**fixture_server("misbehaving_server.py"), "max_result_bytes": 200_000},
                             "noisy": fixture_server("misbehaving_server.py"),
                             **{name: {"url": f"http://127.0.0.1:{port}/mcp"} for name, port in ports.items()}}}
    try:
        for port in ports.values():
            assert wait_until(lambda port=port: _listening(port), timeout=60), "an HTTP fixture server did not start"
        with running_gateway(config, tmp_path_factory.mktemp("bounds")) as running:
            yield running
    finally:
        for process in web:
            process.terminate()
            process.wait(timeout=10)


async def test_a_result_over_max_result_bytes_fails_at_once_and_memory_stays_bounded(gateway: GatewayProcess) -> None:
    pid = gateway.process.pid
    async with mcp_session(gateway.mcp_url("big")) as big, mcp_session(gateway.mcp_url("other")) as other:
        assert len(_text(await big.call_tool("huge", {"megabytes": 1}))) == MB  # under the limit: whole
        assert _text(await other.call_tool("echo", {"text": "warm"})) == "warm"
        baseline = _reset_peak(pid)
        latencies: list[float] = []
        done = anyio.Event()

        async def keep_calling() -> None:  # another client, on another server, meanwhile
            while not done.is_set():
                started = time.monotonic()
                assert _text(await other.call_tool("echo", {"text": "still here"})) == "still here"
                latencies.append(time.monotonic() - started)
                await anyio.sleep(0.02)

        async with anyio.create_task_group() as tg:
            tg.start_soon(keep_calling)
            error, elapsed = await _too_large(big, "huge", {"megabytes": 40})
            await anyio.sleep(1)  # the rest of the 80 MB line streams by meanwhile
            done.set()
        peak = _status(pid)["VmHWM"]
        assert error.error.code == RESULT_TOO_LARGE, error.error
        assert "max_result_bytes" in error.error.message and "'big'" in error.error.message
        assert isinstance(error.error.data, dict) and error.error.data["max_result_bytes"] == 4 * MB
        assert elapsed < 10  # at once (the call timeout is 60 s)
        assert peak - baseline < 15 * MB, f"the gateway's peak RSS grew by {(peak - baseline) / MB:.0f} MB"
        assert len(latencies) >= 5 and max(latencies) < 1.0, latencies
        assert _text(await big.call_tool("echo", {"text": "after"})) == "after"  # the same upstream, usable
    assert "was dropped; request" in gateway.log_text()  # said in the gateway's log too


async def test_a_server_can_have_its_own_max_result_bytes(gateway: GatewayProcess) -> None:
    async with mcp_session(gateway.mcp_url()) as session:
        error, _ = await _too_large(session, "tight__huge", {"megabytes": 0.5})
        assert error.error.code == RESULT_TOO_LARGE and "200000" in error.error.message
        assert len(_text(await session.call_tool("big__huge", {"megabytes": 0.5}))) == MB // 2
        assert _text(await session.call_tool("tight__echo", {"text": "ok"})) == "ok"


@pytest.mark.parametrize("server", ["webjson", "websse"])
async def test_an_http_upstream_answer_over_the_limit_fails_at_once(gateway: GatewayProcess, server: str) -> None:
    async with mcp_session(gateway.mcp_url(server)) as session:
        # (the fixture's result carries its text twice: as content and as structuredContent)
        assert len(_text(await session.call_tool("huge", {"megabytes": 1.5}))) == 1_500_000
        error, elapsed = await _too_large(session, "huge", {"megabytes": 20})
        assert error.error.code == RESULT_TOO_LARGE and f"'{server}'" in error.error.message, error.error
        assert elapsed < 10
        assert _text(await session.call_tool("echo", {"text": "after"})) == "after"


async def test_stderr_log_is_rotated_and_capped(gateway: GatewayProcess) -> None:
    logs = gateway.workdir / ".simgate" / "servers" / "noisy"
    async with mcp_session(gateway.mcp_url("noisy")) as session:
        for _ in range(3):
            assert _text(await session.call_tool("spam_stderr", {"megabytes": 3})) == "spammed"
        assert _text(await session.call_tool("echo", {"text": "fine"})) == "fine"
    assert wait_until(lambda: (logs / "stderr.log.2").exists(), timeout=10)
    sizes = {path.name: path.stat().st_size for path in logs.glob("stderr.log*")}
    assert set(sizes) == {"stderr.log", "stderr.log.1", "stderr.log.2"}, sizes  # 9 MB written, 3 MB kept at most
    assert all(size <= MB + 65536 for size in sizes.values()), sizes
    assert "spam spam" in (logs / "stderr.log.1").read_text()


# ------------------------------------------------------------------ slow clients


async def _slow_client(port: int, declared: int, sent: int) -> tuple[bytes, float]:
    """POST headers declaring `declared` bytes of body, send `sent` of them, then stall: what the gateway
    answers, and after how long the connection ended."""
    started = time.monotonic()
    stream = await anyio.connect_tcp("127.0.0.1", port)
    async with stream:
        head = (f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                f"Accept: application/json, text/event-stream\r\nContent-Length: {declared}\r\n\r\n")
        try:
            await stream.send(head.encode())
            piece = b" " * 65536
            with anyio.move_on_after(10):
                for _ in range(sent // len(piece)):
                    await stream.send(piece)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass  # refused while sending
        answer = b""
        with anyio.fail_after(20):
            try:
                while chunk := await stream.receive():
                    answer += chunk
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                pass
    return answer, time.monotonic() - started


async def test_slow_bodies_are_cut_off_and_hold_bounded_memory(tmp_path: Path) -> None:
    config = {"gateway": {"body_timeout": 2, "max_pending_body_bytes": 16 * MB, "max_connections": 100},
              "mcpServers": {"friend": fixture_server("misbehaving_server.py")}}
    with running_gateway(config, tmp_path) as gateway:
        pid = gateway.process.pid
        port = int(gateway.url.rsplit(":", 1)[1])
        baseline = _reset_peak(pid)
        results: list[tuple[bytes, float]] = []

        async def one() -> None:
            results.append(await _slow_client(port, declared=3_500_000, sent=2_500_000))

        async with anyio.create_task_group() as tg:
            for _ in range(40):
                tg.start_soon(one)
        peak = _status(pid)["VmHWM"]
        statuses = [answer[9:12] for answer, _ in results]  # b"" where the 503 was lost to the reset of the close
        assert len(results) == 40 and set(statuses) <= {b"408", b"503", b""}, statuses
        # Bodies within the pending budget (16 MB: 6 of 2.5 MB) wait, and are cut off after the body timeout;
        # the others are refused as they cross it.
        assert 1 <= statuses.count(b"408") <= 7, statuses
        assert max(seconds for _, seconds in results) < 12  # none is held
        assert peak - baseline < 50 * MB, f"the gateway's peak RSS grew by {(peak - baseline) / MB:.0f} MB"
        async with mcp_session(gateway.mcp_url("friend")) as session:  # and a good client is served
            assert _text(await session.call_tool("echo", {"text": "good"})) == "good"
    assert "did not arrive within 2s" in gateway.log_text()


async def _silent_client(port: int, head: bytes) -> float:
    """Send `head` (nothing, or headers that never end) and wait: after how long the gateway closed it."""
    started = time.monotonic()
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        if head:
            await stream.send(head)
        with anyio.fail_after(20):
            try:
                while await stream.receive():
                    pass
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                pass
    return time.monotonic() - started


async def test_connections_over_the_cap_are_refused_at_once(tmp_path: Path) -> None:
    config = {"gateway": {"body_timeout": 3, "header_timeout": 1.5, "max_connections": 10},
              "mcpServers": {"friend": fixture_server("misbehaving_server.py")}}
    with running_gateway(config, tmp_path) as gateway:
        port = int(gateway.url.rsplit(":", 1)[1])
        first: list[tuple[bytes, float]] = []
        later: list[tuple[bytes, float]] = []

        async def one(results: list[tuple[bytes, float]]) -> None:
            results.append(await _slow_client(port, declared=100_000, sent=65536))

        async with anyio.create_task_group() as tg:
            for _ in range(5):  # within the cap: served, then cut off by the body timeout
                tg.start_soon(one, first)
            await anyio.sleep(0.5)
            for _ in range(15):  # 20 connections at once: over the cap
                tg.start_soon(one, later)
        assert [answer[:12] for answer, _ in first] == [b"HTTP/1.1 408"] * 5
        assert all(2.5 < seconds < 8 for _, seconds in first), first
        refused = [seconds for answer, seconds in later if answer.startswith(b"HTTP/1.1 503")]
        assert len(refused) >= 10 and max(refused) < 2, later  # refused at once, not left waiting
        assert all(answer[:12] in (b"HTTP/1.1 503", b"HTTP/1.1 408") for answer, _ in later), later
        # Clients that send no headers, or headers that never end, fill the cap, but only until the header timeout.
        ended: list[float] = []

        async def silent(head: bytes) -> None:
            ended.append(await _silent_client(port, head))

        async with anyio.create_task_group() as tg:
            for index in range(12):
                tg.start_soon(silent, b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n" if index % 2 else b"")
        assert len(ended) == 12 and all(1.0 < seconds < 6 for seconds in ended), ended
        async with mcp_session(gateway.mcp_url("friend")) as session:  # the slots are free again
            assert _text(await session.call_tool("echo", {"text": "good"})) == "good"
