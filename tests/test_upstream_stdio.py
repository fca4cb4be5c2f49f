"""The gateway's stdio transport against real child processes: framing, and shutdown of the whole group."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import anyio
import mcp_types as types
import pytest
from mcp.shared.message import SessionMessage

from simgate.gateway.upstream.stdio import PipeReader, stdio_streams
from simgate.sandboxes.framing import OversizedMessage

pytestmark = pytest.mark.anyio

LIMIT = 32 * 1024 * 1024
NOTIFICATION = '{"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "x"}}'


async def test_lines_blank_garbage_and_an_unterminated_last_one(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys
        sys.stdout.write("\\n" + "not json at all\\n" + {NOTIFICATION!r} + "\\n\\n")
        sys.stdout.write({NOTIFICATION!r}[:40])
        sys.stdout.flush()
        sys.stdout.write({NOTIFICATION!r}[40:])  # the last line arrives in two pieces and has no newline
    """)
    received: list[SessionMessage | Exception] = []
    with anyio.fail_after(20):
        async with stdio_streams(sys.executable, ["-c", script], {}, str(tmp_path), _errlog(tmp_path),
                                 LIMIT) as (read, _):
            async for item in read:
                received.append(item)
    assert isinstance(received[0], Exception) and "not json" in str(received[0])
    assert len(received) == 3
    for item in received[1:]:
        assert isinstance(item, SessionMessage) and isinstance(item.message, types.JSONRPCNotification)
        assert item.message.method == "notifications/message"


async def test_a_large_message_arrives_whole_and_one_over_the_limit_is_skipped(tmp_path: Path) -> None:
    big = "y" * 20_000_000
    script = textwrap.dedent("""
        import json, sys
        for size in (20_000_000, 3000, 10):
            sys.stdout.write(json.dumps({"jsonrpc": "2.0", "method": "notifications/message",
                                         "params": {"level": "info", "data": "y" * size}}) + "\\n")
        sys.stdout.flush()
    """)
    started = time.monotonic()
    with anyio.fail_after(30):
        async with stdio_streams(sys.executable, ["-c", script], {}, str(tmp_path), _errlog(tmp_path),
                                 LIMIT) as (read, _):
            first = await read.receive()
    assert isinstance(first, SessionMessage) and first.message.params["data"] == big  # type: ignore[union-attr]
    assert time.monotonic() - started < 15  # read in pieces, joined once (not copied per piece)
    async with await anyio.open_process([sys.executable, "-c", script]) as process:
        assert process.stdout is not None
        limited = PipeReader(process.stdout, max_line=5000)
        received = [await limited.receive() for _ in range(3)]
    assert isinstance(received[0], OversizedMessage) and "limit of 5000 bytes" in str(received[0])
    assert [len(item.message.params["data"]) for item in received[1:]] == [3000, 10]  # type: ignore[union-attr]


async def test_writes_reach_the_server_whole_when_sends_overlap(tmp_path: Path) -> None:
    script = "import sys\nfor line in sys.stdin: sys.stdout.write(line); sys.stdout.flush()"
    sent = [types.JSONRPCRequest(jsonrpc="2.0", id=index, method="ping", params={"pad": "x" * 5000 * index})
            for index in range(1, 21)]
    with anyio.fail_after(30):
        async with stdio_streams(sys.executable, ["-c", script], {}, str(tmp_path), _errlog(tmp_path),
                                 LIMIT) as (read, write):
            echoed: list[SessionMessage | Exception] = []

            async def read_all() -> None:
                for _ in sent:
                    echoed.append(await read.receive())

            async with anyio.create_task_group() as tg:
                tg.start_soon(read_all)  # read meanwhile: the echo would otherwise fill its pipe and stall
                for message in sent:
                    tg.start_soon(write.send, SessionMessage(message))
    ids = sorted(item.message.id for item in echoed if isinstance(item, SessionMessage))  # type: ignore[union-attr]
    assert ids == list(range(1, 21))


async def test_shutdown_stops_a_server_that_ignores_stdin_and_sigterm_and_its_children(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = textwrap.dedent(f"""
        import os, signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
        child = subprocess.Popen([sys.executable, "-c", stubborn])
        open({str(pids)!r}, "w").write(f"{{os.getpid()}} {{child.pid}}")
        sys.stdin.close()
        time.sleep(600)
    """)
    started = time.monotonic()
    with anyio.fail_after(30):
        async with stdio_streams(sys.executable, ["-c", script], {}, str(tmp_path), _errlog(tmp_path), LIMIT):
            while not pids.exists() or len(pids.read_text().split()) < 2:
                await anyio.sleep(0.05)
    assert time.monotonic() - started < 15  # stdin grace, SIGTERM grace, SIGKILL
    for pid in map(int, pids.read_text().split()):
        deadline = time.monotonic() + 5
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid), f"process {pid} outlived the transport"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")  # a zombie is gone


def _errlog(tmp_path: Path):  # type: ignore[no-untyped-def]
    return (tmp_path / "stderr.log").open("a")  # a real file: the child writes to its descriptor


async def test_an_oversized_line_is_dropped_while_read_and_reported_with_its_id(tmp_path: Path) -> None:
    """Its id is read from its head (as the Python SDK writes) or its tail (the TypeScript SDK's order); with the
    id in its head it is reported as soon as it crosses the limit, before its end has even been written."""
    script = textwrap.dedent("""
        import json, sys, time
        pad = "z" * 50_000
        lines = [
            '{"result": {"content": [{"type": "text", "text": "%s"}]}, "jsonrpc": "2.0", "id": "ts-7"}' % pad,
            '{"jsonrpc": "2.0", "method": "notifications/message", "params": {"data": "%s"}}' % pad,
            '{"jsonrpc":"2.0","id":3,"method":"sampling/createMessage","params":{"x":"%s"}}' % pad,
            json.dumps({"jsonrpc": "2.0", "method": "notifications/message",
                        "params": {"level": "info", "data": "ok"}}),
        ]
        sys.stdout.write("\\n".join(lines) + "\\n")
        sys.stdout.write('{"jsonrpc":"2.0","id":41,"result":{"text":"' + pad)  # its end comes much later
        sys.stdout.flush()
        time.sleep(60)
    """)
    with anyio.fail_after(20):
        async with stdio_streams(sys.executable, ["-c", script], {}, str(tmp_path), _errlog(tmp_path), 10_000) as (
                read, _):
            received = [await read.receive() for _ in range(5)]
    tail_id, notification, server_request, intact, head_id = received
    assert isinstance(tail_id, OversizedMessage) and (tail_id.kind, tail_id.request_id) == ("response", "ts-7")
    assert tail_id.size is not None and tail_id.size > 50_000
    assert isinstance(notification, OversizedMessage) and notification.kind == "request"
    assert notification.request_id is None
    assert isinstance(server_request, OversizedMessage) and server_request.kind == "request"  # the server's own id
    assert isinstance(intact, SessionMessage) and intact.message.params["data"] == "ok"  # type: ignore[union-attr]
    assert isinstance(head_id, OversizedMessage) and (head_id.kind, head_id.request_id) == ("response", 41)
    assert head_id.size is None  # reported while the line was still being written
