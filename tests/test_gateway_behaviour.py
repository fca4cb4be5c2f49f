"""The gateway in front of a stdio server written for the tests: forwarding, bad input, crashes,
hangs, progress, sampling, operations. Real gateway process, real `mcp` client and server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from harness import GatewayProcess, fixture_server, mcp_session, pid_alive, running_gateway, wait_until
from mcp.client.session import ClientRequestContext
from mcp.shared.exceptions import MCPError

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    work = tmp_path_factory.mktemp("gateway")
    config = {
        "gateway": {"max_body_bytes": 65536},
        "mcpServers": {
            "bad": {**fixture_server("misbehaving_server.py", "--pid-file", str(work / "bad.pid")),
                    "call_timeout": 2, "health_interval": 60, "ping_timeout": 1},
            "other": fixture_server("misbehaving_server.py", "--pid-file", str(work / "other.pid")),
        },
    }
    with running_gateway(config, work) as running:
        yield running


def _pid(gateway: GatewayProcess, name: str) -> int:
    return int((gateway.workdir / f"{name}.pid").read_text())


def _text(result: types.CallToolResult) -> str:
    return "".join(block.text for block in result.content if isinstance(block, types.TextContent))


async def test_aggregate_names_and_forwarding(gateway: GatewayProcess) -> None:
    async with mcp_session(gateway.mcp_url()) as session:
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert {"bad__echo", "other__echo", "bad__add", "other__crash"} <= set(tools)
        assert all(len(name) <= 64 for name in tools)
        result = await session.call_tool("other__add", {"numbers": [1, 2, 3.5]})
        assert result.structured_content == {"total": 6.5, "terms": 3}
        assert tools["bad__echo"].annotations is not None and tools["bad__echo"].annotations.read_only_hint is True
        assert tools["bad__add"].output_schema is not None


async def test_single_server_endpoint_is_the_server_as_it_is(gateway: GatewayProcess) -> None:
    async with mcp_session(gateway.mcp_url("other")) as session:
        assert session.initialize_result is not None
        assert session.initialize_result.server_info.name == "misbehaving"
        assert "crash" in (session.initialize_result.instructions or "")
        names = {tool.name for tool in (await session.list_tools()).tools}
        assert {"echo", "add", "counter", "crash"} <= names
        result = await session.call_tool("echo", {"text": "as it is"})
        assert _text(result) == "as it is" and result.is_error is False
        failed = await session.call_tool("fail", {"reason": "on purpose"})
        assert failed.is_error is True and "on purpose" in _text(failed)
        prompt = await session.get_prompt("greet", {"name": "Ada"})
        assert "Ada" in json.dumps(prompt.model_dump(mode="json"))
        resource = await session.read_resource("fixture://greeting")
        assert "hello from the fixture" in json.dumps(resource.model_dump(mode="json"))


async def test_prompts_and_resources_through_the_aggregate(gateway: GatewayProcess) -> None:
    async with mcp_session(gateway.mcp_url()) as session:
        prompts = {prompt.name for prompt in (await session.list_prompts()).prompts}
        assert {"bad__greet", "other__greet"} <= prompts
        prompt = await session.get_prompt("other__greet", {"name": "Grace"})
        assert "Grace" in json.dumps(prompt.model_dump(mode="json"))
        resources = [resource.uri for resource in (await session.list_resources()).resources]
        assert "fixture://greeting" in [str(uri) for uri in resources]
        read = await session.read_resource("fixture://greeting")
        assert "hello from the fixture" in json.dumps(read.model_dump(mode="json"))


async def test_bad_arguments_never_reach_the_upstream(gateway: GatewayProcess) -> None:
    async with mcp_session(gateway.mcp_url("other")) as session:
        before = _text(await session.call_tool("counter", {}))
        with pytest.raises(MCPError) as missing:
            await session.call_tool("add", {})
        assert missing.value.code == -32602 and "numbers" in missing.value.message
        with pytest.raises(MCPError) as wrong_type:
            await session.call_tool("add", {"numbers": [1, "two"]})
        assert wrong_type.value.code == -32602 and "$.numbers[1]" in wrong_type.value.message
        with pytest.raises(MCPError) as unknown:
            await session.call_tool("no_such_tool", {})
        assert unknown.value.code == -32602 and "no_such_tool" in unknown.value.message
        after = _text(await session.call_tool("counter", {}))
        assert int(after) == int(before) + 1  # nothing in between reached the server
    async with mcp_session(gateway.mcp_url()) as session:
        with pytest.raises(MCPError) as unknown_server:
            await session.call_tool("nosuch__echo", {"text": "x"})
        assert unknown_server.value.code == -32602 and "nosuch__echo" in unknown_server.value.message


def _post(gateway: GatewayProcess, body: bytes, path: str = "/mcp", headers: dict[str, str] | None = None
          ) -> httpx.Response:
    return httpx.post(gateway.url + path, content=body, timeout=10, headers={
        "content-type": "application/json", "accept": "application/json, text/event-stream", **(headers or {})})


def test_malformed_json_oversized_body_and_unknown_server(gateway: GatewayProcess) -> None:
    response = _post(gateway, b'{"jsonrpc": "2.0", "id": 1, "method": ')
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32700
    huge = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "other__echo", "arguments": {"text": "x" * 200_000}}}).encode()
    assert _post(gateway, huge).status_code == 413
    missing = _post(gateway, b"{}", "/servers/nosuch/mcp")
    assert missing.status_code == 404 and "nosuch" in missing.json()["error"]
    assert httpx.get(gateway.url + "/healthz").json() == {"status": "ok"}


FOREIGN = ({"Host": "rebound.example:8808"}, 421), ({"Origin": "http://rebound.example"}, 403)


def test_host_and_origin_are_checked_on_every_route_but_the_probes(gateway: GatewayProcess) -> None:
    # A page on another site whose name resolves to 127.0.0.1 must not reach the admin API (loopback, no keys).
    modes = httpx.get(gateway.url + "/admin/modes").json()
    change = {"mode": "replay", "session": "rebinding-test"}  # harmless to the other tests, were it accepted
    for headers, status in FOREIGN:
        refused = httpx.put(gateway.url + "/admin/modes", json=change, headers=headers)
        assert refused.status_code == status and "DNS rebinding" in refused.json()["error"], refused.text
        assert httpx.get(gateway.url + "/admin/servers", headers=headers).status_code == status
        assert httpx.get(gateway.url + "/admin/modes", headers=headers).status_code == status
        assert _post(gateway, b"{}", "/servers/other/mcp", headers).status_code == status
        # Probes and scrapers send the Host they were set up with: exempt, but only to read.
        for probe in ("/healthz", "/readyz", "/metrics"):
            assert httpx.get(gateway.url + probe, headers=headers).status_code == 200, probe
        assert httpx.post(gateway.url + "/metrics", headers=headers).status_code == status
    assert httpx.get(gateway.url + "/admin/modes").json() == modes
    # The gateway's own names and pages are accepted.
    for own in ({"Origin": gateway.url}, {"Host": "localhost"}, {}):
        assert httpx.put(gateway.url + "/admin/modes", json=change, headers=own).status_code == 200, own


async def test_crash_in_flight_errors_at_once_and_the_next_call_works(gateway: GatewayProcess) -> None:
    first_pid = _pid(gateway, "other")
    async with mcp_session(gateway.mcp_url("other")) as session:
        with anyio.fail_after(5):
            with pytest.raises(MCPError) as crashed:
                await session.call_tool("crash", {})
        assert crashed.value.code == -32001 and "other" in crashed.value.message
        assert wait_until(lambda: not pid_alive(first_pid), timeout=5), "the crashed process was left behind"
        with anyio.fail_after(30):
            result = await session.call_tool("echo", {"text": "back"})
        assert _text(result) == "back"
    assert _pid(gateway, "other") != first_pid
    servers = httpx.get(gateway.url + "/admin/servers").json()["servers"]
    assert next(s for s in servers if s["name"] == "other")["restarts"] >= 1


async def test_a_hung_upstream_times_out_and_is_restarted(gateway: GatewayProcess) -> None:
    first_pid = _pid(gateway, "bad")
    async with mcp_session(gateway.mcp_url("bad")) as session:
        with anyio.fail_after(10):
            with pytest.raises(MCPError) as hung:
                await session.call_tool("freeze", {})
        assert hung.value.code == -32002 and "2s" in hung.value.message
        # The frozen process no longer answers pings: it is replaced, and calls work again.
        assert wait_until(lambda: _pid(gateway, "bad") != first_pid, timeout=20)
        assert wait_until(lambda: not pid_alive(first_pid), timeout=10), "the hung process was left behind"
        with anyio.fail_after(30):
            assert _text(await session.call_tool("echo", {"text": "alive"})) == "alive"


async def test_non_json_stdout_is_skipped(tmp_path: Path) -> None:
    with running_gateway({"mcpServers": {"raw": fixture_server("raw_stdio_server.py")}}, tmp_path) as gateway:
        async with mcp_session(gateway.mcp_url("raw")) as session:
            assert _text(await session.call_tool("flood", {"lines": 3})) == "FLOODED"
            assert _text(await session.call_tool("echo", {"text": "still fine"})) == "still fine"
        assert wait_until(lambda: "garbage line 2" in gateway.log_text(), timeout=5)
        assert "raw-stdio server v1.0 starting" in gateway.log_text()


async def test_progress_is_forwarded(gateway: GatewayProcess) -> None:
    seen: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total))

    async with mcp_session(gateway.mcp_url()) as session:
        result = await session.call_tool("other__progress", {"steps": 4}, progress_callback=on_progress)
    assert _text(result) == "4 steps"
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


async def test_sampling_is_routed_back_to_the_calling_client(gateway: GatewayProcess) -> None:
    asked: list[str] = []

    async def sampling(ctx: ClientRequestContext, params: types.CreateMessageRequestParams) -> Any:
        message = params.messages[0].content
        asked.append(message.text if isinstance(message, types.TextContent) else "")
        return types.CreateMessageResult(role="assistant", model="test-model",
                                         content=types.TextContent(type="text", text="forty-two"))

    async with mcp_session(gateway.mcp_url(), sampling_callback=sampling) as session:
        result = await session.call_tool("other__ask_model", {"question": "the answer?"})
    assert asked == ["the answer?"]
    assert _text(result) == "forty-two"


async def test_concurrent_calls_share_one_session(gateway: GatewayProcess) -> None:
    pid = _pid(gateway, "other")
    results: list[str] = []

    async def client(index: int) -> None:
        async with mcp_session(gateway.mcp_url()) as session:
            for call in range(5):
                result = await session.call_tool("other__echo", {"text": f"{index}-{call}"})
                results.append(_text(result))

    async with anyio.create_task_group() as tg:
        for index in range(8):
            tg.start_soon(client, index)
    assert sorted(results) == sorted(f"{i}-{c}" for i in range(8) for c in range(5))
    assert _pid(gateway, "other") == pid  # no handshake, no new process per client


def test_readiness_and_metrics(gateway: GatewayProcess) -> None:
    ready = httpx.get(gateway.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    metrics = httpx.get(gateway.url + "/metrics").text
    assert 'simgate_tool_calls_total{outcome="ok",server="other",tool="echo"}' in metrics
    assert 'simgate_upstream_up{server="other"} 1.0' in metrics
    assert "simgate_tool_call_seconds_bucket" in metrics
    assert "simgate_upstream_restarts" in metrics and "simgate_downstream_sessions" in metrics
    # Structured logs: one JSON object per line.
    calls = [json.loads(line) for line in gateway.log_text().splitlines() if '"event": "tool_call"' in line]
    assert calls and {"server", "tool", "outcome", "latency_ms"} <= set(calls[0])


def test_sigterm_leaves_no_child_process(tmp_path: Path) -> None:
    config = {"mcpServers": {"a": fixture_server("misbehaving_server.py", "--pid-file", str(tmp_path / "a.pid")),
                             "b": fixture_server("misbehaving_server.py", "--pid-file", str(tmp_path / "b.pid"))}}
    with running_gateway(config, tmp_path) as running:
        pids = [int((tmp_path / f"{name}.pid").read_text()) for name in ("a", "b")]
        assert all(pid_alive(pid) for pid in pids)
        # uvicorn finishes its graceful shutdown, then re-raises the signal: -15 is a clean exit.
        assert running.terminate() in (0, -15)
        assert "gateway stopped; every upstream is closed" in running.log_text()
        assert wait_until(lambda: not any(pid_alive(pid) for pid in pids), timeout=10)


@pytest.mark.parametrize("era", ["legacy", "2026-07-28"])
async def test_both_protocol_eras(gateway: GatewayProcess, era: str) -> None:
    from mcp import Client

    async with Client(gateway.mcp_url(), mode=era) as client:
        assert (client.protocol_version == "2026-07-28") == (era != "legacy")
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert "other__add" in names
        result = await client.call_tool("other__add", {"numbers": [2, 3]})
        assert result.structured_content == {"total": 5, "terms": 2}
        with pytest.raises(MCPError) as invalid:
            await client.call_tool("other__add", {"numbers": ["x"]})
        assert invalid.value.code == -32602 and "$.numbers[0]" in invalid.value.message


async def test_tool_list_changes_reach_clients_and_the_new_tool_works(gateway: GatewayProcess) -> None:
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with mcp_session(gateway.mcp_url(), message_handler=on_message) as session:
        await session.list_tools()
        assert _text(await session.call_tool("bad__grow", {"name": "sprout"})) == "added sprout"
        with anyio.fail_after(10):
            await changed.wait()
        names = {tool.name for tool in (await session.list_tools()).tools}
        assert "bad__sprout" in names and "other__sprout" not in names
        assert _text(await session.call_tool("bad__sprout", {"text": "hi"})) == "sprout: hi"


async def test_upstream_log_messages_reach_the_calling_client(gateway: GatewayProcess) -> None:
    logged: list[tuple[str, Any]] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logged.append((params.level, params.data))

    async with mcp_session(gateway.mcp_url("other"), logging_callback=on_log) as session:
        assert _text(await session.call_tool("chatter", {})) == "chattered"
        await anyio.sleep(0.2)
    assert ("info", "first message") in logged and ("warning", "second message") in logged


async def test_a_cancelled_call_leaves_the_upstream_usable(gateway: GatewayProcess) -> None:
    async with mcp_session(gateway.mcp_url("other")) as session:
        with anyio.move_on_after(0.5) as scope:
            await session.call_tool("sleep", {"seconds": 20})
        assert scope.cancelled_caught
        with anyio.fail_after(5):
            assert _text(await session.call_tool("echo", {"text": "next"})) == "next"


async def test_streamable_http_upstream(tmp_path: Path) -> None:
    import subprocess
    import sys

    from harness import FIXTURES, free_port

    port = free_port()
    upstream = subprocess.Popen([sys.executable, str(FIXTURES / "conformance_server.py"), "--http", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        config = {"mcpServers": {"remote": {"type": "http", "url": f"http://127.0.0.1:{port}/mcp",
                                            "headers": {"X-Test": "1"}, "startup_timeout": 30}}}
        with running_gateway(config, tmp_path) as running:
            async with mcp_session(running.mcp_url()) as session:
                names = {tool.name for tool in (await session.list_tools()).tools}
                assert "remote__test_simple_text" in names
                result = await session.call_tool("remote__test_simple_text", {})
                assert "test" in _text(result).lower() and not result.is_error
    finally:
        upstream.terminate()
        upstream.wait(timeout=10)
