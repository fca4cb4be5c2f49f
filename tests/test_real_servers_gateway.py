"""Real third-party MCP servers from PyPI and npm, through the gateway and directly: what a client
sees through `/servers/NAME/mcp` and `/mcp` must equal what the server gives directly.

Every installed server of `tests/real_servers.py` (19: both registries, three needing `mcp<2` in
their own environment) runs offline from `.ci/install-servers`' install root.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import real_servers as rs
from harness import GatewayProcess, mcp_session, running_gateway, without_provenance
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, ErrorData

pytestmark = pytest.mark.anyio

ROOT = rs.default_install_root()
INSTALLED = [server.name for server in rs.SERVERS if rs.installed(server.name, ROOT)]


def _server_entry(name: str, work_dir: Path) -> dict[str, Any]:
    work = rs.prepare_work_dir(name, work_dir)
    command, args, env = rs.server_command(name, ROOT, work_dir)
    return {"command": command, "args": args, "env": env, "cwd": str(work), "call_timeout": 60}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    if len(INSTALLED) < 8:
        pytest.skip(f"only {len(INSTALLED)} real servers installed under {ROOT}: run .ci/install-servers")
    base = tmp_path_factory.mktemp("via-gateway")
    servers = {name: _server_entry(name, base / name) for name in INSTALLED}
    with running_gateway({"mcpServers": servers}, base / "gateway", ready_timeout=180) as running:
        yield running


def _normalized(value: Any, work: Path) -> Any:
    """JSON of a result with the server's own work directory written as $WORK."""
    return json.loads(json.dumps(value).replace(str(work), "$WORK"))


def _dump(result: CallToolResult) -> dict[str, Any]:
    return without_provenance(result)  # the gateway's provenance is checked elsewhere


async def _session_transcript(session: ClientSession, name: str, work: Path) -> dict[str, Any]:
    tools = (await session.list_tools()).model_dump(mode="json", by_alias=True, exclude_none=True)["tools"]
    calls = []
    for call in rs.get(name).calls:
        try:
            result = _dump(await session.call_tool(call.tool, rs.expand(call.arguments, work.parent)))
        except MCPError as exc:
            calls.append({"rpcError": exc.code})
            continue
        calls.append(result if call.deterministic else {"isError": result.get("isError", False)})
    return {"tools": _normalized(tools, work), "calls": _normalized(calls, work)}


async def _decline(ctx: Any, params: Any) -> ErrorData:
    return ErrorData(code=-32600, message="declined")


async def _decline_roots(ctx: Any) -> ErrorData:
    return ErrorData(code=-32600, message="declined")


async def _direct(name: str, work_dir: Path) -> dict[str, Any]:
    work = rs.prepare_work_dir(name, work_dir)
    command, args, env = rs.server_command(name, ROOT, work_dir)
    params = StdioServerParameters(command=command, args=args, env=env, cwd=work)
    with open(work_dir / "stderr.log", "w") as errlog, anyio.fail_after(120):
        async with stdio_client(params, errlog=errlog) as (read, write):
            # Tool lists depend on the client's capabilities; offer the ones the gateway offers upstream.
            async with ClientSession(read, write, sampling_callback=_decline, elicitation_callback=_decline,
                                     list_roots_callback=_decline_roots) as session:
                await session.initialize()
                return await _session_transcript(session, name, work)


@pytest.mark.parametrize("name", INSTALLED)
async def test_through_the_gateway_equals_direct(gateway: GatewayProcess, name: str, tmp_path: Path) -> None:
    direct = await _direct(name, tmp_path / "direct")
    # The gateway's copy of the server has its own, equally fresh work directory.
    work = gateway.workdir.parent / name / "work"
    async with mcp_session(gateway.mcp_url(name)) as session:
        via = await _session_transcript(session, name, work)
    assert via["tools"] == direct["tools"]
    assert len(via["calls"]) == len(direct["calls"])
    for through, plain in zip(via["calls"], direct["calls"], strict=True):
        if through.get("rpcError") == -32602:
            # Arguments that break the tool's inputSchema are stopped at the gateway; the server
            # itself would only have answered with an error.
            assert plain.get("isError") is True
        else:
            assert through == plain


async def test_aggregate_lists_every_server_under_prefixed_names(gateway: GatewayProcess) -> None:
    per_server: dict[str, list[dict[str, Any]]] = {}
    for name in INSTALLED:
        async with mcp_session(gateway.mcp_url(name)) as session:
            per_server[name] = [tool.model_dump(mode="json", by_alias=True, exclude_none=True)
                                for tool in (await session.list_tools()).tools]
    async with mcp_session(gateway.mcp_url()) as session:
        aggregate = {tool.name: tool.model_dump(mode="json", by_alias=True, exclude_none=True)
                     for tool in (await session.list_tools()).tools}
        assert len(aggregate) == sum(len(tools) for tools in per_server.values())
        for name, tools in per_server.items():
            for tool in tools:
                exposed = f"{name}__{tool['name']}"
                assert {**aggregate[exposed], "name": tool["name"]} == tool
        result = await session.call_tool("calculator__calculate", {"expression": "6*7"})
        assert "42" in json.dumps(_dump(result))


def test_mcp_inspector_cli_lists_and_calls_through_the_gateway(gateway: GatewayProcess, tmp_path: Path) -> None:
    if not rs.tools_installed(ROOT):
        pytest.skip(f"the MCP Inspector is not installed under {ROOT}: run .ci/install-servers")
    inspector = rs.inspector_command(ROOT)
    env = {**os.environ, "MCP_CATALOG_PATH": str(tmp_path)}

    def run(*args: str) -> Any:
        done = subprocess.run([*inspector, "--cli", gateway.mcp_url(), "--transport", "http", *args],
                              capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout)

    listed = run("--method", "tools/list")
    assert {"calculator__calculate", "everything__echo"} <= {tool["name"] for tool in listed["tools"]}
    called = run("--method", "tools/call", "--tool-name", "everything__echo", "--tool-arg", "message=inspected")
    assert called.get("isError", False) is False and "inspected" in json.dumps(called["content"])
