"""Who receives what: upstream notifications, request-scoped traffic, replay-miss hints and log levels,
with client keys. A real gateway in front of `fixtures/routing_server.py` (stdio, or streamable HTTP),
real `mcp` SDK clients, keys in the key file as `simgate keys create` writes them."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from harness import FIXTURES, fixture_server, free_port, mcp_session, running_gateway, wait_until
from mcp.client.session import ClientRequestContext
from mcp.shared.exceptions import MCPError

from simgate.gateway.auth.api_keys import KeyStore

# Subscriptions, sampling and logging are handshake-era features: exactly what is routed here.
pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")]

REPLAY_MISS = -32003


def _key(workdir: Path, name: str, servers: str) -> dict[str, str]:
    """A key in the key file of the gateway about to run there (as `simgate keys create` makes it)."""
    state_dir = json.loads((workdir / "simgate.json").read_text())["gateway"]["state_dir"]
    _, presented = KeyStore(Path(state_dir) / "keys.json").create(name, servers=servers.split(","))
    return {"Authorization": f"Bearer {presented}"}


def _prepare(workdir: Path, config: dict[str, Any]) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "simgate.json").write_text(json.dumps(config))


def _routing(name: str) -> dict[str, Any]:
    return fixture_server("routing_server.py", "--watched", f"routing://{name}")


def _text(result: types.CallToolResult) -> str:
    return "".join(block.text for block in result.content if isinstance(block, types.TextContent))


class Inbox:
    """Everything one client session is sent outside its own results."""

    def __init__(self) -> None:
        self.logs: list[str] = []
        self.updated: list[str] = []
        self.list_changes: list[str] = []

    async def __call__(self, message: Any) -> None:
        if isinstance(message, types.LoggingMessageNotification):
            self.logs.append(str(message.params.data))
        elif isinstance(message, types.ResourceUpdatedNotification):
            self.updated.append(str(message.params.uri))
        elif isinstance(message, types.ToolListChangedNotification | types.ResourceListChangedNotification):
            self.list_changes.append(message.method)


async def test_unsolicited_notifications_reach_only_sessions_allowed_and_subscribed(tmp_path: Path) -> None:
    workdir = tmp_path / "gw"
    config = {"gateway": {"state_dir": str(tmp_path / "state")},
              "mcpServers": {"alpha": _routing("alpha"), "beta": _routing("beta")}}
    _prepare(workdir, config)
    alpha_key, beta_key = _key(workdir, "alpha-only", "alpha"), _key(workdir, "beta-only", "beta")
    subscribed, unsubscribed, outsider = Inbox(), Inbox(), Inbox()
    with running_gateway(config, workdir) as gateway:
        async with (mcp_session(gateway.mcp_url(), alpha_key, message_handler=subscribed) as a1,
                    mcp_session(gateway.mcp_url(), alpha_key, message_handler=unsubscribed) as _a2,
                    mcp_session(gateway.mcp_url(), beta_key, message_handler=outsider) as _b):
            # `_a2` and `_b` make no request: the gateway knows them (and their keys) from their handshakes.
            await a1.subscribe_resource("routing://alpha")
            assert _text(await a1.call_tool("alpha__announce", {"text": "alpha news"})) == "announced"
            with anyio.fail_after(10):
                while len(subscribed.list_changes) < 2 or not subscribed.updated or not unsubscribed.logs:
                    await anyio.sleep(0.05)
            await anyio.sleep(0.5)  # anything misrouted has had time to arrive
    assert subscribed.logs == ["alpha news"] and subscribed.updated == ["routing://alpha"]
    assert sorted(subscribed.list_changes) == ["notifications/resources/list_changed", "notifications/tools/list_changed"]
    # The same key without the subscription: the log line and list changes, not the resource update.
    assert unsubscribed.logs == ["alpha news"] and unsubscribed.updated == []
    assert sorted(unsubscribed.list_changes) == sorted(subscribed.list_changes)
    # A key that may not see alpha hears nothing of it.
    assert (outsider.logs, outsider.updated, outsider.list_changes) == ([], [], [])


@contextmanager
def _http_routing_server() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, str(FIXTURES / "routing_server.py"), "--http", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def listening() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0

        assert wait_until(listening, timeout=30), "the HTTP fixture did not start"
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(timeout=10)


class Caller:
    """One client: what its model was asked, the log lines and progress it was sent, its call's outcome."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.asked: list[str] = []
        self.logs: list[str] = []
        self.progress: list[str] = []
        self.outcome: str = ""
        self.started = anyio.Event()  # its call's first log line arrived

    async def sampling(self, ctx: ClientRequestContext, params: types.CreateMessageRequestParams) -> Any:
        content = params.messages[0].content
        self.asked.append(content.text if isinstance(content, types.TextContent) else "")
        return types.CreateMessageResult(role="assistant", model="m",
                                         content=types.TextContent(type="text", text=f"from-{self.name}"))

    async def log(self, params: types.LoggingMessageNotificationParams) -> None:
        self.logs.append(str(params.data))
        if str(params.data).endswith(": started"):
            self.started.set()

    async def on_progress(self, progress: float, total: float | None, message: str | None) -> None:
        self.progress.append(message or "")

    async def call(self, url: str, headers: dict[str, str], tag: str, *, after: anyio.Event | None, wait: float,
                   with_progress: bool) -> None:
        async with mcp_session(url, headers, sampling_callback=self.sampling, logging_callback=self.log) as session:
            if after is not None:
                with anyio.fail_after(30):
                    await after.wait()
            try:
                result = await session.call_tool("alpha__work", {"tag": tag, "wait": wait, "sample": True},
                                                  progress_callback=self.on_progress if with_progress else None)
                self.outcome = _text(result)
            except MCPError as exc:
                self.outcome = f"error: {exc.message}"
            await anyio.sleep(0.3)  # a late misrouted message would arrive meanwhile


async def _overlapping_calls(url: str, first_key: dict[str, str], second_key: dict[str, str]) -> tuple[Caller, Caller]:
    # `two` starts once `one` has; `one` asks its client's model after 1.2s, while `two` (asking after 2s)
    # is in flight: the most recent caller is then `two`, not the caller whose call caused the request.
    one, two = Caller("1"), Caller("2")
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: one.call(url, first_key, "one", after=None, wait=1.2, with_progress=True))
        tg.start_soon(lambda: two.call(url, second_key, "two", after=one.started, wait=2.0, with_progress=False))
    return one, two


async def test_request_scoped_traffic_goes_to_the_caller_whose_call_caused_it(tmp_path: Path) -> None:
    """Over streamable HTTP the upstream sends a call's logs and sampling on that call's own stream:
    each of two overlapping callers gets exactly its own (through the SDK session with progress, and
    the raw-call path without)."""
    with _http_routing_server() as upstream_url:
        workdir = tmp_path / "gw"
        config = {"gateway": {"state_dir": str(tmp_path / "state")}, "mcpServers": {"alpha": {"url": upstream_url}}}
        _prepare(workdir, config)
        first, second = _key(workdir, "first", "alpha"), _key(workdir, "second", "alpha")
        with running_gateway(config, workdir) as gateway:
            one, two = await _overlapping_calls(gateway.mcp_url(), first, second)
    assert (one.outcome, two.outcome) == ("one from-1", "two from-2")
    assert (one.asked, two.asked) == (["one"], ["two"])
    assert (one.logs, two.logs) == (["one: started", "one: done"], ["two: started", "two: done"])
    assert (one.progress, two.progress) == (["one", "one"], [])


async def test_over_stdio_nothing_reaches_another_callers_client(tmp_path: Path) -> None:
    """Over stdio a message names no request: with two calls in flight the gateway cannot tell whose it
    is, so it passes it to neither (a sampling request is refused) rather than to the wrong client."""
    workdir = tmp_path / "gw"
    config = {"gateway": {"state_dir": str(tmp_path / "state")}, "mcpServers": {"alpha": _routing("alpha")}}
    _prepare(workdir, config)
    first, second = _key(workdir, "first", "alpha"), _key(workdir, "second", "alpha")
    with running_gateway(config, workdir) as gateway:
        one, two = await _overlapping_calls(gateway.mcp_url(), first, second)
    assert "two" not in one.asked and "one" not in two.asked
    assert all(line.startswith("one:") for line in one.logs) and all(line.startswith("two:") for line in two.logs)
    assert "one: started" in one.logs  # alone in flight then: unambiguous
    assert one.progress[:1] == ["one"] and set(one.progress) == {"one"} and two.progress == []  # by its token
    # `one` asks while `two` is in flight: refused, so the fixture's call fails; `two` asks alone.
    assert "cannot tell which client it belongs to" in one.outcome, one.outcome
    assert two.outcome == "two from-2" and two.asked == ["two"]


async def test_a_replay_miss_shows_only_recordings_of_the_callers_key_and_session(tmp_path: Path) -> None:
    workdir = tmp_path / "gw"
    config = {"gateway": {"state_dir": str(tmp_path / "state"), "record": "all", "cache_dir": str(tmp_path / "cache")},
              "mcpServers": {"alpha": _routing("alpha")}}
    _prepare(workdir, config)
    first, second = _key(workdir, "first", "alpha"), _key(workdir, "second", "alpha")
    replay = {"x-simgate-mode": "replay"}

    async def miss(headers: dict[str, str], tool: str, text: str) -> str:
        async with mcp_session(gateway.mcp_url(), {**headers, **replay}) as session:
            with pytest.raises(MCPError) as missed:
                await session.call_tool(tool, {"text": text})
        assert missed.value.code == REPLAY_MISS
        return missed.value.message + json.dumps(missed.value.data)

    with running_gateway(config, workdir) as gateway:
        async with mcp_session(gateway.mcp_url(), first) as recording:
            assert _text(await recording.call_tool("alpha__echo", {"text": "first-private"})) == "echo: first-private"
            assert _text(await recording.call_tool("alpha__note", {"text": "session-private"}))
            # Its own session's sequence is listed to itself.
            with pytest.raises(MCPError) as own:
                await recording.call_tool("alpha__note", {"text": "next"}, meta={"simgate/mode": "replay"})
            assert "session-private" in own.value.message
        # Another key: none of the first key's arguments.
        other_key = await miss(second, "alpha__echo", "first-privat")
        assert "first-private" not in other_key and "nothing of this tool is recorded that this client may see" in other_key
        # The same key: its own recordings by key, but never another session's sequence.
        same_key = await miss(first, "alpha__echo", "first-privat")
        assert "first-private" in same_key
        other_session = await miss(first, "alpha__note", "session-privat")
        assert "session-private" not in other_session


async def test_set_level_from_a_key_changes_only_the_servers_it_may_use(tmp_path: Path) -> None:
    workdir = tmp_path / "gw"
    config = {"gateway": {"state_dir": str(tmp_path / "state")},
              "mcpServers": {"alpha": _routing("alpha"), "beta": _routing("beta")}}
    _prepare(workdir, config)
    alpha_only, everything = _key(workdir, "alpha-only", "alpha"), _key(workdir, "all", "*")
    with running_gateway(config, workdir) as gateway:
        async with mcp_session(gateway.mcp_url(), alpha_only) as narrow:
            await narrow.set_logging_level("error")
        caller = Caller("all")
        async with mcp_session(gateway.mcp_url(), everything, logging_callback=caller.log) as session:
            for server in ("alpha", "beta"):
                await session.call_tool(f"{server}__work", {"tag": server})
            await anyio.sleep(0.3)
    assert caller.logs == ["beta: started", "beta: done"]  # alpha's level is error now; beta's is not
