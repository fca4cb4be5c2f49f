"""Shapes of third-party servers found by trying published ones through the gateway, each reproduced by a
small fixture: lists paged by cursor (tools, resources, templates, prompts) from a 2024-11-05-only server
that logs while it works."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from harness import REPO_ROOT, fixture_server, mcp_session, pid_alive, provenance, running_gateway, wait_until
from mcp import MCPError, types
from mcp.client.session import ClientSession

pytestmark = pytest.mark.anyio


async def _every_page(session: ClientSession, lister: str, key: str) -> list[str]:
    names: list[str] = []
    cursor: str | None = None
    for _ in range(20):
        params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await getattr(session, lister)(params=params)
        names += [item.name for item in getattr(page, key)]
        cursor = page.next_cursor
        if not cursor:
            return names
    raise AssertionError(f"{lister} never ended")


@pytest.fixture
def paged_gateway(tmp_path: Path) -> Any:
    config = {"gateway": {"record": "new_episodes", "simulator": {"backend": "schema"}},
              "mcpServers": {"paged": fixture_server("paged_server.py")}}
    with running_gateway(config, tmp_path) as gateway:
        yield gateway


@pytest.mark.parametrize("endpoint", ["aggregate", "server"])
async def test_every_page_of_every_list_is_served_and_later_pages_answer(paged_gateway: Any, endpoint: str) -> None:
    url = paged_gateway.mcp_url(None if endpoint == "aggregate" else "paged")
    prefix = "paged__" if endpoint == "aggregate" else ""
    logs: list[Any] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params.data)

    async with mcp_session(url, logging_callback=on_log) as session:
        tools = await _every_page(session, "list_tools", "tools")
        assert sorted(tools) == sorted(f"{prefix}tool_{index}" for index in range(7))
        assert len(await _every_page(session, "list_resources", "resources")) == 5
        assert len(await _every_page(session, "list_resource_templates", "resource_templates")) == 3
        assert len(await _every_page(session, "list_prompts", "prompts")) == 6
        read = await session.read_resource("paged://item/4")
        assert read.contents[0].text == "body of paged://item/4"
        prompt = await session.get_prompt(f"{prefix}prompt_4")
        assert prompt.messages[0].content.text == "text of prompt_4"
        with anyio.fail_after(20):
            result = await session.call_tool(f"{prefix}tool_6", {"n": 21})
        assert result.content[0].text == "tool_6: 42" and provenance(result)["source"] == "live"
        with anyio.fail_after(5):
            while "working on tool_6" not in logs:  # its log line, sent while it worked, reaches the caller
                await anyio.sleep(0.05)
    for mode, source in (("replay", "cache"), ("simulated", "simulator")):
        async with mcp_session(url, headers={"X-Simgate-Mode": mode}) as session:
            result = await session.call_tool(f"{prefix}tool_6", {"n": 21})
            assert not result.is_error and provenance(result)["source"] == source, result
            if mode == "replay":
                assert result.content[0].text == "tool_6: 42"


@pytest.mark.parametrize("endpoint", ["aggregate", "server"])
async def test_a_resource_or_prompt_over_the_clients_sse_event_limit_is_read_whole(paged_gateway: Any,
                                                                                  endpoint: str) -> None:
    """The SDK's client refuses one SSE event over 1 MiB; an MCP App's page is often bigger. A read and a
    prompt are answered as one JSON body (as calls are), so the client reads them as it would from stdio."""
    url = paged_gateway.mcp_url(None if endpoint == "aggregate" else "paged")
    prefix = "paged__" if endpoint == "aggregate" else ""
    async with mcp_session(url) as session:
        read = await session.read_resource("paged://big")
        assert len(read.contents[0].text) == 1_500_007
        prompt = await session.get_prompt(f"{prefix}big")
        assert len(prompt.messages[0].content.text) == 1_500_007


@pytest.mark.parametrize(("tool", "expected"), [
    ("result_and_error", "not valid JSON-RPC"),
    ("string_result", "not valid JSON-RPC"),
])
async def test_an_answer_that_is_not_json_rpc_fails_its_call_at_once(tmp_path: Path, tool: str, expected: str) -> None:
    """A server's answer with the call's id that is not valid JSON-RPC fails that call precisely, at once,
    instead of leaving it to wait out its call timeout."""
    config = {"mcpServers": {"bad": {**fixture_server("malformed_answer_server.py"), "call_timeout": 60}}}
    with running_gateway(config, tmp_path) as gateway:
        async with mcp_session(gateway.mcp_url("bad")) as session:
            with anyio.fail_after(15):
                with pytest.raises(MCPError) as error:
                    await session.call_tool(tool, {})
            assert expected in error.value.message and "bad" in error.value.message
            assert (await session.call_tool("fine", {})).content[0].text == "fine"  # the session lives on


@pytest.mark.parametrize("code", [-32000, -32001])
async def test_a_server_error_in_the_implementation_defined_range_is_passed_on_as_it_is(tmp_path: Path,
                                                                                      code: int) -> None:
    """-32000 and -32001 are codes the SDK also uses for a closed connection and a timeout; a server's own
    error with them is its answer (the connection is up, no time ran out), passed on with its message."""
    config = {"mcpServers": {"bad": fixture_server("malformed_answer_server.py")}}
    with running_gateway(config, tmp_path) as gateway:
        async with mcp_session(gateway.mcp_url("bad")) as session:
            with anyio.fail_after(15):
                with pytest.raises(MCPError) as error:
                    await session.call_tool(f"error_{-code}", {})
            assert (error.value.code, error.value.message) == (code, f"the server's own error {code}")
            assert (await session.call_tool("fine", {})).content[0].text == "fine"


def test_a_server_that_answers_initialize_with_no_json_rpc_fails_its_start_precisely(tmp_path: Path) -> None:
    config = {"mcpServers": {"bad": {**fixture_server("malformed_answer_server.py", "--at-initialize"),
                                     "startup_timeout": 60}}}
    with running_gateway(config, tmp_path, wait_ready=False) as gateway:
        assert wait_until(lambda: "not valid JSON-RPC" in gateway.log_text(), timeout=15), gateway.log_text()[-2000:]
        assert "Unknown method: 'initialize'" in gateway.log_text()


def test_a_server_that_refuses_initialize_with_minus_32000_is_named_by_its_message(tmp_path: Path) -> None:
    config = {"mcpServers": {"bad": fixture_server("malformed_answer_server.py", "--refuse-initialize")}}
    with running_gateway(config, tmp_path, wait_ready=False) as gateway:
        assert wait_until(lambda: "configuration incomplete: set ACME_HOME" in gateway.log_text(), timeout=15), \
            gateway.log_text()[-2000:]
        assert "closed its connection" not in gateway.log_text()


# The input schemas of casual-mcp-server-time 1.0.0 and mcp-server-commands 0.5.0, as they list them: their
# tools answered every probe with an error before (a random word is no date, no command), so onboarding
# disabled a working server.
TIME_SINCE = {"properties": {"past_date": {"description": "A past datetime in ISO 8601 format, e.g. "
                                                          "'2024-01-01T00:00:00Z'", "type": "string"}},
              "required": ["past_date"], "type": "object", "additionalProperties": False}
DATE_DIFF = {"properties": {"start": {"description": "Start date in ISO format, e.g., '2024-01-01'", "type": "string"},
                            "end": {"description": "End date in ISO format, e.g., '2025-01-01'", "type": "string"}},
             "required": ["start", "end"], "type": "object", "additionalProperties": False}
HUMAN_DATE = {"properties": {"description": {"description": "A natural language description of a date, "
                                                            "e.g. 'next Friday'", "type": "string"}},
              "required": ["description"], "type": "object"}
RUN_COMMAND = {"properties": {"command": {"type": "string", "description": "Command with args"},
                              "workdir": {"type": "string", "description": "Optional, current working directory"}},
               "required": ["command"], "type": "object"}


@pytest.mark.parametrize(("schema", "expected"), [
    (TIME_SINCE, {"past_date": "2024-01-01T00:00:00Z"}),
    (DATE_DIFF, {"start": "2024-01-01", "end": "2025-01-01"}),
    (HUMAN_DATE, {"description": "next Friday"}),
    (RUN_COMMAND, {"command": "echo hello"}),
])
def test_probe_arguments_take_the_examples_a_description_quotes(schema: dict[str, Any],
                                                                expected: dict[str, Any]) -> None:
    from simgate.runner.onboard.arguments import probe_arguments

    sets = probe_arguments(schema, "seed")
    assert sets[0].kind == "minimal" and sets[0].arguments == expected
    for full in (item for item in sets if item.kind == "full"):  # absent when it would repeat `minimal`
        assert {name: full.arguments[name] for name in expected} == expected


def _pids_with(marker: str) -> list[int]:
    """Processes whose command line holds `marker` (this test's own, unique)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes() and pid_alive(int(entry.name)):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
def test_onboarding_stopped_by_sigterm_stops_its_private_gateway_and_the_server(tmp_path: Path) -> None:
    """`timeout`, a CI job's end or `kill` send SIGTERM to `simgate onboard` alone; its private gateways run in
    sessions of their own, so they (and the servers they sandbox) outlived it before."""
    name = f"leak{uuid.uuid4().hex[:12]}"
    gateway_mark = f"simgate-onboard-{name}-"  # in the private gateway's config path
    clients = tmp_path / "servers.json"
    clients.write_text(json.dumps({"mcpServers": {name: {  # starts, never answers initialize
        "command": sys.executable, "args": ["-c", "import time; time.sleep(600)", name]}}}))
    onboard = subprocess.Popen(
        [sys.executable, "-m", "simgate", "onboard", str(clients), "--no-progress", "--config", "onboarded.yaml",
         "--out", "reports", "--startup-timeout", "600"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        assert wait_until(lambda: bool(_pids_with(f"time.sleep(600)\0{name}")), timeout=60)
        assert _pids_with(gateway_mark)
        onboard.send_signal(signal.SIGTERM)
        _, stderr = onboard.communicate(timeout=40)
        assert wait_until(lambda: not _pids_with(gateway_mark), timeout=15), "the private gateway outlived onboarding"
        assert wait_until(lambda: not _pids_with(name), timeout=15), "the server outlived onboarding"
        assert onboard.returncode == 2 and b"stopped by signal SIGTERM" in stderr, stderr
    finally:
        for sig, pids in ((signal.SIGTERM, _pids_with(gateway_mark)), (signal.SIGKILL, [onboard.pid])):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        onboard.wait(timeout=10)
        wait_until(lambda: not _pids_with(name), timeout=15)
